"""Rate limiting: how many segments may leave, and when.

Bandwidth counts *segments* against an account-wide dequeue rate and, for P2P numbers, against
each sending number; a full queue answers 429. The client asks a :class:`RateLimiter` before
each send, and reports back how the send went::

    limiter = AdaptiveLimiter(rate=100, per_sender_rate=1)
    await limiter.acquire(segments, sender=from_number)      # waits for capacity
    ...                                                       # send
    limiter.report_success(segments, sender=from_number)      # or report_rate_limited(...)

Three pieces live here:

* :class:`RateLimiter`, the protocol the client depends on, so that a limiter shared between
  processes (Redis, say) can replace the in-process one without touching the client;
* :class:`TokenBucket`, one rate + burst bucket (GCRA), whose waiters are served first come,
  first served and woken by a single ``loop.call_at`` timer;
* :class:`AdaptiveLimiter`, the default :class:`RateLimiter`: an account bucket plus one bucket
  per sending number, with the account rate adapted to 429s by the pure policy in
  :mod:`bwasync._ratecontrol`.

Everything here runs on the event loop thread and reads the loop's clock, ``loop.time()``; the
loop is picked up lazily, so limiters can be built before any loop exists.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from ._constants import CUT_CARRY_BURSTS, DEFAULT_BURST_SECONDS, MIN_CONFIGURED_RATE, SENDER_BUCKET_SWEEP_INTERVAL
from ._exceptions import ConfigurationError
from ._ratecontrol import Meter, RateController

__all__ = ["AdaptiveLimiter", "RateLimiter", "TokenBucket", "fast_acquire", "success_reporter"]

_log = logging.getLogger(__name__)

#: Slack (seconds) when comparing a computed ready time with the loop clock. Ready times are sums
#: of ``cost / rate`` and carry float rounding; without slack a waiter due at exactly ``now``
#: could be re-armed for the same instant. Admitting a microsecond early is immaterial.
_EPSILON = 1e-6

#: The rate a bucket is set to when the limiter stops throttling while requests still queue on it:
#: high enough that every one of them is admitted at once.
_UNTHROTTLED = 1e12

#: A queued acquisition: its future, its cost, and whether it only holds the bucket (``_hold``).
_Waiter = tuple[asyncio.Future[None], float, bool]


def _loop_time() -> float:
    """The running loop's clock; outside a loop, the clock every stock loop uses."""
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:
        return time.monotonic()


def _check_rate(name: str, value: float) -> float:
    if not (value > 0.0 and math.isfinite(value)):
        raise ConfigurationError(f"{name} must be a positive, finite number of segments per second, got {value!r}")
    if value < MIN_CONFIGURED_RATE:
        raise ConfigurationError(
            f"{name} must be at least one segment a day ({MIN_CONFIGURED_RATE:.3g} per second), got {value!r}"
        )
    return float(value)


def _check_burst(name: str, value: float) -> float:
    if not (value > 0.0 and math.isfinite(value)):
        raise ConfigurationError(f"{name} must be a positive, finite number of segments, got {value!r}")
    return float(value)


def _default_burst(rate: float) -> float:
    return max(1.0, rate * DEFAULT_BURST_SECONDS)


def _per_second(rate: float | None, absent: str) -> str:
    """A rate as the reprs show it (``25/s``), or ``absent`` when there is none."""
    return absent if rate is None else f"{rate:g}/s"


