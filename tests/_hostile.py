"""What a hostile user sends: raw HTTP/1.1 over a loopback socket (header bytes that are not
text, which aiohttp's client would refuse to send), and an input object that raises."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from typing import Any


def http_request(method: str, target: str, headers: list[bytes], body: bytes = b"") -> bytes:
    """One request that closes its connection; ``headers`` are raw ``Name: value`` lines."""
    lines = [f"{method} {target} HTTP/1.1".encode(), b"Host: 127.0.0.1", b"Connection: close", *headers]
    lines.append(b"Content-Length: " + str(len(body)).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


async def raw_http(port: int, data: bytes) -> tuple[int, bytes]:
    """Send ``data`` to 127.0.0.1:``port``; return the answer's status and body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        answer = await reader.read()
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


class ExplodingMapping(Mapping[str, Any]):
    """A Mapping every read of which fails: any object that raises where none was expected."""

    def __getitem__(self, key: str) -> Any:
        raise RuntimeError("boom")

    def __iter__(self) -> Iterator[str]:
        raise RuntimeError("boom")

    def __len__(self) -> int:
        return 1
