"""The one place the client touches aiohttp.

The transport does I/O: it owns (or borrows) the ``ClientSession``, sends bytes, and translates
every aiohttp failure at this edge into the most specific bwasync exception, saying whether the
request had already left (``request_sent``) so that callers never retry a send whose fate is
unknown.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import re
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NoReturn, TypedDict

import aiohttp
import msgspec
from multidict import CIMultiDict
from yarl import URL

from ._constants import DEFAULT_DNS_TTL, DEFAULT_KEEPALIVE_TIMEOUT
from ._exceptions import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    ClientClosedError,
    ConfigurationError,
    RateLimitError,
    UnexpectedResponseError,
    status_error_class,
)
from ._models import FieldError, Message, decode_message
from ._version import __version__

if TYPE_CHECKING:
    from ._auth import Auth

__all__ = ["RequestOptions", "Timeout", "Transport", "parse_allowed_rate", "parse_retry_after"]

USER_AGENT = f"bwasync/{__version__}"
_MAX_ERROR_BODY = 4096
#: A per-attempt timeout as the transport takes it (built once by :meth:`Transport.make_timeout`).
Timeout = aiohttp.ClientTimeout


class RequestOptions(TypedDict, total=False):
    """The keyword options of :meth:`Transport.request`, for callers that pass them through."""

    params: Mapping[str, str] | None
    headers: Mapping[str, str] | None
    data: bytes | None
    ok: tuple[int, ...]


class _ErrorBody(msgspec.Struct, rename="camel"):
    type: str | None = None
    description: str | None = None
    field_errors: list[FieldError] = []
    # Spring-style 404 bodies
    error: str | None = None
    message: str | None = None


_error_decoder = msgspec.json.Decoder(_ErrorBody)
_TITLE = re.compile(rb"<title>(.*?)</title>", re.IGNORECASE | re.DOTALL)


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def parse_allowed_rate(description: str | None) -> float | None:
    """Bandwidth's queue-full 429 says "Your allowed rate is N messages per minute": N / 60, or None.

    Defensive: anything but a positive, finite number in exactly that wording gives None (a
    load balancer's 429, a reworded message), and the caller then does without the hint.
    """
    if not description:
        return None
    marker = "allowed rate is "
    start = description.find(marker)
    if start < 0:
        return None
    words = description[start + len(marker) : start + len(marker) + 64].split()
    if len(words) < 4 or [word.rstrip(".,;") for word in words[1:4]] != ["messages", "per", "minute"]:
        return None
    try:
        per_minute = float(words[0].replace(",", ""))
    except ValueError:
        return None
    if not (per_minute > 0 and math.isfinite(per_minute)):
        return None
    return per_minute / 60.0


def status_error(status: int, headers: Mapping[str, str], body: bytes) -> APIStatusError:
    """Build the exception for an error answer, whatever its body (JSON, HTML, nothing)."""
    type_: str | None = None
    description: str | None = None
    field_errors: list[FieldError] = []
    try:
        parsed = _error_decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        match = _TITLE.search(body[:_MAX_ERROR_BODY])
        if match:
            description = match.group(1).decode("utf-8", "replace").strip()
        elif body:
            description = body[:200].decode("utf-8", "replace").strip() or None
    else:
        type_ = parsed.type or parsed.error
        description = parsed.description or parsed.message
        field_errors = parsed.field_errors
    cls = status_error_class(status)
    kwargs: dict[str, Any] = {
        "status_code": status,
        "type": type_,
        "description": description,
        "field_errors": field_errors,
        "headers": headers,
        "body": body[:_MAX_ERROR_BODY],
    }
    if cls is RateLimitError:
        kwargs["retry_after"] = parse_retry_after(headers.get("Retry-After"))
        kwargs["allowed_rate"] = parse_allowed_rate(description)
    return cls(**kwargs)


def _connection_error(exc: BaseException) -> NoReturn:
    """Translate an aiohttp/OS failure, deciding whether the request had left."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        # Timed out getting a connection (pool wait or connect): nothing was written.
        raise APITimeoutError(f"timed out connecting: {exc}", request_sent=False) from exc
    if isinstance(exc, aiohttp.ClientConnectorError):
        # Refused, DNS, TLS handshake: the request never left.
        raise APIConnectionError(f"could not connect: {exc}", request_sent=False) from exc
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        raise APITimeoutError("timed out waiting for the answer; the request had been sent", request_sent=True) from exc
    # Disconnected, reset or a broken payload after the request was written: ambiguous.
    raise APIConnectionError(
        f"connection lost after the request was sent: {type(exc).__name__}: {exc}", request_sent=True
    ) from exc


class Transport:
    """Sends requests over one pooled aiohttp session and maps failures to bwasync errors."""

    __slots__ = (
        "_base",
        "_closed",
        "_connect_timeout",
        "_create_headers",
        "_create_url",
        "_header_auth",
        "_loop",
        "_owns_session",
        "_session",
        "_session_factory",
        "account_id",
        "auth",
    )

    def __init__(
        self,
        *,
        base_url: str,
        account_id: str,
        auth: Auth,
        timeout: float,
        connect_timeout: float,
        connection_limit: int,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.account_id = account_id
        self._base = base_url.rstrip("/")
        #: How requests are authenticated (a plain attribute: read on every send).
        self.auth = auth
        if not (connect_timeout > 0 and math.isfinite(connect_timeout)):
            raise ConfigurationError(f"connect_timeout must be a positive number of seconds, got {connect_timeout!r}")
        self._connect_timeout = connect_timeout
        self._create_url = URL(f"{self._base}/users/{account_id}/messages", encoded=False)
        self._session = session
        self._owns_session = session is None
        self._closed = False
        #: The event loop the session's connections belong to (known once used in one).
        self._loop: asyncio.AbstractEventLoop | None = None
        # Built once per Authorization value and handed to aiohttp as is: a CIMultiDict is
        # merged without being converted again on every request.
        self._create_headers: CIMultiDict[str] = CIMultiDict()
        self._header_auth: str | None = None
        session_timeout = self.make_timeout(timeout)

        def factory() -> aiohttp.ClientSession:
            connector = aiohttp.TCPConnector(
                limit=connection_limit,
                limit_per_host=0,
                ttl_dns_cache=DEFAULT_DNS_TTL,
                keepalive_timeout=DEFAULT_KEEPALIVE_TIMEOUT,
            )
            # No session-wide default headers: every request brings its own (prebuilt for
            # creates), so aiohttp has nothing to merge per request.
            return aiohttp.ClientSession(
                connector=connector,
                timeout=session_timeout,
                # Bandwidth sets no cookies we need; skip aiohttp's cookie handling work.
                cookie_jar=aiohttp.DummyCookieJar(),
            )

        self._session_factory = factory

    @property
    def session(self) -> aiohttp.ClientSession:
        """The session, created on first use; :class:`ClientClosedError` once closed."""
        session = self._session
        if session is None or self._closed:
            self.check_open()
            session = self._session = self._session_factory()
        return session

    def check_open(self) -> None:
        """Raise :class:`ClientClosedError` once closed, and :class:`ConfigurationError` in an
        event loop other than the one the session's connections belong to: aiohttp would fail
        there before anything is sent, and that failure must not pass for a lost answer."""
        if self._closed:
            raise ClientClosedError("the client is closed; create a new MessagingClient to send again")
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:  # send_many() called outside a loop: checked again when it runs
            return
        if self._loop is None:
            self._loop = running
        elif self._loop is not running:
            raise ConfigurationError(
                "this client is used in another event loop than the one its connections belong to; "
                "create one MessagingClient per event loop, inside it"
            )

    @property
    def owns_session(self) -> bool:
        return self._owns_session

    @property
    def closed(self) -> bool:
        return self._closed

    def make_timeout(self, total: float) -> Timeout:
        """A per-attempt timeout of ``total`` seconds (the connect part capped as configured).

        Build it once (per client, call or run) and pass it to :meth:`create_message`.
        """
        if not (total > 0 and math.isfinite(total)):
            raise ConfigurationError(f"timeout must be a positive number of seconds, got {total!r}")
        return aiohttp.ClientTimeout(total=total, connect=min(total, self._connect_timeout))

    async def close(self) -> None:
        """Close for good: an owned session is closed, a borrowed one is left open."""
        self._closed = True
        if self._owns_session and self._session is not None:
            await self._session.close()
        self._session = None

    def url(self, path: str) -> URL:
        """An API URL; ``path`` is already percent-encoded where it needs to be."""
        return URL(f"{self._base}{path}", encoded=True)

    async def auth_header(self) -> str:
        """The ``Authorization`` header, fetching an OAuth2 token first if needed.

        A token request that fails is classified by what it means for the request it was
        fetched for: that request never left, so a lost token answer is not ambiguous.
        """
        header = self.auth.cached_header()
        if header is None:
            try:
                header = await self.auth.header(self)
            except APIConnectionError as exc:
                if not exc.request_sent:
                    raise
                cls = APITimeoutError if isinstance(exc, APITimeoutError) else APIConnectionError
                raise cls(f"the OAuth2 token request failed ({exc}); nothing was sent", request_sent=False) from exc
        return header

    async def create_message(
        self, body: bytes, client_timeout: Timeout, header: str | None = None, *, _retried: bool = False
    ) -> Message:
        """POST a create; return the decoded 202 message or raise the mapped exception.

        ``header`` is the ``Authorization`` value when the caller just read it (the pipeline
        does, to fetch an OAuth2 token before the request may leave); else it is looked up.
        With OAuth2, a 401 (a token revoked or expired early) fetches a new token and tries
        once more: a 401 means the message was not sent, so this cannot duplicate it.
        """
        if header is None:
            header = self.auth.cached_header()
            if header is None:
                header = await self.auth_header()
        if header is not self._header_auth:
            self._header_auth = header
            self._create_headers = CIMultiDict(
                {
                    "Authorization": header,
                    "Content-Type": "application/json",
                    "Accept": "application/json",
                    "User-Agent": USER_AGENT,
                }
            )
        session = self._session
        if session is None or self._closed:
            session = self.session
        try:
            # Awaited directly rather than through ``async with``: one coroutine frame less per
            # request. Reading the body whole hands the connection back to the pool, so the
            # success path calls no ``release()`` (aiohttp: not required once the payload is
            # read); a read that fails or is cancelled releases the response here.
            resp = await session.post(self._create_url, data=body, headers=self._create_headers, timeout=client_timeout)
            try:
                data = await resp.read()
            except BaseException:
                resp.release()
                raise
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            _connection_error(exc)
        status = resp.status
        if status < 300:
            try:
                return decode_message(data)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                raise UnexpectedResponseError(
                    f"HTTP {status} but the body is not a message ({exc}); the message may have been sent"
                ) from exc
        error = status_error(status, resp.headers, data)
        if status == 401 and self.auth.refreshable and not _retried:
            self.auth.invalidate(header)
            return await self.create_message(body, client_timeout, _retried=True)
        raise error

    async def raw_request(
        self,
        method: str,
        url: str | URL,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        data: bytes | None = None,
        authenticated: bool = True,
    ) -> tuple[int, dict[str, str], bytes]:
        """Any other request: returns status, headers and body; connection failures are mapped."""
        all_headers = {"User-Agent": USER_AGENT}
        if headers:
            all_headers.update(headers)
        if authenticated:
            all_headers["Authorization"] = await self.auth_header()
        try:
            async with self.session.request(method, url, params=params, headers=all_headers, data=data) as resp:
                body = await resp.read()
                result = (resp.status, dict(resp.headers), body)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            _connection_error(exc)
        if result[0] == 401 and authenticated:
            self.auth.invalidate(all_headers["Authorization"])
        return result

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        data: bytes | None = None,
        ok: tuple[int, ...] = (200,),
    ) -> tuple[dict[str, str], bytes]:
        """An authenticated API request that must answer one of ``ok``; else the mapped error."""
        status, resp_headers, body = await self.raw_request(
            method, self.url(path), params=params, headers=headers, data=data
        )
        if status not in ok:
            raise status_error(status, resp_headers, body)
        return resp_headers, body
