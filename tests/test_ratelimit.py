"""Rate limiting, on a controlled clock.

No test sleeps on the wall clock. The ``clock`` fixture replaces the running loop's ``time()``
with a fake one (as aiolimiter's tests do); because the loop's scheduler also asks
``loop.time()`` which timers are due, moving the fake clock and yielding a few times makes the
limiters' ``call_at`` timers fire exactly as they would in real time.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Coroutine
from typing import Any
from unittest import mock

import pytest

from bwasync import MessagingClient
from bwasync._constants import (
    CUT_CARRY_BURSTS,
    DEFAULT_BURST_SECONDS,
    MIN_CONFIGURED_RATE,
    MIN_RATE,
    RATE_DRAIN_FACTOR,
    RATE_HINT_FACTOR,
)
from bwasync._exceptions import ConfigurationError
from bwasync._ratecontrol import Meter, RateController
from bwasync._ratelimit import AdaptiveLimiter, RateLimiter, TokenBucket

# --- harness ---------------------------------------------------------------------------------


class FakeClock:
    """The loop's clock, moved by hand; tasks started through it are cleaned up after the test."""

    def __init__(self) -> None:
        self.now = 0.0
        self.tasks: list[asyncio.Task[Any]] = []

    def time(self) -> float:
        return self.now

    async def settle(self, rounds: int = 30) -> None:
        """Let due timers fire and the tasks they wake run to their next wait."""
        for _ in range(rounds):
            await asyncio.sleep(0)

    async def advance_to(self, when: float) -> None:
        """Jump to ``when``: timers due by then fire late, at ``when``, as on a lagging loop."""
        assert when >= self.now
        await self.settle()  # tasks started at the old time get there first
        self.now = when
        await self.settle()

    async def run_until(self, until: float, step: float = 0.01) -> None:
        """Move time forward in small steps, as a real clock would (no float drift)."""
        start = self.now
        ticks = round((until - start) / step)
        for i in range(1, ticks + 1):
            await self.advance_to(start + i * step)
        await self.advance_to(until)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self.tasks.append(task)
        return task


@pytest.fixture
async def clock() -> AsyncIterator[FakeClock]:
    loop = asyncio.get_running_loop()
    fake = FakeClock()
    with mock.patch.object(loop, "time", fake.time):
        yield fake
        # Cancel leftovers while the clock is still fake, so no timer is left far in the future.
        for task in fake.tasks:
            task.cancel()
        await asyncio.gather(*fake.tasks, return_exceptions=True)


Log = list[tuple[float, Any, float]]


def acquire_and_log(
    clock: FakeClock, limiter: TokenBucket | AdaptiveLimiter, log: Log, tag: Any = None, cost: float = 1.0
) -> asyncio.Task[None]:
    """Start an acquisition; when admitted, log (time, tag, cost)."""

    async def run() -> None:
        if isinstance(limiter, TokenBucket):
            await limiter.acquire(cost)
        else:
            await limiter.acquire(cost, sender=str(tag[0] if isinstance(tag, tuple) else tag))
        log.append((clock.now, tag, cost))

    return clock.spawn(run())


def finishes_without_waiting(coro: Coroutine[Any, Any, None]) -> bool:
    """Run a coroutine one step: True if it completed without suspending."""
    try:
        coro.send(None)
    except StopIteration:
        return True
    coro.close()
    return False


def assert_conforms(events: list[tuple[float, float]], rate: float, burst: float) -> None:
    """Replay (time, cost) admissions through an independent leaky-bucket model.

    Every admission must fit (level + cost <= burst), or find the bucket empty (a cost larger
    than the burst). This is the definition the limiter must meet, computed a different way.
    """
    level = 0.0
    last = -math.inf
    for when, cost in sorted(events):
        if last > -math.inf:
            level = max(0.0, level - (when - last) * rate)
        last = when
        assert level + cost <= burst + 1e-6 or level <= 1e-6, f"over the limit at t={when}: level={level}"
        level += cost


def live_timers(loop: asyncio.AbstractEventLoop) -> int:
    scheduled: list[asyncio.TimerHandle] = loop._scheduled  # type: ignore[attr-defined]
    return len([handle for handle in scheduled if not handle.cancelled()])


# --- TokenBucket -----------------------------------------------------------------------------


