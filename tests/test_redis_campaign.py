"""A campaign shared through Redis, in-process: loading, sending, taking over a dead worker's rows.

Real parts only: a real redis-server (``redis_server`` fixture), the emulator on loopback, the
ground truth being the emulator's record of what it accepted. The command line and killed
processes are in ``test_redis_campaign_cli.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from click.testing import CliRunner
from redis.exceptions import ConnectionError as RedisConnectionError

from benchmarks._redis import RedisProcess
from bwasync import MessagingClient
from bwasync.campaign import CampaignOptions, StopReason, build_report
from bwasync.campaign._rowstate import Event, RowStatus
from bwasync.campaign._runner import RunProgress, load_campaign
from bwasync.cli import cli
from bwasync.emulator import Emulator
from bwasync.redis import _worker
from bwasync.redis._campaign import SharedCampaign, connect, event_args
from bwasync.redis._loads import loads_path
from bwasync.redis._worker import CampaignWorker, WorkerOptions, _pending_row

from ._redis_server import redis_server
from .conftest import ACCOUNT_ID, PASSWORD, USERNAME
from .test_campaign_metrics import free_port, samples
from .test_campaign_run import client_for, number
from .test_campaign_run import options as run_options
from .test_campaign_run import write_csv as run_csv

__all__ = ["redis_server"]


def options(path: Path, **overrides: Any) -> CampaignOptions:
    return run_options(path, key_column="id", **overrides)


def write_csv(path: Path, n: int, *, extra: str = "") -> Path:
    return run_csv(path, n, extra=extra, key=True)


async def load(campaign: SharedCampaign, opts: CampaignOptions) -> tuple[Any, bool]:
    return await load_campaign(
        campaign, opts, where="redis", progress=RunProgress(), note=lambda *a, **k: None, stopping=lambda: False
    )


@pytest.fixture
async def redis(redis_server: RedisProcess) -> Any:
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        yield client
    finally:
        await client.aclose()


def test_every_event_has_one_target_from_the_table() -> None:
    for event in Event:
        target, allowed = event_args(event)
        assert allowed and RowStatus(target)


async def test_loading_is_idempotent_and_a_duplicate_key_is_invalid(redis: aioredis.Redis, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "list.csv", 30, extra=f"k3,{number(99)},Dup,0000\n")
    campaign = SharedCampaign(redis, "c1")
    info, resumed = await load(campaign, options(path))
    assert not resumed and info.load_complete
    counts = await campaign.counts()
    assert counts.total == 31 and counts["pending"] == 30 and counts["invalid"] == 1
    assert await redis.xlen(campaign.keys.queue) == 30
    # Replaying the whole load (the loader died after writing, before recording it) adds nothing.
    await redis.hset(campaign.keys.info, mapping={"loaded_through": 0, "load_complete": "0"})
    _, resumed = await load(campaign, options(path))
    assert resumed
    assert (await campaign.counts()).total == 31 and await redis.xlen(campaign.keys.queue) == 30
    (dup,) = [r async for r in campaign.rows_with_status("invalid")]
    assert dup.key == "#32" and dup.error == "duplicate key 'k3' (first on line 5)"


async def test_a_worker_sends_every_row_once_and_the_report_reads_redis(
    redis: aioredis.Redis, tmp_path: Path, emulator: Emulator
) -> None:
    path = write_csv(tmp_path / "list.csv", 120)
    campaign = SharedCampaign(redis, "c2")
    await load(campaign, options(path))
    async with client_for(emulator) as client:
        outcome = await CampaignWorker(campaign, WorkerOptions(concurrency=10)).run(client)
    assert outcome.complete and outcome.sent == 120 and outcome.stop_reason is None
    tags = emulator.acceptance_counts("tag")
    assert len(tags) == 120 and set(tags.values()) == {1}
    report = await build_report(campaign)
    assert (report.total, report.accepted, report.pending, report.in_flight) == (120, 120, 0, 0)
    assert report.segments == 120 and report.latency_p50 is not None


async def test_a_dead_workers_rows_are_taken_over_reconciled_never_resent(
    redis: aioredis.Redis, tmp_path: Path, emulator: Emulator
) -> None:
    path = write_csv(tmp_path / "list.csv", 40)
    campaign = SharedCampaign(redis, "c3")
    await load(campaign, options(path))
    # A worker reads 10 rows, marks 6 in flight, gets 3 of them really sent, and dies.
    entries = await campaign.read_new("dead", 10, None)
    rows = await campaign.loaded_rows([e.key for e in entries])
    async with client_for(emulator) as client:
        for i, entry in enumerate(entries[:6]):
            assert await campaign.mark(entry.key, entry.entry_id, "dead") == "ok"
            if i < 3:
                body = rows[i]
                assert body is not None
                await client.send(_pending_row(entry.key, body).message_request())
        # Another consumer cannot mark what the dead one holds.
        assert await campaign.mark(entries[7].key, entries[7].entry_id, "thief") == "lost"
        worker = CampaignWorker(campaign, WorkerOptions(concurrency=10, claim_idle=0.3, settle=0.0))
        outcome = await worker.run(client)
    assert outcome.complete
    assert (outcome.reconciled.rows, outcome.reconciled.accepted, outcome.reconciled.ambiguous) == (6, 3, 3)
    tags = emulator.acceptance_counts("tag")
    assert set(tags.values()) == {1} and len(tags) == 37  # 3 found, 3 ambiguous never resent, 34 sent
    counts = await campaign.counts()
    assert (counts["accepted"], counts["ambiguous"], counts["pending"], counts["in_flight"]) == (37, 3, 0, 0)


async def test_a_worker_serves_metrics_of_its_sends(
    redis_server: RedisProcess,
    redis: aioredis.Redis,
    tmp_path: Path,
    emulator: Emulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``bwasync worker --metrics``: scraped (a real GET) right after the worker's run, while served."""
    path = write_csv(tmp_path / "list.csv", 25)
    campaign = SharedCampaign(redis, "m1")
    await load(campaign, options(path))
    await campaign.set_run({"concurrency": 5}, account_id=ACCOUNT_ID, base_url=emulator.url)
    port = free_port()
    texts: list[str] = []
    run = _worker.CampaignWorker.run

    async def run_then_scrape(self: _worker.CampaignWorker, client: MessagingClient) -> Any:
        outcome = await run(self, client)
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/metrics") as resp:
            texts.append(await resp.text())
        return outcome

    monkeypatch.setattr(_worker.CampaignWorker, "run", run_then_scrape)
    args = ["worker", "--redis", redis_server.url, "--metrics", f"127.0.0.1:{port}"]
    env = {"BW_USERNAME": USERNAME, "BW_PASSWORD": PASSWORD, "BW_ACCOUNT_ID": "", "BW_MESSAGING_URL": ""}
    result = await asyncio.to_thread(CliRunner().invoke, cli, args, env=env)
    assert result.exit_code == 0, result.output
    assert "Campaign m1 is complete (25 sent by this worker)" in " ".join(result.output.split())
    got = samples(texts[0])
    assert got[("bwasync_sends_total", (("outcome", "accepted"),))] == 25 == emulator.stats.accepted
    assert got[("bwasync_requests_total", (("status", "202"),))] == 25


