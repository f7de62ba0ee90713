"""``MessagingClient``: policy (auth, validation, rate limiting, retries); the transport does I/O."""

from __future__ import annotations

import asyncio
import copy
import os
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import aiohttp
import msgspec

from ._auth import Auth, BasicCredentials, OAuth2Credentials
from ._constants import (
    DEFAULT_BASE_URL,
    DEFAULT_CONCURRENCY,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_TIMEOUT,
    DEFAULT_TOKEN_URL,
)
from ._exceptions import APIError, ConfigurationError, RateLimitError, ValidationError
from ._fanout import (
    SENDING,
    WAITING,
    BeforeSend,
    Outcome,
    RequestLike,
    SendResult,
    SendStream,
    SendSummary,
    Slot,
    _Core,
    message_cost,
    send_one,
)
from ._models import (
    ListMessageItem,
    Media,
    Message,
    MessageRequest,
    PageInfo,
    coerce_request,
    encode_request,
    media_list_decoder,
    messages_list_decoder,
)
from ._ratelimit import AdaptiveLimiter, RateLimiter
from ._retry import RetryPolicy, retry_after_failure
from ._transport import Transport

__all__ = ["LIST_FILTERS", "MessagingClient"]

#: ``list_messages`` filters: snake-case name -> Bandwidth's query parameter.
LIST_FILTERS: dict[str, str] = {
    name: name.split("_")[0] + "".join(p.title() for p in name.split("_")[1:])
    for name in (
        "message_id",
        "source_tn",
        "destination_tn",
        "message_status",
        "message_direction",
        "carrier_name",
        "message_type",
        "error_code",
        "from_date_time",
        "to_date_time",
        "campaign_id",
        "from_bw_latency",
        "bw_queued",
        "product",
        "location",
        "carrier_queued",
        "from_carrier_latency",
        "from_segment_count",
        "to_segment_count",
        "from_message_size",
        "to_message_size",
        "sort",
        "limit",
        "limit_total_count",
    )
}
LIST_FILTERS["calling_number_country_a3"] = "callingNumberCountryA3"
LIST_FILTERS["called_number_country_a3"] = "calledNumberCountryA3"
#: Filters that are paging controls rather than search criteria.
_NOT_CRITERIA = {"sort", "limit", "limit_total_count"}
# Idempotent requests (GET/PUT/DELETE) may be retried even when ambiguous.
_IDEMPOTENT = RetryPolicy(retry_ambiguous=True)


def next_page_params(params: Mapping[str, str], info: PageInfo | None) -> dict[str, str] | None:
    """The query of the next list page, or None on the last one.

    The spec's ``nextPageToken`` goes in ``pageToken`` with the same filters. A ``pageInfo``
    with only the ``nextPage`` link (as Bandwidth's earlier docs show it) is followed by that
    link's own query. A page pointing at itself ends the walk rather than looping.
    """
    if info is None:
        return None
    if info.next_page_token:
        following = {**params, "pageToken": info.next_page_token}
    elif info.next_page:
        following = dict(parse_qsl(urlsplit(info.next_page).query, keep_blank_values=True))
    else:
        return None
    return None if following == dict(params) else following


def _query_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if hasattr(value, "isoformat"):
        return str(value.isoformat())
    if hasattr(value, "value"):
        return str(value.value)
    return str(value)