@runtime_checkable
class RateLimiter(Protocol):
    """What the client needs from a rate limiter; costs are in segments.

    Implementations decide how capacity is shared (one process or many) and how it adapts.
    :class:`AdaptiveLimiter` is the in-process one.
    """

    async def acquire(self, cost: float, *, sender: str) -> None:
        """Wait until ``cost`` segments may be sent from ``sender``.

        The cost counts against the account *and* against that sending number.
        """
        ...

    def release(self, cost: float, *, sender: str) -> None:
        """Give back an acquisition whose request never left (cancelled before sending).

        Optional: an implementation that cannot give back may do nothing.
        """
        ...

    def report_success(self, cost: float, *, sender: str) -> None:
        """A send of ``cost`` segments from ``sender`` was accepted."""
        ...

    def report_rate_limited(self, *, sender: str, retry_after: float | None, allowed_rate: float | None = None) -> None:
        """A send from ``sender`` was answered 429, with ``Retry-After`` seconds if given.

        ``allowed_rate`` is the account rate (segments per second) the server stated in its
        answer, when it did (:attr:`~bwasync.RateLimitError.allowed_rate`).
        """
        ...

    @property
    def rate(self) -> float | None:
        """The current account rate in segments per second; ``None`` while unthrottled."""
        ...


#: ``try_acquire(cost, sender)``: take now or return False, never wait. Positional, as is
#: :data:`ReportSuccess`: the pipeline calls both once per message, and a call with a keyword
#: costs ~180 instructions more than one without (CPython 3.11 specialises only the latter).
TryAcquire = Callable[[float, str], bool]
#: ``report_success(cost, sender)``.
ReportSuccess = Callable[[float, str], None]


def fast_acquire(limiter: RateLimiter) -> TryAcquire | None:
    """The limiter's non-waiting fast path: :meth:`AdaptiveLimiter.try_acquire`'s, when
    ``limiter`` is an :class:`AdaptiveLimiter` that overrides neither ``acquire`` nor
    ``try_acquire`` (a subclass that does, to observe or change admission, is always asked
    through ``acquire``); else None.

    A caller that gets one calls it first and awaits ``acquire`` only when it returns False.
    """
    if (
        isinstance(limiter, AdaptiveLimiter)
        and type(limiter).acquire is AdaptiveLimiter.acquire
        and type(limiter).try_acquire is AdaptiveLimiter.try_acquire
    ):
        return limiter._try_acquire
    return None


def success_reporter(limiter: RateLimiter) -> ReportSuccess:
    """``limiter.report_success`` with ``sender`` passed by position: the body of
    :meth:`AdaptiveLimiter.report_success` itself unless a subclass overrides it, else a call of
    the limiter's own method."""
    if isinstance(limiter, AdaptiveLimiter) and type(limiter).report_success is AdaptiveLimiter.report_success:
        return limiter._report_success

    def report(cost: float, sender: str) -> None:
        limiter.report_success(cost, sender=sender)

    return report


