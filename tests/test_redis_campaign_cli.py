"""A campaign shared through Redis, from the command line: the fleet's kill -9 proof, the
commands' errors, reports as a journal's, and no credential in Redis.

Real processes (``campaign run --redis --workers 2`` and ``bwasync worker``), a real redis-server
(``redis_server`` fixture) and the emulator on loopback, in this process: its record of what it
accepted, by tag, is the ground truth.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import psutil
import pytest
import redis.asyncio as aioredis
from click.testing import CliRunner

from benchmarks._redis import RedisProcess
from bwasync.campaign import Report, build_report
from bwasync.cli import cli
from bwasync.cli._metrics import worker_endpoint
from bwasync.emulator import Emulator
from bwasync.redis._campaign import SharedCampaign, campaign_keys

from ._redis_server import redis_server, start_redis
from .conftest import ACCOUNT_ID

__all__ = ["redis_server"]

ROOT = Path(__file__).resolve().parent.parent
APP = "93de2206-9669-4e07-948d-329f4b722ee2"
SENDER = "+15553332222"
#: Distinctive credentials, to look for where they must never be.
USER = "fleet-user"
SECRET = "Pa55-w0rd-never-in-redis"
#: Rows of the proof campaign, and kills (kill -9) during it: one of `campaign run`'s two
#: workers (the other stays, so the run ends complete), then the outside worker twice (restarted).
#: A run of several seconds, over which the kill moments are spread (one in each quarter of the rows).
ROWS = 2000
KILLS = 3
#: Seconds a killed worker's rows wait before another takes them over (the default is 30).
CLAIM_IDLE = "0.3"
#: Bound on any wait of these tests (a busy 2-core machine), never a sleep.
DEADLINE = 60.0


@pytest.fixture(autouse=True)
def _no_process_outlives_its_test() -> Iterator[None]:
    """A test that fails midway leaves no ``bwasync`` process running: neither a command it
    started nor the workers a command started (they run in their own session, so they would
    otherwise keep waiting on a campaign that no test finishes)."""
    yield
    for proc in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if "bwasync.cli" in proc.cmdline():
                proc.kill()


def write_csv(path: Path, n: int) -> Path:
    lines = [f"k{i},+1555{i:07d},Ann{i}\n" for i in range(n)]
    path.write_text("id,to,name\n" + "".join(lines), encoding="utf-8")
    return path


def env_for(emu: Emulator | None, redis_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BW_", "BWASYNC_"))}
    env.update(BW_ACCOUNT_ID=ACCOUNT_ID, BW_USERNAME=USER, BW_PASSWORD=SECRET, BWASYNC_REDIS_URL=redis_url)
    env.update(BW_APPLICATION_ID=APP, BW_NUMBER=SENDER, PYTHONPATH=str(ROOT))
    if emu is not None:
        env["BW_MESSAGING_URL"] = emu.url
    return env


async def until(predicate: Any, what: str) -> None:
    """Poll ``predicate()`` (cheap, in-process state) until true, within :data:`DEADLINE`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


async def bwasync(*args: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bwasync.cli", *args, env=env, cwd=ROOT, stderr=asyncio.subprocess.PIPE
    )


async def scan_for(redis_url: str, needles: list[str]) -> list[str]:
    """Every Redis key and value (of every type) holding one of ``needles``."""
    client = aioredis.Redis.from_url(redis_url)
    found = []
    try:
        async for key in client.scan_iter(count=1000):
            kind = (await client.type(key)).decode()
            if kind == "hash":
                blob = repr(await client.hgetall(key))
            elif kind == "stream":
                blob = repr(await client.xrange(key))
            elif kind == "list":
                blob = repr(await client.lrange(key, 0, -1))
            elif kind == "set":
                blob = repr(await client.smembers(key))
            elif kind == "zset":
                blob = repr(await client.zrange(key, 0, -1, withscores=True))
            else:
                blob = repr(await client.get(key))
            found += [f"{key!r}: {n}" for n in needles if n in blob or n in repr(key)]
    finally:
        await client.aclose()
    return found