async def test_a_row_goes_back_to_the_queue_only_by_the_consumer_holding_it(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    """A worker that lost its entry (taken over meanwhile) cannot requeue the row: never two entries."""
    campaign = SharedCampaign(redis, "c4")
    await load(campaign, options(write_csv(tmp_path / "list.csv", 3)))
    (entry, *_) = await campaign.read_new("slow", 1, None)
    (taken,) = await campaign.claim_idle("other", 0, 1)  # as if "slow" had gone idle
    assert taken.entry_id == entry.entry_id and taken.consumer == "other"
    assert await campaign.mark(entry.key, entry.entry_id, "slow") == "lost"
    assert await campaign.record(entry, Event.NOT_SENT) == "lost"
    assert await redis.xlen(campaign.keys.queue) == 3
    assert await campaign.record(taken, Event.NOT_SENT) == "ok"  # the holder may: same count
    assert await redis.xlen(campaign.keys.queue) == 3
    assert (await campaign.counts())["pending"] == 3


async def test_a_mostly_invalid_new_campaign_sends_nothing_and_leaves_nothing_in_redis(
    redis_server: RedisProcess, redis: aioredis.Redis, tmp_path: Path, emulator: Emulator
) -> None:
    """Its workers start while it loads, but it is held: exit 4, no row sent, no key left."""
    path = tmp_path / "list.csv"
    path.write_text("id,to,name\n" + "".join(f"k{i},{'+1555000000' if i < 3 else 'nope'}{i},A\n" for i in range(10)))
    args = ["campaign", "run", str(path), "--template", "Hi {name}", "--key-column", "id", "--workers", "1"]
    args.append("--allow-non-durable-redis")  # the fixture's Redis keeps nothing on disk
    env = shared_env(redis_server, emulator)
    result = await asyncio.to_thread(CliRunner().invoke, cli, args, env=env)
    assert result.exit_code == 4, result.output
    assert "Nothing was sent; nothing was kept in Redis." in " ".join(result.output.split())
    assert emulator.stats.creates == 0
    assert [k async for k in redis.scan_iter()] == []
    # Nor is its load remembered: the corrected file loads as a new campaign.
    assert not Path(loads_path(path)).exists()


async def test_failed_rows_are_requeued_once_when_asked(redis: aioredis.Redis, tmp_path: Path) -> None:
    campaign = SharedCampaign(redis, "c5")
    await load(campaign, options(write_csv(tmp_path / "list.csv", 4)))
    for entry in await campaign.read_new("w", 2, None):
        assert await campaign.mark(entry.key, entry.entry_id, "w") == "ok"
        assert await campaign.record(entry, Event.FAILED, result={"error": "500", "error_code": 500}) == "ok"
    assert await redis.xlen(campaign.keys.queue) == 2 and (await campaign.failed_by_error_code()) == {500: 2}
    assert await campaign.requeue("failed") == 2
    assert await campaign.requeue("failed") == 0  # a second loader finds them pending
    counts = await campaign.counts()
    assert (counts["pending"], counts["failed"], await redis.xlen(campaign.keys.queue)) == (4, 0, 4)


def shared_env(redis_server: RedisProcess, emulator: Emulator) -> dict[str, str]:
    return {
        "BW_ACCOUNT_ID": ACCOUNT_ID,
        "BW_USERNAME": USERNAME,
        "BW_PASSWORD": PASSWORD,
        "BW_APPLICATION_ID": "93de2206-9669-4e07-948d-329f4b722ee2",
        "BW_NUMBER": "+15553332222",
        "BW_MESSAGING_URL": emulator.url,
        "BWASYNC_REDIS_URL": redis_server.url,
    }


async def test_a_new_opt_out_list_on_resume_skips_pending_rows_and_they_are_never_sent(
    redis_server: RedisProcess, redis: aioredis.Redis, tmp_path: Path, emulator: Emulator
) -> None:
    """As with a journal: ``--opt-out`` given on a rerun skips the rows still pending, even one
    a worker already read (its mark is refused), and leaves rows already sent alone."""
    path = write_csv(tmp_path / "list.csv", 12)
    args = ["campaign", "run", str(path), "--template", "Hi {name}", "--key-column", "id", "--workers", "0"]
    args += ["--campaign-id", "o1", "--allow-non-durable-redis"]
    env = shared_env(redis_server, emulator)
    first = await asyncio.to_thread(CliRunner().invoke, cli, args, env=env)
    assert first.exit_code == 0, first.output
    campaign = SharedCampaign(redis, "o1")
    # Before the rerun: k0 was sent, and a worker holds k1 (read, not marked yet).
    k0, k1 = await campaign.read_new("w", 2, None)
    assert await campaign.mark(k0.key, k0.entry_id, "w") == "ok"
    assert await campaign.record(k0, Event.ACCEPTED, result={"message_id": "m0"}, message_id="m0") == "ok"
    (tmp_path / "stop.txt").write_text("".join(f"{number(i)}\n" for i in (0, 1, 5, 7)))
    again = await asyncio.to_thread(CliRunner().invoke, cli, [*args, "--opt-out", str(tmp_path / "stop.txt")], env=env)
    assert again.exit_code == 0, again.output
    assert "Skipped 3 pending rows whose recipients are on the opt-out list" in " ".join(again.output.split())
    skipped = {r.key: r.error async for r in campaign.rows_with_status("skipped")}
    assert skipped == {"k1": "opted out", "k5": "opted out", "k7": "opted out"}
    assert await campaign.mark(k1.key, k1.entry_id, "w") == "skipped"  # the holder may not send it
    counts = await campaign.counts()
    assert (counts["accepted"], counts["skipped"], counts["pending"]) == (1, 3, 8)
    async with client_for(emulator) as client:
        outcome = await CampaignWorker(campaign, WorkerOptions(concurrency=4)).run(client)
    assert outcome.complete and outcome.sent == 8
    sent_to = {m.to[0] for m in emulator.accepted}
    assert not sent_to & {number(i) for i in (1, 5, 7)} and len(sent_to) == 8


async def test_a_worker_stops_when_the_campaign_vanishes_from_redis(
    redis: aioredis.Redis, tmp_path: Path, emulator: Emulator
) -> None:
    """Redis restarted empty (here: FLUSHALL) mid-run: the worker stops with a clear error;
    it neither waits for rows that will never come nor sends what it cannot record."""
    campaign = SharedCampaign(redis, "v1")
    await load(campaign, options(write_csv(tmp_path / "list.csv", 60)))
    flushed: list[asyncio.Task[Any]] = []

    def on_result(result: Any) -> None:
        if not flushed:
            flushed.append(asyncio.ensure_future(redis.flushall()))

    async with client_for(emulator) as client:
        worker = CampaignWorker(campaign, WorkerOptions(concurrency=2), on_result=on_result)
        outcome = await worker.run(client)
    await flushed[0]
    assert not outcome.complete and outcome.stop_reason is StopReason.FATAL
    assert "gone from Redis" in (outcome.message or "")
    assert emulator.stats.creates < 60
    assert set(emulator.acceptance_counts("tag").values()) == {1}


class _LosesACancellation(SharedCampaign):
    """A campaign whose heartbeat touch loses the first cancellation it gets: what redis-py does
    on Python 3.11 when a task is cancelled just as one of its sends completes (it sends under
    ``asyncio.wait_for``, CPython gh-86296); most often as Redis comes back from a restart.

    The touch waits until it is cancelled (so the end of the run always lands in it) and then
    returns as if nothing happened; no row is marked before a touch has begun.
    """

    def __init__(self, redis: aioredis.Redis, campaign_id: str) -> None:
        super().__init__(redis, campaign_id)
        self.touching = asyncio.Event()
        self.lost = 0

    async def touch(self, consumer: str, entry_ids: Sequence[str]) -> int:
        held = await super().touch(consumer, entry_ids)
        self.touching.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            if self.lost:
                raise
            self.lost += 1
        return held

    async def mark(self, key: str, entry_id: str, consumer: str) -> str:
        await self.touching.wait()
        return await super().mark(key, entry_id, consumer)


async def test_a_worker_ends_although_its_heartbeat_lost_a_cancellation(
    redis: aioredis.Redis, tmp_path: Path, emulator: Emulator
) -> None:
    """The stall after a Redis restart: the run ended its heartbeat by cancelling it alone, the
    cancellation was lost, and the heartbeat touched on for ever: the worker neither sent nor
    ended, and its rows, kept fresh, were never taken over. The heartbeat must end anyway."""
    campaign = _LosesACancellation(redis, "h1")
    await load(campaign, options(write_csv(tmp_path / "list.csv", 6)))
    async with client_for(emulator) as client:
        run = asyncio.ensure_future(CampaignWorker(campaign, WorkerOptions(concurrency=3, claim_idle=0.9)).run(client))
        await asyncio.wait((run,), timeout=10)
        ended = run.done()
        if not ended:
            run.cancel()  # reaches the heartbeat too, which does not lose this one
            await asyncio.wait((run,))
    assert ended, "the worker's run never ended: its heartbeat outlived the lost cancellation"
    assert campaign.lost == 1
    outcome = run.result()
    assert outcome.complete and outcome.sent == 6
    assert set(emulator.acceptance_counts("tag").values()) == {1}


async def test_a_command_whose_connection_died_is_never_sent_again_by_redis_py(
    redis_server: RedisProcess, redis: aioredis.Redis
) -> None:
    """A command whose reply is lost may have been applied: sent again, a mark would find its
    own work done (the row in flight) and the worker would drop the row's entry, stranding it.
    So the worker's client never sends a command again, even with a URL asking redis-py to
    (``retry_on_timeout``): the failure reaches the worker, whose outage handling recovers."""
    client = connect(f"{redis_server.url}?retry_on_timeout=yes")
    try:
        await redis.xgroup_create("q", "g", id="0", mkstream=True)
        read = asyncio.ensure_future(client.xreadgroup("g", "c", {"q": ">"}, block=3000))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while not (blocked := [c for c in await redis.client_list() if "b" in c["flags"]]):
            assert loop.time() < deadline, "the read never blocked"
            await asyncio.sleep(0.005)
        await redis.client_kill_filter(_id=blocked[0]["id"])  # its reply can never come now
        with pytest.raises(RedisConnectionError):
            await read
        assert (await redis.info("commandstats"))["cmdstat_xreadgroup"]["calls"] == 1
    finally:
        await client.aclose()
