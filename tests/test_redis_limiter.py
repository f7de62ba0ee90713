"""RedisLimiter: the pure policy, then limiters sharing a real redis-server.

Integration tests drive Redis's clock through the limiter's ``_server_clock`` (the scripts read
it instead of ``TIME``), so budgets, lease expiry and liveness are checked at exact times
without waiting for them; one acquisition is one script round trip (``_call``).
"""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from benchmarks._redis import RedisProcess
from bwasync import MessagingClient, RateLimiter
from bwasync._constants import RATE_DRAIN_FACTOR, RATE_HINT_FACTOR, RATE_LIMIT_EPISODE
from bwasync._ratecontrol import RateController
from bwasync.emulator import Emulator
from bwasync.redis import RedisLimiter, RedisUnavailableError
from bwasync.redis._constants import LEASE_SECONDS, LIVE_TTL, MAX_LEASE
from bwasync.redis._control import Events, apply, dump, load
from bwasync.redis._policy import fallback_rate, lease_size, redact_url

from ._redis_server import redis_server, start_redis

__all__ = ["redis_server"]

ACCOUNT = "9900000"
APP = "93de2206-9669-4e07-948d-329f4b722ee2"
T0 = 1_800_000_000.0  # a Redis clock reading, in seconds


# --- pure parts -----------------------------------------------------------------------------


def test_the_controller_state_survives_a_trip_through_json() -> None:
    control = RateController(ceiling=100.0)
    for i in range(50):
        control.on_sent(1.0, T0 + i * 0.03)
        control.on_success(1.0, T0 + i * 0.03)
    control.on_rate_limited(T0 + 1.5, allowed_rate=None)
    assert control.rate is not None and control.rate < 100.0
    copy = load(dump(control), 100.0)
    for name in RateController.__slots__:
        if name != "_meter":
            assert repr(getattr(copy, name)) == repr(getattr(control, name)), name
    assert copy._meter.rates(T0 + 1.6) == control._meter.rates(T0 + 1.6)
    # Both go on deciding the same way.
    for later in (1.7, 2.2, 2.8, 3.5):
        for c in (control, copy):
            c.on_success(1.0, T0 + later)
            c.on_rate_limited(T0 + later + 0.01, allowed_rate=None)
        assert copy.rate == control.rate


def test_the_ceiling_in_redis_wins_over_the_stored_one() -> None:
    unthrottled = RateController(ceiling=None)
    assert load(dump(unthrottled), 50.0).rate == 50.0
    assert load(dump(RateController(ceiling=200.0)), 50.0).rate == 50.0
    assert load(None, None).rate is None


def test_events_replay_on_the_controller() -> None:
    control = RateController(ceiling=None)
    assert not Events()
    apply(control, Events(sent=40.0, accepted=40.0, answers=40), T0)
    apply(control, Events(sent=40.0, accepted=40.0, answers=40), T0 + 1.0)
    assert control.rate is None  # nothing to cut yet
    apply(control, Events(limited=1), T0 + 1.5)
    # Cut to just below what the account accepted (80 segments over the last 1.5 s).
    assert control.rate == pytest.approx(80.0 / 1.5 * RATE_DRAIN_FACTOR)


def test_lease_size_follows_demand_within_bounds() -> None:
    assert lease_size(1_000.0, 0.0, 1.0, None, None, 1) == 1_000.0 * LEASE_SECONDS
    assert lease_size(0.0, 0.0, 3.0, 100.0, 100.0, 2) == 3.0  # never below the cost
    assert lease_size(0.0, 64.0, 1.0, 1_000.0, 1_000.0, 1) == 64.0  # what is queued here
    assert lease_size(1e9, 0.0, 1.0, None, None, 1) == MAX_LEASE
    assert lease_size(1e6, 0.0, 1.0, 100.0, 30.0, 3) == 10.0  # a share of the burst


