"""Inbound messages: STOP and START replies, applied to an opt-out store, in any aiohttp app.

Bandwidth POSTs each message a handset sends to your number (``message-received``) to the
application's callback URL, with its Basic credentials if it has them, and retries for 24 hours
until it gets a 2xx within 10 s. The handler

* checks Basic auth like the status-callback receiver (the same gate: 401 otherwise),
* refuses a body over ``max_body`` with 413 without reading it all, and answers 400 to
  anything that is not inbound callbacks (a JSON array of them, or one object): never 500,
* ignores events that are not ``message-received`` (status callbacks sharing the URL),
* drops redeliveries (the same inbound message id) and a keyword older than one already applied
  for the same number (a retried STOP arriving after the START that followed it),
* applies an opt-out or re-subscribe keyword (:func:`classify_reply`) to the store, then calls
  ``on_reply`` (if given) with every new inbound message, before answering 200, and answers
  503 (Bandwidth retries) if the store or ``on_reply`` fails or takes over ``timeout`` seconds.

The same rules without HTTP are :class:`ReplyProcessor`, for a receiver that already has the
decoded events (the campaign's, whose status and inbound callbacks share one URL).

Duplicates and order are remembered in memory (the last ``INBOUND_DEDUPE_CAPACITY`` ids): after
a restart a redelivered keyword is applied again, which changes nothing unless the number sent
the opposite keyword in between and that one was delivered first.

::

    from aiohttp import web
    from bwasync.compliance import FileOptOutStore, make_inbound_handler

    app = web.Application()
    app.router.add_post(
        "/bandwidth/inbound", make_inbound_handler(FileOptOutStore("stop.txt"), username="bw", password=secret)
    )
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Unpack

import msgspec
from aiohttp import hdrs, web

from .._models import InboundCallback, StatusCallback, decode_inbound_callbacks
from .._webhook import READ_CHUNK, Refused, WebhookHandler, WebhookOptions, WebhookStats
from ._constants import INBOUND_DEDUPE_CAPACITY, INBOUND_HANDLER_TIMEOUT, INBOUND_MAX_BODY
from ._keywords import ReplyKind, classify_reply
from ._optout import OptOutStore

__all__ = [
    "MESSAGE_RECEIVED",
    "InboundHandler",
    "InboundReply",
    "InboundStats",
    "ReplyOutcome",
    "ReplyProcessor",
    "make_inbound_handler",
]

logger = logging.getLogger("bwasync.compliance")

#: The inbound event type of a message sent by a handset.
MESSAGE_RECEIVED = "message-received"


@dataclass(frozen=True, slots=True)
class InboundReply:
    """A new inbound message, after the store was updated: what ``on_reply`` receives.

    ``number`` is the sender (E.164), ``to`` your number that received it, ``kind`` what the
    text asks for, ``changed`` whether the store changed (False: already opted out / in, or
    not a keyword), ``event`` the decoded callback.
    """

    number: str
    to: str
    kind: ReplyKind
    changed: bool
    message_id: str
    time: datetime
    event: InboundCallback | StatusCallback


#: What the handler calls for each new inbound message; sync or a coroutine function.
OnReply = Callable[[InboundReply], Awaitable[object] | object]
#: An aiohttp request handler.
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(slots=True)
class InboundStats(WebhookStats):
    """What the handler has seen: POSTs in ``requests``, ``received``, ``rejected`` and
    ``errors`` (answered 503: the store or ``on_reply`` failed or was too slow); each event once,
    in exactly one of ``opted_out``, ``opted_in``, ``unchanged``, ``other``, ``ignored``,
    ``duplicates`` or ``stale``."""

    #: Opt-out keywords that added their sender to the store.
    opted_out: int = 0
    #: Re-subscribe keywords that removed their sender from the store.
    opted_in: int = 0
    #: Keywords that changed nothing (the number was already out, or already in).
    unchanged: int = 0
    #: Inbound messages that are not keywords.
    other: int = 0
    #: Events that are not inbound messages (status callbacks sharing the URL), or that have no
    #: sender number.
    ignored: int = 0
    #: Inbound messages seen before (same message id).
    duplicates: int = 0
    #: Keywords older than one already applied for the same number.
    stale: int = 0


class InboundOptions(WebhookOptions, total=False):
    """:class:`InboundHandler`'s keywords, typed for :func:`make_inbound_handler`."""

    on_reply: OnReply | None