@pytest.mark.slow
async def test_a_fleet_killed_three_times_sends_every_row_once_or_reports_it_ambiguous(
    redis_server: RedisProcess, tmp_path: Path
) -> None:
    path = write_csv(tmp_path / "list.csv", ROWS)
    cid = "fleet-proof"
    rng = random.Random()
    async with Emulator(username=USER, password=SECRET, account_id=ACCOUNT_ID) as emu:
        env = env_for(emu, redis_server.url)
        run = await bwasync(
            "campaign", "run", str(path), "--template", "Hi {name}", "--key-column", "id", "--campaign-id", cid,
            "--workers", "2", "--claim-idle", CLAIM_IDLE, "--settle", "0", "--concurrency", "50",
            "--allow-non-durable-redis", env=env,
        )  # fmt: skip
        # Kill moments: random points spread over the run, by rows the emulator has accepted.
        moments = sorted(rng.randrange(i * ROWS // (KILLS + 1), (i + 1) * ROWS // (KILLS + 1)) for i in range(KILLS))
        await until(lambda: len(emu.accepted) > 0, "the first accepted row")
        outside = await bwasync("worker", "--campaign", cid, "--claim-idle", CLAIM_IDLE, env=env)
        victims: list[str] = []
        for n, moment in enumerate(moments):
            await until(lambda m=moment: len(emu.accepted) >= m, f"{moment} accepted rows")
            if n > 0:
                # The outside worker, restarted at once (as a supervisor would).
                outside.send_signal(signal.SIGKILL)
                await outside.wait()
                outside = await bwasync("worker", "--campaign", cid, "--claim-idle", CLAIM_IDLE, env=env)
                victims.append("outside")
                continue
            # One of `campaign run`'s own workers, not restarted: the others take its rows over.
            local = [p for p in psutil.Process(run.pid).children() if "worker" in p.cmdline()]
            local[0].send_signal(signal.SIGKILL)
            victims.append("local")
        run_err = await asyncio.wait_for(run.communicate(), DEADLINE)
        out_err = await asyncio.wait_for(outside.communicate(), DEADLINE)
        assert run.returncode == 0, run_err[1].decode()[-2000:]
        assert outside.returncode == 0, out_err[1].decode()[-2000:]
        assert b"Traceback" not in run_err[1] + out_err[1]

        sent = emu.acceptance_counts("tag")
        client = aioredis.Redis.from_url(redis_server.url)
        try:
            summary = msgspec.to_builtins(await build_report(SharedCampaign(client, cid)))
            keys = campaign_keys(cid)
            states = {k.decode(): v.decode() for k, v in (await client.hgetall(keys.status)).items()}
            ids = {k.decode(): json.loads(v).get("message_id") for k, v in (await client.hgetall(keys.results)).items()}
        finally:
            await client.aclose()
    # 0 duplicates: no tag was accepted twice, whatever was killed when.
    assert max(sent.values()) == 1, [t for t, n in sent.items() if n > 1][:5]
    # Every row is accepted (exactly once, by the message Bandwidth holds) or reported ambiguous.
    assert len(states) == ROWS and set(states.values()) <= {"accepted", "ambiguous"}, set(states.values())
    by_tag = {m.tag: m.id for m in emu.accepted}
    for key, state in states.items():
        if state == "accepted":
            assert by_tag[f"{cid}:{key}"] == ids[key]
    # What the emulator never accepted was never reported accepted.
    assert {k for k, s in states.items() if s == "accepted"} <= {t.split(":", 1)[1] for t in sent}
    assert summary["accepted"] + summary["ambiguous"] == ROWS
    assert summary["accepted"] == sum(1 for s in states.values() if s == "accepted")
    assert summary["pending"] == summary["in_flight"] == 0
    assert victims == ["local", "outside", "outside"]
    assert await scan_for(redis_server.url, [SECRET, USER]) == []


class Result:
    """A command's exit code and output (whitespace folded: rich wraps long lines)."""

    def __init__(self, exit_code: int, output: str, stdout: str) -> None:
        self.exit_code, self.output, self.stdout = exit_code, output, stdout


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    result = CliRunner().invoke(cli, list(args), env=env or {}, catch_exceptions=False)
    return Result(result.exit_code, " ".join(result.output.split()), result.stdout)


def test_unreachable_redis_is_a_clear_error_before_anything_is_sent(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "list.csv", 3)
    url = f"redis://:{SECRET}@127.0.0.1:1/0"  # nothing listens on port 1
    result = invoke("campaign", "run", str(path), "--template", "Hi {name}", "--redis", url, "--emulator")
    assert result.exit_code == 1
    assert "cannot reach Redis at redis://127.0.0.1:1/0" in result.output and "Nothing was sent" in result.output
    assert SECRET not in result.output and "Traceback" not in result.output
    for command in (["worker"], ["campaign", "status", "x"], ["campaign", "report", "x"]):
        result = invoke(*command, "--redis", url, env={"BW_USERNAME": USER, "BW_PASSWORD": SECRET})
        assert result.exit_code == 1 and "cannot reach Redis" in result.output, result.output
        assert SECRET not in result.output


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--redis", "redis://127.0.0.1:1/0", "--journal", "j"], "--journal cannot be used with --redis"),
        (["--redis", "redis://127.0.0.1:1/0", "--retry-ambiguous"], "--retry-ambiguous cannot be used with --redis"),
        (["--workers", "3"], "--workers is for a shared campaign: give --redis URL too"),
        (["--reload-lost"], "--reload-lost is for a shared campaign: give --redis URL too"),
        (["--allow-non-durable-redis"], "--allow-non-durable-redis is for a shared campaign: give --redis URL too"),
        (["--redis", "not-a-url"], "not a Redis URL"),
    ],
)
def test_what_a_shared_campaign_does_not_take_is_refused(tmp_path: Path, extra: list[str], message: str) -> None:
    path = write_csv(tmp_path / "list.csv", 3)
    result = invoke("campaign", "run", str(path), "--template", "Hi {name}", "--emulator", *extra)
    assert result.exit_code == 2 and message in result.output, result.output