class MessagingClient:
    """An asyncio client for Bandwidth's Messaging V2 API, built for many sends at once.

    >>> async with MessagingClient("9900000", username="token", password="secret") as client:
    ...     message = await client.create_message(
    ...         to="+15552223333", from_="+15553332222", text="Hello",
    ...         application_id="93de2206-9669-4e07-948d-329f4b722ee2")
    ...     print(message.id, message.segment_count)

    One pooled aiohttp session carries every request. Every send, single or bulk, goes through
    the same rate limiter (segments per second, per account and per sending number, slowing
    down on 429) and the same retry policy, which never retries a send whose fate is unknown
    unless ``RetryPolicy(retry_ambiguous=True)`` asks for at-least-once delivery.

    Pass ``session=`` to use an aiohttp session the application already owns; the client then
    never closes it.
    """

    def __init__(
        self,
        account_id: str,
        *,
        username: str | None = None,
        password: str | None = None,
        client_id: str | None = None,
        client_secret: str | None = None,
        token_url: str = DEFAULT_TOKEN_URL,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        session: aiohttp.ClientSession | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        rate: float | None = None,
        burst: float | None = None,
        per_sender_rate: float | None = None,
        per_sender_burst: float | None = None,
        limiter: RateLimiter | None = None,
        retry: RetryPolicy | None = None,
        connection_limit: int = 0,
    ) -> None:
        if not account_id:
            raise ConfigurationError("account_id is required")
        auth: Auth
        if username is not None or password is not None:
            if not username or not password:
                raise ConfigurationError("Basic auth needs both username and password")
            if client_id is not None or client_secret is not None:
                raise ConfigurationError("give either username/password or client_id/client_secret, not both")
            auth = BasicCredentials(username, password)
        elif client_id is not None or client_secret is not None:
            if not client_id or not client_secret:
                raise ConfigurationError("OAuth2 needs both client_id and client_secret")
            auth = OAuth2Credentials(client_id, client_secret, token_url)
        else:
            raise ConfigurationError("credentials are required: username/password or client_id/client_secret")
        if concurrency < 1:
            raise ConfigurationError("concurrency must be at least 1")
        self.account_id = account_id
        self.base_url = base_url.rstrip("/")
        self.concurrency = concurrency
        self.retry = retry or RetryPolicy()
        self._auth = auth
        self._per_sender = (per_sender_rate, per_sender_burst)
        self.limiter: RateLimiter = limiter or AdaptiveLimiter(
            rate=rate, burst=burst, per_sender_rate=per_sender_rate, per_sender_burst=per_sender_burst
        )
        self._transport = Transport(
            base_url=self.base_url,
            account_id=account_id,
            auth=auth,
            timeout=aiohttp.ClientTimeout(total=timeout, connect=connect_timeout),
            connection_limit=connection_limit,
            session=session,
        )
        self._gate: asyncio.Semaphore | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> MessagingClient:
        """Build from ``BW_ACCOUNT_ID``, ``BW_USERNAME``/``BW_PASSWORD`` or
        ``BW_CLIENT_ID``/``BW_CLIENT_SECRET`` (and ``BW_TOKEN_URL``), and ``BW_MESSAGING_URL``;
        keyword ``overrides`` win over the environment."""
        env = os.environ if env is None else env
        account_id = overrides.pop("account_id", None) or env.get("BW_ACCOUNT_ID")
        if not account_id:
            raise ConfigurationError("BW_ACCOUNT_ID is not set (the Bandwidth account id)")
        kwargs: dict[str, Any] = {}
        if env.get("BW_USERNAME") or env.get("BW_PASSWORD"):
            kwargs.update(username=env.get("BW_USERNAME") or None, password=env.get("BW_PASSWORD") or None)
            if not kwargs["username"] or not kwargs["password"]:
                missing = "BW_USERNAME" if not kwargs["username"] else "BW_PASSWORD"
                raise ConfigurationError(f"{missing} is not set (Basic auth needs BW_USERNAME and BW_PASSWORD)")
        elif env.get("BW_CLIENT_ID") or env.get("BW_CLIENT_SECRET"):
            kwargs.update(client_id=env.get("BW_CLIENT_ID") or None, client_secret=env.get("BW_CLIENT_SECRET") or None)
            if not kwargs["client_id"] or not kwargs["client_secret"]:
                missing = "BW_CLIENT_ID" if not kwargs["client_id"] else "BW_CLIENT_SECRET"
                raise ConfigurationError(f"{missing} is not set (OAuth2 needs BW_CLIENT_ID and BW_CLIENT_SECRET)")
        elif not any(k in overrides for k in ("username", "client_id")):
            raise ConfigurationError(
                "no credentials: set BW_USERNAME and BW_PASSWORD, or BW_CLIENT_ID and BW_CLIENT_SECRET"
            )
        if env.get("BW_MESSAGING_URL"):
            kwargs["base_url"] = env["BW_MESSAGING_URL"]
        if env.get("BW_TOKEN_URL") and "client_id" in kwargs:
            kwargs["token_url"] = env["BW_TOKEN_URL"]
        kwargs.update(overrides)
        return cls(account_id, **kwargs)

    def with_options(
        self,
        *,
        retry: RetryPolicy | None = None,
        concurrency: int | None = None,
        limiter: RateLimiter | None = None,
    ) -> MessagingClient:
        """A copy sharing this client's session and credentials, with other defaults."""
        clone = copy.copy(self)
        if retry is not None:
            clone.retry = retry
        if concurrency is not None:
            clone.concurrency = concurrency
            clone._gate = None
        if limiter is not None:
            clone.limiter = limiter
        return clone

    async def __aenter__(self) -> MessagingClient:
        self._transport.session  # noqa: B018 - create the session inside the running loop
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the session if the client created it (a borrowed session is left open)."""
        await self._transport.close()

    def __repr__(self) -> str:
        return (
            f"MessagingClient(account_id={self.account_id!r}, base_url={self.base_url!r}, "
            f"auth={self._auth!r}, concurrency={self.concurrency}, limiter={self.limiter!r})"
        )

    @property
    def auth(self) -> Auth:
        return self._auth

    # --- Sending ------------------------------------------------------------------------------

    def _in_flight_gate(self) -> asyncio.Semaphore:
        """The cap on single sends in flight (``concurrency``), made inside the running loop."""
        if self._gate is None:
            self._gate = asyncio.Semaphore(self.concurrency)
        return self._gate

    async def _attempt(
        self,
        body: bytes,
        cost: int,
        sender: str,
        limiter: RateLimiter,
        slot: Slot,
        before_send: Any,
        gate: asyncio.Semaphore | None,
    ) -> Message:
        """One attempt: wait for the limiter, (first attempt) run the hook, POST.

        ``slot.stage`` tells a stop where the send stands: only a cancellation while SENDING
        leaves the request's fate unknown.
        """
        slot.stage = WAITING
        await limiter.acquire(cost, sender=sender)
        if before_send is not None or gate is not None:
            try:
                if before_send is not None:
                    await before_send()
                if gate is not None:
                    await gate.acquire()
            except BaseException:
                limiter.release(cost, sender=sender)
                raise
        slot.stage = SENDING
        slot.sent_at = time.monotonic()
        try:
            message = await self._transport.create_message(body)
        except RateLimitError as exc:
            slot.stage = WAITING
            limiter.report_rate_limited(sender=sender, retry_after=exc.retry_after)
            raise
        except APIError as exc:
            slot.stage = WAITING
            if exc.may_have_been_sent:
                slot.maybe_sent = True
            raise
        finally:
            if gate is not None:
                gate.release()
        slot.stage = WAITING
        limiter.report_success(cost, sender=sender)
        return message

    async def _retry(
        self,
        first: APIError,
        body: bytes,
        cost: int,
        sender: str,
        limiter: RateLimiter,
        policy: RetryPolicy,
        started: float,
        slot: Slot,
        gate: asyncio.Semaphore | None,
    ) -> tuple[Message, int]:
        """After a failed first attempt: retry under ``policy``; (message, attempts in all)."""

        def again() -> Any:
            return self._attempt(body, cost, sender, limiter, slot, None, gate)

        return await retry_after_failure(again, first, policy, started=started)

    async def create_message(
        self,
        request: MessageRequest | Mapping[str, Any] | None = None,
        *,
        retry: RetryPolicy | None = None,
        **fields: Any,
    ) -> Message:
        """Send one message; return Bandwidth's 202 answer.

        Either a :class:`MessageRequest` (or a dict) or its fields as keywords::

            await client.create_message(to=["+15552223333", "+15554443333"], from_="+15553332222",
                                        text="Group hello", application_id=APP_ID)

        Raises :class:`ValidationError` (nothing sent) or an :class:`APIError` whose
        ``may_have_been_sent`` says whether the message may have gone out; ``attempts`` says how
        many tries were made.
        """
        if request is None:
            request = MessageRequest(**fields)
        elif fields:
            raise TypeError("pass either a request or its fields, not both")
        else:
            request = coerce_request(request)
        gate = self._in_flight_gate()
        body, cost, sender = encode_request(request), message_cost(request), request.from_
        started = time.monotonic()
        slot = Slot()
        try:
            return await self._attempt(body, cost, sender, self.limiter, slot, None, gate)
        except APIError as exc:
            message, _ = await self._retry(
                exc, body, cost, sender, self.limiter, retry or self.retry, started, slot, gate
            )
            return message

    async def send(
        self,
        request: MessageRequest | Mapping[str, Any] | None = None,
        *,
        retry: RetryPolicy | None = None,
        **fields: Any,
    ) -> SendResult:
        """Send one message like :meth:`create_message`, but return its :class:`SendResult`
        (outcome, attempts, latency, error) instead of raising::

            result = await client.send(to="+15552223333", from_=NUMBER, text="Hi", application_id=APP_ID)
            if result.outcome is Outcome.AMBIGUOUS:
                ...  # the answer was lost: do not resend blindly
        """
        raw: RequestLike
        if request is None:
            try:
                raw = MessageRequest(**fields)
            except ValidationError as exc:
                return SendResult(index=0, outcome=Outcome.NOT_SENT, error=exc)
        elif fields:
            raise TypeError("pass either a request or its fields, not both")
        else:
            raw = request
        return await send_one(self, 0, raw, Slot(), self.limiter, retry or self.retry, gate=self._in_flight_gate())

    def send_many(
        self,
        requests: Iterable[RequestLike] | AsyncIterable[RequestLike],
        *,
        concurrency: int | None = None,
        rate: float | None = None,
        retry: RetryPolicy | None = None,
        before_send: BeforeSend | None = None,
    ) -> SendStream:
        """Send every request, many at once; yield one :class:`SendResult` per input as each ends.

        ``requests`` is an iterable or async iterable of :class:`MessageRequest` or dicts,
        pulled only as capacity frees up (memory does not grow with it). ``concurrency`` is the
        number of requests in flight (the client's default when omitted); ``rate`` throttles
        this run to that many segments per second (else the client's limiter applies: unthrottled
        until the first 429 unless the client was given a rate). An invalid input is that
        input's result; it does not stop the run. Use ``async with`` to stop early in order::

            async with client.send_many(requests, concurrency=200) as results:
                async for result in results:
                    print(result.index, result.outcome, result.message and result.message.id)
        """
        limiter = self.limiter
        if rate is not None:
            per_rate, per_burst = self._per_sender
            limiter = AdaptiveLimiter(rate=rate, per_sender_rate=per_rate, per_sender_burst=per_burst)
        core = _Core(
            self,
            requests,
            concurrency=concurrency or self.concurrency,
            limiter=limiter,
            policy=retry or self.retry,
            before_send=before_send,
        )
        return SendStream(core)

    async def send_all(
        self,
        requests: Iterable[RequestLike] | AsyncIterable[RequestLike],
        **options: Any,
    ) -> tuple[list[SendResult], SendSummary]:
        """Send everything (as :meth:`send_many`); return all results by input order and totals."""
        summary = SendSummary()
        results: list[SendResult] = []
        started = time.monotonic()
        async with self.send_many(requests, **options) as stream:
            async for result in stream:
                results.append(result)
        results.extend(stream.unconsumed)
        for result in results:
            summary.add(result)
        summary.elapsed = time.monotonic() - started
        results.sort(key=lambda r: r.index)
        return results, summary

    # --- Listing and media -------------------------------------------------------------------

    async def _idempotent(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        data: bytes | None = None,
        ok: tuple[int, ...] = (200,),
    ) -> tuple[dict[str, str], bytes]:
        """A GET/PUT/DELETE, retried on 429 (honouring Retry-After), 5xx and connection loss."""
        started = time.monotonic()

        async def once() -> tuple[dict[str, str], bytes]:
            return await self._transport.request(method, path, params=params, headers=headers, data=data, ok=ok)

        try:
            return await once()
        except APIError as exc:
            result, _ = await retry_after_failure(once, exc, self.retry.with_(retry_ambiguous=True), started=started)
            return result

    async def list_messages(self, **filters: Any) -> AsyncIterator[ListMessageItem]:
        """Every message matching the filters, across all pages.

        Filters are the spec's query parameters in snake case (``source_tn``,
        ``destination_tn``, ``message_status``, ``from_date_time``...); Bandwidth requires at
        least one::

            async for item in client.list_messages(source_tn="+15553332222", message_status="DELIVERED"):
                print(item.message_id, item.destination_tn)
        """
        unknown = sorted(set(filters) - set(LIST_FILTERS))
        if unknown:
            raise TypeError(f"unknown list_messages filter(s): {', '.join(unknown)}")
        params = {LIST_FILTERS[k]: _query_value(v) for k, v in filters.items() if v is not None}
        if not any(k not in _NOT_CRITERIA for k, v in filters.items() if v is not None):
            raise ConfigurationError("list_messages needs at least one filter (Bandwidth requires one)")
        path = f"/users/{quote(self.account_id, safe='')}/messages"
        while True:
            _, body = await self._idempotent("GET", path, params=params)
            page = messages_list_decoder.decode(body)
            for item in page.messages:
                yield item
            following = next_page_params(params, page.page_info) if page.messages else None
            if following is None:
                return
            params = following

    def _media_path(self, media_id: str) -> str:
        if not media_id:
            raise ValueError("media_id must not be empty")
        return f"/users/{quote(self.account_id, safe='')}/media/{quote(media_id, safe='/')}"

    async def upload_media(
        self,
        media_id: str,
        content: bytes,
        *,
        content_type: str = "application/octet-stream",
        cache_control: str | None = None,
    ) -> None:
        """Upload (or overwrite) a media file; ``media_id`` may contain ``/``."""
        headers = {"Content-Type": content_type}
        if cache_control:
            headers["Cache-Control"] = cache_control
        await self._idempotent("PUT", self._media_path(media_id), headers=headers, data=content, ok=(200, 201, 204))

    async def get_media(self, media_id: str) -> bytes:
        """Download a media file."""
        _, body = await self._idempotent("GET", self._media_path(media_id))
        return body

    async def delete_media(self, media_id: str) -> None:
        """Delete a media file."""
        await self._idempotent("DELETE", self._media_path(media_id), ok=(200, 204))

    async def list_media(self) -> AsyncIterator[Media]:
        """Every media file of the account, following ``Continuation-Token`` pages."""
        path = f"/users/{quote(self.account_id, safe='')}/media"
        token: str | None = None
        while True:
            headers = {"Continuation-Token": token} if token else None
            resp_headers, body = await self._idempotent("GET", path, headers=headers)
            try:
                items = media_list_decoder.decode(body)
            except msgspec.DecodeError:
                items = []
            for item in items:
                yield item
            token = next((v for k, v in resp_headers.items() if k.lower() == "continuation-token"), None)
            if not token or not items:
                return