class ReplyOutcome(enum.Enum):
    """What :meth:`ReplyProcessor.apply` did with one event (values name :class:`InboundStats` fields)."""

    #: An opt-out keyword added its sender to the store.
    OPTED_OUT = "opted_out"
    #: A re-subscribe keyword removed its sender from the store.
    OPTED_IN = "opted_in"
    #: A keyword that changed nothing (already out, or already in).
    UNCHANGED = "unchanged"
    #: An inbound message that is not a keyword.
    OTHER = "other"
    #: Not an inbound message (a status callback), or one without a sender phone number or a
    #: usable time.
    IGNORED = "ignored"
    #: An inbound message seen before (same message id).
    DUPLICATE = "duplicates"
    #: A keyword older than one already applied for the same number.
    STALE = "stale"


class ReplyProcessor:
    """Applies inbound messages to an opt-out store: the handler's rules without HTTP.

    ``await processor.apply(event)`` takes a decoded callback (an :class:`~bwasync.InboundCallback`,
    or a :class:`~bwasync.StatusCallback`, which has the same shape) and returns a
    :class:`ReplyOutcome`. It raises what the store or ``on_reply`` raise, leaving the event
    unremembered, so that applying it again (Bandwidth's retry) does the work.

    >>> processor = ReplyProcessor(FileOptOutStore("stop.txt"))        # doctest: +SKIP
    >>> await processor.apply(event)                                   # doctest: +SKIP
    <ReplyOutcome.OPTED_OUT: 'opted_out'>
    """

    def __init__(self, store: OptOutStore, *, on_reply: OnReply | None = None) -> None:
        self.store = store
        self._on_reply = on_reply
        #: Inbound message ids handled, oldest first (bounded).
        self._seen: OrderedDict[str, None] = OrderedDict()
        #: Per number, the time of the latest keyword applied (bounded like ``_seen``).
        self._latest: OrderedDict[str, datetime] = OrderedDict()

    def __repr__(self) -> str:
        return f"<ReplyProcessor store={self.store!r} seen={len(self._seen)}>"

    async def apply(self, event: InboundCallback | StatusCallback) -> ReplyOutcome:
        """Apply one event (see the module docstring for the rules)."""
        message = event.message
        number = message.from_
        if event.type != MESSAGE_RECEIVED or not number:
            return ReplyOutcome.IGNORED
        if message.id in self._seen:
            return ReplyOutcome.DUPLICATE
        when = _utc(message.time or event.time)
        if when is None:
            return ReplyOutcome.IGNORED  # a time no clock can hold: nothing to order it by
        kind = classify_reply(message.text)
        changed = False
        if kind is not ReplyKind.OTHER:
            latest = self._latest.get(number)
            if latest is not None and when < latest:
                self._remember(message.id)
                return ReplyOutcome.STALE
            note = f"{(message.text or '').strip().upper()} {when:%Y-%m-%dT%H:%M:%SZ}"
            try:
                if kind is ReplyKind.OPT_OUT:
                    changed = await self.store.opt_out(number, note=note)
                else:
                    changed = await self.store.opt_in(number, note=note)
            except ValueError:
                self._remember(message.id)  # a sender that is not a phone number (a short code...)
                return ReplyOutcome.IGNORED
            self._latest[number] = when
            self._latest.move_to_end(number)
            if len(self._latest) > INBOUND_DEDUPE_CAPACITY:
                self._latest.popitem(last=False)
        if self._on_reply is not None:
            reply = InboundReply(
                number=number, to=event.to, kind=kind, changed=changed, message_id=message.id, time=when, event=event
            )
            result = self._on_reply(reply)
            if inspect.isawaitable(result):
                await result
        # Remembered only once applied: a failed event is retried by Bandwidth and applied then.
        self._remember(message.id)
        if kind is ReplyKind.OTHER:
            return ReplyOutcome.OTHER
        if not changed:
            return ReplyOutcome.UNCHANGED
        return ReplyOutcome.OPTED_OUT if kind is ReplyKind.OPT_OUT else ReplyOutcome.OPTED_IN

    def _remember(self, message_id: str) -> None:
        self._seen[message_id] = None
        if len(self._seen) > INBOUND_DEDUPE_CAPACITY:
            self._seen.popitem(last=False)


