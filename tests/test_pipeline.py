"""One send pipeline: the client-wide in-flight cap, a run's rate cap under the client's limiter,
backoffs that give their place back, and the tightened client API (closed client, rate+limiter).

Everything that crosses HTTP runs on loopback: the emulator, or (where a test needs one exact
answer to one exact input) a few-line aiohttp server of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any
from unittest import mock

import msgspec
import pytest
from aiohttp import web

from bwasync import (
    AdaptiveLimiter,
    APITimeoutError,
    BwasyncError,
    ClientClosedError,
    ConfigurationError,
    MessageRequest,
    MessagingClient,
    Outcome,
    RateLimitError,
    RetryPolicy,
    SendCancelledError,
    TokenBucket,
)
from bwasync._constants import FIRST_ROUND_MAX, FIRST_ROUND_SIZE
from bwasync._models import Message
from bwasync._pipeline import CappedLimiter, Gate, Slot
from bwasync.emulator import Emulator

from .conftest import EmulatorFactory

ACCOUNT = "9900000"
APP = "app-1"
FROM = "+15553332222"
FAST_RETRY = RetryPolicy(initial_delay=0.001, max_delay=0.005)


def request(i: int, tag: str | None = None) -> MessageRequest:
    return MessageRequest(to=f"+1555{i:07d}", from_=FROM, application_id=APP, text=f"m{i}", tag=tag or f"t{i}")


def client_for(url: str, **options: Any) -> MessagingClient:
    return MessagingClient(ACCOUNT, username="u", password="p", base_url=url, **options)


class RecordingLimiter:
    """The client's limiter protocol around an :class:`AdaptiveLimiter`, recording every call."""

    def __init__(self, *, forward_429: bool = True) -> None:
        self.inner = AdaptiveLimiter()
        self.forward_429 = forward_429
        self.acquired: list[str] = []
        self.rate_limited: list[float | None] = []
        self.allowed_rates: list[float | None] = []
        self.release_calls = 0
        self.gate: asyncio.Event | None = None

    async def acquire(self, cost: float, *, sender: str) -> None:
        if self.gate is not None:
            await self.gate.wait()
        self.acquired.append(sender)
        await self.inner.acquire(cost, sender=sender)

    def release(self, cost: float, *, sender: str) -> None:
        self.release_calls += 1
        self.inner.release(cost, sender=sender)

    def report_success(self, cost: float, *, sender: str) -> None:
        self.inner.report_success(cost, sender=sender)

    def report_rate_limited(self, *, sender: str, retry_after: float | None, allowed_rate: float | None = None) -> None:
        self.rate_limited.append(retry_after)
        self.allowed_rates.append(allowed_rate)
        if self.forward_429:
            self.inner.report_rate_limited(sender=sender, retry_after=retry_after, allowed_rate=allowed_rate)

    @property
    def rate(self) -> float | None:
        return self.inner.rate


# --- the client-wide in-flight cap ---------------------------------------------------------------


async def test_concurrency_caps_every_send_of_the_client_together() -> None:
    # 20 ms per answer, so requests overlap: two runs of 10 workers each and six single sends
    # all want to be in flight at once; the server never sees more than the client's 4.
    async with (
        Emulator(username="u", password="p", account_id=ACCOUNT, latency=0.02) as emu,
        client_for(emu.url, concurrency=4) as client,
    ):

        async def run(first: int) -> list[Outcome]:
            inputs = (request(i) for i in range(first, first + 12))
            return [r.outcome async for r in client.send_many(inputs, concurrency=10)]

        singles = [client.create_message(request(100 + i)) for i in range(3)]
        singles += [client.send(request(200 + i)) for i in range(3)]
        outcomes = await asyncio.gather(run(0), run(50), *singles)
    assert outcomes[0] == outcomes[1] == [Outcome.ACCEPTED] * 12
    assert len(emu.accepted) == 30
    assert emu.stats.max_creates_in_flight == 4


async def test_a_with_options_copy_shares_the_cap() -> None:
    async with (
        Emulator(username="u", password="p", account_id=ACCOUNT, latency=0.02) as emu,
        client_for(emu.url, concurrency=2) as client,
    ):
        other = client.with_options(retry=FAST_RETRY, timeout=5.0)
        await asyncio.gather(*(c.create_message(request(i)) for i, c in enumerate([client, other] * 4)))
    assert len(emu.accepted) == 8
    assert emu.stats.max_creates_in_flight == 2