async def test_fast_path_completes_without_suspending(clock: FakeClock) -> None:
    bucket = TokenBucket(10, burst=3)
    assert finishes_without_waiting(bucket.acquire(1))
    assert finishes_without_waiting(bucket.acquire(2))
    assert not finishes_without_waiting(bucket.acquire(1))  # burst used up


@pytest.mark.parametrize(
    "limiter",
    [
        AdaptiveLimiter(),
        AdaptiveLimiter(rate=100),
        AdaptiveLimiter(rate=100, per_sender_rate=10),
        AdaptiveLimiter(per_sender_rate=10),
    ],
    ids=repr,
)
async def test_adaptive_fast_path_completes_without_suspending(clock: FakeClock, limiter: AdaptiveLimiter) -> None:
    loop = asyncio.get_running_loop()
    for _ in range(5):
        assert finishes_without_waiting(limiter.acquire(1, sender="+15550001"))
    assert live_timers(loop) == 0


async def test_burst_at_start_then_one_per_interval(clock: FakeClock) -> None:
    bucket = TokenBucket(10, burst=5)
    log: Log = []
    for i in range(20):
        acquire_and_log(clock, bucket, log, i)
    await clock.settle()
    assert len(log) == 5
    await clock.advance_to(0.0999)
    assert len(log) == 5
    await clock.advance_to(0.1)
    assert len(log) == 6
    await clock.run_until(1.0)
    assert len(log) == 15
    assert [tag for _, tag, _ in log] == list(range(15))  # first come, first served


async def test_steady_rate(clock: FakeClock) -> None:
    bucket = TokenBucket(50, burst=5)
    log: Log = []
    for i in range(1000):
        acquire_and_log(clock, bucket, log, i)
    await clock.run_until(10.0, step=0.01)
    # burst + rate * T, to within one segment
    assert abs(len(log) - (5 + 50 * 10)) <= 1
    late = [t for t, _, _ in log if t >= 5.0]
    assert abs(len(late) / 5.0 - 50) <= 0.5
    assert_conforms([(t, c) for t, _, c in log], rate=50, burst=5)


async def test_one_timer_for_many_waiters(clock: FakeClock) -> None:
    loop = asyncio.get_running_loop()
    bucket = TokenBucket(10, burst=1)
    log: Log = []
    for i in range(100):
        acquire_and_log(clock, bucket, log, i)
    await clock.settle()
    assert live_timers(loop) == 1
    await clock.run_until(0.55)
    assert len(log) == 6
    assert live_timers(loop) == 1


async def test_cost_above_burst_is_admitted_when_idle(clock: FakeClock) -> None:
    bucket = TokenBucket(10, burst=2)
    assert finishes_without_waiting(bucket.acquire(5))  # idle bucket: goes at once
    log: Log = []
    acquire_and_log(clock, bucket, log, "next")
    # 5 segments owed at 10/s; the next one fits once the level is <= burst - 1
    await clock.advance_to(0.399)
    assert log == []
    await clock.advance_to(0.4)
    assert log == [(0.4, "next", 1.0)]


async def test_cost_above_burst_waits_for_empty_bucket(clock: FakeClock) -> None:
    bucket = TokenBucket(10, burst=2)
    await bucket.acquire(1)
    log: Log = []
    acquire_and_log(clock, bucket, log, "big", cost=5)
    await clock.advance_to(0.09)
    assert log == []
    await clock.advance_to(0.1)
    assert log == [(0.1, "big", 5)]


async def test_fifo_large_cost_not_starved(clock: FakeClock) -> None:
    bucket = TokenBucket(10, burst=5)
    await bucket.acquire(5)  # full until t=0.5
    log: Log = []
    acquire_and_log(clock, bucket, log, "big", cost=5)
    for i in range(5):
        acquire_and_log(clock, bucket, log, f"small{i}")  # each alone would fit at t=0.1
    await clock.advance_to(0.3)
    # A newcomer that would fit on its own at 0.3 still queues behind the big one.
    assert not finishes_without_waiting(bucket.acquire(1))
    acquire_and_log(clock, bucket, log, "late")
    await clock.advance_to(0.45)
    assert log == []
    await clock.advance_to(0.5)
    assert [tag for _, tag, _ in log] == ["big"]
    await clock.run_until(1.1)
    assert [tag for _, tag, _ in log] == ["big", "small0", "small1", "small2", "small3", "small4", "late"]
    assert log[1][0] == pytest.approx(0.6)