def test_fallback_rate_is_the_lowest_known_rate_shared_by_the_live_limiters() -> None:
    assert fallback_rate([200.0, 100.0], 4) == 25.0
    assert fallback_rate([None, 90.0], 3) == 30.0
    assert fallback_rate([None, None], 3) is None
    assert fallback_rate([2.0], 10) == pytest.approx(0.2)  # together, never above the account rate


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cret@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("redis://bob:s3cret@redis.internal/2", "redis://bob:***@redis.internal/2"),
        ("rediss://h:6380/0?password=s3cret", "rediss://h:6380/0?<redacted>"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    ],
)
def test_redact_url_hides_passwords(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_configuration_is_checked() -> None:
    with pytest.raises(ValueError, match="burst needs a rate"):
        RedisLimiter("redis://127.0.0.1:1/0", account_id=ACCOUNT, burst=5)
    with pytest.raises(ValueError, match="on_error"):
        RedisLimiter("redis://127.0.0.1:1/0", account_id=ACCOUNT, on_error="ignore")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a Redis URL"):
        RedisLimiter("http://:s3cret@h/0", account_id=ACCOUNT)


def test_public_surface() -> None:
    import bwasync.redis

    assert bwasync.redis.__all__ == ["RedisLimiter", "RedisUnavailableError"]
    assert issubclass(RedisUnavailableError, bwasync.BwasyncError)
    assert RedisLimiter.__module__.startswith("bwasync.redis")
    assert RedisUnavailableError.__module__ == "bwasync._exceptions"  # drawn in the one exception tree


@pytest.mark.parametrize(
    ("module", "dependency", "extra"), [("redis", "redis", "redis"), ("metrics", "prometheus_client", "metrics")]
)
def test_bwasync_imports_without_an_extra_and_its_module_says_what_to_install(
    module: str, dependency: str, extra: str
) -> None:
    code = (
        f"import sys; sys.modules[{dependency!r}] = None\n"
        "import bwasync\n"
        f"try:\n    import bwasync.{module}\n"
        "except ImportError as exc:\n    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert f"pip install 'bwasync[{extra}]'" in out.stdout


# --- against redis-server -------------------------------------------------------------------


class ServerClock:
    """Redis's clock for the scripts, moved by hand."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def server_clock() -> ServerClock:
    return ServerClock()


@pytest.fixture
async def make_limiter(
    redis_server: RedisProcess, server_clock: ServerClock
) -> AsyncIterator[Callable[..., RedisLimiter]]:
    """Limiters on the test's server, on its controlled clock; closed after the test."""
    made: list[RedisLimiter] = []

    def make(**kwargs: object) -> RedisLimiter:
        kwargs.setdefault("account_id", ACCOUNT)
        limiter = RedisLimiter(redis_server.url, **kwargs)  # type: ignore[arg-type]
        limiter._server_clock = server_clock
        made.append(limiter)
        return limiter

    yield make
    for limiter in made:
        await limiter.aclose()


async def test_redis_limiter_is_a_rate_limiter(make_limiter: Callable[..., RedisLimiter]) -> None:
    assert isinstance(make_limiter(rate=10), RateLimiter)


async def test_limiters_share_one_account_budget(
    make_limiter: Callable[..., RedisLimiter], server_clock: ServerClock
) -> None:
    a, b = make_limiter(rate=10, burst=10), make_limiter(rate=10, burst=10)
    assert await a._call(1, 6, 0, None, covered=False) == (6.0, 0.0)
    # B gets only what A left of the burst, then must wait one interval per segment.
    assert await b._call(1, 6, 0, None, covered=False) == (4.0, 0.0)
    granted, wait = await b._call(1, 6, 0, None, covered=False)
    assert granted == 0.0 and wait == pytest.approx(0.6)  # until a whole lease (6) fits again
    server_clock.now += 0.1
    assert await a._call(1, 6, 0, None, covered=False) == (1.0, 0.0)
    # Another namespace or account is another budget.
    other = make_limiter(rate=10, burst=10, namespace="other")
    assert await other._call(1, 10, 0, None, covered=False) == (10.0, 0.0)
    assert a.live == 2 and other.live == 1


async def test_a_worker_spends_its_lease_without_round_trips(make_limiter: Callable[..., RedisLimiter]) -> None:
    limiter = make_limiter(rate=1_000)
    calls = 0
    real_call = limiter._call

    async def counting_call(*args: object, **kwargs: object) -> tuple[float, float]:
        nonlocal calls
        calls += 1
        return await real_call(*args, **kwargs)  # type: ignore[arg-type]

    limiter._call = counting_call  # type: ignore[method-assign]
    for _ in range(200):
        await limiter.acquire(1, sender="+15553332222")
    assert calls < 200 / 5, f"{calls} round trips for 200 acquisitions"


async def test_a_dead_workers_lease_expires(
    make_limiter: Callable[..., RedisLimiter], server_clock: ServerClock
) -> None:
    dead, alive = make_limiter(rate=10, burst=10), make_limiter(rate=10, burst=10)
    assert await dead._call(10, 10, 0, None, covered=False) == (10.0, 0.0)  # the whole burst, then gone
    granted, wait = await alive._call(1, 1, 0, None, covered=False)
    assert granted == 0 and wait == pytest.approx(0.1)
    # Its lease counted as sent when granted: one second later the bucket has drained of it.
    server_clock.now += 1.0
    assert await alive._call(10, 10, 0, None, covered=False) == (10.0, 0.0)
    assert alive.live == 2
    # And it stops counting as live once its heartbeat is older than LIVE_TTL.
    server_clock.now += LIVE_TTL
    await alive._call(1, 1, 0, None, covered=False)
    assert alive.live == 1


async def test_closing_gives_the_unspent_lease_back(make_limiter: Callable[..., RedisLimiter]) -> None:
    leaving, staying = make_limiter(rate=10, burst=10), make_limiter(rate=10, burst=10)
    assert await leaving._call(1, 10, 0, None, covered=False) == (10.0, 0.0)
    leaving._lease = 10.0  # leased, never spent
    await leaving.aclose()
    assert await staying._call(1, 10, 0, None, covered=False) == (10.0, 0.0)
    assert staying.live == 1  # the closed limiter left the live set


async def test_per_sender_buckets_are_shared(
    make_limiter: Callable[..., RedisLimiter], server_clock: ServerClock
) -> None:
    a = make_limiter(rate=100, per_sender_rate=1, per_sender_burst=1)
    b = make_limiter(rate=100, per_sender_rate=1, per_sender_burst=1)
    granted, wait = await a._call(1, 1, 0, "+15550000001", covered=False)
    assert (granted, wait) == (1.0, 0.0)
    granted, wait = await b._call(1, 1, 0, "+15550000001", covered=False)
    assert granted == 0.0 and wait == pytest.approx(1.0)
    assert (await b._call(1, 1, 0, "+15550000002", covered=False))[1] == 0.0
    server_clock.now += 1.0
    assert (await b._call(1, 1, 0, "+15550000001", covered=True))[1] == 0.0


async def test_a_429_in_one_limiter_slows_every_limiter_and_recovery_is_shared(
    make_limiter: Callable[..., RedisLimiter], server_clock: ServerClock
) -> None:
    a, b = make_limiter(rate=100), make_limiter(rate=100)
    await a._call(1, 1, 0, None, covered=False)
    await b._call(1, 1, 0, None, covered=False)
    a.report_rate_limited(sender="x", retry_after=None, allowed_rate=40.0)
    await a._flush()
    await b._call(1, 1, 0, None, covered=False)
    assert b.rate == pytest.approx(40.0 * RATE_HINT_FACTOR)
    # The same episode seen by B does not cut again.
    server_clock.now += RATE_LIMIT_EPISODE / 2
    b.report_rate_limited(sender="x", retry_after=None, allowed_rate=20.0)
    await b._flush()
    await a._call(1, 1, 0, None, covered=False)
    assert a.rate == pytest.approx(40.0 * RATE_HINT_FACTOR)
    # Recovery: B's successes regrow the rate for A too, back to the stated rate (where it holds
    # for RATE_HINT_PLATEAU before probing beyond it).
    for _ in range(30):
        server_clock.now += 0.2
        b.report_success(1, sender="x")
        await b._flush()
    await a._call(1, 1, 0, None, covered=False)
    assert a.rate == pytest.approx(40.0)


async def test_the_controller_measures_every_workers_traffic(
    make_limiter: Callable[..., RedisLimiter], server_clock: ServerClock
) -> None:
    # Each of two workers had 60 segments accepted in 1.5 s; the account, 120: the cut on a 429
    # is to just below the account's rate (80/s), not one worker's (40/s).
    a, b = make_limiter(), make_limiter()
    for _ in range(2):
        for limiter in (a, b):
            for _ in range(30):
                await limiter.acquire(1, sender="x")
                limiter.report_success(1, sender="x")
            await limiter._flush()
        server_clock.now += 1.0
    server_clock.now -= 0.5
    a.report_rate_limited(sender="x", retry_after=None)
    await a._flush()
    assert a.rate == pytest.approx(120.0 / 1.5 * RATE_DRAIN_FACTOR)
    await b._call(1, 1, 0, None, covered=False)
    assert b.rate == a.rate


async def test_fallback_when_redis_stops_and_rejoin_when_it_returns(
    make_limiter: Callable[..., RedisLimiter], redis_server: RedisProcess, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = make_limiter(rate=100), make_limiter(rate=100)
    await a.acquire(1, sender="x")
    await b.acquire(1, sender="x")
    await a._call(1, 1, 0, None, covered=False)
    assert a.live == 2
    redis_server.stop()
    a._lease = 0.0
    with caplog.at_level(logging.WARNING, logger="bwasync.redis"):
        for _ in range(5):
            await a.acquire(1, sender="x")
    assert a.in_fallback
    assert a.rate == 50.0  # the configured rate shared by the two live limiters
    warnings = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(warnings) == 1
    # Redis returns (empty: no persistence); the next probe rejoins and re-creates the state.
    redis_server.start()
    await a._probe()
    assert not a.in_fallback
    await a.acquire(1, sender="x")
    assert a.rate == 100.0 and not a.in_fallback


async def test_on_error_raise_and_credentials_never_shown(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    server = start_redis(tmp_path, password="s3cret-pw")
    try:
        raising = RedisLimiter(server.url, account_id=ACCOUNT, rate=10, on_error="raise")
        falling = RedisLimiter(server.url, account_id=ACCOUNT, rate=10)
        await raising.acquire(1, sender="x")
        assert "s3cret-pw" not in repr(raising)
        server.stop()
        raising._lease = 0.0
        with pytest.raises(RedisUnavailableError) as info:
            await raising.acquire(1, sender="x")
        assert not info.value.may_have_been_sent
        assert "s3cret-pw" not in str(info.value) and "***" in str(info.value)
        with caplog.at_level(logging.DEBUG):
            await falling.acquire(1, sender="x")
        assert falling.in_fallback
        assert caplog.records and not any("s3cret-pw" in r.getMessage() for r in caplog.records)
        await raising.aclose()
        await falling.aclose()
    finally:
        server.stop()


async def test_clients_send_through_a_shared_limiter(redis_server: RedisProcess) -> None:
    async with Emulator(username="u", password="p", account_id=ACCOUNT) as emu:
        limiter = RedisLimiter(redis_server.url, account_id=ACCOUNT, rate=1_000)
        other = RedisLimiter(redis_server.url, account_id=ACCOUNT, rate=1_000)
        requests = [
            {"to": ["+15552223333"], "from": "+15553332222", "text": f"m{i}", "applicationId": APP, "tag": str(i)}
            for i in range(40)
        ]
        async with (
            MessagingClient(ACCOUNT, username="u", password="p", base_url=emu.url, limiter=limiter) as c1,
            MessagingClient(ACCOUNT, username="u", password="p", base_url=emu.url, limiter=other) as c2,
        ):
            _, s1 = await c1.send_all(requests[:20])
            _, s2 = await c2.send_all(requests[20:])
        assert s1.accepted + s2.accepted == 40
        assert sorted(emu.acceptance_counts().values()) == [1] * 40
        assert other.live == 2  # both limiters were live when the second client sent
        await limiter.aclose()
        await other.aclose()