# --- send_many(rate=) is a cap under the client's limiter ----------------------------------------


async def test_concurrent_runs_share_the_clients_limiter_and_its_429s() -> None:
    # A queue of 4 segments that drains at 1 segment/s: the first four sends fill it, the rest
    # are answered 429 (Retry-After: 1). Both runs ask the one client limiter, and every 429, from
    # either run, reaches it: a 429 slows every run of the client.
    limiter = RecordingLimiter()
    async with (
        Emulator(
            username="u", password="p", account_id=ACCOUNT, dequeue_rate=1.0, queue_seconds=4.0, retry_after_on_429=1
        ) as emu,
        client_for(emu.url, limiter=limiter, retry=RetryPolicy(max_attempts=1)) as client,
    ):

        async def run(first: int) -> list[Outcome]:
            inputs = (request(i) for i in range(first, first + 5))
            return [r.outcome async for r in client.send_many(inputs, concurrency=5, rate=1000)]

        a, b = await asyncio.gather(run(0), run(10))
    assert len(limiter.acquired) == 10
    assert a.count(Outcome.ACCEPTED) + b.count(Outcome.ACCEPTED) == 4 == len(emu.accepted)
    assert limiter.rate_limited == [1.0] * 6
    assert limiter.allowed_rates == [1.0] * 6, "the 429's stated rate (60 messages per minute) is passed on"
    assert limiter.rate is not None, "the shared limiter throttles after the 429s"


async def test_the_run_cap_and_the_client_limiter_both_apply() -> None:
    inner = RecordingLimiter()
    inner.gate = asyncio.Event()
    # A cap of 2 segments at once, refilled at one segment per 1000 s: nothing more in this test.
    capped = CappedLimiter(inner, TokenBucket(0.001, burst=2))
    first = asyncio.ensure_future(capped.acquire(1, sender=FROM))
    await asyncio.sleep(0)
    assert not first.done(), "the client's limiter holds it back although the run's cap has room"
    inner.gate.set()
    await first
    await capped.acquire(1, sender=FROM)
    third = asyncio.ensure_future(capped.acquire(1, sender=FROM))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not third.done(), "the run's cap holds it back although the client's limiter has room"
    third.cancel()
    # The cap's rate is what the run sees while the client's limiter is unthrottled.
    assert capped.rate == 0.001
    capped.report_rate_limited(sender=FROM, retry_after=None, allowed_rate=2.0)
    assert inner.rate_limited == [None] and inner.allowed_rates == [2.0], "429s go to the client's limiter"


async def test_cancelled_while_waiting_for_the_client_limiter_gives_the_cap_back() -> None:
    inner = RecordingLimiter()
    inner.gate = asyncio.Event()
    cap = TokenBucket(0.001, burst=1)
    capped = CappedLimiter(inner, cap)
    waiting = asyncio.ensure_future(capped.acquire(1, sender=FROM))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    inner.gate.set()
    await asyncio.wait_for(capped.acquire(1, sender=FROM), 1.0)  # the cap's one token came back


# --- a backoff holds no place --------------------------------------------------------------------


class ScriptedServer:
    """Answers 429 (``Retry-After``) to the first attempt of tags in ``limited``, else 202;
    records the most requests it ever had at once."""

    def __init__(self, limited: dict[str, int]) -> None:
        self.limited = dict(limited)
        self.in_flight = 0
        self.max_in_flight = 0
        self.accepted: list[str] = []
        #: The client's (host, port) of every request: one per connection used.
        self.peers: set[tuple[str, int]] = set()
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _create(self, request: web.Request) -> web.Response:
        assert request.transport is not None
        self.peers.add(request.transport.get_extra_info("peername"))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            body = msgspec.json.decode(await request.read())
            await asyncio.sleep(0)  # let other requests in, so overlap is visible
            tag = body["tag"]
            retry_after = self.limited.pop(tag, None)
            if retry_after is not None:
                return web.json_response(
                    {"type": "max-message-queue-size-exceeded", "description": "queue full"},
                    status=429,
                    headers={"Retry-After": str(retry_after)},
                )
            self.accepted.append(tag)
            return web.json_response({"id": f"id-{tag}", "to": body["to"], "tag": tag, "segmentCount": 1}, status=202)
        finally:
            self.in_flight -= 1

    async def __aenter__(self) -> ScriptedServer:
        app = web.Application()
        app.router.add_post("/api/v2/users/{account}/messages", self._create)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/api/v2"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