async def test_cancel_head_waiter(clock: FakeClock) -> None:
    bucket = TokenBucket(10, burst=1)
    await bucket.acquire()
    log: Log = []
    first = acquire_and_log(clock, bucket, log, "first")  # due at 0.1
    acquire_and_log(clock, bucket, log, "second")  # due at 0.2
    await clock.advance_to(0.05)
    first.cancel()
    await clock.advance_to(0.099)
    assert log == []
    await clock.advance_to(0.1)  # the timer, re-armed for the new head, wakes it
    assert log == [(0.1, "second", 1.0)]
    # No extra capacity came from the cancelled waiter.
    acquire_and_log(clock, bucket, log, "third")
    await clock.advance_to(0.15)
    assert len(log) == 1
    await clock.advance_to(0.2)
    assert [tag for _, tag, _ in log] == ["second", "third"]
    assert first.cancelled()


async def test_cancel_large_head_reschedules_smaller_next(clock: FakeClock) -> None:
    bucket = TokenBucket(10, burst=5)
    await bucket.acquire(5)
    log: Log = []
    big = acquire_and_log(clock, bucket, log, "big", cost=5)  # due at 0.5
    acquire_and_log(clock, bucket, log, "small")  # would be due at 0.1 if alone
    await clock.advance_to(0.05)
    big.cancel()
    await clock.advance_to(0.09)
    assert log == []
    await clock.advance_to(0.1)
    assert log == [(0.1, "small", 1.0)]


async def test_cancel_middle_waiter(clock: FakeClock) -> None:
    bucket = TokenBucket(10, burst=1)
    await bucket.acquire()
    log: Log = []
    acquire_and_log(clock, bucket, log, "a")  # 0.1
    b = acquire_and_log(clock, bucket, log, "b")  # 0.2
    acquire_and_log(clock, bucket, log, "c")  # 0.3, then 0.2 once b is gone
    await clock.settle()
    b.cancel()
    await clock.run_until(0.25)
    assert log == [(0.1, "a", 1.0), (pytest.approx(0.2), "c", 1.0)]


async def test_cancel_after_grant_gives_capacity_back(clock: FakeClock) -> None:
    bucket = TokenBucket(10, burst=1)
    await bucket.acquire()
    waiter = clock.spawn(bucket.acquire())
    await clock.settle()
    clock.now = 0.1
    # Step the loop until the timer has granted the waiter but the waiter has not yet run.
    for _ in range(10):
        await asyncio.sleep(0)
        if not bucket._waiters and not waiter.done():
            break
    else:
        pytest.fail("never saw the granted-but-not-resumed state")
    waiter.cancel()
    await clock.settle()
    assert waiter.cancelled()
    # What the grant took came back: the slot at t=0.1 is free again.
    assert finishes_without_waiting(bucket.acquire())
    assert not finishes_without_waiting(bucket.acquire())


async def test_release_gives_back_but_never_beyond_empty(clock: FakeClock) -> None:
    bucket = TokenBucket(10, burst=1)
    bucket.release(5)  # nothing taken yet: no credit
    assert finishes_without_waiting(bucket.acquire())
    assert not finishes_without_waiting(bucket.acquire())
    bucket.release()
    assert finishes_without_waiting(bucket.acquire())


async def test_release_wakes_waiter(clock: FakeClock) -> None:
    bucket = TokenBucket(1, burst=1)
    await bucket.acquire()
    log: Log = []
    acquire_and_log(clock, bucket, log, "w")  # due at 1.0
    await clock.advance_to(0.2)
    assert log == []
    bucket.release()
    await clock.settle()
    assert log == [(0.2, "w", 1.0)]


async def test_set_rate_lower_retimes_waiter(clock: FakeClock) -> None:
    bucket = TokenBucket(10, burst=1)
    await bucket.acquire()
    log: Log = []
    acquire_and_log(clock, bucket, log, "w")  # due at 0.1 at 10/s
    await clock.settle()
    bucket.set_rate(1)  # the segment in the bucket now drains in 1 s
    assert bucket.rate == 1
    await clock.advance_to(0.5)
    assert log == []
    await clock.advance_to(1.0)
    assert log == [(1.0, "w", 1.0)]


