"""``MessagingClient``: policy (auth, validation, rate limiting, retries); the transport does I/O."""

from __future__ import annotations

import copy
import os
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping
from types import TracebackType
from typing import Any, TypedDict, Unpack
from urllib.parse import parse_qsl, quote, urlsplit

import aiohttp
import msgspec
from yarl import URL

from ._auth import Auth, BasicCredentials, OAuth2Credentials
from ._constants import (
    DEFAULT_BASE_URL,
    DEFAULT_CONCURRENCY,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_TIMEOUT,
    DEFAULT_TOKEN_URL,
    FIRST_ROUND_SIZE,
)
from ._exceptions import APIError, ConfigurationError
from ._fanout import BeforeSend, RequestLike, SendResult, SendStream, SendSummary, _Core, send_one
from ._models import (
    ListFilters,
    ListMessageItem,
    Media,
    Message,
    MessageFields,
    MessageRequest,
    PageInfo,
    coerce_request,
    media_list_decoder,
    messages_list_decoder,
)
from ._pipeline import CappedLimiter, Gate, Pipeline, Slot
from ._ratelimit import AdaptiveLimiter, RateLimiter, TokenBucket
from ._retry import RetryPolicy, retry_after_failure
from ._transport import RequestOptions, Transport

__all__ = ["LIST_FILTERS", "MessagingClient", "SendManyOptions"]

#: ``list_messages`` filters: snake-case name (a key of :class:`ListFilters`) -> query parameter.
LIST_FILTERS: dict[str, str] = {
    name: name.split("_")[0] + "".join(p.title() for p in name.split("_")[1:]) for name in ListFilters.__annotations__
}
#: Filters that are paging controls rather than search criteria.
_NOT_CRITERIA = {"sort", "limit", "limit_total_count"}


class SendManyOptions(TypedDict, total=False):
    """The keyword options of :meth:`MessagingClient.send_many` (and ``send_all``)."""

    concurrency: int | None
    rate: float | None
    retry: RetryPolicy | None
    before_send: BeforeSend | None
    timeout: float | None


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


def _request_of(request: RequestLike | None, fields: MessageFields) -> RequestLike:
    """The request a single send was given, as a request object or as keyword fields."""
    if request is None:
        return dict(fields)
    if fields:
        raise TypeError("pass either a request or its fields, not both")
    return request


def _check_url(name: str, url: str) -> None:
    """An absolute http(s) URL, or :class:`ConfigurationError` before anything is sent (aiohttp
    would refuse it only once a request is under way, where it passes for a lost answer)."""
    try:
        parsed = URL(url)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"{name} must be an absolute http(s) URL, got {url!r}") from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ConfigurationError(f"{name} must be an absolute http(s) URL, got {url!r}")