@pytest.fixture
async def scripted() -> AsyncIterator[ScriptedServer]:
    async with ScriptedServer({"sleeper": 30}) as server:
        yield server


async def test_an_input_waiting_out_retry_after_gives_its_place_back(scripted: ScriptedServer) -> None:
    # One place: the sleeper's 429 asks for 30 s. While it waits, the other inputs go through
    # (with the place held during the sleep they would wait 30 s behind it). The limiter is told
    # of the 429 but does not pause the account: what is tested here is the run's places.
    inputs = [request(0, "sleeper")] + [request(i) for i in range(1, 6)]
    limiter = RecordingLimiter(forward_429=False)
    async with client_for(scripted.url, limiter=limiter, retry=RetryPolicy(max_attempts=2)) as client:
        stream = client.send_many(inputs, concurrency=1)
        async with asyncio.timeout(10), stream:
            got = [await anext(stream) for _ in range(5)]
    assert sorted(r.index for r in got) == [1, 2, 3, 4, 5]
    assert all(r.outcome is Outcome.ACCEPTED for r in got)
    # Stopping the run reports the sleeper as not sent (its retry never left).
    [sleeper] = stream.unconsumed
    assert sleeper.index == 0 and sleeper.outcome is Outcome.NOT_SENT
    assert isinstance(sleeper.error, SendCancelledError)
    assert scripted.max_in_flight == 1
    assert limiter.rate_limited == [30.0]


async def test_after_its_backoff_a_retry_takes_a_place_again() -> None:
    limited = {f"t{i}": 0 for i in range(0, 24, 3)}
    limiter = RecordingLimiter(forward_429=False)  # the places are tested here, not the limiter
    async with (
        ScriptedServer(limited) as server,
        client_for(server.url, retry=FAST_RETRY, concurrency=2, limiter=limiter) as client,
    ):
        results = [r async for r in client.send_many((request(i) for i in range(24)), concurrency=2)]
    assert sorted(r.index for r in results) == list(range(24))
    assert all(r.outcome is Outcome.ACCEPTED for r in results)
    assert [r.attempts for r in sorted(results, key=lambda r: r.index)][::3] == [2] * 8
    assert server.max_in_flight <= 2
    assert sorted(server.accepted) == sorted(f"t{i}" for i in range(24))


async def test_every_answer_hands_its_connection_back_for_the_next_request() -> None:
    # 202s and 429s alike, one request at a time: each answer's body is read whole, which gives
    # the connection back to the pool, so every request goes over the same one.
    limiter = RecordingLimiter(forward_429=False)
    async with (
        ScriptedServer({"t1": 0, "t3": 0}) as server,
        client_for(server.url, retry=RetryPolicy(max_attempts=1), concurrency=1, limiter=limiter) as client,
    ):
        results = [r async for r in client.send_many((request(i) for i in range(6)), concurrency=1)]
        await client.create_message(request(6))
    assert [r.outcome for r in sorted(results, key=lambda r: r.index)] == [
        Outcome.ACCEPTED,
        Outcome.NOT_SENT,
        Outcome.ACCEPTED,
        Outcome.NOT_SENT,
        Outcome.ACCEPTED,
        Outcome.ACCEPTED,
    ]
    assert len(server.peers) == 1


async def test_retry_after_is_capped_by_the_policy_for_the_limiter_too(scripted: ScriptedServer) -> None:
    limiter = RecordingLimiter()
    async with client_for(scripted.url, limiter=limiter, retry=RetryPolicy(max_attempts=1, max_retry_after=5)) as c:
        with pytest.raises(RateLimitError):
            await c.create_message(request(0, "sleeper"))
    assert limiter.rate_limited == [5.0]