class InboundHandler(WebhookHandler[InboundStats]):
    """Inbound message callbacks for aiohttp: route POSTs to :meth:`handle`; read :attr:`stats`.

    See :func:`make_inbound_handler` for the arguments; :attr:`processor` is its
    :class:`ReplyProcessor`.
    """

    def __init__(
        self,
        store: OptOutStore,
        *,
        username: str | None = None,
        password: str | None = None,
        on_reply: OnReply | None = None,
        max_body: int = INBOUND_MAX_BODY,
        timeout: float = INBOUND_HANDLER_TIMEOUT,
    ) -> None:
        super().__init__(InboundStats(), username=username, password=password, max_body=max_body, timeout=timeout)
        self.processor = ReplyProcessor(store, on_reply=on_reply)

    @property
    def store(self) -> OptOutStore:
        return self.processor.store

    def __repr__(self) -> str:
        auth = "basic" if self._auth.enabled else "none"
        return f"<InboundHandler auth={auth} store={self.store!r} {self.stats}>"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """The aiohttp handler (a coroutine function, as aiohttp requires)."""
        stats = self.stats
        body = await self.admit(
            request.headers.get(hdrs.AUTHORIZATION), request.content.iter_chunked(READ_CHUNK), request.content_length
        )
        if isinstance(body, Refused):
            return web.Response(status=body.status, text=body.text, headers=body.headers)
        try:
            events = decode_inbound_callbacks(body)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError, ValueError) as exc:
            # RecursionError: an unknown field nested deeper than the decoder goes (hostile, not a 500).
            stats.rejected += 1
            return web.Response(status=400, text=f"expected inbound message callbacks: {exc}")
        try:
            async with asyncio.timeout(self.timeout):
                # In order: a STOP and the START after it in one POST must end subscribed.
                for event in events:
                    outcome = await self.processor.apply(event)
                    setattr(stats, outcome.value, getattr(stats, outcome.value) + 1)
        except TimeoutError:
            stats.errors += 1
            logger.warning("inbound handler: applying %d events took over %.1f s", len(events), self.timeout)
            return web.Response(status=503, text="busy, retry later")
        except Exception:
            stats.errors += 1
            logger.exception("inbound handler: applying inbound messages failed")
            return web.Response(status=503, text="could not apply the messages, retry later")
        stats.requests += 1
        stats.received += len(events)
        return web.Response(status=200)


def _utc(when: datetime) -> datetime | None:
    """An event time in UTC; one without an offset is taken as UTC (Bandwidth writes ``Z``).
    None when it cannot be expressed in UTC (year 1 or 9999 with an offset)."""
    try:
        return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    except OverflowError:
        return None


def make_inbound_handler(store: OptOutStore, **options: Unpack[InboundOptions]) -> Handler:
    """An aiohttp request handler for Bandwidth's inbound message callbacks, for any aiohttp app.

    Opt-out keywords (STOP, STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT) add the sender to
    ``store``; START and UNSTOP remove it (:func:`classify_reply` has the exact rule).
    ``on_reply(reply)`` (an :class:`InboundReply`; sync or async) is called once per new
    inbound message, keyword or not, after the store was updated. ``options`` are
    :class:`InboundHandler`'s keywords: ``on_reply``; ``username`` and ``password``, with which the
    request must carry exactly that Basic ``Authorization``; ``max_body`` (bytes); ``timeout`` (seconds).

    It is :meth:`InboundHandler.handle` of a new :class:`InboundHandler`, whose ``stats``
    (:class:`InboundStats`) count requests and replies (build the :class:`InboundHandler`
    yourself to keep a reference to them).
    """
    return InboundHandler(store, **options).handle