def check_count(name: str, value: int, least: int, meaning: str = "") -> int:
    """A whole number ``>= least``, or :class:`ConfigurationError` before anything is sent: a
    fractional ``concurrency`` made a pool that never stopped growing, a string a ``TypeError``."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigurationError(f"{name} must be a whole number, got {value!r}")
    if value < least:
        raise ConfigurationError(f"{name} must be at least {least}{meaning}, got {value!r}")
    return value


def _policy(retry: RetryPolicy | None) -> RetryPolicy | None:
    """``retry`` if it is a :class:`RetryPolicy` (or None): another object would fail each send
    at its first attempt, reported as an unexpected failure instead of a clear error."""
    if retry is not None and not isinstance(retry, RetryPolicy):
        raise ConfigurationError(f"retry must be a RetryPolicy, not {type(retry).__name__}")
    return retry


class MessagingClient:
    """An asyncio client for Bandwidth's Messaging V2 API, built for many sends at once.

    >>> async with MessagingClient("9900000", username="token", password="secret") as client:
    ...     message = await client.create_message(
    ...         to="+15552223333", from_="+15553332222", text="Hello",
    ...         application_id="93de2206-9669-4e07-948d-329f4b722ee2")
    ...     print(message.id, message.segment_count)

    One pooled aiohttp session carries every request. Every send, single or bulk, goes through
    one pipeline (``_pipeline.py``): the same rate limiter (segments per second, per account and
    per sending number, slowing down on 429), the same retry policy, which never retries a send
    whose fate is unknown unless ``RetryPolicy(retry_ambiguous=True)`` asks for at-least-once
    delivery, and one in-flight cap: ``concurrency`` requests on the wire at most, counting
    ``create_message``, ``send`` and every concurrent ``send_many`` together.

    Give either ``rate`` (and ``burst``, ``per_sender_rate``, ``per_sender_burst``) for the
    built-in :class:`AdaptiveLimiter`, or a ``limiter`` of your own, not both. Pass
    ``session=`` to use an aiohttp session the application already owns; the client then never
    closes it. A closed client raises :class:`ClientClosedError` on every call.
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
            _check_url("token_url", token_url)
            auth = OAuth2Credentials(client_id, client_secret, token_url)
        else:
            raise ConfigurationError("credentials are required: username/password or client_id/client_secret")
        check_count("concurrency", concurrency, 1)
        check_count("connection_limit", connection_limit, 0, " (0: no limit)")
        _check_url("base_url", base_url)
        if limiter is not None:
            settings = (
                ("rate", rate),
                ("burst", burst),
                ("per_sender_rate", per_sender_rate),
                ("per_sender_burst", per_sender_burst),
            )
            given = [name for name, value in settings if value is not None]
            if given:
                raise ConfigurationError(
                    f"give either limiter= or {'/'.join(given)}=, not both: a limiter of your own carries its own rates"
                )
        self.account_id = account_id
        self.base_url = base_url.rstrip("/")
        self.concurrency = concurrency
        self._auth = auth
        transport = Transport(
            base_url=self.base_url,
            account_id=account_id,
            auth=auth,
            timeout=timeout,
            connect_timeout=connect_timeout,
            connection_limit=connection_limit,
            session=session,
        )
        self._transport = transport
        default_timeout = transport.make_timeout(timeout)
        self._pipeline = Pipeline(
            transport,
            limiter=limiter
            or AdaptiveLimiter(
                rate=rate, burst=burst, per_sender_rate=per_sender_rate, per_sender_burst=per_sender_burst
            ),
            policy=_policy(retry) or RetryPolicy(),
            gate=Gate(concurrency, first_round=FIRST_ROUND_SIZE),
            timeout=default_timeout,
        )

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

    @property
    def retry(self) -> RetryPolicy:
        """The retry policy of every send that does not pass its own."""
        return self._pipeline.policy

    @property
    def limiter(self) -> RateLimiter:
        """The account's rate limiter, shared by every send of this client (and its copies)."""
        return self._pipeline.limiter

    def with_options(
        self,
        *,
        retry: RetryPolicy | None = None,
        limiter: RateLimiter | None = None,
        timeout: float | None = None,
    ) -> MessagingClient:
        """A copy with other defaults, sharing this client's session, credentials and in-flight
        cap (``concurrency`` stays client-wide); it shares the limiter too unless given one::

            strict = client.with_options(retry=RetryPolicy(max_attempts=1), timeout=5.0)
        """
        clone = copy.copy(self)
        clone._pipeline = self._pipeline.derive(limiter=limiter, policy=_policy(retry), timeout=timeout)
        return clone

    async def __aenter__(self) -> MessagingClient:
        self._transport.session  # noqa: B018 - create the session inside the running loop (or raise if closed)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close for good (and every copy from :meth:`with_options`): the session if the client
        created it (a borrowed session is left open); later calls raise :class:`ClientClosedError`."""
        await self._transport.close()

    @property
    def closed(self) -> bool:
        return self._transport.closed

    def __repr__(self) -> str:
        return (
            f"MessagingClient(account_id={self.account_id!r}, base_url={self.base_url!r}, "
            f"auth={self._auth!r}, concurrency={self.concurrency}, limiter={self.limiter!r})"
        )

    @property
    def auth(self) -> Auth:
        return self._auth

    # --- Sending ------------------------------------------------------------------------------

    def _call_pipeline(self, retry: RetryPolicy | None, timeout: float | None) -> Pipeline:
        self._transport.check_open()
        return self._pipeline.derive(policy=_policy(retry), timeout=timeout)

    async def create_message(
        self,
        request: MessageRequest | Mapping[str, Any] | None = None,
        *,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - a per-attempt HTTP timeout, not a deadline for the call
        **fields: Unpack[MessageFields],
    ) -> Message:
        """Send one message; return Bandwidth's 202 answer.

        Either a :class:`MessageRequest` (or a dict) or its fields as keywords::

            await client.create_message(to=["+15552223333", "+15554443333"], from_="+15553332222",
                                        text="Group hello", application_id=APP_ID)

        ``timeout`` (seconds) bounds each attempt instead of the client's. Raises
        :class:`ValidationError` (nothing sent) or an :class:`APIError` whose
        ``may_have_been_sent`` says whether the message may have gone out; ``attempts`` says how
        many tries were made.
        """
        pipeline = self._call_pipeline(retry, timeout)
        message, _ = await pipeline.send(coerce_request(_request_of(request, fields)), Slot())
        return message

    async def send(
        self,
        request: MessageRequest | Mapping[str, Any] | None = None,
        *,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - a per-attempt HTTP timeout, not a deadline for the call
        **fields: Unpack[MessageFields],
    ) -> SendResult:
        """Send one message like :meth:`create_message`, but return its :class:`SendResult`
        (outcome, attempts, latency, error) instead of raising::

            result = await client.send(to="+15552223333", from_=NUMBER, text="Hi", application_id=APP_ID)
            if result.outcome is Outcome.AMBIGUOUS:
                ...  # the answer was lost: do not resend blindly
        """
        pipeline = self._call_pipeline(retry, timeout)
        return await send_one(pipeline, 0, _request_of(request, fields), Slot())

    def send_many(
        self,
        requests: Iterable[RequestLike] | AsyncIterable[RequestLike],
        *,
        concurrency: int | None = None,
        rate: float | None = None,
        retry: RetryPolicy | None = None,
        before_send: BeforeSend | None = None,
        timeout: float | None = None,
    ) -> SendStream:
        """Send every request, many at once; yield one :class:`SendResult` per input as each ends.

        ``requests`` is an iterable or async iterable of :class:`MessageRequest` or dicts,
        pulled only as capacity frees up (memory does not grow with it). ``concurrency`` is the
        number of inputs this run works on at once (the client's ``concurrency`` when omitted;
        the client's cap on requests in flight applies on top, across all runs). ``rate`` caps
        this run at that many segments per second *under* the client's limiter: both apply, and
        a 429 seen by any run slows every run of the client. ``timeout`` bounds each attempt. An
        invalid input is that input's result; it does not stop the run. Use ``async with`` to
        stop early in order::

            async with client.send_many(requests, concurrency=200) as results:
                async for result in results:
                    print(result.index, result.outcome, result.message and result.message.id)
        """
        concurrency = self.concurrency if concurrency is None else check_count("concurrency", concurrency, 1)
        if before_send is not None and not callable(before_send):
            raise ConfigurationError(f"before_send must be an async callable, not {type(before_send).__name__}")
        pipeline = self._call_pipeline(retry, timeout)
        if rate is not None:
            pipeline = pipeline.derive(limiter=CappedLimiter(pipeline.limiter, TokenBucket(rate)))
        core = _Core(pipeline, requests, concurrency=concurrency, before_send=before_send)
        return SendStream(core)

    async def send_all(
        self,
        requests: Iterable[RequestLike] | AsyncIterable[RequestLike],
        **options: Unpack[SendManyOptions],
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
        self, method: str, path: str, **options: Unpack[RequestOptions]
    ) -> tuple[dict[str, str], bytes]:
        """A GET/PUT/DELETE, retried on 429 (honouring Retry-After), 5xx and connection loss."""
        started = time.monotonic()

        async def once() -> tuple[dict[str, str], bytes]:
            return await self._transport.request(method, path, **options)

        try:
            return await once()
        except APIError as exc:
            result, _ = await retry_after_failure(once, exc, self.retry.with_(retry_ambiguous=True), started=started)
            return result

    async def list_messages(self, **filters: Unpack[ListFilters]) -> AsyncIterator[ListMessageItem]:
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