@pytest.mark.parametrize("waits", [False, True])
async def test_a_send_starts_before_its_first_wait_or_else_as_its_request_leaves(waits: bool) -> None:
    # The retry deadline runs from a send's start (Slot.started). A first attempt that waits
    # (here for a limiter without a fast path) reads the clock before the wait; one that waits for
    # nothing starts as its request leaves, one clock read for both.
    client = client_for("http://127.0.0.1:9", limiter=RecordingLimiter() if waits else AdaptiveLimiter())
    pipeline = client._pipeline
    message = msgspec.json.decode(b'{"id": "m-1"}', type=Message)
    sent_at: list[float] = []

    class Stub:
        auth = pipeline.transport.auth

        async def create_message(self, body: bytes, timeout: object, header: str | None = None) -> Message:
            sent_at.append(slot.sent_at)
            return message

    pipeline.transport = Stub()  # type: ignore[assignment]
    slot = Slot()
    ticks = iter(range(1, 1000))  # a clock that moves on at every read (the loop's clock too)
    with mock.patch("bwasync._pipeline.time.monotonic", side_effect=lambda: float(next(ticks))):
        assert await pipeline.attempt(slot, request(1)) is message
        started = slot.started
        assert await pipeline.attempt(slot) is message  # a retry: its own send time, the same start
    assert slot.started == started
    if waits:
        assert 0.0 < started < sent_at[0] < sent_at[1]
    else:
        assert started == sent_at[0] < sent_at[1]


class SeenLimiter(AdaptiveLimiter):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []


class AcquireWatcher(SeenLimiter):
    async def acquire(self, cost: float, *, sender: str) -> None:
        self.seen.append("acquire")
        await super().acquire(cost, sender=sender)


class TryAcquireWatcher(SeenLimiter):
    def try_acquire(self, cost: float, *, sender: str) -> bool:
        self.seen.append("try_acquire")
        return super().try_acquire(cost, sender=sender)


class SuccessWatcher(SeenLimiter):
    def report_success(self, cost: float, *, sender: str) -> None:
        self.seen.append("report_success")
        super().report_success(cost, sender=sender)


@pytest.mark.parametrize(
    ("cls", "seen"),
    [
        (SeenLimiter, None),
        (AcquireWatcher, "acquire"),
        (TryAcquireWatcher, "try_acquire"),
        (SuccessWatcher, "report_success"),
    ],
)
async def test_the_limiters_fast_paths_hand_over_to_a_subclass_that_overrides_them(
    emulator: Emulator, cls: type[SeenLimiter], seen: str | None
) -> None:
    # The pipeline admits and reports through AdaptiveLimiter's positional fast paths, but a
    # subclass that overrides acquire, try_acquire or report_success sees every call of it.
    limiter = cls()
    async with client_for(emulator.url, limiter=limiter) as client:
        results = [r async for r in client.send_many(request(i) for i in range(5))]
        await client.create_message(request(5))
    assert len(results) == 5 and all(r.ok for r in results)
    assert limiter.seen == ([] if seen is None else [seen] * 6)


# --- the client's API, tightened -----------------------------------------------------------------


def test_rate_and_limiter_together_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="rate"):
        MessagingClient(ACCOUNT, username="u", password="p", rate=10, limiter=AdaptiveLimiter())
    with pytest.raises(ConfigurationError, match="per_sender_rate"):
        MessagingClient(ACCOUNT, username="u", password="p", per_sender_rate=1, limiter=AdaptiveLimiter())
    MessagingClient(ACCOUNT, username="u", password="p", limiter=AdaptiveLimiter())  # alone: fine


async def test_a_closed_client_refuses_every_call(emulator: Emulator) -> None:
    client = client_for(emulator.url)
    async with client:
        await client.create_message(request(0))
    assert client.closed
    with pytest.raises(ClientClosedError):
        await client.create_message(request(1))
    with pytest.raises(ClientClosedError):
        await client.send(request(2))
    with pytest.raises(ClientClosedError):
        client.send_many([request(3)])
    with pytest.raises(ClientClosedError):
        await client.send_all([request(4)])
    with pytest.raises(ClientClosedError):
        [i async for i in client.list_messages(source_tn=FROM)]
    with pytest.raises(ClientClosedError):
        await client.get_media("x")
    with pytest.raises(ClientClosedError):
        await client.__aenter__()
    with pytest.raises(ClientClosedError):
        await client.with_options(timeout=1.0).create_message(request(5))
    assert len(emulator.accepted) == 1
    assert issubclass(ClientClosedError, BwasyncError)


