"""What every webhook receiver of bwasync shares: Basic auth checked in constant time, a
request body read no further than a limit, and the answers refusing either (:func:`admitted_body`).

Used by the status-callback receiver (:mod:`bwasync.campaign`) and the inbound-message handler
(:mod:`bwasync.compliance`), so both refuse the same requests the same way.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterable, Mapping
from typing import Final, NamedTuple

from ._auth import basic_header

__all__ = ["UNAUTHORIZED_HEADERS", "BasicAuthGate", "Refused", "admitted_body", "read_bounded"]

#: Headers of a 401 answer: the challenge a client (or a person with curl) needs.
UNAUTHORIZED_HEADERS: Final[Mapping[str, str]] = {"WWW-Authenticate": 'Basic realm="bwasync", charset="UTF-8"'}


class BasicAuthGate:
    """Admits a request whose ``Authorization`` header is exactly the configured Basic one.

    With no credentials every request is admitted. The comparison is of the whole header, in
    constant time; the expected header is never shown (not in ``repr`` either).

    >>> gate = BasicAuthGate("bw", "secret")
    >>> gate.admits("Basic Ync6c2VjcmV0"), gate.admits("Basic Ync6d3Jvbmc="), gate.admits(None)
    (True, False, False)
    """

    __slots__ = ("_expected",)

    def __init__(self, username: str | None, password: str | None) -> None:
        if (username is None) != (password is None):
            raise ValueError("give both username and password, or neither")
        self._expected: bytes | None = (
            basic_header(username, password).encode() if username is not None and password is not None else None
        )

    @property
    def enabled(self) -> bool:
        """Whether requests must carry credentials."""
        return self._expected is not None

    def admits(self, authorization: str | None) -> bool:
        """Whether a request with this ``Authorization`` header (None: absent) may proceed."""
        if self._expected is None:
            return True
        given = (authorization or "").encode("utf-8", "replace")
        return hmac.compare_digest(given, self._expected)

    def __repr__(self) -> str:
        return f"<BasicAuthGate auth={'basic' if self.enabled else 'none'}>"


async def read_bounded(chunks: AsyncIterable[bytes], length: int | None, max_body: int) -> bytes | None:
    """The body from its chunks, or None as soon as it is known to exceed ``max_body`` bytes.

    ``length`` is the declared ``Content-Length`` (None if absent): a body declared too large
    is refused without reading any of it, and one that grows past the limit is not read on.
    """
    if length is not None and length > max_body:
        return None
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > max_body:
            return None
        parts.append(chunk)
    return b"".join(parts)


class Refused(NamedTuple):
    """A POST refused before its body is looked at: the answer to give."""

    status: int
    text: str
    headers: Mapping[str, str]


async def admitted_body(
    gate: BasicAuthGate, authorization: str | None, chunks: AsyncIterable[bytes], length: int | None, max_body: int
) -> bytes | Refused:
    """The body of a POST, read (see :func:`read_bounded`) only once ``gate`` admitted its
    ``Authorization``; else what to answer: 401 with the challenge, or 413."""
    if not gate.admits(authorization):
        return Refused(401, "authentication required", UNAUTHORIZED_HEADERS)
    body = await read_bounded(chunks, length, max_body)
    if body is None:
        return Refused(413, f"body larger than {max_body} bytes", {})
    return body
