"""A zero-latency (or fixed-latency) HTTP/1.1 keep-alive responder, and a handle to run servers.

Run as its own process so it gets the other core::

    python -m benchmarks._responder [--port 0] [--latency 0.0] [--loop uvloop]
    # -> "responder listening on http://127.0.0.1:N/api/v2"

It answers every POST with Bandwidth's 202 example body and ``GET /__stats`` with
``{"requests": N}``. It is a raw ``asyncio.Protocol`` (no HTTP framework): it finds the end of the
headers, reads ``Content-Length``, skips the body and writes a prebuilt answer, so that it is far
from being the bottleneck for a Python client. It exits when its standard input closes (the
parent went away) or on SIGTERM/SIGINT.

:class:`ServerProcess` starts any such server (this one or ``python -m bwasync.emulator``), waits for
its "listening on" line, measures its CPU time, and stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import IO, cast

import msgspec
import psutil

from ._data import RESPONSE_202

_HEAD_202 = b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(RESPONSE_202)
ANSWER_202 = _HEAD_202 + RESPONSE_202


class _Stats:
    __slots__ = ("requests",)

    def __init__(self) -> None:
        self.requests = 0


class _Http(asyncio.Protocol):
    """HTTP/1.1 keep-alive, one request at a time per connection (as clients send them)."""

    __slots__ = ("_buf", "_latency", "_loop", "_stats", "_transport")

    def __init__(self, stats: _Stats, latency: float, loop: asyncio.AbstractEventLoop) -> None:
        self._stats = stats
        self._latency = latency
        self._loop = loop
        self._buf = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            length = 0
            at = buf.find(b"Content-Length:", 0, end)
            if at < 0:
                at = buf.lower().find(b"content-length:", 0, end)
            if at >= 0:
                eol = buf.find(b"\r\n", at, end + 2)
                length = int(buf[at + 15 : eol])
            total = end + 4 + length
            if len(buf) < total:
                return
            if buf.startswith(b"GET /__stats"):
                body = msgspec.json.encode({"requests": self._stats.requests})
                answer = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
                    len(body),
                    body,
                )
            else:
                self._stats.requests += 1
                answer = ANSWER_202
            del buf[:total]
            if self._latency > 0:
                self._loop.call_later(self._latency, self._write, answer)
            elif self._transport is not None:
                self._transport.write(answer)

    def _write(self, answer: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(answer)


async def serve(host: str, port: int, latency: float) -> None:
    loop = asyncio.get_running_loop()
    stats = _Stats()
    server = await loop.create_server(lambda: _Http(stats, latency, loop), host, port, backlog=4096)
    bound = server.sockets[0].getsockname()[1]
    print(f"responder listening on http://{host}:{bound}/api/v2", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    # Exit when the parent closes our stdin (or dies): no orphaned servers.
    def stdin_ready() -> None:
        if not os.read(sys.stdin.fileno(), 4096):
            stop.set()

    loop.add_reader(sys.stdin.fileno(), stdin_ready)
    async with server:
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks._responder")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    args = parser.parse_args(argv)
    factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.SelectorEventLoop
    if args.loop == "uvloop":
        try:
            import uvloop

            factory = uvloop.new_event_loop
        except ImportError:
            pass
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(serve(args.host, args.port, args.latency))


# --- the parent's side --------------------------------------------------------------------------


def _drain(stream: IO[bytes]) -> None:
    try:
        while stream.read1(65536):  # type: ignore[attr-defined]
            pass
    except (OSError, ValueError):
        pass


_LISTENING = re.compile(rb"listening on (http://\S+)")


class ServerProcess:
    """A server in a child process: started, waited for, measured and stopped.

    >>> with ServerProcess.responder(latency=0.0) as server:
    ...     server.base_url       # "http://127.0.0.1:N/api/v2"
    """

    def __init__(self, argv: Sequence[str], *, name: str, start_timeout: float = 15.0) -> None:
        self.argv = list(argv)
        self.name = name
        self.start_timeout = start_timeout
        self.base_url = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._ps: psutil.Process | None = None
        # Closed in _stop(); the server's lifetime is not a with-block here.
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115

    @classmethod
    def responder(cls, *, latency: float = 0.0, loop: str = "uvloop") -> ServerProcess:
        argv = [sys.executable, "-m", "benchmarks._responder", "--latency", str(latency), "--loop", loop]
        return cls(argv, name="responder" if latency == 0 else f"responder (latency {latency * 1000:g} ms)")

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def cpu_seconds(self) -> float:
        """User + system CPU time the server has used so far."""
        assert self._ps is not None
        times = self._ps.cpu_times()
        return float(times.user + times.system)

    def __enter__(self) -> ServerProcess:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self._proc = subprocess.Popen(
            self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, env=env
        )
        assert self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        seen = b""
        deadline = time.monotonic() + self.start_timeout
        while True:
            match = _LISTENING.search(seen)
            if match:
                self.base_url = match.group(1).decode()
                break
            left = deadline - time.monotonic()
            if left <= 0 or self._proc.poll() is not None:
                self._stop()
                self._stderr.seek(0)
                err = self._stderr.read().decode(errors="replace")[-2000:]
                raise RuntimeError(f"{self.name} did not start ({' '.join(self.argv)}): {seen!r} {err}")
            ready, _, _ = select.select([fd], [], [], min(left, 0.2))
            if ready:
                chunk = os.read(fd, 4096)
                seen += chunk
        self._ps = psutil.Process(self._proc.pid)
        # Keep reading what it prints (access logs...) so a full pipe never blocks the server.
        threading.Thread(target=_drain, args=(self._proc.stdout,), daemon=True).start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop()

    def _stop(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()
        self._stderr.close()
        self._proc = None


if __name__ == "__main__":
    main()