def test_a_shared_run_reports_like_a_journal_and_keeps_no_credential_in_redis(tmp_path: Path) -> None:
    server = start_redis(tmp_path, password="redis-" + SECRET)
    try:
        path = write_csv(tmp_path / "list.csv", 30)
        (tmp_path / "bad.csv").write_text("")
        args = ["campaign", "run", str(path), "--template", "Hi {name}", "--key-column", "id", "--emulator"]
        args.append("--allow-non-durable-redis")
        env = {"BW_USERNAME": USER, "BW_PASSWORD": SECRET, "BWASYNC_REDIS_URL": server.url}
        # Each local worker serves its own metrics (port 0: a free one each).
        result = invoke(*args, "--campaign-id", "small", "--workers", "1", "--metrics", "127.0.0.1:0", env=env)
        assert result.exit_code == 0, result.output
        assert "all 30 rows reached a final state (30 sent by this run)" in result.output
        # Rerunning the same command resumes: nothing is loaded twice (and here nothing is left).
        again = invoke(*args, "--campaign-id", "small", "--workers", "0", env=env)
        assert again.exit_code == 0 and "Resuming campaign small: 30 rows" in again.output, again.output

        status = invoke("campaign", "status", "small", "--format", "json", env=env)
        assert status.exit_code == 0, status.output
        snapshot = json.loads(status.stdout)
        assert snapshot["complete"] and snapshot["by_status"]["accepted"] == 30 and snapshot["total"] == 30
        report = invoke("campaign", "report", "small", "--format", "json", "--csv", str(tmp_path / "o.csv"), env=env)
        assert report.exit_code == 0, report.output
        summary = json.loads(report.stdout)
        # The journal's JSON schema, field for field.
        assert set(summary) == set(Report.__struct_fields__)
        assert (summary["campaign_id"], summary["accepted"], summary["total"]) == ("small", 30, 30)
        assert (tmp_path / "o.csv").read_text().count("\n") == 31
        text = invoke("campaign", "status", "small", env=env)
        assert "30 of 30 rows in a final state" in text.output and "Complete" in text.output
        missing = invoke("campaign", "report", "nosuch", env=env)
        assert missing.exit_code == 2 and "no campaign 'nosuch'" in missing.output

        assert asyncio.run(scan_for(server.url, [SECRET, USER])) == []
    finally:
        server.stop()


def test_a_load_without_local_workers_records_how_outside_workers_send(tmp_path: Path) -> None:
    # --workers 0: nothing sent here, but the run options are in Redis once the command has
    # exited (outside workers read them), and no task of the command is left behind.
    server = start_redis(tmp_path)
    try:
        path = write_csv(tmp_path / "list.csv", 5)
        args = ["campaign", "run", str(path), "--template", "Hi {name}", "--key-column", "id", "--emulator"]
        args += ["--allow-non-durable-redis", "--campaign-id", "later", "--workers", "0", "--concurrency", "7"]
        result = invoke(*args, env={"BW_USERNAME": USER, "BW_PASSWORD": SECRET, "BWASYNC_REDIS_URL": server.url})
        assert result.exit_code == 0 and "bwasync worker" in result.output, result.output

        async def recorded() -> Any:
            client = aioredis.Redis.from_url(server.url)
            try:
                return await client.hget(campaign_keys("later").info, "run")
            finally:
                await client.aclose()

        run = asyncio.run(recorded())
        assert run is not None and json.loads(run)["concurrency"] == 7
    finally:
        server.stop()