async def test_set_rate_higher_retimes_waiter(clock: FakeClock) -> None:
    bucket = TokenBucket(1, burst=1)
    await bucket.acquire()
    log: Log = []
    acquire_and_log(clock, bucket, log, "w")  # due at 1.0 at 1/s
    await clock.settle()
    bucket.set_rate(100)  # the one segment in the bucket now drains in 10 ms
    assert (bucket.rate, bucket.burst) == (100, 1)
    await clock.advance_to(0.009)
    assert log == []
    await clock.advance_to(0.01)
    assert log == [(0.01, "w", 1.0)]


async def test_set_rate_with_larger_burst_admits_at_once(clock: FakeClock) -> None:
    bucket = TokenBucket(1, burst=1)
    await bucket.acquire()
    log: Log = []
    acquire_and_log(clock, bucket, log, "w")
    await clock.settle()
    assert log == []
    bucket.set_rate(1, burst=3)
    assert bucket.burst == 3
    await clock.settle()
    assert log == [(0.0, "w", 1.0)]


async def test_pause_until(clock: FakeClock) -> None:
    bucket = TokenBucket(10, burst=3)
    bucket.pause_until(2.0)
    bucket.pause_until(1.0)  # never shortens a pause
    assert bucket.paused_until == 2.0
    log: Log = []
    for i in range(5):
        acquire_and_log(clock, bucket, log, i)
    await clock.advance_to(1.99)
    assert log == []
    await clock.advance_to(2.0)
    assert [tag for _, tag, _ in log] == [0, 1, 2]  # the burst is intact after the pause
    await clock.advance_to(2.1)
    assert len(log) == 4


def test_built_outside_a_loop_and_reused_across_loops() -> None:
    bucket = TokenBucket(1000, burst=10)
    limiter = AdaptiveLimiter(rate=1000, per_sender_rate=100)
    assert "waiters=0" in repr(bucket)
    assert "rate=1000/s" in repr(limiter)

    async def use() -> None:
        await bucket.acquire()
        await limiter.acquire(1, sender="a")

    asyncio.run(use())
    asyncio.run(use())
    assert "level=" in repr(bucket)


async def test_repr_shows_live_state(clock: FakeClock) -> None:
    bucket = TokenBucket(10, burst=5)
    await bucket.acquire(5)
    bucket.pause_until(3.0)
    acquire_and_log(clock, bucket, [], "w")
    acquire_and_log(clock, bucket, [], "w")
    await clock.settle()
    text = repr(bucket)
    assert text.startswith("<TokenBucket rate=10/s burst=5 level=5.000")
    assert "waiters=2" in text
    assert "paused_for=3.000s" in text


@pytest.mark.parametrize("rate", [5e-324, 1e-300, MIN_CONFIGURED_RATE / 2])
async def test_a_rate_below_one_segment_a_day_is_refused_everywhere_one_is_configured(rate: float) -> None:
    # 5e-324 made a bucket whose interval overflowed to infinity: it admitted every send at
    # once. 1e-300 held the second send for longer than the universe.
    for make in (
        lambda: TokenBucket(rate),
        lambda: TokenBucket(1).set_rate(rate),
        lambda: AdaptiveLimiter(rate=rate),
        lambda: AdaptiveLimiter(per_sender_rate=rate),
        lambda: MessagingClient("9900000", username="u", password="p", rate=rate),
    ):
        with pytest.raises(ConfigurationError, match=r"must be at least one segment a day \(1\.16e-05 per second\)"):
            make()
    async with MessagingClient("9900000", username="u", password="p", base_url="http://127.0.0.1:9") as client:
        with pytest.raises(ConfigurationError, match="at least one segment a day"):
            client.send_many([], rate=rate)
    assert TokenBucket(MIN_CONFIGURED_RATE).rate == MIN_CONFIGURED_RATE


async def test_bad_arguments() -> None:
    with pytest.raises(ConfigurationError):
        TokenBucket(0)
    with pytest.raises(ConfigurationError):
        TokenBucket(1, burst=-1)
    with pytest.raises(ConfigurationError):
        AdaptiveLimiter(rate=math.inf)
    with pytest.raises(ConfigurationError):
        AdaptiveLimiter(burst=10)
    with pytest.raises(ConfigurationError):
        AdaptiveLimiter(per_sender_burst=2)
    with pytest.raises(ValueError):
        await TokenBucket(1).acquire(-1)
    with pytest.raises(ValueError):
        await AdaptiveLimiter().acquire(-1, sender="a")


