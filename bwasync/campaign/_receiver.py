"""The status-callback receiver: Bandwidth's delivery events, into the journal.

Bandwidth POSTs a JSON array of events to the application's callback URL, with HTTP Basic
credentials if the application has them, and retries for 24 hours until it gets a 2xx within
10 seconds: delivery is at-least-once, in no particular order. So the handler

* checks Basic auth in constant time (401 with ``WWW-Authenticate`` otherwise),
* refuses a body over ``max_body`` with 413 without reading it all,
* answers 400 to anything that is not a JSON array of status callbacks,
* drops events it has already handled (same message id, recipient and type),
* records events before answering 200 (so an event is never acknowledged and then lost),
  and answers 503 if that takes more than a few seconds, so Bandwidth retries.

Inside your own aiohttp application::

    from aiohttp import web
    from bwasync.campaign import CallbackHandler, delivery_recorder, make_callback_handler

    app = web.Application()
    app.router.add_post(
        "/bandwidth/callbacks",
        make_callback_handler(delivery_recorder(journal), username="bw", password=secret),
    )
    # or, to read the counters:
    callbacks = CallbackHandler(delivery_recorder(journal), username="bw", password=secret)
    app.router.add_post("/bandwidth/callbacks", callbacks.handle)  # callbacks.stats...

Or standalone::

    async with CallbackReceiver("0.0.0.0", 8080, journal=journal, username="bw", password=secret) as rx:
        ...  # run the campaign; rx.stats counts what arrived
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import OrderedDict
from collections.abc import AsyncIterable, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Unpack

import msgspec
from aiohttp import hdrs, web

from .._models import StatusCallback, decode_callbacks
from .._webhook import READ_CHUNK, Refused, WebhookHandler, WebhookOptions, WebhookStats, server_logger
from ..compliance import MESSAGE_RECEIVED
from ._constants import CALLBACK_HANDLER_TIMEOUT, DEDUPE_CAPACITY, DEFAULT_MAX_BODY
from ._journal import Journal
from ._records import DeliveryOutcome
from ._writer import StartClose

__all__ = [
    "CallbackHandler",
    "CallbackReceiver",
    "CallbackReply",
    "ReceiverStats",
    "delivery_recorder",
    "make_callback_handler",
]

logger = logging.getLogger("bwasync.campaign")

#: What the handler calls for each new event. It may return a :class:`DeliveryOutcome` (which
#: the handler counts) or anything else; it may be a coroutine function or a plain function.
OnEvent = Callable[[StatusCallback], Awaitable[object] | object]

#: Seconds a closing receiver waits for requests in progress: recording takes at most the
#: handler's timeout, and Bandwidth redelivers anything not acknowledged anyway.
SHUTDOWN_TIMEOUT = 2.0


@dataclass(slots=True)
class ReceiverStats(WebhookStats):
    """What the handler has seen: POSTs in ``requests``, ``received``, ``rejected`` (a 400 for
    an ``errorCode`` out of range too) and ``errors`` (recording failed or took too long); each
    event once, in exactly one of ``recorded``, ``duplicates``, ``stale``, ``ignored``,
    ``unknown_tags``, ``unmatched`` or ``other``."""

    #: Events that changed a row's delivery state.
    recorded: int = 0
    #: Events seen before (by this handler, or already in the journal).
    duplicates: int = 0
    #: Events older than what is known (``message-sent`` after ``message-delivered``).
    stale: int = 0
    #: Events carrying no delivery state (``message-sending``, ``message-read``).
    ignored: int = 0
    #: Events whose tag matches no row of this campaign.
    unknown_tags: int = 0
    #: Events for a row that had no accepted message (invalid, skipped, failed): kept apart,
    #: never counted as deliveries (see :attr:`DeliveryOutcome.UNMATCHED`).
    unmatched: int = 0
    #: Events for which ``on_event`` returned something other than a DeliveryOutcome.
    other: int = 0


def _storable(code: int) -> bool:
    """Whether ``code`` fits SQLite's 64-bit integer (Bandwidth's codes have four digits)."""
    return -(2**63) <= code < 2**63


_OUTCOME_FIELD = {
    DeliveryOutcome.CHANGED: "recorded",
    DeliveryOutcome.DUPLICATE: "duplicates",
    DeliveryOutcome.STALE: "stale",
    DeliveryOutcome.IGNORED: "ignored",
    DeliveryOutcome.UNKNOWN: "unknown_tags",
    DeliveryOutcome.UNMATCHED: "unmatched",
}


@dataclass(frozen=True, slots=True)
class CallbackReply:
    """The answer to one callback POST (see :meth:`CallbackHandler.process`)."""

    status: int
    text: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)


#: An aiohttp request handler.
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class CallbackHandler(WebhookHandler[ReceiverStats]):
    """Bandwidth status callbacks for aiohttp: route POSTs to :meth:`handle`; read :attr:`stats`.

    See :func:`make_callback_handler` for the behaviour and the arguments.
    """

    def __init__(
        self,
        on_event: OnEvent,
        *,
        username: str | None = None,
        password: str | None = None,
        max_body: int = DEFAULT_MAX_BODY,
        timeout: float = CALLBACK_HANDLER_TIMEOUT,
    ) -> None:
        super().__init__(ReceiverStats(), username=username, password=password, max_body=max_body, timeout=timeout)
        self._on_event = on_event
        #: Identities (message id, recipient, type) of events handled, oldest first (bounded).
        self._seen: OrderedDict[tuple[str, str, str], None] = OrderedDict()

    def __repr__(self) -> str:
        auth = "basic" if self._auth.enabled else "none"
        return f"<CallbackHandler auth={auth} max_body={self.max_body} {self.stats}>"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """The aiohttp handler (a coroutine function, as aiohttp requires)."""
        reply = await self.process(
            request.headers.get(hdrs.AUTHORIZATION), request.content.iter_chunked(READ_CHUNK), request.content_length
        )
        return web.Response(status=reply.status, text=reply.text, headers=reply.headers)

    async def process(
        self, authorization: str | None, body: AsyncIterable[bytes], content_length: int | None = None
    ) -> CallbackReply:
        """Handle one callback POST from any web framework: its ``Authorization`` header, its
        body as chunks (read only after the credentials were checked, and no further than
        ``max_body``) and its declared length; answer with the returned :class:`CallbackReply`.

        FastAPI / Starlette (``examples/fastapi_app.py``)::

            reply = await callbacks.process(request.headers.get("authorization"), request.stream())
            return Response(reply.text, status_code=reply.status, headers=dict(reply.headers))
        """
        data = await self.admit(authorization, body, content_length)
        if isinstance(data, Refused):
            return CallbackReply(*data)
        try:
            events = decode_callbacks(data)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError, ValueError) as exc:
            # RecursionError: nesting deeper than the decoder goes (a hostile body, not a 500).
            self.stats.rejected += 1
            return CallbackReply(400, f"expected a JSON array of status callbacks: {exc}")
        out_of_range = next((e for e in events if e.error_code is not None and not _storable(e.error_code)), None)
        if out_of_range is not None:
            self.stats.rejected += 1
            return CallbackReply(400, f"errorCode {out_of_range.error_code} is not a Bandwidth error code")

        fresh: list[StatusCallback] = []
        identities: set[tuple[str, str, str]] = set()
        duplicates = 0
        for event in events:
            identity = (event.message.id, event.to, event.type)
            if identity in self._seen or identity in identities:
                duplicates += 1
            else:
                identities.add(identity)
                fresh.append(event)
        try:
            async with asyncio.timeout(self.timeout):
                outcomes = await asyncio.gather(*(self._handle(e) for e in fresh))
        except TimeoutError:
            self.stats.errors += 1
            logger.warning("callback receiver: recording %d events took over %.1f s", len(fresh), self.timeout)
            return CallbackReply(503, "busy, retry later")
        except Exception:
            self.stats.errors += 1
            logger.exception("callback receiver: recording events failed")
            return CallbackReply(500, "could not record the events")

        # Only now, once recorded, are the events remembered: a failed POST is retried whole.
        for identity in identities:
            self._seen[identity] = None
        while len(self._seen) > DEDUPE_CAPACITY:
            self._seen.popitem(last=False)
        stats = self.stats
        stats.requests += 1
        stats.received += len(events)
        stats.duplicates += duplicates
        for outcome in outcomes:
            name = _OUTCOME_FIELD.get(outcome) if isinstance(outcome, DeliveryOutcome) else None
            setattr(stats, name or "other", getattr(stats, name or "other") + 1)
        return CallbackReply(200)

    async def _handle(self, event: StatusCallback) -> object:
        result = self._on_event(event)
        if inspect.isawaitable(result):
            result = await result
        return result


def make_callback_handler(on_event: OnEvent, **options: Unpack[WebhookOptions]) -> Handler:
    """An aiohttp request handler for Bandwidth status callbacks, for any aiohttp app.

    ``on_event(event)`` (a :class:`~bwasync.StatusCallback`; sync or async) is called once per
    new event, all of a POST's events concurrently; the POST is answered 200 after they all
    returned, 500 if one raised, 503 if they took over ``timeout`` seconds. ``options`` are
    :class:`CallbackHandler`'s: with ``username`` and ``password`` the request must carry
    exactly that Basic ``Authorization``; ``max_body`` (bytes) and ``timeout`` (seconds).

    It is :meth:`CallbackHandler.handle` of a new :class:`CallbackHandler`, whose ``stats``
    (:class:`ReceiverStats`) count requests and events (``handler.__self__.stats``; or build the
    :class:`CallbackHandler` yourself). Return a :class:`DeliveryOutcome` from ``on_event`` to
    have the events classified.

    >>> app = web.Application()                                                  # doctest: +SKIP
    >>> app.router.add_post("/callbacks", make_callback_handler(print_event))     # doctest: +SKIP
    """
    return CallbackHandler(on_event, **options).handle


def delivery_recorder(journal: Journal) -> Callable[[StatusCallback], Awaitable[DeliveryOutcome]]:
    """An ``on_event`` that records events into ``journal`` (see :meth:`Journal.record_delivery`).

    An event whose tag does not start with the journal's ``"<campaign id>:"`` is
    :attr:`DeliveryOutcome.UNKNOWN` without touching the database.
    """

    async def record(event: StatusCallback) -> DeliveryOutcome:
        campaign_id = journal.campaign_id
        tag = event.message.tag
        if campaign_id is None or not tag or not tag.startswith(campaign_id + ":"):
            return DeliveryOutcome.UNKNOWN
        return await journal.record_delivery(
            tag,
            event.type,
            error_code=event.error_code,
            event_time=event.event_time or event.time,
            message_id=event.message.id,
            recipient=event.to,
        )

    return record


def campaign_event_handler(
    journal: Journal, on_reply_event: Callable[[StatusCallback], Awaitable[object]]
) -> Callable[[StatusCallback], Awaitable[object]]:
    """An ``on_event`` for a campaign's one callback URL: inbound ``message-received`` events
    (replies such as STOP) go to ``on_reply_event`` (e.g. a ``ReplyProcessor``'s ``apply``),
    every other event to :func:`delivery_recorder`."""
    record = delivery_recorder(journal)

    async def route(event: StatusCallback) -> object:
        if event.type == MESSAGE_RECEIVED:
            return await on_reply_event(event)
        return await record(event)

    return route


class CallbackReceiver(StartClose):
    """A small aiohttp server for status callbacks: into a journal, or to any ``on_event``.

    Give ``journal`` (events are recorded with :func:`delivery_recorder`) or ``on_event`` (see
    :func:`make_callback_handler`). Accepts POSTs on any path. ``port=0`` picks a free port
    (see :attr:`port`/:attr:`url`). This is the project's one receiver: the campaign runner
    and ``bwasync demo`` both use it.

    >>> async with CallbackReceiver("127.0.0.1", 0, journal=journal) as receiver:   # doctest: +SKIP
    ...     print(receiver.url, receiver.stats)
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        journal: Journal | None = None,
        on_event: OnEvent | None = None,
        username: str | None = None,
        password: str | None = None,
        max_body: int = DEFAULT_MAX_BODY,
        timeout: float = CALLBACK_HANDLER_TIMEOUT,
    ) -> None:
        self.host = host
        self._requested_port = port
        if (journal is None) == (on_event is None):
            raise ValueError("give journal or on_event (one of them)")
        handle = delivery_recorder(journal) if journal is not None else on_event
        assert handle is not None
        self.handler = CallbackHandler(handle, username=username, password=password, max_body=max_body, timeout=timeout)
        self._runner: web.AppRunner | None = None
        self.port: int | None = None
        #: Seconds ``close`` gives open connections to finish (aiohttp's graceful shutdown).
        self.shutdown_timeout = SHUTDOWN_TIMEOUT

    @property
    def stats(self) -> ReceiverStats:
        return self.handler.stats

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("the receiver is not started")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def __repr__(self) -> str:
        where = f"{self.host}:{self.port}" if self.port is not None else "not started"
        return f"<CallbackReceiver {where} {self.stats}>"

    async def start(self) -> None:
        if self._runner is not None:
            return
        app = web.Application()
        app.router.add_route(hdrs.METH_POST, "/{tail:.*}", self._handle)
        runner = web.AppRunner(
            app, access_log=None, shutdown_timeout=self.shutdown_timeout, logger=server_logger("bwasync.campaign.http")
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self._requested_port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        address: Any = runner.addresses[0]
        self.port = int(address[1])

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        """The route: :attr:`handler` (a test double may answer otherwise, see tests/conftest.py)."""
        return await self.handler.handle(request)

    async def close(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
