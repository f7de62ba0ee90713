"""Credentials: HTTP Basic (a header built once) and OAuth2 client credentials (a cached token).

Neither class ever shows a secret in its ``repr``; neither logs one.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from time import monotonic
from typing import TYPE_CHECKING, ClassVar, Protocol

import msgspec

from ._constants import TOKEN_REFRESH_MARGIN
from ._exceptions import APIConnectionError, AuthenticationError

if TYPE_CHECKING:
    from ._transport import Transport

__all__ = ["Auth", "BasicCredentials", "OAuth2Credentials", "basic_header"]

log = logging.getLogger("bwasync")


def basic_header(username: str, password: str) -> str:
    """The value of an ``Authorization: Basic`` header."""
    raw = f"{username}:{password}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


class Auth(Protocol):
    """Supplies the ``Authorization`` header for each request."""

    #: Whether a refused header can be replaced by a fresh one (OAuth2) or not (Basic).
    refreshable: ClassVar[bool]

    def cached_header(self) -> str | None:
        """The header if it can be used right now without I/O, else None."""

    async def header(self, transport: Transport) -> str:
        """The header, fetching a fresh token first if needed."""

    def invalidate(self, header: str) -> None:
        """The server refused ``header`` (401): forget it if it is still the current one."""


class BasicCredentials:
    """API token and secret, sent as HTTP Basic on every request (the header is built once)."""

    __slots__ = ("_header", "username")
    refreshable: ClassVar[bool] = False

    def __init__(self, username: str, password: str) -> None:
        self.username = username
        self._header = basic_header(username, password)

    def cached_header(self) -> str:
        return self._header

    async def header(self, transport: Transport) -> str:
        return self._header

    def invalidate(self, header: str) -> None:
        """Basic credentials cannot be refreshed: a 401 is final."""

    def __repr__(self) -> str:
        return f"BasicCredentials(username={self.username!r}, password=***)"


class _TokenResponse(msgspec.Struct):
    access_token: str
    expires_in: float = 3600.0
    token_type: str = "Bearer"


_token_decoder = msgspec.json.Decoder(_TokenResponse)


class OAuth2Credentials:
    """OAuth2 client-credentials grant, with the token cached until shortly before it expires.

    However many sends need a token at once, one refresh is in flight: the others await it.
    """

    __slots__ = ("_client_header", "_expires_at", "_header", "_refresh", "client_id", "refreshes", "token_url")
    refreshable: ClassVar[bool] = True

    def __init__(self, client_id: str, client_secret: str, token_url: str) -> None:
        self.client_id = client_id
        self.token_url = token_url
        self._client_header = basic_header(client_id, client_secret)
        self._header: str | None = None
        self._expires_at = 0.0
        self._refresh: asyncio.Future[str] | None = None
        #: How many tokens were fetched (observable, for tests and diagnostics).
        self.refreshes = 0

    def cached_header(self) -> str | None:
        if self._header is not None and monotonic() < self._expires_at:
            return self._header
        return None

    async def header(self, transport: Transport) -> str:
        cached = self.cached_header()
        if cached is not None:
            return cached
        if self._refresh is None or self._refresh.done():
            self._refresh = asyncio.ensure_future(self._fetch(transport))
        # Shield: one waiter being cancelled must not cancel the refresh the others await.
        return await asyncio.shield(self._refresh)

    def invalidate(self, header: str) -> None:
        if header == self._header:
            self._header = None

    async def _fetch(self, transport: Transport) -> str:
        started = monotonic()
        status, _headers, body = await transport.raw_request(
            "POST",
            self.token_url,
            headers={"Authorization": self._client_header, "Content-Type": "application/x-www-form-urlencoded"},
            data=b"grant_type=client_credentials",
            authenticated=False,
        )
        if status != 200:
            raise AuthenticationError(
                status_code=status,
                type="unauthorized",
                description=f"the OAuth2 token endpoint refused the client credentials (HTTP {status})",
                body=body[:4096],
            )
        try:
            token = _token_decoder.decode(body)
        except msgspec.DecodeError as exc:
            raise APIConnectionError(f"unreadable OAuth2 token response: {exc}", request_sent=False) from exc
        self.refreshes += 1
        lifetime = max(token.expires_in - TOKEN_REFRESH_MARGIN, token.expires_in / 2)
        self._expires_at = started + lifetime
        self._header = f"Bearer {token.access_token}"
        log.debug("bwasync: fetched an OAuth2 token valid for %.0f s", token.expires_in)
        return self._header

    def __repr__(self) -> str:
        return f"OAuth2Credentials(client_id={self.client_id!r}, client_secret=***, token_url={self.token_url!r})"