# --- AdaptiveLimiter: two keys ---------------------------------------------------------------


def test_adaptive_limiter_is_a_rate_limiter() -> None:
    limiter: RateLimiter = AdaptiveLimiter()
    assert isinstance(limiter, RateLimiter)
    assert limiter.rate is None
    assert not isinstance(TokenBucket(1), RateLimiter)  # no sender: not the client's interface


async def test_senders_are_independent(clock: FakeClock) -> None:
    limiter = AdaptiveLimiter(rate=100, per_sender_rate=1, per_sender_burst=1)
    log: Log = []
    acquire_and_log(clock, limiter, log, "a")
    acquire_and_log(clock, limiter, log, "a")
    acquire_and_log(clock, limiter, log, "b")
    await clock.settle()
    assert sorted(tag for _, tag, _ in log) == ["a", "b"]
    await clock.advance_to(0.99)
    assert len(log) == 2
    await clock.advance_to(1.0)
    assert log[-1] == (1.0, "a", 1.0)


async def test_senders_all_bounded_by_account(clock: FakeClock) -> None:
    limiter = AdaptiveLimiter(rate=10, burst=10, per_sender_rate=1, per_sender_burst=1)
    log: Log = []
    for sender in range(30):
        for n in range(3):
            acquire_and_log(clock, limiter, log, (sender, n))
    await clock.settle()
    assert len(log) == 10  # the account's burst, although 30 senders each had room
    await clock.run_until(10.0, step=0.01)
    assert len(log) == 90
    assert_conforms([(t, c) for t, _, c in log], rate=10, burst=10)
    for sender in range(30):
        mine = [(t, c) for t, tag, c in log if tag[0] == sender]
        assert len(mine) == 3
        assert_conforms(mine, rate=1, burst=1)
        # each sender's own requests stay in order
        assert [tag[1] for _, tag, _ in log if tag[0] == sender] == [0, 1, 2]


async def test_slow_account_does_not_bunch_a_sender(clock: FakeClock) -> None:
    # The account (2/s) is the bottleneck. Were a sender charged before waiting on the account,
    # its queued requests would leave back to back once the account let them through.
    limiter = AdaptiveLimiter(rate=2, burst=1, per_sender_rate=1, per_sender_burst=1)
    log: Log = []
    for n in range(4):
        for sender in "abc":
            acquire_and_log(clock, limiter, log, (sender, n))
    await clock.run_until(8.0, step=0.01)
    assert len(log) == 12
    assert_conforms([(t, c) for t, _, c in log], rate=2, burst=1)
    for sender in "abc":
        assert_conforms([(t, c) for t, tag, c in log if tag[0] == sender], rate=1, burst=1)


async def test_waiting_on_sender_does_not_take_account_capacity(clock: FakeClock) -> None:
    limiter = AdaptiveLimiter(rate=10, burst=1, per_sender_rate=1, per_sender_burst=1)
    log: Log = []
    acquire_and_log(clock, limiter, log, "a")  # t=0, goes
    acquire_and_log(clock, limiter, log, "a")  # waits for sender a until t=1
    await clock.advance_to(0.1)
    acquire_and_log(clock, limiter, log, "b")  # the account slot at 0.1 is free for b
    await clock.settle()
    assert log == [(0.0, "a", 1.0), (0.1, "b", 1.0)]
    await clock.run_until(1.0)
    assert log[-1] == (1.0, "a", 1.0)


async def test_cancel_while_holding_sender_lets_it_go(clock: FakeClock) -> None:
    limiter = AdaptiveLimiter(rate=1 / 3, burst=1, per_sender_rate=1, per_sender_burst=1)
    await limiter.acquire(1, sender="a")  # account busy until t=3, sender a until t=1
    await clock.advance_to(1.0)
    waiter = clock.spawn(limiter.acquire(1, sender="a"))  # holds sender a, waits on the account
    await clock.settle()
    bucket_a = limiter._senders["a"]
    assert bucket_a._held
    waiter.cancel()
    await clock.settle()
    assert not bucket_a._held
    assert bucket_a._tat == pytest.approx(1.0)  # not charged for the request that never went
    await clock.advance_to(3.0)
    assert finishes_without_waiting(limiter.acquire(1, sender="a"))


