"""The emulator: Bandwidth's messaging endpoints served by aiohttp on loopback, all in memory.

This is the only module of the emulator that touches aiohttp's server. Handlers check in
Bandwidth's order (auth 401, account 403, content type 415, body 400, sender 403, queue 429),
then record the message, schedule its callbacks and answer 202. Faults are drawn once per
create request: ``500``/``503``/``502_html``/``drop_before`` replace the whole answer (the
message is *not* accepted); ``drop_after``/``slow`` happen after acceptance.

The create path is kept lean for benchmarks: no access log, one msgspec decode and encode,
static error bodies, a header-string compare for Basic auth, and no allocation for the record
when ``record=False`` and no callback URL is set. One middleware stands last in line: whatever
a malformed request makes a handler raise becomes a logged 400 in Bandwidth's error shape
(:meth:`Emulator._malformed`), never a 500; the only 500s are the injected faults.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import bisect
import collections
import dataclasses
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import msgspec
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage
from multidict import CIMultiDict

from .._auth import basic_header
from .._segments import segments, total_segments
from .._validation import decode_json, parse_rfc3339, validate_wire
from .._webhook import UNREADABLE_BODY, server_logger, unreadable
from . import _bodies as bodies
from ._callbacks import CallbackDispatcher
from ._config import EmulatorConfig
from ._listing import ListQueryError, list_items, page, parse_query
from ._state import (
    AcceptedMessage,
    AccountQueue,
    EmulatorStats,
    IdFactory,
    TokenStore,
    WindowLimiter,
    encode_token,
    iso_ms,
    queue_full_description,
)

__all__ = ["Emulator", "StoredMedia"]

API_PREFIX = "/api/v2"
TOKEN_PATH = "/api/v1/oauth2/token"
#: Media uploads can be a few MB (MMS allows 3.5 MB); aiohttp's default cap is 1 MiB.
MAX_BODY = 64 * 1024 * 1024

_JSON = "application/json"
_JSON_HEADERS = CIMultiDict({"Content-Type": _JSON})
_HTML_HEADERS = CIMultiDict({"Content-Type": "text/html"})
_TOKEN_HEADERS = CIMultiDict({"Content-Type": _JSON, "Cache-Control": "no-store", "Pragma": "no-cache"})
_ECHOED = ("text", "media", "tag", "priority", "expiration")
_decoder = msgspec.json.Decoder()
log = logging.getLogger("bwasync.emulator")
_encode = bodies.encode

#: Faults that replace the answer before anything is accepted (``drop_after`` and ``slow`` follow
#: acceptance and are handled where the answer is written).
_BEFORE = ("drop_before", "500", "503", "502_html")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclasses.dataclass(slots=True)
class StoredMedia:
    """An uploaded media file: its bytes and the headers it was uploaded with."""

    data: bytes
    content_type: str
    cache_control: str | None = None


def _stream(seed: int | None, name: str) -> random.Random:
    # One independent stream per purpose, so that e.g. enabling callbacks cannot shift which
    # requests get a fault. A str seed is hashed with SHA-512: the same in every process.
    return random.Random(f"{seed}/{name}") if seed is not None else random.Random()


class Emulator:
    """Bandwidth's Messaging V2 endpoints, in memory, on ``127.0.0.1``.

    >>> async with Emulator(username="u", password="p", dequeue_rate=10) as emu:  # doctest: +SKIP
    ...     client = Client(base_url=emu.url, username="u", password="p")
    ...     ...
    ...     assert emu.acceptance_counts()["my-tag"] == 1

    Knobs are the fields of :class:`EmulatorConfig`, given as keywords or as ``config=``
    (keywords then override it); ``emu.config`` stays mutable while running. ``clock`` (the
    event loop's by default) drives the queue model, token expiry and the list rate limit;
    a test can pass its own to step time by hand.
    """

    def __init__(
        self,
        config: EmulatorConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] | None = None,
        shutdown_timeout: float = 1.0,
        **knobs: Any,
    ) -> None:
        if config is None:
            config = EmulatorConfig(**knobs)
        elif knobs:
            config = dataclasses.replace(config, **knobs)
        self._config = config
        self.host = host
        self.port = port
        self.stats = EmulatorStats()
        #: Ground truth: every accepted message, in acceptance order (empty when ``record=False``).
        self.accepted: list[AcceptedMessage] = []
        self.media: dict[str, dict[str, StoredMedia]] = {}
        self._clock = clock
        self._now: Callable[[], float] = clock or time.monotonic
        self._shutdown_timeout = shutdown_timeout
        self._queues: dict[str, AccountQueue] = {}
        self._tokens = TokenStore()
        self._list_limiter = WindowLimiter()
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._basic_for: tuple[str | None, str | None] = (None, None)
        self._basic_header: str | None = None
        seed = config.seed
        self._fault_rng = _stream(seed, "faults")
        self._sporadic_rng = _stream(seed, "sporadic-429")
        # Bodies answered a sporadic 429 and not retried yet: their retry is let through.
        self._sporadic_pending: set[int] = set()
        self._jitter_rng = _stream(seed, "jitter")
        self._outcome_rng = _stream(seed, "outcomes")
        self._ids = IdFactory(_stream(seed, "ids"))
        self._callbacks = CallbackDispatcher(
            config, self.stats, _stream(seed, "duplicates"), self._now, replies=_stream(seed, "replies")
        )
        self.app = self._build_app()

    @property
    def config(self) -> EmulatorConfig:
        """The knobs, read on every request: change a field (or assign a new config) mid-run."""
        return self._config

    @config.setter
    def config(self, config: EmulatorConfig) -> None:
        config.check()
        self._config = config
        self._callbacks.config = config

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind and serve; ``url`` is valid afterwards."""
        if self._runner is not None:
            raise RuntimeError("the emulator is already running")
        self.config.check()
        runner = web.AppRunner(
            self.app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=self._shutdown_timeout,
            logger=server_logger("bwasync.emulator.http"),
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port, backlog=1024)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = runner.addresses[0][1]

    async def stop(self) -> None:
        """Stop serving: slow answers are dropped, callbacks cancelled, the session closed."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _on_startup(self, app: web.Application) -> None:
        self._now = self._clock or asyncio.get_running_loop().time
        self._closing.clear()
        await self._callbacks.start(self._now)

    async def _on_shutdown(self, app: web.Application) -> None:
        # Wakes the handlers sleeping on a "slow" answer, so shutdown does not wait for them.
        self._closing.set()

    async def _on_cleanup(self, app: web.Application) -> None:
        await self._callbacks.close()

    # --- public helpers -------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The client's ``base_url``: ``http://127.0.0.1:PORT/api/v2``."""
        return self.base_url + API_PREFIX

    @property
    def token_url(self) -> str:
        """The OAuth2 client-credentials endpoint."""
        return self.base_url + TOKEN_PATH

    def acceptance_counts(self, key: str = "tag") -> collections.Counter[Any]:
        """How many times each value of ``key`` was accepted; a duplicate send shows as > 1.

        ``key`` is a record attribute (``tag``, ``text``, ``id``, ``from_``...) or its wire
        name (``from``, ``applicationId``...). List values are counted as tuples.
        """
        attr = {"from": "from_", "applicationId": "application_id", "segmentCount": "segment_count"}.get(key, key)
        counts: collections.Counter[Any] = collections.Counter()
        for msg in self.accepted:
            value = getattr(msg, attr)
            counts[tuple(value) if isinstance(value, list) else value] += 1
        return counts

    async def drain_callbacks(self) -> None:
        """Wait until every scheduled callback is delivered or given up (for tests and demos)."""
        await self._callbacks.drain()

    def set_dequeue_rate(self, rate: float | None) -> None:
        """Change the account dequeue rate now, while running (``None``: unlimited).

        What is queued has drained at the old rate up to this instant and drains at the new one
        from now on; a queue above the new capacity refuses everything until it is below it.
        """
        old = self._config.dequeue_rate
        if rate is not None and not rate > 0:
            raise ValueError("dequeue_rate must be positive (or None for unlimited)")
        now = self._now()
        for queue in self._queues.values():
            if old is not None:
                queue.drain(now, old)
            else:
                queue.level = 0.0
        self._config.dequeue_rate = rate

    def reset(self) -> None:
        """Forget accepted messages and counters and empty the queues; media and tokens stay."""
        self.accepted.clear()
        self._queues.clear()
        stats = EmulatorStats()
        for f in dataclasses.fields(stats):
            setattr(self.stats, f.name, getattr(stats, f.name))

    def __repr__(self) -> str:
        state = self.url if self._runner is not None else "stopped"
        return f"<Emulator {state} accepted={self.stats.accepted} requests={self.stats.requests}>"

    # --- routing ----------------------------------------------------------------------------------

    def _build_app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY, middlewares=[self._last_resort])
        app.on_startup.append(self._on_startup)
        app.on_shutdown.append(self._on_shutdown)
        app.on_cleanup.append(self._on_cleanup)
        r = app.router
        messages = API_PREFIX + "/users/{accountId}/messages"
        media_list = API_PREFIX + "/users/{accountId}/media"
        media_one = media_list + "/{mediaId:.+}"
        r.add_post(messages, self._create)
        r.add_get(messages, self._list, allow_head=False)
        r.add_route("*", messages, self._not_allowed("GET, POST"))
        r.add_get(media_list, self._media_list, allow_head=False)
        r.add_route("*", media_list, self._not_allowed("GET"))
        r.add_get(media_one, self._media_get, allow_head=False)
        r.add_put(media_one, self._media_put)
        r.add_delete(media_one, self._media_delete)
        r.add_route("*", media_one, self._not_allowed("GET, PUT, DELETE"))
        r.add_post(TOKEN_PATH, self._token)
        r.add_route("*", TOKEN_PATH, self._not_allowed("POST"))
        # Last: anything no route above serves gets the gateway's Spring-style 404.
        r.add_route("*", "/{tail:.*}", self._not_found)
        return app

    # --- malformed requests --------------------------------------------------------------------------

    def _malformed(
        self, request: web.Request, description: str, exc: BaseException | None = None, *, unexpected: bool = False
    ) -> web.Response:
        """The one answer to a request this server cannot read: a logged 400 in Bandwidth's
        error shape (the OAuth2 one on the token endpoint). ``unexpected`` logs the traceback."""
        log.warning(
            "emulator: malformed %s %s: %s",
            request.method,
            request.path,
            description,
            exc_info=exc if unexpected else None,
        )
        return self._reply(400, bodies.malformed(description, oauth=request.path == TOKEN_PATH))

    @web.middleware
    async def _last_resort(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Whatever a request makes a handler raise is that request's fault: a 400, never a 500.

        The handlers reject what they know to be malformed themselves; this catches the rest
        (a header no decoder expected, a body that breaks a parser) and logs it with its
        traceback, so a gap in a handler's checks shows up without failing the client.
        """
        try:
            return await handler(request)
        except web.HTTPException:
            raise  # aiohttp's own answers (413 body too large...) are already 4xx
        except UNREADABLE_BODY as exc:  # a body aiohttp cannot decode, a client gone halfway: not a gap
            return self._malformed(request, f"the body could not be read: {unreadable(exc)}", exc)
        except Exception as exc:
            return self._malformed(
                request, f"the request could not be read ({type(exc).__name__})", exc, unexpected=True
            )

    # --- responses ----------------------------------------------------------------------------------

    def _reply(
        self,
        status: int,
        body: bytes,
        headers: CIMultiDict[str] = _JSON_HEADERS,
        *,
        extra: dict[str, str] | None = None,
    ) -> web.Response:
        self.stats.by_status[status] += 1
        resp = web.Response(body=body, status=status, headers=headers)
        if extra:
            resp.headers.update(extra)
        return resp

    def _drop(self, request: web.Request) -> web.Response:
        """Close the connection under the request so the client gets no HTTP response at all.

        aiohttp then fails to write the response we return (the transport is closing), treats
        it as a premature client disconnection and logs nothing; the client sees EOF/reset.
        """
        transport = request.transport
        if transport is not None:
            transport.abort()
        return web.Response(status=204)

    async def _later(self, resp: web.StreamResponse, delay: float) -> web.StreamResponse:
        await asyncio.sleep(delay)
        return resp

    # --- auth ------------------------------------------------------------------------------------

    def _authorized(self, header: str | None) -> bool:
        if header is None:
            return False
        cfg = self.config
        if cfg.username is not self._basic_for[0] or cfg.password is not self._basic_for[1]:
            self._basic_for = (cfg.username, cfg.password)
            self._basic_header = None if cfg.username is None else basic_header(cfg.username, cfg.password or "")
        if header == self._basic_header:
            return True
        scheme, _, value = header.partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer":
            return self._tokens.valid(value.strip(), self._now())
        if scheme == "basic":
            creds = _basic_credentials(value)
            return creds is not None and (cfg.username is None or creds == (cfg.username, cfg.password or ""))
        return False

    def _gate(self, request: web.Request) -> web.Response | None:
        """401 or 403 for a request that may not use this account, else None."""
        if not self._authorized(request.headers.get("Authorization")):
            return self._reply(401, bodies.UNAUTHORIZED)
        account = self.config.account_id
        if account is not None and request.match_info["accountId"] != account:
            return self._reply(403, bodies.FORBIDDEN)
        return None

    # --- create -----------------------------------------------------------------------------------

    def _roll_fault(self) -> str | None:
        cfg = self.config
        u = self._fault_rng.random()
        for kind, p in (
            ("drop_before", cfg.p_drop_before),
            ("500", cfg.p_500),
            ("503", cfg.p_503),
            ("502_html", cfg.p_502_html),
            ("drop_after", cfg.p_drop_after),
            ("slow", cfg.p_slow),
        ):
            if u < p:
                return kind
            u -= p
        return None

    async def _create(self, request: web.Request) -> web.StreamResponse:
        stats = self.stats
        stats.requests += 1
        stats.creates += 1
        stats.creates_in_flight += 1
        if stats.creates_in_flight > stats.max_creates_in_flight:
            stats.max_creates_in_flight = stats.creates_in_flight
        try:
            return await self._answer_create(request)
        finally:
            stats.creates_in_flight -= 1

    async def _answer_create(self, request: web.Request) -> web.StreamResponse:
        stats = self.stats
        cfg = self.config
        fault = None
        if cfg.p_drop_before or cfg.p_500 or cfg.p_503 or cfg.p_502_html or cfg.p_drop_after or cfg.p_slow:
            fault = self._roll_fault()
        delay = cfg.latency
        if cfg.jitter:
            delay += cfg.jitter * self._jitter_rng.random()

        if fault in _BEFORE:
            stats.faults[fault] += 1
            if fault == "drop_before":
                # Read the request first: from the client's side this is the ambiguous case
                # (the request left, no answer came), indistinguishable from drop_after.
                await request.read()
                if delay:
                    await asyncio.sleep(delay)
                return self._drop(request)
            if fault == "502_html":
                resp = self._reply(502, bodies.BAD_GATEWAY_HTML, _HTML_HEADERS)
            else:
                resp = self._reply(
                    500 if fault == "500" else 503,
                    bodies.INTERNAL_ERROR if fault == "500" else bodies.SERVICE_UNAVAILABLE,
                )
            return await self._later(resp, delay) if delay else resp

        if cfg.p_429 and await self._sporadic_429(request, cfg.p_429):
            stats.faults["429"] += 1
            after = cfg.p_429_retry_after
            resp = self._reply(
                429, bodies.LIST_RATE_LIMITED, extra=None if after is None else {"Retry-After": str(after)}
            )
            return await self._later(resp, delay) if delay else resp

        result = await self._accept(request, cfg)
        if isinstance(result, web.Response):
            return await self._later(result, delay) if delay else result

        if fault == "drop_after":
            stats.faults[fault] += 1
            if delay:
                await asyncio.sleep(delay)
            return self._drop(request)
        if fault == "slow":
            stats.faults[fault] += 1
            try:
                await asyncio.wait_for(self._closing.wait(), cfg.slow_seconds + delay)
            except TimeoutError:
                pass
            else:
                return self._drop(request)  # shutting down: do not hold the server up
            delay = 0.0
        resp = self._reply(202, result)
        return await self._later(resp, delay) if delay else resp

    async def _sporadic_429(self, request: web.Request, p: float) -> bool:
        """Whether this create gets a rate-independent 429: a first attempt, with probability ``p``."""
        key = hash(await request.read())
        if key in self._sporadic_pending:
            self._sporadic_pending.discard(key)  # the retry of a body picked before
            return False
        if self._sporadic_rng.random() < p:
            self._sporadic_pending.add(key)
            return True
        return False

    async def _accept(self, request: web.Request, cfg: EmulatorConfig) -> web.Response | bytes:
        """Run every check; on success record the message and return the 202 body."""
        denied = self._gate(request)
        if denied is not None:
            return denied
        ctype = request.headers.get("Content-Type")
        if ctype != _JSON and (ctype is None or ctype.partition(";")[0].strip().lower() != _JSON):
            return self._reply(415, bodies.unsupported_content_type(ctype or "application/octet-stream"))
        raw = await request.read()
        body, not_json = decode_json(raw, _decoder)
        if not_json is not None:
            return self._reply(400, bodies.validation_failed([not_json]))
        errors = validate_wire(body)
        if errors:
            return self._reply(400, bodies.validation_failed(errors))
        sender: str = body["from"]
        if cfg.allowed_senders is not None and sender not in cfg.allowed_senders:
            return self._reply(403, bodies.FORBIDDEN)

        to = body["to"]
        if isinstance(to, str):
            to = [to]
        text = body.get("text")
        media = body.get("media") or None
        count = 1 if media else segments(text).segments
        cost = total_segments(count, len(to))
        account: str = request.match_info["accountId"]
        now = self._now()
        wait = 0.0
        rate = cfg.dequeue_rate
        if rate is not None:
            queue = self._queues.get(account)
            if queue is None:
                queue = self._queues[account] = AccountQueue()
            admitted = queue.admit(cost, now, rate, cfg.queue_seconds)
            if admitted is None:
                extra = None if cfg.retry_after_on_429 is None else {"Retry-After": str(cfg.retry_after_on_429)}
                body_429 = bodies.error(
                    "max-message-queue-size-exceeded", queue_full_description(rate, cfg.queue_seconds)
                )
                return self._reply(429, body_429, extra=extra)
            wait = admitted

        ms = time.time_ns() // 1_000_000
        stamp = iso_ms(ms)
        out: dict[str, Any] = {
            "id": self._ids.new(ms),
            "owner": sender,
            "applicationId": body["applicationId"],
            "time": stamp,
            "segmentCount": count,
            "direction": "out",
            "to": to,
            "from": sender,
        }
        for key in _ECHOED:
            value = body.get(key)
            if value is not None:
                out[key] = value

        self.stats.accepted += 1
        self.stats.segments += cost
        callback_url = cfg.callback_url
        if cfg.record or callback_url:
            msg = self._record(out, account, media, now, wait, ms, cfg)
            if cfg.record:
                self.accepted.append(msg)
            if callback_url:
                self._callbacks.schedule(msg, callback_url)
        return _encode(out)

    def _record(
        self,
        out: dict[str, Any],
        account: str,
        media: list[str] | None,
        now: float,
        wait: float,
        ms: int,
        cfg: EmulatorConfig,
    ) -> AcceptedMessage:
        to: list[str] = out["to"]
        expiration = out.get("expiration")
        expired = False
        if expiration is not None:
            expires = parse_rfc3339(expiration)
            # Bandwidth checks expiration when the message leaves the queue, not on arrival.
            expired = expires is not None and expires.timestamp() <= ms / 1000 + wait
        error_codes: list[int] | None = None
        p_delivered = cfg.p_delivered
        if p_delivered < 1.0 and not expired:
            rng = self._outcome_rng
            codes = [0 if rng.random() < p_delivered else rng.choice(cfg.failure_codes) for _ in to]
            error_codes = codes if any(codes) else None
        return AcceptedMessage(
            id=out["id"],
            account_id=account,
            application_id=out["applicationId"],
            from_=out["from"],
            to=to,
            text=out.get("text"),
            media=media,
            tag=out.get("tag"),
            priority=out.get("priority"),
            expiration=expiration,
            segment_count=out["segmentCount"],
            time=out["time"],
            received_at=now,
            dequeue_at=now + wait,
            step=cfg.callback_delay,
            expired=expired,
            error_codes=error_codes,
        )

    # --- list messages --------------------------------------------------------------------------------

    async def _list(self, request: web.Request) -> web.StreamResponse:
        self.stats.requests += 1
        denied = self._gate(request)
        if denied is not None:
            return denied
        cfg = self.config
        now = self._now()
        if cfg.list_rate_limit is not None:
            limit, window = cfg.list_rate_limit
            retry_after = self._list_limiter.hit(request.remote or "", now, limit, window)
            if retry_after is not None:
                return self._reply(429, bodies.LIST_RATE_LIMITED, extra={"Retry-After": str(retry_after)})
        try:
            query = parse_query(request.query)
        except ListQueryError as exc:
            return self._reply(400, bodies.error("request-validation", str(exc)))
        account = request.match_info["accountId"]
        result = page(list_items(self.accepted, account, now, cfg, query, self._media_bytes(account)), query)
        info: dict[str, str] = {}
        if result.prev_offset is not None:
            token = encode_token(result.prev_offset)
            info["prevPage"] = str(request.url.update_query(pageToken=token))
            info["prevPageToken"] = token
        if result.next_offset is not None:
            token = encode_token(result.next_offset)
            info["nextPage"] = str(request.url.update_query(pageToken=token))
            info["nextPageToken"] = token
        body = {"totalCount": result.total_count, "pageInfo": info, "messages": result.items}
        return self._reply(200, _encode(body))

    # --- media ---------------------------------------------------------------------------------------

    async def _media_put(self, request: web.Request) -> web.StreamResponse:
        self.stats.requests += 1
        denied = self._gate(request)
        if denied is not None:
            return denied
        data = await request.read()
        files = self.media.setdefault(request.match_info["accountId"], {})
        files[request.match_info["mediaId"]] = StoredMedia(
            data,
            request.headers.get("Content-Type", "application/octet-stream"),
            request.headers.get("Cache-Control"),
        )
        self.stats.by_status[204] += 1
        return web.Response(status=204)

    def _find_media(self, request: web.Request) -> tuple[str, StoredMedia | None]:
        media_id = request.match_info["mediaId"]
        return media_id, self.media.get(request.match_info["accountId"], {}).get(media_id)

    async def _media_get(self, request: web.Request) -> web.StreamResponse:
        self.stats.requests += 1
        denied = self._gate(request)
        if denied is not None:
            return denied
        media_id, stored = self._find_media(request)
        if stored is None:
            return self._reply(404, bodies.media_not_found(media_id))
        headers = CIMultiDict({"Content-Type": stored.content_type})
        if stored.cache_control is not None:
            headers["Cache-Control"] = stored.cache_control
        return self._reply(200, stored.data, headers)

    async def _media_delete(self, request: web.Request) -> web.StreamResponse:
        """204 whether or not the file exists: Bandwidth's delete is idempotent.

        Its own smoke test deletes one media id twice and expects 204 both times; a store that
        answers 204 for a file already gone cannot tell it from one that never existed.
        """
        self.stats.requests += 1
        denied = self._gate(request)
        if denied is not None:
            return denied
        self.media.get(request.match_info["accountId"], {}).pop(request.match_info["mediaId"], None)
        self.stats.by_status[204] += 1
        return web.Response(status=204)

    def _media_bytes(self, account: str) -> Callable[[str], int | None]:
        """The size of a media URL's file when it names one uploaded here (any host), else None."""
        files = self.media.get(account, {})
        marker = f"/users/{account}/media/"

        def size(url: str) -> int | None:
            path = urlsplit(url).path
            _, found, media_id = path.partition(marker)
            stored = files.get(unquote(media_id)) if found else None
            return None if stored is None else len(stored.data)

        return size

    async def _media_list(self, request: web.Request) -> web.StreamResponse:
        self.stats.requests += 1
        denied = self._gate(request)
        if denied is not None:
            return denied
        files = self.media.get(request.match_info["accountId"], {})
        names = sorted(files)
        token = request.headers.get("Continuation-Token")
        if token:
            # The token names the last file returned, and a page starts after it, so uploads and
            # deletes between pages neither skip nor repeat the files that stay.
            after = _media_token_name(token)
            if after is None:
                return self._reply(400, bodies.error("request-validation", "Continuation-Token is not valid"))
            names = names[bisect.bisect_right(names, after) :]
        size = self.config.media_page_size
        base = str(request.url.with_query(None))
        shown = names[:size]
        items = [
            {"content": f"{base}/{quote(name, safe='/')}", "contentLength": len(files[name].data), "mediaName": name}
            for name in shown
        ]
        extra = {"Continuation-Token": _media_token(shown[-1])} if len(names) > size else None
        return self._reply(200, _encode(items), extra=extra)

    # --- OAuth2 ---------------------------------------------------------------------------------------

    async def _token(self, request: web.Request) -> web.StreamResponse:
        self.stats.requests += 1
        cfg = self.config
        try:
            form = await request.post()
        except (ValueError, LookupError, BadHttpMessage) as exc:
            # multipart without a boundary or with a broken part, an undecodable or unknown charset...
            return self._malformed(request, f"the form body could not be read: {unreadable(exc)}", exc)
        creds = None
        header = request.headers.get("Authorization")
        if header is not None and header[:6].lower() == "basic ":
            creds = _basic_credentials(header[6:])
        elif "client_id" in form:
            creds = (str(form.get("client_id", "")), str(form.get("client_secret", "")))
        expected_id = cfg.client_id if cfg.client_id is not None else cfg.username
        expected_secret = cfg.client_secret if cfg.client_secret is not None else cfg.password
        if creds is None or (expected_id is not None and creds != (expected_id, expected_secret or "")):
            return self._reply(401, bodies.INVALID_CLIENT, extra={"WWW-Authenticate": 'Basic realm="oauth2"'})
        if form.get("grant_type") != "client_credentials":
            return self._reply(400, bodies.UNSUPPORTED_GRANT)
        ttl = cfg.token_ttl
        token = self._tokens.issue(self._now(), ttl)
        self.stats.tokens_issued += 1
        expires_in: float = int(ttl) if float(ttl).is_integer() else ttl
        body = {"access_token": token, "token_type": "Bearer", "expires_in": expires_in}
        return self._reply(200, _encode(body), _TOKEN_HEADERS)

    # --- everything else ----------------------------------------------------------------------------

    def _not_allowed(self, allowed: str) -> Handler:
        async def not_allowed(request: web.Request) -> web.StreamResponse:
            self.stats.requests += 1
            return self._reply(405, bodies.method_not_allowed(request.method), extra={"Allow": allowed})

        return not_allowed

    async def _not_found(self, request: web.Request) -> web.StreamResponse:
        self.stats.requests += 1
        return self._reply(404, bodies.not_found(request.path))


def _media_token(name: str) -> str:
    return base64.urlsafe_b64encode(b"m" + name.encode()).decode()


def _media_token_name(token: str) -> str | None:
    try:
        raw = base64.urlsafe_b64decode(token.strip() + "=" * (-len(token.strip()) % 4)).decode()
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    return raw[1:] if raw[:1] == "m" else None


def _basic_credentials(value: str) -> tuple[str, str] | None:
    """``(user, password)`` from the base64 part of a Basic header, None if malformed."""
    try:
        # ValueError covers binascii.Error, non-ASCII input and undecodable credentials alike.
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except ValueError:
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None