async def final_states(url: str, cid: str) -> tuple[dict[str, str], dict[str, Any]]:
    """Every row's state in Redis, and the report's summary."""
    client = aioredis.Redis.from_url(url)
    try:
        states = {k.decode(): v.decode() for k, v in (await client.hgetall(campaign_keys(cid).status)).items()}
        return states, msgspec.to_builtins(await build_report(SharedCampaign(client, cid)))
    finally:
        await client.aclose()


@pytest.mark.slow
async def test_a_redis_restart_mid_campaign_loses_no_acknowledged_write_and_duplicates_nothing(
    tmp_path: Path,
) -> None:
    """Redis with AOF and ``appendfsync always`` killed and restarted while a worker sends.

    What is lost: the answers of requests that were on the wire while Redis was down (their
    results could not be recorded), and any write whose acknowledgement the crash swallowed.
    Those rows stay ``in_flight`` in Redis; the workers come back when Redis does, take them
    over and reconcile them: found in Bandwidth's list → accepted, else ambiguous. Never resent.
    """
    server = start_redis(tmp_path, aof=True)
    rows, cid = 600, "restart"
    try:
        path = write_csv(tmp_path / "list.csv", rows)
        async with Emulator(username=USER, password=SECRET, account_id=ACCOUNT_ID) as emu:
            run = await bwasync(
                "campaign", "run", str(path), "--template", "Hi {name}", "--key-column", "id", "--campaign-id", cid,
                "--workers", "1", "--claim-idle", CLAIM_IDLE, "--settle", "0", env=env_for(emu, server.url),
            )  # fmt: skip
            await until(lambda: len(emu.accepted) >= rows // 3, "a third of the rows accepted")
            server.stop()  # kill -9: what the disk holds is what was acknowledged
            server.start()
            _, err = await asyncio.wait_for(run.communicate(), DEADLINE)
            assert run.returncode == 0, err.decode()[-3000:]
            assert b"Traceback" not in err, err.decode()[-6000:]
            assert b"Redis failed" in err  # the worker saw the outage and came back
            sent = emu.acceptance_counts("tag")
        states, summary = await final_states(server.url, cid)
    finally:
        server.stop()
    assert max(sent.values()) == 1  # 0 duplicates
    assert len(states) == rows and set(states.values()) <= {"accepted", "ambiguous"}
    accepted = {k for k, s in states.items() if s == "accepted"}
    assert accepted <= {t.split(":", 1)[1] for t in sent}
    assert summary["accepted"] == len(accepted) and summary["accepted"] + summary["ambiguous"] == rows


async def test_a_redis_that_restarted_empty_is_refused_before_anything_is_sent_again(tmp_path: Path) -> None:
    """Redis without persistence forgets the campaign when it restarts: rerunning the command
    must not load the file as new (every row would go twice). It exits 2 before sending; only
    --reload-lost loads it again. Nor does a run start on such a Redis without being told to."""
    server = start_redis(tmp_path, password="redis-" + SECRET)  # no AOF: a restart empties it
    try:
        path = write_csv(tmp_path / "list.csv", 12)
        args = ["campaign", "run", str(path), "--template", "Hi {name}", "--key-column", "id", "--workers", "1"]
        async with Emulator(username=USER, password=SECRET, account_id=ACCOUNT_ID) as emu:
            env = env_for(emu, server.url)
            refused = await asyncio.to_thread(invoke, *args, env=env)
            assert refused.exit_code == 2 and "--allow-non-durable-redis" in refused.output, refused.output
            assert "appendfsync always" in refused.output and not (tmp_path / "list.csv.redis-loads").exists()

            args.append("--allow-non-durable-redis")
            first = await asyncio.to_thread(invoke, *args, env=env)
            assert first.exit_code == 0 and "all 12 rows reached a final state" in first.output, first.output
            assert emu.stats.creates == 12
            loads = tmp_path / "list.csv.redis-loads"
            record = loads.read_text()
            assert f"redis://127.0.0.1:{server.port}/0" in record and SECRET not in record
            # A campaign Redis holds whose load is not recorded here (loaded elsewhere): recorded now.
            loads.unlink()
            resumed = await asyncio.to_thread(invoke, *args, "--workers", "0", env=env)
            assert resumed.exit_code == 0 and "Resuming campaign" in resumed.output, resumed.output
            assert loads.read_text().count("\n") == 1

            server.stop()  # kill -9, no AOF: it comes back empty
            server.start()
            again = await asyncio.to_thread(invoke, *args, env=env)
            assert again.exit_code == 2, again.output
            assert "Redis has no record of it now" in again.output and "--reload-lost" in again.output
            assert "Nothing was loaded or sent" in again.output and SECRET not in again.output
            assert emu.stats.creates == 12  # 0 new requests
            assert await scan_for(server.url, ["bwasync"]) == []  # nothing loaded either

            # Knowingly: loaded again as new (only loaded here: --workers 0 sends nothing).
            knowingly = await asyncio.to_thread(invoke, *args, "--reload-lost", "--workers", "0", env=env)
            assert knowingly.exit_code == 0, knowingly.output
            assert "Starting campaign" in knowingly.output and "every row is sent again" in knowingly.output
            assert emu.stats.creates == 12
    finally:
        server.stop()


@pytest.mark.slow
async def test_a_redis_that_restarts_empty_mid_campaign_stops_the_run_and_duplicates_nothing(tmp_path: Path) -> None:
    """No AOF: killed and restarted while a worker sends, Redis comes back empty. The worker,
    once Redis answers, finds the campaign gone and stops (exit 1), sending nothing more; the
    rerun is refused (exit 2) before it sends anything."""
    server = start_redis(tmp_path)
    rows, cid = 600, "lost"
    try:
        path = write_csv(tmp_path / "list.csv", rows)
        args = ["campaign", "run", str(path), "--template", "Hi {name}", "--key-column", "id", "--campaign-id", cid]
        args += ["--workers", "1", "--claim-idle", CLAIM_IDLE, "--settle", "0", "--allow-non-durable-redis"]
        async with Emulator(username=USER, password=SECRET, account_id=ACCOUNT_ID) as emu:
            env = env_for(emu, server.url)
            run = await bwasync(*args, env=env)
            await until(lambda: len(emu.accepted) >= rows // 3, "a third of the rows accepted")
            server.stop()
            server.start()
            _, err = await asyncio.wait_for(run.communicate(), DEADLINE)
            text = " ".join(err.decode().split())
            assert run.returncode == 1, text[-3000:]
            assert "Traceback" not in text and f"campaign {cid} is gone from Redis" in text, text[-3000:]
            sent = emu.stats.creates
            again = await asyncio.to_thread(invoke, *args, env=env)
            assert again.exit_code == 2 and "Redis has no record of it now" in again.output, again.output
            assert emu.stats.creates == sent < rows  # nothing more, and nothing twice
            assert max(emu.acceptance_counts("tag").values()) == 1
    finally:
        server.stop()


def test_a_shared_runs_metrics_ports_are_checked_before_anything_is_loaded(tmp_path: Path) -> None:
    # Worker i serves on PORT + i; the first worker's port is taken, so the run stops (exit 2)
    # before it even connects to Redis (here, nothing listens there at all).
    path = write_csv(tmp_path / "list.csv", 3)
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = invoke(
            "campaign", "run", str(path), "--template", "Hi {name}", "--emulator", "--redis", "redis://127.0.0.1:1/0",
            "--workers", "2", "--metrics", f"127.0.0.1:{port}",
        )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert f"cannot serve worker 1's metrics on 127.0.0.1:{port}" in result.output
    assert "Traceback" not in result.output and "Redis" not in result.output
    assert worker_endpoint(("127.0.0.1", 9464), 3) == "127.0.0.1:9467"
    assert worker_endpoint(("::1", 0), 3) == "[::1]:0"


def test_a_shared_campaign_of_a_file_without_rows_is_refused_and_leaves_nothing_in_redis(tmp_path: Path) -> None:
    server = start_redis(tmp_path)
    try:
        path = tmp_path / "list.csv"
        path.write_text("id,to,name\n", encoding="utf-8")  # a header alone
        args = ["campaign", "run", str(path), "--template", "Hi {name}", "--key-column", "id", "--emulator"]
        args += ["--allow-non-durable-redis", "--campaign-id", "empty", "--workers", "1"]
        result = invoke(*args, env={"BW_USERNAME": USER, "BW_PASSWORD": SECRET, "BWASYNC_REDIS_URL": server.url})
        assert result.exit_code == 2, result.output
        flat = " ".join(result.output.split())  # the terminal width wraps long lines
        assert "has no rows (a header alone" in flat and "nothing was kept in Redis" in flat
        assert "Done" not in result.output

        async def keys() -> list[bytes]:
            client = aioredis.Redis.from_url(server.url)
            try:
                return [k async for k in client.scan_iter("*empty*")]
            finally:
                await client.aclose()

        assert asyncio.run(keys()) == []
    finally:
        server.stop()