async def test_release_gives_back_to_both_keys(clock: FakeClock) -> None:
    limiter = AdaptiveLimiter(rate=10, burst=1, per_sender_rate=1, per_sender_burst=1)
    await limiter.acquire(1, sender="a")
    assert not finishes_without_waiting(limiter.acquire(1, sender="b"))  # account full
    limiter.release(1, sender="a")
    assert finishes_without_waiting(limiter.acquire(1, sender="a"))  # both keys had room again


async def test_idle_sender_buckets_are_evicted(clock: FakeClock) -> None:
    limiter = AdaptiveLimiter(per_sender_rate=1, per_sender_burst=1)
    for n in range(1000):
        await limiter.acquire(1, sender=f"+1555{n:07d}")
    assert "senders=1000" in repr(limiter)
    await clock.advance_to(9.5)
    await limiter.acquire(1, sender="busy")  # full until 10.5
    log: Log = []
    acquire_and_log(clock, limiter, log, "busy")  # waiting at sweep time
    await clock.advance_to(10.0)
    await limiter.acquire(1, sender="x")  # triggers the sweep
    assert sorted(limiter._senders) == ["busy", "x"]
    await clock.advance_to(10.5)
    assert log == [(10.5, "busy", 1.0)]  # the kept bucket kept its state


# --- AdaptiveLimiter: adapting (the policy itself is tested in test_ratecontrol.py) ------------


async def send_for(clock: FakeClock, limiter: AdaptiveLimiter, rate: float, seconds: float) -> None:
    """``rate`` one-segment sends per second for ``seconds``, each admitted at once and accepted.

    ``rate`` must stay below the limiter's: every acquisition takes the fast path.
    """
    start = clock.now
    for i in range(round(rate * seconds)):
        clock.now = start + i / rate
        assert finishes_without_waiting(limiter.acquire(1, sender="a"))
        limiter.report_success(1, sender="a")
    clock.now = start + seconds


async def test_429_cuts_below_the_accepted_rate_and_drops_burst_credit(clock: FakeClock) -> None:
    limiter = AdaptiveLimiter(rate=100)
    await send_for(clock, limiter, 50, 2.0)  # the server took 50/s
    limiter.report_rate_limited(sender="a", retry_after=None)
    assert limiter.rate == pytest.approx(50 * RATE_DRAIN_FACTOR, rel=0.03)
    assert "rate=" in repr(limiter)
    log: Log = []
    for _ in range(10):
        acquire_and_log(clock, limiter, log, "a")
    await clock.settle()
    assert log == []  # no burst right after "the queue is full"
    await clock.advance_to(clock.now + 1.1 / limiter.rate)
    assert len(log) == 1


async def test_a_deep_cut_pauses_the_account_for_at_most_one_more_burst(clock: FakeClock) -> None:
    # A second of a 200/s burst is in the bucket when the server states 2/s: the next send waits
    # one burst and one interval of the new rate, not the 100 s the old burst would take to
    # drain at it.
    limiter = AdaptiveLimiter(rate=200)
    await clock.advance_to(1.0)
    for _ in range(200):  # the whole burst, at once: the bucket is full
        assert finishes_without_waiting(limiter.acquire(1, sender="a"))
    limiter.report_rate_limited(sender="a", retry_after=None, allowed_rate=2.0)
    assert limiter.rate == pytest.approx(2 * RATE_HINT_FACTOR)
    log: Log = []
    acquire_and_log(clock, limiter, log, "a")
    pause = (CUT_CARRY_BURSTS - 1) * DEFAULT_BURST_SECONDS
    await clock.advance_to(clock.now + pause + 0.9 / limiter.rate)
    assert log == []
    await clock.advance_to(clock.now + 0.2 / limiter.rate)
    assert len(log) == 1


async def test_429_stated_rate_is_followed_and_bad_values_ignored(clock: FakeClock) -> None:
    limiter = AdaptiveLimiter(rate=100)
    await send_for(clock, limiter, 100, 1.5)
    limiter.report_rate_limited(sender="a", retry_after=None, allowed_rate=10.0)
    assert limiter.rate == pytest.approx(10 * RATE_HINT_FACTOR)
    other = AdaptiveLimiter(rate=100)
    await send_for(clock, other, 100, 1.5)
    other.report_rate_limited(sender="a", retry_after=None, allowed_rate=math.nan)
    assert other.rate == pytest.approx(100 * RATE_DRAIN_FACTOR, rel=0.03)  # as if no hint


