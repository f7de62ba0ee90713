"""send_many against the emulator's fault knobs: every input accounted for, no duplicates."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from bwasync import (
    AdaptiveLimiter,
    APIError,
    ConfigurationError,
    MessageRequest,
    MessagingClient,
    Outcome,
    RetryPolicy,
    SendCancelledError,
    SendResult,
    ValidationError,
)
from bwasync._constants import MIN_CONFIGURED_RATE
from bwasync._exceptions import StopRequestedError
from bwasync.emulator import Emulator

ACCOUNT = "9900000"
APP = "app-1"
FROM = "+15553332222"
FAST_RETRY = RetryPolicy(initial_delay=0.001, max_delay=0.01, max_attempts=6)
NO_RETRY = RetryPolicy(max_attempts=1)


def request(i: int, **extra: Any) -> MessageRequest:
    return MessageRequest(to=f"+1555{i:07d}", from_=FROM, application_id=APP, text=f"msg {i}", tag=f"t{i}", **extra)


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(username="u", password="p", account_id=ACCOUNT, seed=7) as emulator:
        yield emulator


@pytest.fixture
async def client(emu: Emulator) -> AsyncIterator[MessagingClient]:
    async with MessagingClient(
        ACCOUNT, username="u", password="p", base_url=emu.url, retry=FAST_RETRY, timeout=2.0
    ) as c:
        yield c


def check_ground_truth(emu: Emulator, results: list[SendResult], n: int) -> Counter[Outcome]:
    """Each input has exactly one result, and the emulator agrees with every definite outcome."""
    assert sorted(r.index for r in results) == list(range(n))
    accepted = emu.acceptance_counts(key="tag")
    for r in results:
        tag = f"t{r.index}"
        if r.outcome is Outcome.ACCEPTED:
            assert accepted[tag] == 1, (r, accepted[tag])
            assert r.message is not None and r.message.tag == tag
            assert r.attempts >= 1
        elif r.outcome is Outcome.NOT_SENT:
            assert accepted[tag] == 0, r
            assert r.error is not None and not getattr(r.error, "may_have_been_sent", False)
        else:
            assert accepted[tag] <= 1, r
            assert r.error is not None
    assert max(accepted.values(), default=0) <= 1, "a message was accepted twice"
    return Counter(r.outcome for r in results)


async def test_a_thousand_sends_under_faults_account_for_every_input(emu: Emulator, client: MessagingClient) -> None:
    cfg = emu.config
    cfg.p_500, cfg.p_503, cfg.p_502_html = 0.04, 0.04, 0.02
    cfg.p_drop_before, cfg.p_drop_after = 0.02, 0.02
    # About 40 answers of each 5xx kind and 20 drops after acceptance: none of the checks below
    # is in doubt (the accepted share is ~0.98, sd ~0.005).
    n = 1000
    results = [r async for r in client.send_many((request(i) for i in range(n)), concurrency=50)]
    outcomes = check_ground_truth(emu, results, n)
    assert outcomes[Outcome.ACCEPTED] > n * 0.9
    assert outcomes[Outcome.AMBIGUOUS] > 0, "drops must surface as ambiguous"
    assert emu.stats.faults["500"] > 0 and emu.stats.faults["drop_after"] > 0
    retried = [r for r in results if r.attempts > 1 and r.outcome is Outcome.ACCEPTED]
    assert retried, "5xx answers must have been retried to success"
    # Every drop after acceptance was reported ambiguous (never NOT_SENT, never retried).
    assert outcomes[Outcome.AMBIGUOUS] >= emu.stats.faults["drop_after"]


async def test_at_least_once_retries_ambiguous_failures(emu: Emulator, client: MessagingClient) -> None:
    emu.config.p_drop_before = 0.3
    n = 300
    retry = FAST_RETRY.with_(retry_ambiguous=True, max_attempts=20)
    # Only the emulator's drops may be ambiguous here: a client timeout on a loaded machine is
    # ambiguous too, and resending it would (rightly) duplicate, so the timeout is generous.
    patient = client.with_options(timeout=60.0)
    results = [r async for r in patient.send_many((request(i) for i in range(n)), retry=retry)]
    assert sorted(r.index for r in results) == list(range(n))
    assert all(r.outcome is Outcome.ACCEPTED for r in results)
    assert emu.acceptance_counts(key="tag") == Counter({f"t{i}": 1 for i in range(n)})
    assert sum(r.attempts for r in results) > n


async def test_queue_full_429s_slow_the_run_down_and_everything_gets_through(emu: Emulator) -> None:
    emu.config.dequeue_rate = 300.0
    emu.config.queue_seconds = 0.1  # a queue of 30 segments
    limiter = AdaptiveLimiter()
    async with MessagingClient(
        ACCOUNT,
        username="u",
        password="p",
        base_url=emu.url,
        limiter=limiter,
        retry=RetryPolicy(initial_delay=0.01, max_delay=0.05, max_attempts=50),
    ) as c:
        n = 300
        results = [r async for r in c.send_many((request(i) for i in range(n)), concurrency=64)]
    check_ground_truth(emu, results, n)
    assert all(r.outcome is Outcome.ACCEPTED for r in results)
    assert emu.stats.by_status[429] > 0
    assert limiter.rate is not None, "a 429 must switch the unthrottled limiter to a rate"


async def test_invalid_inputs_are_their_own_results(emu: Emulator, client: MessagingClient) -> None:
    inputs: list[Any] = [
        {"to": "+15550000000", "from": FROM, "applicationId": APP, "text": "ok", "tag": "t0"},
        {"to": "bad", "from": FROM, "applicationId": APP, "text": "x"},
        request(2),
        {"to": "+15550000003", "from": FROM, "applicationId": APP, "text": "x" * 3000},
    ]
    results, summary = await client.send_all(inputs)
    assert [r.outcome for r in results] == [Outcome.ACCEPTED, Outcome.NOT_SENT, Outcome.ACCEPTED, Outcome.NOT_SENT]
    assert isinstance(results[1].error, ValidationError) and results[1].attempts == 0
    assert results[3].error.field_errors[0].field_name == "text"  # type: ignore[union-attr]
    assert (summary.total, summary.accepted, summary.not_sent, summary.ambiguous) == (4, 2, 2, 0)
    assert emu.stats.creates == 2


async def test_async_iterable_input(emu: Emulator, client: MessagingClient) -> None:
    async def gen() -> AsyncIterator[MessageRequest]:
        for i in range(200):
            yield request(i)

    results = [r async for r in client.send_many(gen(), concurrency=20)]
    check_ground_truth(emu, results, 200)
    assert all(r.ok for r in results)


async def test_inputs_are_pulled_lazily(client: MessagingClient) -> None:
    pulled = 0

    def gen() -> Iterator[MessageRequest]:
        nonlocal pulled
        for i in range(10_000):
            pulled += 1
            yield request(i)

    concurrency = 8
    consumed = 0
    async with client.send_many(gen(), concurrency=concurrency) as stream:
        async for _ in stream:
            consumed += 1
            # workers in flight + a bounded result queue: never the whole input
            assert pulled <= consumed + concurrency * 3 + 1
            if consumed == 300:
                break
    assert pulled < 400
    assert stream.done


async def test_early_break_reports_every_pulled_input_and_leaves_nothing_running(
    emu: Emulator, client: MessagingClient
) -> None:
    emu.config.latency = 0.01
    pulled: list[int] = []

    def gen() -> Iterator[MessageRequest]:
        for i in range(100_000):
            pulled.append(i)
            yield request(i)

    seen: list[SendResult] = []
    async with client.send_many(gen(), concurrency=20) as stream:
        async for result in stream:
            seen.append(result)
            if len(seen) == 50:
                break
    everything = seen + stream.unconsumed
    assert sorted(r.index for r in everything) == sorted(pulled)
    assert stream.done
    assert all(t.done() for t in stream._core._tasks)
    # an orderly stop lets requests on the wire finish: nothing is left ambiguous
    assert all(r.outcome is not Outcome.AMBIGUOUS for r in everything)
    check_ground_truth(emu, everything, len(pulled)) if pulled == list(range(len(pulled))) else None
    created = emu.stats.creates
    assert created == sum(1 for r in everything if r.attempts)


async def test_cancelling_the_consumer_cancels_everything(emu: Emulator, client: MessagingClient) -> None:
    emu.config.latency = 5.0  # every request stays on the wire
    started = asyncio.Event()
    holder: dict[str, Any] = {}

    async def consume() -> None:
        async with client.send_many((request(i) for i in range(1000)), concurrency=10) as stream:
            holder["stream"] = stream
            started.set()
            async for _ in stream:
                pass

    task = asyncio.ensure_future(consume())
    await started.wait()
    while emu.stats.creates < 10:  # wait until all ten are on the wire
        await asyncio.sleep(0.005)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    stream = holder["stream"]
    assert stream.done
    assert all(t.done() for t in stream._core._tasks)
    results = stream.unconsumed
    assert len(results) == 10
    assert all(r.outcome is Outcome.AMBIGUOUS for r in results)
    assert all(isinstance(r.error, SendCancelledError) and r.error.may_have_been_sent for r in results)


async def test_cancelling_an_orderly_stop_still_reports_every_pulled_input() -> None:
    # The consumer breaks (an orderly stop waits for the two sends on the wire) and is cancelled
    # while it waits: the result already produced but not yielded must not be lost.
    async with (
        Emulator(username="u", password="p", account_id=ACCOUNT, shutdown_timeout=0.05) as emu,
        MessagingClient(ACCOUNT, username="u", password="p", base_url=emu.url) as client,
    ):

        async def inputs() -> AsyncIterator[MessageRequest]:
            yield request(0)
            yield request(1)
            while emu.stats.accepted < 2:  # both answered at once, before the next two
                await asyncio.sleep(0.005)
            emu.config.latency = 5.0  # these two stay on the wire
            yield request(2)
            yield request(3)

        stopping = asyncio.Event()
        holder: dict[str, Any] = {}

        async def consume() -> None:
            async with client.send_many(inputs(), concurrency=3) as stream:
                holder["stream"] = stream
                async for result in stream:
                    holder["first"] = result
                    while emu.stats.creates < 4 or not stream._core._results:
                        await asyncio.sleep(0.005)
                    stopping.set()
                    break

        task = asyncio.ensure_future(consume())
        await stopping.wait()  # the consumer now waits in the orderly stop
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    stream = holder["stream"]
    everything = [holder["first"], *stream.unconsumed]
    assert sorted(r.index for r in everything) == [0, 1, 2, 3]
    assert Counter(r.outcome for r in everything) == {Outcome.ACCEPTED: 2, Outcome.AMBIGUOUS: 2}
    assert all(t.done() for t in stream._core._tasks)


@pytest.mark.parametrize("concurrency", [0, -1])
async def test_a_concurrency_below_one_is_refused_before_anything_is_sent(
    emu: Emulator, client: MessagingClient, concurrency: int
) -> None:
    # 0 is not "the client's default" (that is None): it is refused like -1, as rate=0 is.
    with pytest.raises(ConfigurationError, match="concurrency must be at least 1"):
        client.send_many([request(0)], concurrency=concurrency)
    with pytest.raises(ConfigurationError, match="concurrency must be at least 1"):
        await client.send_all([request(0)], concurrency=concurrency)
    assert emu.stats.requests == 0


async def test_failed_results_are_freed_once_dropped(emu: Emulator, client: MessagingClient) -> None:
    # A failed result holds its exception, whose traceback holds the worker's frame, whose
    # locals held the result: a cycle the collector never saw while SendResult was untracked
    # (gc=False), so every run leaked its workers' last failures for good (20 a run here, in
    # a service calling send_many all day).
    def live_errors() -> int:
        gc.collect()
        return sum(isinstance(o, APIError) for o in gc.get_objects())

    emu.config.p_500 = 1.0
    before = live_errors()
    for _ in range(3):
        async with client.send_many([request(i) for i in range(60)], concurrency=20, retry=NO_RETRY) as results:
            got = [r async for r in results]
        assert len(got) == 60 and all(isinstance(r.error, APIError) for r in got)
        del results, got
    assert live_errors() == before


@pytest.mark.parametrize("value", [2.5, "3", True])
async def test_a_concurrency_that_is_not_a_whole_number_is_refused_before_anything_is_sent(
    emu: Emulator, client: MessagingClient, value: Any
) -> None:
    # 2.5 made a worker pool that grew with every input; "3" failed with a TypeError.
    with pytest.raises(ConfigurationError, match=f"concurrency must be a whole number, got {value!r}"):
        client.send_many([request(0)], concurrency=value)
    with pytest.raises(ConfigurationError, match=f"concurrency must be a whole number, got {value!r}"):
        MessagingClient(ACCOUNT, username="u", password="p", base_url=emu.url, concurrency=value)
    with pytest.raises(ConfigurationError, match=f"connection_limit must be a whole number, got {value!r}"):
        MessagingClient(ACCOUNT, username="u", password="p", base_url=emu.url, connection_limit=value)
    with pytest.raises(ConfigurationError, match=r"connection_limit must be at least 0 \(0: no limit\), got -1"):
        MessagingClient(ACCOUNT, username="u", password="p", base_url=emu.url, connection_limit=-1)
    assert emu.stats.requests == 0


@pytest.mark.parametrize("source", ["list", "async generator"])
async def test_a_huge_concurrency_is_a_cap_not_a_pool_started_up_front(
    emu: Emulator, client: MessagingClient, source: str
) -> None:
    # 10 inputs at concurrency 1,000,000: a million worker tasks would take gigabytes and
    # seconds before the first send; the pool only grows as inputs come.
    inputs = [request(i) for i in range(10)]

    async def agen() -> AsyncIterator[MessageRequest]:
        for r in inputs:
            yield r

    stream = client.send_many(inputs if source == "list" else agen(), concurrency=1_000_000)
    async with stream as results:
        got = [r async for r in results]
    assert check_ground_truth(emu, got, 10) == {Outcome.ACCEPTED: 10}
    assert len(stream._core._tasks) <= 11
    assert all(t.done() for t in stream._core._tasks)


async def test_arguments_of_the_wrong_type_are_refused_before_anything_is_sent(
    emu: Emulator, client: MessagingClient
) -> None:
    # Each would fail every send at its first attempt, as an "unexpected" failure per input.
    with pytest.raises(ConfigurationError, match="retry must be a RetryPolicy, not int"):
        client.send_many([request(0)], retry=5)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="before_send must be an async callable, not int"):
        client.send_many([request(0)], before_send=5)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="retry must be a RetryPolicy, not int"):
        await client.create_message(request(0), retry=5)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="retry must be a RetryPolicy, not str"):
        client.with_options(retry="twice")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="retry must be a RetryPolicy, not int"):
        MessagingClient(ACCOUNT, username="u", password="p", base_url=emu.url, retry=3)  # type: ignore[arg-type]
    assert emu.stats.requests == 0


async def test_an_iterable_that_raises_gets_a_result_for_every_input_taken_then_its_error(
    emu: Emulator, client: MessagingClient
) -> None:
    def source() -> Iterator[MessageRequest]:
        yield from (request(i) for i in range(5))
        raise RuntimeError("the source failed")

    indexes: list[int] = []
    with pytest.raises(RuntimeError, match="the source failed"):
        async with client.send_many(source(), concurrency=2) as results:
            async for result in results:
                assert result.ok
                indexes.append(result.index)
    assert sorted(indexes + [r.index for r in results.unconsumed]) == [0, 1, 2, 3, 4]
    assert emu.stats.creates == 5


async def test_stop_from_elsewhere_ends_a_run_whose_inputs_wait_on_the_limiter(
    emu: Emulator, client: MessagingClient
) -> None:
    # At 1e-300 segments/s every input after the first waits for ever: without stop() the
    # consumer would see the stop only with the next result, which never comes.
    loop = asyncio.get_running_loop()
    seen: list[SendResult] = []
    async with (
        asyncio.timeout(30),  # a guard: without stop() this would wait for ever
        client.send_many([request(i) for i in range(5)], concurrency=3, rate=MIN_CONFIGURED_RATE) as results,
    ):
        async for result in results:
            seen.append(result)
            loop.call_soon(results.stop)  # from outside the iteration, as a signal handler would
    assert [r.index for r in seen] == [0] and seen[0].ok
    cancelled = results.unconsumed
    assert [r.index for r in cancelled] == list(range(1, 1 + len(cancelled)))  # each input taken
    assert 2 <= len(cancelled) <= 3  # at most the places; input 4 was never pulled
    assert all(r.outcome is Outcome.NOT_SENT and isinstance(r.error, SendCancelledError) for r in cancelled)
    assert not any(r.error.may_have_been_sent for r in cancelled if isinstance(r.error, SendCancelledError))
    assert emu.stats.creates == 1


async def test_close_before_sending_reports_not_sent(emu: Emulator) -> None:
    # A slow rate keeps inputs waiting in the limiter: closing reports them NOT_SENT.
    async with MessagingClient(ACCOUNT, username="u", password="p", base_url=emu.url) as c:
        stream = c.send_many((request(i) for i in range(100)), concurrency=5, rate=1.0)
        first = await stream.__anext__()
        await stream.aclose()
    assert first.ok
    assert len(stream.unconsumed) >= 1
    waiting = [r for r in stream.unconsumed if r.outcome is Outcome.NOT_SENT]
    assert waiting and all(isinstance(r.error, SendCancelledError) for r in waiting)
    assert emu.stats.creates == 1 + sum(1 for r in stream.unconsumed if r.ok)


async def test_before_send_runs_before_the_request_leaves(emu: Emulator, client: MessagingClient) -> None:
    calls: list[int] = []

    async def hook(index: int, req: MessageRequest) -> None:
        assert emu.acceptance_counts(key="tag")[req.tag] == 0
        calls.append(index)
        if index == 3:
            raise RuntimeError("journal unavailable")

    results, _ = await client.send_all([request(i) for i in range(6)], before_send=hook)
    assert sorted(calls) == list(range(6))
    assert results[3].outcome is Outcome.NOT_SENT and isinstance(results[3].error, RuntimeError)
    assert emu.acceptance_counts(key="tag")["t3"] == 0
    assert all(r.ok for i, r in enumerate(results) if i != 3)


async def test_a_stop_requested_by_the_hook_is_not_sent_and_not_logged_as_unexpected(
    emu: Emulator, client: MessagingClient, caplog: pytest.LogCaptureFixture
) -> None:
    # A campaign (or a worker) that is stopping refuses the rows it had pulled: each is NOT_SENT,
    # and the log does not call the stop an unexpected failure (a hook's own bug still is).
    async def hook(index: int, req: MessageRequest) -> None:
        if index >= 2:
            raise StopRequestedError("the run is stopping")

    with caplog.at_level(logging.WARNING, logger="bwasync"):
        results, _ = await client.send_all([request(i) for i in range(4)], before_send=hook)
    assert [r.outcome for r in results] == [Outcome.ACCEPTED] * 2 + [Outcome.NOT_SENT] * 2
    assert all(isinstance(r.error, SendCancelledError) and not r.error.may_have_been_sent for r in results[2:])
    assert "unexpectedly" not in caplog.text
    assert emu.stats.creates == 2


class SpyLimiter(AdaptiveLimiter):
    def __init__(self) -> None:
        super().__init__()
        self.costs: list[tuple[float, str]] = []

    async def acquire(self, cost: float, *, sender: str) -> None:
        self.costs.append((cost, sender))
        await super().acquire(cost, sender=sender)


async def test_limiter_counts_segments_times_recipients(emu: Emulator) -> None:
    spy = SpyLimiter()
    async with MessagingClient(ACCOUNT, username="u", password="p", base_url=emu.url, limiter=spy) as c:
        await c.send_all(
            [
                MessageRequest(to="+15550000001", from_=FROM, application_id=APP, text="a" * 161),  # 2 segments
                MessageRequest(
                    to=["+15550000001", "+15550000002", "+15550000003"],
                    from_="+15551112222",
                    application_id=APP,
                    text="a" * 161,
                ),  # 2 × 3
                MessageRequest(
                    to=["+15550000001", "+15550000002"],
                    from_=FROM,
                    application_id=APP,
                    media=["https://example.com/a.png"],
                    text="a" * 500,
                ),  # MMS: 1 × 2
            ],
            concurrency=1,
        )
        # create_message goes through the same limiter
        await c.create_message(to="+15550000009", from_="Shop", application_id=APP, text="ж" * 71)
    assert sorted(spy.costs) == sorted([(2, FROM), (6, "+15551112222"), (2, FROM), (2, "Shop")])


async def test_rate_argument_throttles_the_run(emu: Emulator, client: MessagingClient) -> None:
    # 20 segments/s with a one-second burst: 20 go at once, the other 10 take half a second.
    loop = asyncio.get_running_loop()
    start = loop.time()
    results, summary = await client.send_all([request(i) for i in range(30)], rate=20.0, concurrency=30)
    elapsed = loop.time() - start
    assert summary.accepted == 30
    assert 0.4 <= elapsed < 2.0
    # latency is the request's round trip: the pacing is not in it. Inputs 20..29 waited 0.05 to
    # 0.5 s for the limiter (0.275 s on average); the burst's 20 did not. Compared with each other,
    # not with a wall-clock bound, so a loaded machine's slower round trips cannot fail this.
    by_index = sorted(results, key=lambda r: r.index)
    burst = [r.latency for r in by_index[:20]]
    paced = [r.latency for r in by_index[20:]]
    assert sum(paced) / len(paced) < sum(burst) / len(burst) + 0.15
    # the client's own limiter was not touched by the per-call rate
    assert client.limiter.rate is None


async def test_results_carry_latency_and_attempts(client: MessagingClient) -> None:
    results, summary = await client.send_all([request(i) for i in range(10)])
    assert all(r.latency > 0 and r.attempts == 1 for r in results)
    assert summary.attempts == 10 and summary.segments == 10 and summary.rate > 0


async def test_plain_break_without_async_with_stops_the_workers(client: MessagingClient) -> None:
    stream = client.send_many((request(i) for i in range(100_000)), concurrency=10)
    tasks = None
    async for _ in stream:
        tasks = list(stream._core._tasks)
        break
    assert tasks
    del stream  # the consumer lets go: the stream cancels its workers
    for _ in range(20):
        if all(t.done() for t in tasks):
            break
        await asyncio.sleep(0)
    assert all(t.done() for t in tasks)