async def test_a_per_call_timeout_bounds_each_attempt(emulator: Emulator) -> None:
    emulator.config.p_slow, emulator.config.slow_seconds = 1.0, 5.0
    async with client_for(emulator.url, timeout=30.0) as client:
        result = await client.send(request(0), timeout=0.1)
        assert result.outcome is Outcome.AMBIGUOUS and result.latency < 5.0
        [ran] = [r async for r in client.send_many([request(1)], timeout=0.1)]
        assert ran.outcome is Outcome.AMBIGUOUS
        with pytest.raises(APITimeoutError):
            await client.create_message(request(3), timeout=0.1)
        with pytest.raises(APITimeoutError):
            await client.with_options(timeout=0.1).create_message(request(4))
        with pytest.raises(ConfigurationError):
            await client.create_message(request(2), timeout=0)


# --- the client's first round (Gate(first_round=k)) -----------------------------------------------


async def test_places_of_the_first_round_come_back_once_the_round_is_answered() -> None:
    gate = Gate(3, first_round=3)
    assert all(gate.try_take() for _ in range(3))
    gate.release()  # an early answer: its place is not reused while the round is out
    assert not gate.try_take() and gate.in_first_round
    taker = asyncio.ensure_future(gate.take())
    gate.release()
    await asyncio.sleep(0)
    assert not taker.done()
    gate.release()  # the last answer of the round: every parked place comes back
    await taker
    assert not gate.in_first_round and gate.in_use == 1
    gate.release()
    assert gate.try_take() and gate.try_take()  # after the round, a place is reused at once
    gate.release()
    assert gate.try_take()


async def test_a_first_round_smaller_than_the_gate_opens_the_rest_once_answered() -> None:
    # A probe round of 2 places in a gate of 5: nothing else leaves until both are answered,
    # then every place is open (a latency-bound run has its full concurrency one round trip in).
    gate = Gate(5, first_round=2)
    assert gate.try_take() and gate.try_take()
    assert not gate.try_take() and gate.in_first_round and gate.in_use == 2
    takers = [asyncio.ensure_future(gate.take()) for _ in range(4)]
    gate.release()
    await asyncio.sleep(0)
    assert not any(t.done() for t in takers) and gate.in_use == 1
    gate.release()  # the round is answered: four waiters served, one place still free
    await asyncio.gather(*takers)
    assert not gate.in_first_round and gate.in_use == 4
    assert gate.try_take() and not gate.try_take()


async def test_a_client_sending_fewer_than_a_round_is_not_held() -> None:
    # One request at a time: each is the whole round in flight, so the round ends at its answer.
    gate = Gate(100, first_round=50)
    assert gate.try_take()
    gate.release()
    assert not gate.in_first_round and gate.in_use == 0
    assert all(gate.try_take() for _ in range(100)) and not gate.try_take()


async def test_a_hung_request_holds_the_first_round_back_no_longer_than_the_bound() -> None:
    loop = asyncio.get_running_loop()
    now = [0.0]
    with mock.patch.object(loop, "time", lambda: now[0]):
        gate = Gate(2, first_round=2)
        assert gate.try_take() and gate.try_take()
        gate.release()  # one answered; the other hangs
        waiter = asyncio.ensure_future(gate.first_round_over())
        await asyncio.sleep(0)
        now[0] = FIRST_ROUND_MAX - 0.01
        for _ in range(5):
            await asyncio.sleep(0)
        assert not waiter.done()
        now[0] = FIRST_ROUND_MAX
        for _ in range(5):  # the loop runs the due timer, then the waiter
            await asyncio.sleep(0)
        assert waiter.done()
    assert gate.try_take() and not gate.try_take()  # the hung request still holds its place


async def test_requests_after_the_first_round_are_paced_by_the_cut_it_caused(
    emulator_factory: EmulatorFactory,
) -> None:
    # 100 in flight against a queue of 40: only the probe round (FIRST_ROUND_SIZE = 50) leaves
    # at first, so the queue refuses at most 10; their 429s cut the rate before the other places
    # open, and the cut paces what follows. With a first round of all 100 places, 60 were
    # refused; with no round at all, each early 202 also sent one more request into the full
    # queue (~40 more).
    limiter = RecordingLimiter()
    async with emulator_factory(dequeue_rate=100, queue_seconds=0.4, record=False) as emu:
        async with client_for(emu.url, concurrency=100, limiter=limiter, retry=FAST_RETRY) as client:
            async with client.send_many(request(i) for i in range(200)) as results:
                async for _ in results:
                    if emu.stats.accepted >= 80:  # 0.4 s of the paced rate after the round
                        break
    assert 1 <= len(limiter.rate_limited) <= FIRST_ROUND_SIZE - 40 + 5