async def test_a_configured_rate_below_the_floor_is_never_cut_below_itself(clock: FakeClock) -> None:
    slow = AdaptiveLimiter(rate=0.5)
    await clock.advance_to(2.0)
    slow.report_rate_limited(sender="a", retry_after=None)
    assert slow.rate == 0.5
    assert MIN_RATE > 0.5


async def test_retry_after_does_not_pause_the_account(clock: FakeClock) -> None:
    limiter = AdaptiveLimiter(rate=100)
    await send_for(clock, limiter, 100, 1.5)
    limiter.report_rate_limited(sender="a", retry_after=30.0)
    log: Log = []
    acquire_and_log(clock, limiter, log, "a")
    await clock.advance_to(clock.now + 0.05)
    assert len(log) == 1  # only the request that got the Retry-After waits it out (the retry policy)


async def test_rate_regrows_to_the_configured_rate(clock: FakeClock) -> None:
    limiter = AdaptiveLimiter(rate=100, burst=1)
    await send_for(clock, limiter, 100, 1.5)
    limiter.report_rate_limited(sender="a", retry_after=None)
    assert limiter.rate is not None and limiter.rate < 100
    clock.now += 0.1
    await send_for(clock, limiter, 90, 6.0)
    assert limiter.rate == 100
    log: Log = []
    for i in range(300):
        acquire_and_log(clock, limiter, log, ("a", i))
    start = clock.now
    await clock.run_until(start + 1.0)
    assert abs(len(log) - 100) <= 2  # admission follows the regrown rate


async def test_a_stray_429_in_a_quiet_spell_leaves_the_next_burst_unthrottled(clock: FakeClock) -> None:
    # Rule 11 through the limiter: a service at 2/s for 20 s, one 429, then a burst of 100 goes
    # at once (before: a cut to ~2/s, and the burst held there until the cut was undone).
    limiter = AdaptiveLimiter()
    await send_for(clock, limiter, 2, 20.0)
    limiter.report_rate_limited(sender="a", retry_after=1.0)
    assert limiter.rate is None
    log: Log = []
    for i in range(100):
        acquire_and_log(clock, limiter, log, ("a", i))
    await clock.settle()
    assert len(log) == 100


async def test_success_does_nothing_while_unthrottled(clock: FakeClock) -> None:
    limiter = AdaptiveLimiter()
    assert "rate=unthrottled" in repr(limiter)
    await send_for(clock, limiter, 100, 1.0)
    assert limiter.rate is None


async def test_unthrottling_lets_queued_requests_go_at_once(clock: FakeClock) -> None:
    limiter = AdaptiveLimiter()
    await send_for(clock, limiter, 100, 1.5)
    limiter.report_rate_limited(sender="a", retry_after=None)
    assert limiter.rate is not None
    log: Log = []
    for i in range(50):
        acquire_and_log(clock, limiter, log, ("a", i))
    await clock.settle()
    assert len(log) < 50
    limiter._control.rate = None  # what the policy decides when it undoes a cut (test_ratecontrol.py)
    limiter._apply(clock.now)
    await clock.settle()
    assert len(log) == 50
    assert limiter.rate is None


# --- the fast path before the first 429 ------------------------------------------------------


def controller_state(control: RateController) -> dict[str, str]:
    """Every slot of a controller and of its meter, as text (lists are compared by value)."""
    state = {name: repr(getattr(control, name)) for name in RateController.__slots__ if name != "_meter"}
    state.update({f"meter.{name}": repr(getattr(control._meter, name)) for name in Meter.__slots__})
    return state


