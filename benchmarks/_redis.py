"""A throwaway ``redis-server`` (Debian's package) on a free loopback port, files in a temp dir.

Used by the scale-out benchmark and by the tests (``tests/_redis_server.py``)::

    with RedisProcess(directory) as server:
        server.url                    # redis://127.0.0.1:PORT/0
        server.stop(); server.start() # an outage, then the same server back on the same port

No persistence by default (``save ""``, no AOF); ``aof=True`` runs it as the README asks of a
Redis holding shared campaigns (``appendonly yes``, ``appendfsync always``: every write is on
disk before it is acknowledged), so a ``stop()``/``start()`` is a crash and a restart that
keeps every acknowledged write. Nothing is written outside ``directory``. Readiness is the
server's own "Ready to accept connections" log line, read as it is written.
"""

from __future__ import annotations

import os
import select
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import IO

INSTALL_HINT = "apt-get update && apt-get install -y redis-server"
#: Longest a starting server may take to say it is ready (seconds); it takes ~10 ms.
START_TIMEOUT = 10.0


class RedisUnavailable(RuntimeError):
    """redis-server is not installed, or did not start."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _drain(stream: IO[bytes]) -> None:
    while stream.read(65536):
        pass


class RedisProcess:
    """One redis-server on 127.0.0.1:``port``, its working files under ``directory``."""

    def __init__(self, directory: Path, *, password: str | None = None, aof: bool = False) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RedisUnavailable(f"redis-server is not installed; install it with: {INSTALL_HINT}")
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.password = password
        self.aof = aof
        self.process: subprocess.Popen[bytes] | None = None
        self._drainer: threading.Thread | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert self.process is None
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory)]
        args += ["--save", "", "--daemonize", "no"]
        args += ["--appendonly", "yes", "--appendfsync", "always"] if self.aof else ["--appendonly", "no"]
        if self.password:
            args += ["--requirepass", self.password]
        process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=self.directory)
        assert process.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT
        log = b""
        while b"Ready to accept connections" not in log:
            ready, _, _ = select.select([process.stdout], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(process.stdout.fileno(), 65536) if ready else b""
            if not chunk:
                process.kill()
                process.wait()
                process.stdout.close()
                raise RedisUnavailable(f"redis-server did not start:\n{log.decode(errors='replace')}")
            log += chunk
        # Keep reading its log so the server never blocks on a full pipe.
        self._drainer = threading.Thread(target=_drain, args=(process.stdout,), daemon=True)
        self._drainer.start()
        self.process = process

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        process.kill()
        process.wait()
        if self._drainer is not None:
            self._drainer.join()
        assert process.stdout is not None
        process.stdout.close()

    def __enter__(self) -> RedisProcess:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
