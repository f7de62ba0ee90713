"""A real ``redis-server`` for the tests: a free loopback port, a temp dir, no persistence.

``redis_server`` (function scope) starts one and stops it after the test; ``server.stop()`` and
``server.start()`` take it down and bring it back on the same port (an outage mid-run). Readiness
is read from the server's own log line, not waited for. A missing ``redis-server`` fails the
test with the command that installs it: these tests are never skipped.
"""

from __future__ import annotations

import os
import select
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

INSTALL_HINT = "apt-get update && apt-get install -y redis-server"
#: Longest a starting server may take to say it is ready (seconds); it takes ~10 ms.
START_TIMEOUT = 10.0


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found is None:
        pytest.fail(f"redis-server is not installed; install it with: {INSTALL_HINT}", pytrace=False)
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """One redis-server process on 127.0.0.1:``port``, its files under ``directory``."""

    def __init__(self, directory: Path, password: str | None = None) -> None:
        self.binary = redis_server_binary()
        self.directory = directory
        self.port = free_port()
        self.password = password
        self.process: subprocess.Popen[bytes] | None = None
        self._drainer: threading.Thread

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert self.process is None
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory)]
        args += ["--save", "", "--appendonly", "no", "--daemonize", "no"]
        if self.password:
            args += ["--requirepass", self.password]
        process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=self.directory)
        assert process.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT
        log = b""
        while b"Ready to accept connections" not in log:
            remaining = deadline - time.monotonic()
            ready, _, _ = select.select([process.stdout], [], [], max(0.0, remaining))
            chunk = os.read(process.stdout.fileno(), 65536) if ready else b""
            if not chunk:
                process.kill()
                process.wait()
                pytest.fail(f"redis-server did not start:\n{log.decode(errors='replace')}", pytrace=False)
            log += chunk
        # Keep reading its log so the server never blocks on a full pipe.
        self._drainer = threading.Thread(target=_drain, args=(process.stdout,), daemon=True)
        self._drainer.start()
        self.process = process

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            process.kill()
            process.wait()
            self._drainer.join()
            assert process.stdout is not None
            process.stdout.close()


def _drain(stream: object) -> None:
    read = stream.read  # type: ignore[attr-defined]
    while read(65536):
        pass


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()