@pytest.mark.parametrize("rate", [None, 500.0])
async def test_counting_before_the_first_429_matches_the_controller_and_hands_over_on_it(
    clock: FakeClock, rate: float | None
) -> None:
    # Until the first 429 the limiter hands sends and answers to the controller's meter itself
    # (no call into the controller); the controller, fed the same events through its own
    # methods, must end every step in exactly the same state, across window ends, an idle gap
    # (answers start over), the first 429 and what follows it.
    limiter = AdaptiveLimiter(rate=rate)
    reference = RateController(ceiling=rate)
    control = limiter._control

    def calls(method: mock.MagicMock) -> int:
        return sum(1 for call in method.call_args_list if call.args[0] is control)

    times = [0.01 * i for i in range(1, 150)] + [3.6 + 0.02 * i for i in range(100)]
    with (
        mock.patch.object(RateController, "on_sent", autospec=True, side_effect=RateController.on_sent) as on_sent,
        mock.patch.object(RateController, "on_success", autospec=True, side_effect=RateController.on_success) as on_ok,
    ):
        for i, now in enumerate(times):
            clock.now = now
            assert limiter.try_acquire(2, sender="a")
            reference.on_sent(2, now)
            if i % 7 != 3:  # an answer for most sends, in the same window
                limiter.report_success(2, sender="a")
                reference.on_success(2, now)
            assert controller_state(control) == controller_state(reference), now
        assert calls(on_ok) == calls(on_sent) == 0  # the fast path counted every one
        clock.now = 5.7
        limiter.report_rate_limited(sender="a", retry_after=None)
        reference.on_rate_limited(5.7, allowed_rate=None)
        assert limiter.rate == reference.rate
        after = [5.71 + 0.01 * i for i in range(120)]
        admitted = 0
        for now in after:
            clock.now = now
            if limiter.try_acquire(1, sender="a"):
                admitted += 1
                reference.on_sent(1, now)
            limiter.report_success(1, sender="a")
            reference.on_success(1, now)
            assert controller_state(control) == controller_state(reference), now
            assert limiter.rate == reference.rate
        # From the 429 on, every event goes through the controller.
        assert admitted and calls(on_sent) == admitted
        assert calls(on_ok) == len(after)


async def test_counting_into_the_meter_hands_over_to_its_methods_when_a_window_ends_or_answers_start(
    clock: FakeClock,
) -> None:
    # Before the first 429 the limiter adds a send or an answer to the meter's totals itself while
    # the meter's ``counting_until`` allows. It must call Meter.sent / Meter.accepted whenever they
    # would do more than add (a window ends; the first answer since the start or an idle window
    # comes back), does so until answers come back (sends too: nothing to gain there), never
    # otherwise, and ends every step in the state the controller's own methods reach.
    limiter = AdaptiveLimiter()
    reference = RateController(ceiling=None)
    meter = limiter._control.meter
    # Sends before any answer, answers across two window ends, an idle gap (answers start over),
    # then more of both.
    events = [(0.01 * i, i >= 5) for i in range(1, 260)] + [(5.0 + 0.01 * i, i >= 3) for i in range(120)]

    def count(method: mock.MagicMock) -> int:
        return sum(1 for call in method.call_args_list if call.args[0] is meter)

    with (
        mock.patch.object(Meter, "sent", autospec=True, side_effect=Meter.sent) as sent,
        mock.patch.object(Meter, "accepted", autospec=True, side_effect=Meter.accepted) as accepted,
    ):
        handed = []
        for now, answered in events:
            clock.now = now
            must = now >= meter._end or meter._answered_from == math.inf
            before = count(sent)
            assert limiter.try_acquire(1, sender="a")
            reference.on_sent(1, now)
            assert count(sent) - before == must, now
            if must:
                handed.append(("sent", now))
            if answered:
                must = now >= meter._end or meter._answered_from == math.inf
                before = count(accepted)
                limiter.report_success(1, sender="a")
                reference.on_success(1, now)
                assert count(accepted) - before == must, now
                if must:
                    handed.append(("accepted", now))
            assert controller_state(limiter._control) == controller_state(reference), now
    # Answers start at 0.05 and again at 5.03, after the idle gap (2.59 to 5.0, more than a window);
    # windows end at 1.01, 2.01 and 6.0; a send at the same instant as an answer comes first.
    assert [now for kind, now in handed if kind == "accepted"] == pytest.approx([0.05, 5.03])
    assert [now for kind, now in handed if kind == "sent"] == pytest.approx(
        [0.01, 0.02, 0.03, 0.04, 0.05, 1.01, 2.01, 5.0, 5.01, 5.02, 5.03, 6.0]
    )
    assert meter.total == reference.meter.total == [379.0, 372.0, 372, 0]