class TokenBucket:
    """One rate + burst limit, as GCRA (the virtual-scheduling form of a token bucket).

    ``cost`` units may pass at a sustained ``rate`` per second, with up to ``burst`` at once
    from an idle bucket::

        bucket = TokenBucket(10, burst=5)     # 10/s, 5 at once
        await bucket.acquire(2)

    Waiters are served strictly first come, first served: a small cost never overtakes a larger
    one queued before it, so large costs are never starved. A cost larger than ``burst`` is
    admitted once the bucket is idle (nothing owed), instead of never. Cancelling a waiter takes
    it out of the queue and gives back nothing it did not take.
    """

    # State, and the invariants that hold between calls:
    #
    # * ``_tat`` (theoretical arrival time): the loop time at which everything admitted so far
    #   has drained at ``_rate``. The bucket's level is ``max(0, _tat - now) * _rate`` segments;
    #   it is never stored. Each admission moves ``_tat`` to ``max(_tat, now) + cost/rate``, so
    #   over any interval [a, b] at most ``burst + rate * (b - a)`` is admitted (plus, at most
    #   once per idle period, the excess of one cost larger than the burst).
    # * A cost ``c`` conforms at ``now`` iff ``now >= _ready_at(c)``: there is room for ``c``
    #   within the burst tolerance ``_tau = burst/rate`` seconds, or, for ``c > burst``, the
    #   bucket is empty; and ``now >= _paused_until``.
    # * ``_waiters`` is FIFO. While it is non-empty and the bucket is not held, exactly one timer
    #   (``_timer``) is armed, for the ready time of the head waiter; no other timer exists.
    # * ``_held``: a waiter was granted the head of the queue without taking capacity yet (see
    #   ``_hold``); nobody else is admitted until it commits or lets go. No timer while held.
    __slots__ = (
        "_burst",
        "_held",
        "_interval",
        "_loop",
        "_paused_until",
        "_rate",
        "_tat",
        "_tau",
        "_timer",
        "_waiters",
    )

    def __init__(self, rate: float, *, burst: float | None = None) -> None:
        """``rate`` per second, ``burst`` at once (default one second's worth, at least 1)."""
        self._rate = _check_rate("rate", rate)
        self._burst = _default_burst(self._rate) if burst is None else _check_burst("burst", burst)
        self._interval = 1.0 / self._rate
        self._tau = self._burst * self._interval
        self._tat = -math.inf
        self._paused_until = -math.inf
        self._waiters: deque[_Waiter] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._held = False
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- public surface ---------------------------------------------------------------------

    @property
    def rate(self) -> float:
        """Sustained rate, per second."""
        return self._rate

    @property
    def burst(self) -> float:
        """Most that may pass at once from an idle bucket."""
        return self._burst

    @property
    def paused_until(self) -> float:
        """Loop time before which nothing is admitted (``-inf`` when never paused)."""
        return self._paused_until

    async def acquire(self, cost: float = 1.0) -> None:
        """Wait until ``cost`` may pass, then take it from the bucket."""
        if cost < 0:
            raise ValueError(f"cost must be >= 0, got {cost!r}")
        loop = self._loop
        if loop is None:
            loop = self._bind()
        if self._try_take(cost, loop.time()):
            return
        await self._wait(cost, hold=False)

    def release(self, cost: float = 1.0) -> None:
        """Give back ``cost`` taken by an acquisition that was not used."""
        self._give_back(cost, self._now())

    def set_rate(self, rate: float, *, burst: float | None = None) -> None:
        """Change the rate (and optionally the burst) now; queued waiters are re-timed.

        What is already in the bucket is kept in units of cost, so a lower rate makes it drain
        more slowly; it is not forgiven.
        """
        self._set_rate(rate, burst, self._now())

    def pause_until(self, when: float) -> None:
        """Admit nothing before loop time ``when``. A pause is only ever extended, not cut short."""
        if when > self._paused_until:
            self._paused_until = when
            self._reschedule()

    def __repr__(self) -> str:
        now = self._now()
        level = max(0.0, self._tat - now) * self._rate
        paused = f" paused_for={self._paused_until - now:.3f}s" if self._paused_until > now else ""
        held = " held" if self._held else ""
        return (
            f"<{type(self).__name__} rate={self._rate:g}/s burst={self._burst:g} level={level:.3f}"
            f" tat={self._tat - now:+.3f}s waiters={len(self._waiters)}{held}{paused}>"
        )

    # --- internals, shared with AdaptiveLimiter ---------------------------------------------

    def _now(self) -> float:
        return self._loop.time() if self._loop is not None else _loop_time()

    def _bind(self) -> asyncio.AbstractEventLoop:
        """Bind to the running loop (lazily, on first use; checked again on every slow path).

        The fast path reads the clock of the loop bound last without asking which loop is
        running (that lookup costs more than the rest of the fast path). Timers and futures
        belong to one loop, so rebinding is only allowed while none exist; the bucket's times
        carry over because every stock loop reads ``time.monotonic()``.
        """
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            if self._loop is not None and (self._waiters or self._held or self._timer is not None):
                raise RuntimeError(f"{type(self).__name__} is in use by another event loop")
            self._loop = loop
        return loop

    def _ready_at(self, cost: float) -> float:
        """Earliest loop time at which ``cost`` conforms (ignoring queued waiters)."""
        slack = self._tau - cost * self._interval
        # Within the burst: once the bucket has room for the cost. Beyond it: once the bucket
        # is empty (tat <= now), which keeps the long-run rate exact and cannot deadlock.
        ready = self._tat - slack if slack > 0.0 else self._tat
        paused = self._paused_until
        return ready if ready > paused else paused

    def _conforms(self, cost: float, now: float) -> bool:
        """Whether ``cost`` may be taken right now without overtaking anyone."""
        return not self._waiters and not self._held and self._ready_at(cost) <= now + _EPSILON

    def _try_take(self, cost: float, now: float) -> bool:
        """``_conforms`` then ``_take``, in one call and inlined: this is the fast path."""
        if self._waiters or self._held or self._paused_until > now + _EPSILON:
            return False
        tat = self._tat
        if tat <= now:  # empty bucket: any cost conforms, even one above the burst
            self._tat = now + cost * self._interval
            return True
        new_tat = tat + cost * self._interval
        limit = now + _EPSILON
        # _ready_at(cost) == min(tat, new_tat - tau): not empty, and no room for the cost
        if tat > limit and new_tat - self._tau > limit:
            return False
        self._tat = new_tat
        return True

    def _take(self, cost: float, now: float) -> None:
        tat = self._tat
        self._tat = (tat if tat > now else now) + cost * self._interval

    def _give_back(self, cost: float, now: float) -> None:
        # Only what is still in the bucket can come back: the level never goes below empty.
        if self._tat > now:
            self._tat = max(self._tat - cost * self._interval, now)
            self._reschedule()

    def _is_idle(self, now: float) -> bool:
        """Empty, unpaused and unused: indistinguishable from a new bucket."""
        return not self._waiters and not self._held and self._tat <= now and self._paused_until <= now

    def _set_rate(self, rate: float, burst: float | None, now: float) -> None:
        rate = _check_rate("rate", rate)
        level = max(0.0, self._tat - now) * self._rate
        self._rate = rate
        if burst is not None:
            self._burst = _check_burst("burst", burst)
        self._interval = 1.0 / rate
        self._tau = self._burst * self._interval
        if level:
            self._tat = now + level * self._interval
        self._reschedule()

    def _exhaust(self, now: float, carry: float = CUT_CARRY_BURSTS) -> None:
        """Treat the bucket as just filled: no burst, the next cost waits at least one interval.

        What the old rate admitted stays in the bucket (a halved account rate then pauses while
        the over-full queue drains: half the 429s after the change), but never more than
        ``carry`` bursts of the new rate: a deep cut (a second of a 160/s burst carried at
        1.6/s) would otherwise stop all sending for a minute and a half. ``carry=1``: exactly
        full, nothing carried.
        """
        tau = self._tau
        self._tat = min(max(self._tat, now + tau), now + carry * tau)
        self._reschedule()

    async def _hold(self, cost: float) -> None:
        """Wait, in the FIFO, until ``cost`` conforms; then hold the bucket without taking.

        The caller must follow with exactly one ``_commit`` (take ``cost`` at that moment) or
        ``_unhold`` (take nothing). :class:`AdaptiveLimiter` holds the sender's bucket while it
        waits for the account, so the sender's capacity is taken at the instant of sending.
        """
        loop = self._bind()
        if self._conforms(cost, loop.time()):
            self._held = True
            return
        await self._wait(cost, hold=True)

    def _commit(self, cost: float, now: float) -> None:
        self._held = False
        self._take(cost, now)
        self._reschedule()

    def _unhold(self) -> None:
        self._held = False
        self._reschedule()

    async def _wait(self, cost: float, *, hold: bool) -> None:
        loop = self._bind()
        fut: asyncio.Future[None] = loop.create_future()
        entry: _Waiter = (fut, cost, hold)
        waiters = self._waiters
        waiters.append(entry)
        if len(waiters) == 1:
            self._reschedule()  # new head: arm the timer (or grant at once)
        try:
            await fut
        except BaseException:  # cancelled, mostly; also a coroutine closed mid-wait
            if fut.done() and not fut.cancelled():
                # Granted, then cancelled before this task resumed: give back exactly what the
                # grant took, which is the only thing this waiter ever took.
                if hold:
                    self._unhold()
                else:
                    self._give_back(cost, loop.time())
            else:
                was_head = bool(waiters) and waiters[0] is entry
                # _wake may already have dropped the cancelled entry.
                if entry in waiters:
                    waiters.remove(entry)
                if was_head:
                    self._reschedule()  # the next waiter may be due earlier
            raise

    def _reschedule(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._wake()

    def _wake(self) -> None:
        """Grant every head waiter that conforms now; arm one timer for the next one."""
        self._timer = None
        waiters = self._waiters
        if self._held or not waiters:
            return
        loop = self._loop
        assert loop is not None  # waiters exist only once bound
        now = loop.time()
        while waiters:
            fut, cost, hold = waiters[0]
            if fut.done():  # cancelled; its task has not run its cleanup yet
                waiters.popleft()
                continue
            ready = self._ready_at(cost)
            if ready > now + _EPSILON:
                self._timer = loop.call_at(ready, self._wake)
                return
            waiters.popleft()
            if hold:
                self._held = True
                fut.set_result(None)
                return
            self._take(cost, now)
            fut.set_result(None)


class AdaptiveLimiter:
    """The in-process :class:`RateLimiter`: account and per-sender buckets, adapted to 429s.

    ::

        limiter = AdaptiveLimiter(rate=100, per_sender_rate=1)   # 100 segments/s, 1 per number
        limiter = AdaptiveLimiter()                              # no limit until the first 429

    **Two keys, no waste.** A request first waits, in its sender's FIFO, until the sender's
    bucket has room; it then *holds* that bucket (later requests from the same number queue
    behind it) and waits in the account FIFO. When the account admits it, both buckets are
    charged at that same instant. Neither bucket is charged while the request waits on the
    other, so no capacity is burnt on a request that has not gone, and the admission times obey
    both the per-sender and the account rate + burst exactly. (Charging the sender first and then
    waiting on the account would let one number's requests bunch up behind a slow account queue
    and leave back to back.) Keys are always taken sender first, then account, so two requests
    can never wait on each other. The fast path, when both keys have room and nobody is queued,
    charges both at once with no future, no timer and no suspension.

    **Adapting.** The account rate follows a :class:`~bwasync._ratecontrol.RateController`
    (its module docstring states the rules): a 429 cuts the rate to just below what the server
    accepted over the last second (or to Bandwidth's stated allowed rate), a cut that does not
    lower the share of 429s is undone and that share remembered as noise, and the rate regrows as
    CUBIC up to the configured ``rate``. A cut also drops the bucket's burst credit (the queue is
    full). A ``Retry-After`` only delays the retry of the request that carried it; it does not
    pause the account. With ``rate=None`` nothing is throttled until the first 429, and the
    limiter unthrottles again once the regrown rate is far above what is being sent.

    Per-sender buckets are made on first use and dropped once they are idle (full again), which
    never changes admission: an idle bucket is the same as a new one.
    """

    __slots__ = (
        "_account",
        "_burst_seconds",
        "_ceiling",
        "_control",
        "_loop",
        "_next_sweep",
        "_per_sender_burst",
        "_per_sender_rate",
        "_quiet",
        "_senders",
    )

    def __init__(
        self,
        *,
        rate: float | None = None,
        burst: float | None = None,
        per_sender_rate: float | None = None,
        per_sender_burst: float | None = None,
    ) -> None:
        # Account: ``_account`` is None exactly while unthrottled (no rate configured, or the
        # controller let go). ``_ceiling`` is the configured rate; None means there is none, ever.
        self._ceiling: float | None = None
        self._account: TokenBucket | None = None
        self._burst_seconds = DEFAULT_BURST_SECONDS
        if rate is not None:
            self._ceiling = _check_rate("rate", rate)
            self._account = TokenBucket(self._ceiling, burst=burst)
            # The burst keeps its duration when the rate adapts: a cut rate bursts less.
            self._burst_seconds = self._account.burst / self._ceiling
        elif burst is not None:
            raise ConfigurationError("burst needs a rate")
        if per_sender_rate is not None:
            per_sender_rate = _check_rate("per_sender_rate", per_sender_rate)
            per_sender_burst = (
                _default_burst(per_sender_rate)
                if per_sender_burst is None
                else _check_burst("per_sender_burst", per_sender_burst)
            )
        elif per_sender_burst is not None:
            raise ConfigurationError("per_sender_burst needs a per_sender_rate")
        self._per_sender_rate = per_sender_rate
        self._per_sender_burst = per_sender_burst
        self._senders: dict[str, TokenBucket] = {}
        self._next_sweep = -math.inf
        # Only the clock is read from it; each bucket checks the running loop on its slow path.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._control = RateController(ceiling=self._ceiling)
        # The controller's meter until the first 429, None from then on. Before any 429 the
        # controller's on_sent and on_success only count, in its meter (RateController's
        # docstring), so the fast paths below count a send or an answer themselves: into the
        # meter's running totals while its ``counting_until`` allows (Meter's docstring: no call
        # at all), else through the meter's own methods. The same counts either way.
        self._quiet: Meter | None = self._control.meter

    @property
    def rate(self) -> float | None:
        """Current account rate in segments per second; ``None`` while unthrottled."""
        return self._account.rate if self._account is not None else None

    async def acquire(self, cost: float, *, sender: str) -> None:
        """Wait until ``cost`` segments may be sent from ``sender``; see the class docstring."""
        if not self.try_acquire(cost, sender=sender):
            # try_acquire made the sender's bucket, if there are per-sender buckets.
            await self._acquire_slow(cost, self._senders[sender] if self._per_sender_rate is not None else None)

    def try_acquire(self, cost: float, *, sender: str) -> bool:
        """The fast path of :meth:`acquire`: take ``cost`` now if both keys have room and nobody
        is queued, else take nothing and return False. Never waits; the send pipeline calls it
        first (:func:`fast_acquire`) and awaits :meth:`acquire` only when it returns False (no
        coroutine per message while nothing throttles)."""
        return self._try_acquire(cost, sender)

    def _try_acquire(self, cost: float, sender: str) -> bool:
        if cost < 0:
            raise ValueError(f"cost must be >= 0, got {cost!r}")
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        now = loop.time()
        account = self._account
        # Both keys conform now and are charged together. If the sender's bucket was charged
        # but the account's refuses, the charge is undone exactly (nothing can run in between),
        # so a request never holds capacity of one key while it waits on the other.
        if self._per_sender_rate is None:
            if account is None or account._try_take(cost, now):
                meter = self._quiet
                if meter is not None:  # all that on_sent does before the first 429 (see __init__)
                    if now < meter.counting_until:
                        meter.total[0] += cost  # Meter.sent, as its docstring allows
                    else:
                        meter.sent(cost, now)
                else:
                    self._control.on_sent(cost, now)
                return True
            return False
        if now >= self._next_sweep:
            self._sweep(now)
        sender_bucket = self._senders.get(sender)
        if sender_bucket is None:
            sender_bucket = self._senders[sender] = TokenBucket(self._per_sender_rate, burst=self._per_sender_burst)
        sender_tat = sender_bucket._tat
        if sender_bucket._try_take(cost, now):
            if account is None or account._try_take(cost, now):
                self._control.on_sent(cost, now)
                return True
            sender_bucket._tat = sender_tat
        return False

    def release(self, cost: float, *, sender: str) -> None:
        """Give back ``cost`` segments acquired for a request that never left."""
        now = self._now()
        if self._account is not None:
            self._account._give_back(cost, now)
        sender_bucket = self._senders.get(sender)
        if sender_bucket is not None:
            sender_bucket._give_back(cost, now)
        self._control.on_unsent(cost)

    def report_success(self, cost: float, *, sender: str) -> None:
        """A send was accepted: counted, and the rate regrows (see the class docstring)."""
        self._report_success(cost, sender)

    def _report_success(self, cost: float, sender: str) -> None:
        loop = self._loop  # bound by acquire, which came first
        now = loop.time() if loop is not None else _loop_time()
        meter = self._quiet
        if meter is not None:
            # All that on_success does before the first 429: count, and answer False (see __init__).
            if now < meter.counting_until:
                total = meter.total  # Meter.accepted, as its docstring allows
                total[1] += cost
                total[2] += 1
            else:
                meter.accepted(cost, now)
            return
        if self._control.on_success(cost, now):
            self._apply(now)

    def report_rate_limited(self, *, sender: str, retry_after: float | None, allowed_rate: float | None = None) -> None:
        """A 429: maybe a cut (see the class docstring). ``retry_after`` does not pause the account."""
        now = self._now()
        if allowed_rate is not None and not (allowed_rate > 0 and math.isfinite(allowed_rate)):
            allowed_rate = None
        before = self.rate
        self._quiet = None  # from the first 429 on, every event goes through the controller
        if self._control.on_rate_limited(now, allowed_rate=allowed_rate):
            self._apply(now)
        _log.debug(
            "429 from %s: rate %s -> %s segments/s (allowed rate %s, retry_after=%s)",
            sender,
            before,
            self.rate,
            allowed_rate,
            retry_after,
        )

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} rate={_per_second(self.rate, 'unthrottled')}"
            f" ceiling={_per_second(self._ceiling, 'none')} account={self._account!r}"
            f" per_sender_rate={self._per_sender_rate} senders={len(self._senders)}>"
        )

    # --- internals --------------------------------------------------------------------------

    def _now(self) -> float:
        return self._loop.time() if self._loop is not None else _loop_time()

    def _apply(self, now: float) -> None:
        """Make the account bucket follow the controller's rate (a cut also drops the burst)."""
        rate = self._control.rate
        account = self._account
        if rate is None:
            if account is not None:
                # Unthrottled from now on; let whoever queued on the bucket go at once.
                if account._waiters:
                    account._set_rate(_UNTHROTTLED, _UNTHROTTLED, now)
                self._account = None
            return
        burst = max(1.0, rate * self._burst_seconds)
        if account is None:
            account = self._account = TokenBucket(rate, burst=burst)
            account._exhaust(now)  # the first cut: the queue is full, no burst on top of it
        elif rate < account.rate:
            account._set_rate(rate, burst, now)
            # The queue is full: no burst on top of the cut, and, unless the cut is to the rate
            # the queue was measured to drain at, a pause while it drains.
            account._exhaust(now, CUT_CARRY_BURSTS if self._control.carry else 1.0)
        else:
            account._set_rate(rate, burst, now)

    async def _acquire_slow(self, cost: float, sender_bucket: TokenBucket | None) -> None:
        if sender_bucket is not None:
            # Sender first, holding its bucket without charging it (see the class docstring).
            await sender_bucket._hold(cost)
            try:
                account = self._account  # read again: a 429 may have created it meanwhile
                if account is not None:
                    await account.acquire(cost)
            except BaseException:
                sender_bucket._unhold()
                raise
            now = self._now()
            sender_bucket._commit(cost, now)
        else:
            account = self._account
            assert account is not None  # the fast path only fails on a throttled key
            await account.acquire(cost)
            now = self._now()
        self._control.on_sent(cost, now)

    def _sweep(self, now: float) -> None:
        self._next_sweep = now + SENDER_BUCKET_SWEEP_INTERVAL
        idle = [sender for sender, bucket in self._senders.items() if bucket._is_idle(now)]
        for sender in idle:
            del self._senders[sender]
