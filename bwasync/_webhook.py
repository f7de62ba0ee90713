"""What every webhook receiver of bwasync shares: Basic auth checked in constant time, a
request body read no further than a limit, the answers refusing either, and the counters of
what became of the POSTs: a receiver's handler is a :class:`WebhookHandler`.

Used by the status-callback receiver (:mod:`bwasync.campaign`) and the inbound-message handler
(:mod:`bwasync.compliance`), so both refuse the same requests the same way.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import AsyncIterable, Mapping
from dataclasses import asdict, dataclass
from typing import Final, Generic, NamedTuple, TypedDict, TypeVar

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from ._auth import basic_header

__all__ = [
    "READ_CHUNK",
    "UNAUTHORIZED_HEADERS",
    "UNREADABLE_BODY",
    "UNREADABLE_HEADERS",
    "BasicAuthGate",
    "Refused",
    "WebhookHandler",
    "WebhookOptions",
    "WebhookStats",
    "read_bounded",
    "server_logger",
    "unreadable",
]

#: Bytes of a POST's body read at a time (a receiver stops reading once past its ``max_body``).
READ_CHUNK: Final = 64 * 1024
#: Headers of a 401 answer: the challenge a client (or a person with curl) needs.
UNAUTHORIZED_HEADERS: Final[Mapping[str, str]] = {"WWW-Authenticate": 'Basic realm="bwasync", charset="UTF-8"'}
#: What reading a body raises when the client sent one that cannot be read: aiohttp's error for a
#: ``Content-Encoding`` it cannot decode (or a broken chunked body), a connection dropped halfway.
#: The client's mistake: a 400, never a 500 with a traceback in the log.
UNREADABLE_BODY: Final = (web.RequestPayloadError, ConnectionError)
#: Headers of that 400: the connection cannot carry another request, its body left half-read.
UNREADABLE_HEADERS: Final[Mapping[str, str]] = {"Connection": "close"}


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


def unreadable(exc: BaseException) -> str:
    """Why a body could not be read (:data:`UNREADABLE_BODY`), on one line: aiohttp's message
    is its status and a reason on the next line; the reason is what the client needs.

    >>> unreadable(ConnectionResetError("Connection lost"))
    'Connection lost'
    """
    return str(exc).rpartition("\n")[2].strip() or type(exc).__name__


class _ClientMistakes(logging.Filter):
    """Turns aiohttp's report of a request it could not parse into one warning line.

    aiohttp's server answers malformed HTTP (a negative ``Content-Length``, a bad chunk size, a
    byte that is not ASCII in the path, a body its ``Content-Encoding`` cannot decode) with a 400
    itself, before any handler runs, and logs it at ERROR with a traceback, as if the server had
    failed: a traceback on the terminal of ``bwasync emulator`` for a client's mistake. Anything
    else (a handler's own failure) is left as it is: loud.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, web.RequestPayloadError) or (
            isinstance(exc, HttpProcessingError) and 400 <= (exc.code or 0) < 500
        ):
            if isinstance(exc, HttpProcessingError):  # its message quotes the bad line and marks it below
                reason = (exc.message.strip().splitlines() or [type(exc).__name__])[0].rstrip(": ")
                record.msg = f"{record.getMessage()}: malformed request, answered 400: {reason}"
            else:  # a body nobody read (e.g. after a 404), drained before the next request
                record.msg = f"a request's body could not be read: {unreadable(exc)}"
            record.args = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info = record.exc_text = None
        return True


def server_logger(name: str) -> logging.Logger:
    """The logger to give aiohttp's server (``web.AppRunner(app, logger=...)``) of a server that
    bwasync runs: a client's malformed HTTP is one warning line there, not an error's traceback."""
    logger = logging.getLogger(name)
    if not any(isinstance(f, _ClientMistakes) for f in logger.filters):
        logger.addFilter(_ClientMistakes())
    return logger


@dataclass(slots=True)
class WebhookStats:
    """What became of a receiver's POSTs; each receiver's own counters add what became of the
    events in them."""

    #: POSTs answered 2xx.
    requests: int = 0
    #: Events in those POSTs.
    received: int = 0
    #: POSTs refused: 401 (auth), 413 (too large), 400 (malformed).
    rejected: int = 0
    #: POSTs answered 5xx because handling their events failed or took too long (the sender
    #: retries them).
    errors: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class Refused(NamedTuple):
    """A POST refused before its body is looked at: the answer to give."""

    status: int
    text: str
    headers: Mapping[str, str]


class WebhookOptions(TypedDict, total=False):
    """The keywords every receiver's handler takes (:class:`WebhookHandler`), typed for the
    functions that pass them on (``**options: Unpack[WebhookOptions]``): a misspelt one is a type
    error, not only a ``TypeError`` at run time."""

    username: str | None
    password: str | None
    max_body: int
    timeout: float


S = TypeVar("S", bound=WebhookStats)


class WebhookHandler(Generic[S]):
    """A receiver's handler: its Basic auth gate, body and time limits, and ``stats``; a POST's
    body is read with :meth:`admit`, the events in it are the subclass's to handle."""

    def __init__(self, stats: S, *, username: str | None, password: str | None, max_body: int, timeout: float) -> None:
        if max_body < 1:
            raise ValueError("max_body must be positive")
        self._auth = BasicAuthGate(username, password)
        self.max_body = max_body
        self.timeout = timeout
        self.stats = stats

    async def admit(
        self, authorization: str | None, chunks: AsyncIterable[bytes], length: int | None
    ) -> bytes | Refused:
        """The body of a POST, read (see :func:`read_bounded`) only once the gate admitted its
        ``Authorization``; else what to answer, counted in ``stats.rejected``: 401 with the
        challenge, 413, or 400 for a body that cannot be read (:data:`UNREADABLE_BODY`)."""
        if not self._auth.admits(authorization):
            self.stats.rejected += 1
            return Refused(401, "authentication required", UNAUTHORIZED_HEADERS)
        try:
            body = await read_bounded(chunks, length, self.max_body)
        except UNREADABLE_BODY as exc:
            self.stats.rejected += 1
            return Refused(400, f"the body could not be read: {unreadable(exc)}", UNREADABLE_HEADERS)
        if body is None:
            self.stats.rejected += 1
            return Refused(413, f"body larger than {self.max_body} bytes", {})
        return body
