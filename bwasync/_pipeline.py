"""One send pipeline: the object that owns an attempt, shared by single sends and the fan-out.

A :class:`Pipeline` holds the four things an attempt needs — the transport, the rate limiter,
the retry policy and the client-wide in-flight gate — and sends one validated request through
them::

    limiter.acquire  ->  before_send (first attempt)  ->  gate  ->  POST  ->  gate released
                                                                      |
        429: report_rate_limited (Retry-After capped by the policy)   |  202: report_success
                                                                      v
        retryable failure: wait (backoff / Retry-After) *outside* the gate, then again

``MessagingClient.create_message``, ``send`` and every ``send_many`` run go through the same
pipeline (a run may derive one with its own limiter cap, policy or timeout), so the in-flight gate
is one cap for the whole client and a 429 seen by one run slows every run.

The gate is held only while a request is on the wire: a send that waits for the limiter or waits
out a backoff holds no slot. A ``send_many`` run goes further (``backoff=``): its worker gives
its run slot back while it sleeps, so sleepers do not throttle the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from ._auth import BasicCredentials
from ._constants import FIRST_ROUND_MAX
from ._exceptions import APIError, RateLimitError
from ._models import Message, MessageRequest, encode_request
from ._ratelimit import fast_acquire, success_reporter
from ._retry import retry_after_failure
from ._segments import message_cost

if TYPE_CHECKING:
    from ._ratelimit import RateLimiter, TokenBucket
    from ._retry import RetryPolicy
    from ._transport import Timeout, Transport

__all__ = ["IDLE", "SENDING", "WAITING", "CappedLimiter", "Gate", "Pipeline", "Slot"]

#: Where a send stands, so that a stop knows whether its request may have left.
IDLE, WAITING, SENDING = 0, 1, 2

#: ``backoff(seconds)``: how a retry waits (a run releases its slot meanwhile).
Backoff = Callable[[float], Awaitable[None]]


class Gate:
    """At most ``size`` holders at once; waiters are served first come, first served.

    What ``asyncio.Semaphore`` does, but taking a free place is a plain call (``try_take``), not
    a coroutine: the gate is passed twice per message on the hot path. A place given back while
    others wait goes straight to the first of them. (:meth:`Pipeline.attempt` inlines
    ``try_take`` and the common case of ``release``, nobody waiting: keep them in step.)

    With ``first_round=k`` (the client's gate: ``FIRST_ROUND_SIZE``) the client starts with a
    probe round: only ``min(k, size)`` places are open, each used once; a place given back
    during the round is parked, and every place (the parked ones and the ``size - k`` never
    opened) comes back at once when every request of the round has been answered, or
    ``FIRST_ROUND_MAX`` seconds after a taker first had to wait for them. A queue that is
    already full (another sender's, or a small one) refuses at most the round, and its 429s cut
    the rate before anything else leaves; without the round each early 202 sends a new request
    into the full queue before the 429s behind it arrive. The round is small so that it costs
    one round trip of a few requests, not the spread of ``size`` answers (latency-bound runs
    with 1,000+ in flight paid 30 % of their steady rate for a round of ``size``).
    """

    __slots__ = ("_closed", "_free", "_over", "_parked", "_round", "_timer", "_waiters", "size")

    def __init__(self, size: int, *, first_round: int = 0) -> None:
        self.size = size
        opened = size if first_round <= 0 else min(size, first_round)
        self._free = opened
        #: Places not opened yet: they join at the end of the first round.
        self._closed = size - opened
        self._waiters: deque[asyncio.Future[None]] = deque()
        # Invariant: _parked == _closed == 0 unless _round; _free + _parked + _closed + in_use == size.
        self._round = first_round > 0
        self._parked = 0
        self._timer: asyncio.TimerHandle | None = None
        self._over: asyncio.Future[None] | None = None

    @property
    def in_first_round(self) -> bool:
        """Whether every place of the first round is used: a request must wait for the round."""
        return self._round and not self._free

    async def first_round_over(self) -> None:
        """Wait until the first round is over (see the class docstring)."""
        if not self._round:
            return
        if self._over is None:
            self._over = asyncio.get_running_loop().create_future()
        self._arm()
        await asyncio.shield(self._over)  # one waiter cancelled must not cancel the others

    def _arm(self) -> None:
        if self._timer is None:
            # Someone waits on the round: it must not outlast a slow (or hung) request.
            self._timer = asyncio.get_running_loop().call_later(FIRST_ROUND_MAX, self._end_round)

    def try_take(self) -> bool:
        if self._free and not self._waiters:
            self._free -= 1
            return True
        return False

    async def take(self) -> None:
        if self.try_take():
            return
        if self._round:
            self._arm()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except BaseException:
            if fut.done() and not fut.cancelled():
                self.release()  # handed a place, then cancelled before using it: pass it on
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(fut)
            raise

    def release(self) -> None:
        if self._round:
            self._parked += 1
            if self._free + self._parked + self._closed == self.size:  # the whole round is answered
                self._end_round()
            return
        if not self._waiters:  # the common case, inline: nobody to hand the place to
            self._free += 1
            return
        self._give()

    def _give(self) -> None:
        waiters = self._waiters
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        self._free += 1

    def _end_round(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._round:
            return
        self._round = False
        if self._over is not None:
            self._over.set_result(None)
            self._over = None
        back, self._parked, self._closed = self._parked + self._closed, 0, 0
        # Hand places to the waiters, then open the rest in one step: a loop per place would
        # stall the event loop for a client built with a huge ``concurrency``.
        while back and self._waiters:
            self._give()
            back -= 1
        self._free += back

    @property
    def waiting(self) -> int:
        """Tasks waiting for a place."""
        return len(self._waiters)

    @property
    def in_use(self) -> int:
        return self.size - self._free - self._parked - self._closed

    def __repr__(self) -> str:
        first = f", {self._parked} parked in the first round" if self._round else ""
        return f"<{type(self).__name__} {self.in_use}/{self.size} in use, {self.waiting} waiting{first}>"


class Slot:
    """Per-send state the pipeline keeps up to date (one per fan-out worker, reused)."""

    __slots__ = ("body", "cost", "maybe_sent", "sender", "sent_at", "stage", "started")

    def __init__(self) -> None:
        self.stage = IDLE
        #: An earlier attempt of this send failed ambiguously (only with retry_ambiguous).
        self.maybe_sent = False
        #: ``time.monotonic()`` when the latest attempt's request left (0.0: none has).
        self.sent_at = 0.0
        #: The send's encoded body, segments, sender, and ``time.monotonic()`` of its start (0.0
        #: until its first attempt waits or sends: then, before the wait or at the send).
        self.body = b""
        self.cost = 0
        self.sender = ""
        self.started = 0.0

    def latency(self) -> float:
        """Seconds since the latest attempt's request left (0.0 if none left)."""
        return time.monotonic() - self.sent_at if self.sent_at else 0.0


def _waits(slot: Slot) -> None:
    """A send's attempt is about to wait before its request leaves: if it is the first attempt,
    the send's start (which the retry deadline runs from) is now, before the wait."""
    if not slot.started:
        slot.started = time.monotonic()


class Pipeline:
    """Sends validated requests: limiter, in-flight gate, transport, retries.

    Built by the client; :meth:`derive` makes a variant for one call or one run that shares the
    transport and the gate (and, unless replaced, the limiter).
    """

    __slots__ = (
        "_basic_header",
        "_report_success",
        "_try_acquire",
        "gate",
        "limiter",
        "policy",
        "timeout",
        "transport",
    )

    def __init__(
        self,
        transport: Transport,
        *,
        limiter: RateLimiter,
        policy: RetryPolicy,
        gate: Gate,
        timeout: Timeout,
    ) -> None:
        self.transport = transport
        auth = transport.auth
        # Basic auth's header never changes: read once here, not per attempt (OAuth2: None).
        self._basic_header = auth.cached_header() if isinstance(auth, BasicCredentials) else None
        self.limiter = limiter
        # The limiter's non-waiting fast path, when it has one: an admission without a
        # coroutine while nothing throttles.
        self._try_acquire = fast_acquire(limiter)
        # ``limiter.report_success``, called without a keyword (once per message).
        self._report_success = success_reporter(limiter)
        self.policy = policy
        #: The client-wide cap on requests in flight.
        self.gate = gate
        #: The per-attempt timeout, built once (never one object per request).
        self.timeout = timeout

    def derive(
        self,
        *,
        limiter: RateLimiter | None = None,
        policy: RetryPolicy | None = None,
        timeout: float | None = None,
    ) -> Pipeline:
        """A variant sharing the transport and the in-flight gate; ``self`` if nothing changes."""
        if limiter is None and policy is None and timeout is None:
            return self
        return Pipeline(
            self.transport,
            limiter=self.limiter if limiter is None else limiter,
            policy=self.policy if policy is None else policy,
            gate=self.gate,
            timeout=self.timeout if timeout is None else self.transport.make_timeout(timeout),
        )

    async def send(
        self,
        request: MessageRequest,
        slot: Slot,
        *,
        before_send: Callable[[], Awaitable[None]] | None = None,
        backoff: Backoff | None = None,
    ) -> tuple[Message, int]:
        """Send ``request``; return Bandwidth's answer and the attempts made in all.

        Raises the error that ended the send, its ``attempts`` set. ``before_send`` runs once,
        right before the first attempt leaves; ``backoff`` replaces ``asyncio.sleep`` between
        attempts. (A ``send_many`` worker calls :meth:`attempt` and :meth:`retry` itself, one
        coroutine frame less per message.)
        """
        try:
            return await self.attempt(slot, request, before_send), 1
        except APIError as exc:
            return await self.retry(exc, slot, backoff)

    async def retry(self, first: APIError, slot: Slot, backoff: Backoff | None) -> tuple[Message, int]:
        """After a failed first attempt: retry under the policy; (message, attempts in all)."""

        def again() -> Awaitable[Message]:
            return self.attempt(slot)

        # ``started`` is read at the latest when the first request left (0.0: it never left).
        started = slot.started or time.monotonic()
        return await retry_after_failure(again, first, self.policy, started=started, sleep=backoff)

    async def attempt(
        self,
        slot: Slot,
        request: MessageRequest | None = None,
        before_send: Callable[[], Awaitable[None]] | None = None,
    ) -> Message:
        """One attempt of the send in ``slot``; with ``request``, the first, which prepares
        ``slot`` for it (body, cost, sender, start time) before anything else.

        ``slot.stage`` is SENDING exactly while the request may be on the wire.
        """
        if request is not None:
            slot.maybe_sent = False
            slot.sent_at = 0.0
            # Read only if this attempt waits before it sends (``_waits``); else it is the same
            # instant as ``sent_at``, read once for both.
            slot.started = 0.0
            slot.body = encode_request(request)
            slot.cost = message_cost(request)
            slot.sender = request.from_
        slot.stage = WAITING
        cost, sender = slot.cost, slot.sender
        transport = self.transport
        header = self._basic_header
        if header is None:
            header = transport.auth.cached_header()
            if header is None:
                # Fetch the OAuth2 token before the create can leave: if that fails, the message
                # certainly was not sent (and a cancellation now is not ambiguous either).
                _waits(slot)
                header = await transport.auth_header()
        gate = self.gate
        if gate._round and gate.in_first_round:  # one attribute load once the round is over
            # Ask the limiter only once there is a place: admitted now, this request would leave
            # after the round's answers, past a cut they made.
            _waits(slot)
            await gate.first_round_over()
        limiter = self.limiter
        try_acquire = self._try_acquire
        if try_acquire is None or not try_acquire(cost, sender):
            _waits(slot)
            await limiter.acquire(cost, sender=sender)
        try:
            if before_send is not None:
                _waits(slot)
                await before_send()
            if gate._free and not gate._waiters:  # Gate.try_take, inlined: twice per message
                gate._free -= 1
            else:
                _waits(slot)
                await gate.take()
        except BaseException:
            limiter.release(cost, sender=sender)
            raise
        slot.stage = SENDING
        slot.sent_at = now = time.monotonic()
        if not slot.started:  # nothing was awaited since the send began: it starts now
            slot.started = now
        try:
            message = await transport.create_message(slot.body, self.timeout, header)
        except RateLimitError as exc:
            slot.stage = WAITING
            retry_after = exc.retry_after
            if retry_after is not None:
                # The policy's cap is the one that counts, for the retry and the limiter alike.
                retry_after = min(retry_after, self.policy.max_retry_after)
            limiter.report_rate_limited(sender=sender, retry_after=retry_after, allowed_rate=exc.allowed_rate)
            raise
        except APIError as exc:
            slot.stage = WAITING
            if exc.may_have_been_sent:
                slot.maybe_sent = True
            raise
        finally:
            if gate._round or gate._waiters:
                gate.release()
            else:  # Gate.release's common case, inlined: nobody to hand the place to
                gate._free += 1
        slot.stage = WAITING
        self._report_success(cost, sender)
        return message


class CappedLimiter:
    """A run's own rate cap *under* the client's limiter: a send needs room in both.

    Successes and 429s are reported to the client's limiter only, so a 429 seen by one run slows
    every run of the client, and concurrent runs share one account budget.
    """

    __slots__ = ("_cap", "_inner")

    def __init__(self, inner: RateLimiter, cap: TokenBucket) -> None:
        self._inner = inner
        self._cap = cap

    async def acquire(self, cost: float, *, sender: str) -> None:
        await self._cap.acquire(cost)
        try:
            await self._inner.acquire(cost, sender=sender)
        except BaseException:
            self._cap.release(cost)
            raise

    def release(self, cost: float, *, sender: str) -> None:
        self._inner.release(cost, sender=sender)
        self._cap.release(cost)

    def report_success(self, cost: float, *, sender: str) -> None:
        self._inner.report_success(cost, sender=sender)

    def report_rate_limited(self, *, sender: str, retry_after: float | None, allowed_rate: float | None = None) -> None:
        self._inner.report_rate_limited(sender=sender, retry_after=retry_after, allowed_rate=allowed_rate)

    @property
    def rate(self) -> float | None:
        inner = self._inner.rate
        return self._cap.rate if inner is None else min(inner, self._cap.rate)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} cap={self._cap!r} inner={self._inner!r}>"
