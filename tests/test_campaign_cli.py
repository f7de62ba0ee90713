"""``bwasync campaign`` as a user types it, against an emulator here.

The emulator runs on the test's event loop (on 127.0.0.1) and is the ground truth: what it
accepted, under which tag, how many times. Where the process is what a test proves (``kill -9``,
Ctrl-C, SIGTERM) the command is the installed script in a subprocess, interrupted and killed like
a real run; while it runs, the test reads its journal through a separate read-only SQLite
connection, polling with a timeout (the only waiting by polling in these tests, since a
subprocess cannot set an event here). Every other command (the resumes, ``status``, ``report``)
runs in this process (``tests/_cli.py``): the same command, without a Python start each.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import random
import signal
import socket
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from bwasync.cli import cli
from bwasync.emulator import Emulator

from ._cli import Done, run_cli
from .conftest import ACCOUNT_ID, PASSWORD, USERNAME, EmulatorFactory

BWASYNC = str(Path(sys.executable).parent / "bwasync")
APP = "93de2206-9669-4e07-948d-329f4b722ee2"
SENDER = "+15553332222"
TEMPLATE = "Hi {name}, your code is {code}"
#: Generous bounds for a slow CI machine; nothing waits this long when things work.
RUN_TIMEOUT = 60.0
POLL = 0.02


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("BW_"):
            monkeypatch.delenv(name)
    monkeypatch.delenv("BWASYNC_LOOP", raising=False)
    monkeypatch.setenv("COLUMNS", "200")  # no wrapping in what the tests read


def write_campaign(path: Path, n: int, *, invalid_at: tuple[int, ...] = ()) -> dict[int, str]:
    """``n`` valid rows keyed ``k<i>``, plus invalid rows after the i-th valid one; returns line -> key."""
    lines: dict[int, str] = {}
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "to", "name", "code"])
        line = 1
        for i in range(n):
            if i in invalid_at:
                line += 1
                writer.writerow([f"bad{i}", f"555-{i:04d}", "Bad", i])  # not E.164
                lines[line] = f"bad{i}"
            line += 1
            writer.writerow([f"k{i}", f"+1555{i:07d}", f"Ann{i}", f"{i:04d}"])
    return lines


def connection(emu: Emulator) -> list[str]:
    return [
        "--base-url", emu.url, "--account-id", ACCOUNT_ID, "--username", USERNAME, "--password", PASSWORD,
        "--application-id", APP, "--from", SENDER,
    ]  # fmt: skip


async def spawn(*args: str) -> asyncio.subprocess.Process:
    """The installed ``bwasync`` script, as a user starts it."""
    return await asyncio.create_subprocess_exec(
        BWASYNC, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL
    )


async def finish(proc: asyncio.subprocess.Process, timeout: float = RUN_TIMEOUT) -> Done:
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return Done(proc.returncode, out.decode(), err.decode())


def journal_counts(path: Path) -> dict[str, int]:
    """Rows by status, read-only (empty while the journal does not exist or has no table yet)."""
    if not path.exists():
        return {}
    try:
        conn = sqlite3.connect(path.absolute().as_uri() + "?mode=ro", uri=True, timeout=5)
        try:
            return dict(conn.execute("SELECT status, COUNT(*) FROM rows GROUP BY status"))
        finally:
            conn.close()
    except sqlite3.OperationalError:
        return {}


async def wait_for(proc: asyncio.subprocess.Process, condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """Poll ``condition`` until true; fail if the process ended first or it took too long."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if proc.returncode is not None:
            raise AssertionError(f"the run ended (exit {proc.returncode}) before the condition held")
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("timed out waiting for the run")
        await asyncio.sleep(POLL)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def assert_each_sent_once(emu: Emulator, n: int) -> None:
    counts = emu.acceptance_counts("tag")
    assert len(counts) == n, f"{n - len(counts)} rows never accepted"
    duplicates = {tag: c for tag, c in counts.items() if c != 1}
    assert not duplicates, f"sent more than once: {duplicates}"


# --- A whole campaign -------------------------------------------------------------------------------


async def test_run_status_and_report_end_to_end(
    tmp_path: Path, emulator_factory: EmulatorFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "list.csv"
    lines = write_campaign(path, 300, invalid_at=(10, 200))
    journal = Path(str(path) + ".journal")
    port = free_port()
    knobs = {
        "latency": 0.002,
        "callback_url": f"http://127.0.0.1:{port}/",
        "callback_username": "bw",
        "callback_password": "cb-secret",
        "p_delivered": 0.9,
        "p_duplicate_callback": 0.2,
        "seed": 5,
    }
    monkeypatch.setenv("BW_CALLBACK_PASSWORD", "cb-secret")  # the env fallback of --callback-password
    async with emulator_factory(**knobs) as emu:
        done = await run_cli(
            "campaign", "run", str(path), "--template", TEMPLATE, "--key-column", "id", *connection(emu),
            "--callbacks", f"127.0.0.1:{port}", "--callback-username", "bw", "--wait-delivery", "30",
        )  # fmt: skip
        assert done.code == 0, done.err
        assert "Done: all 302 rows reached a final state (300 sent by this run)" in done.out
        for line, key in lines.items():  # invalid rows are listed with their line numbers
            assert any(f" {line} " in text and key in text for text in done.out.splitlines()), (line, key)
        assert "must be replaced with a valid E164" in done.out
        assert_each_sent_once(emu, 300)
        assert emu.stats.callbacks_duplicated > 0

    status = await run_cli("campaign", "status", str(journal))
    assert status.code == 0, status.err
    assert "Complete" in status.out and "302 of 302 rows" in status.out

    out_csv, out_json = tmp_path / "rows.csv", tmp_path / "rows.jsonl"
    report = await run_cli("campaign", "report", str(journal), "--csv", str(out_csv), "--json", str(out_json))
    assert report.code == 0, report.err
    assert "delivered" in report.out and "302 rows written" in report.err
    with open(out_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 302
    assert {r["status"] for r in rows} == {"accepted", "invalid"}
    assert {int(r["line"]) for r in rows if r["status"] == "invalid"} == set(lines)
    assert all(r["delivery_status"] in ("delivered", "failed") for r in rows if r["status"] == "accepted")
    assert 0 < sum(r["delivery_status"] == "failed" for r in rows) < 100
    records = [json.loads(line) for line in out_json.read_text().splitlines()]
    assert [r["key"] for r in records] == [r["key"] for r in rows]
    assert all(r["message_id"] for r in records if r["status"] == "accepted")


async def test_dry_run_sends_nothing_and_writes_no_journal(tmp_path: Path, emulator: Emulator) -> None:
    path = tmp_path / "list.csv"
    write_campaign(path, 30, invalid_at=(4,))
    done = await run_cli(
        "campaign", "run", str(path), "--template", TEMPLATE + " 👋", "--key-column", "id", "--dry-run",
        "--rate", "10", *connection(emulator),
    )  # fmt: skip
    assert done.code == 0, done.err
    assert "nothing was sent and no journal was written" in done.out
    assert "First 20 messages" in done.out and "UCS-2" in done.out
    assert "Invalid rows: 1" in done.out and "bad4" in done.out
    assert "30 to send, 1 invalid" in done.out and "30 segments to 30 recipients" in done.out
    assert "0:00:03 at 10 segments/s" in done.out
    assert emulator.stats.requests == 0
    assert not Path(str(path) + ".journal").exists()


def test_dry_run_opens_no_connection_at_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a dry run must not touch the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(asyncio.BaseEventLoop, "create_connection", refuse)
    path = tmp_path / "list.csv"
    write_campaign(path, 5)
    result = CliRunner().invoke(
        cli, ["campaign", "run", str(path), "--template", TEMPLATE, "--dry-run", "--from", SENDER]
    )
    assert result.exit_code == 0, result.output
    assert "5 to send" in result.output
    assert not Path(str(path) + ".journal").exists()


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    write_campaign(path, 3)
    runner = CliRunner()
    base = ["campaign", "run", str(path), "--emulator", "--no-progress"]
    result = runner.invoke(cli, [*base, "--template", "x", "--template-file", str(path)])
    assert result.exit_code == 2 and "not both" in result.output
    result = runner.invoke(cli, [*base, "--template", "Hi {name!r}"])
    assert result.exit_code == 2 and "not allowed" in result.output
    result = runner.invoke(cli, [*base, "--template", TEMPLATE, "--callbacks", "nowhere"])
    assert result.exit_code == 2 and "HOST:PORT" in result.output
    # A resume must use the same template: the journal refuses another one.
    result = runner.invoke(cli, [*base, "--template", TEMPLATE])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, [*base, "--template", "Other {name}"])
    assert result.exit_code == 2 and "a different --template/--template-file" in result.output
    assert "--journal NEW.journal" in result.output and "delete" in result.output
    # A setting that differs is named as its option, never as a Python value.
    result = runner.invoke(cli, [*base, "--template", TEMPLATE, "--key-column", "name"])
    assert result.exit_code == 2 and "a different --key-column" in result.output, result.output
    assert "None" not in result.output and "'" not in result.output.split("holds")[1]
    # So are the two that decide what the load stored for each row (invalid or sent; its zone).
    result = runner.invoke(cli, [*base, "--template", TEMPLATE, "--strict-numbers"])
    assert result.exit_code == 2 and "a different --strict-numbers" in result.output, result.output
    result = runner.invoke(
        cli, [*base, "--template", TEMPLATE, "--quiet-hours", "21:00-08:00", "--timezone-column", "name"]
    )
    assert result.exit_code == 2 and "a different --timezone-column" in result.output, result.output


# --- Crashes and signals ----------------------------------------------------------------------------


@pytest.mark.slow
async def test_kill_9_at_random_points_loses_nothing_and_duplicates_nothing(
    tmp_path: Path, emulator_factory: EmulatorFactory
) -> None:
    rows, concurrency = 2000, 50
    path = tmp_path / "list.csv"
    invalid = write_campaign(path, rows, invalid_at=(7, 1000, 1999))
    journal = Path(str(path) + ".journal")
    rng = random.Random(20261126)
    # First a kill at a random moment (importing, loading or sending), then three at random
    # numbers of accepted rows, one in each third of [200, 1800), each on a resumed run.
    thresholds = [rng.randrange(200 + i * 533, 200 + (i + 1) * 533) for i in range(3)]
    args = [
        "campaign", "run", str(path), "--template", TEMPLATE, "--key-column", "id", "--concurrency", str(concurrency),
        "--settle", "0.3", "--no-progress",
    ]  # fmt: skip
    left_in_flight: list[int] = []
    async with emulator_factory(latency=0.005, jitter=0.015, seed=3) as emu:
        proc = await spawn(*args, *connection(emu))
        try:
            await asyncio.wait_for(proc.wait(), rng.uniform(0.3, 1.5))
        except TimeoutError:
            proc.kill()
        await finish(proc)
        left_in_flight.append(journal_counts(journal).get("in_flight", 0))
        for threshold in thresholds:
            proc = await spawn(*args, *connection(emu))
            await wait_for(proc, lambda t=threshold: journal_counts(journal).get("accepted", 0) >= t)  # type: ignore[misc]
            proc.kill()
            done = await finish(proc)
            assert done.code == -signal.SIGKILL
            counts = journal_counts(journal)
            # Rows left in flight by a crash are at most the requests really in flight.
            assert counts.get("in_flight", 0) <= concurrency, counts
            left_in_flight.append(counts.get("in_flight", 0))
        assert sum(left_in_flight) > 0  # the crashes did leave rows to reconcile

        done = await run_cli(*args, "--retry-ambiguous", *connection(emu))
        assert done.code == 0, done.out + done.err
        assert_each_sent_once(emu, rows)

    counts = journal_counts(journal)
    assert counts == {"accepted": rows, "invalid": len(invalid)}
    conn = sqlite3.connect(journal)
    try:
        bad = dict(conn.execute("SELECT line, error FROM rows WHERE status = 'invalid'"))
    finally:
        conn.close()
    assert set(bad) == set(invalid)
    assert all("E164" in error for error in bad.values())


@pytest.mark.slow
async def test_ctrl_c_finishes_in_flight_exits_130_and_resumes(
    tmp_path: Path, emulator_factory: EmulatorFactory
) -> None:
    rows = 1000
    path = tmp_path / "list.csv"
    write_campaign(path, rows)
    journal = Path(str(path) + ".journal")
    args = ["campaign", "run", str(path), "--template", TEMPLATE, "--rate", "500", "--concurrency", "30"]
    async with emulator_factory(latency=0.01) as emu:
        proc = await spawn(*args, *connection(emu))
        await wait_for(proc, lambda: journal_counts(journal).get("accepted", 0) >= 150)
        proc.send_signal(signal.SIGINT)
        done = await finish(proc)
        assert done.code == 130, done.err
        assert "Stopped by Ctrl-C" in done.out and "Resumable: rerun the same command" in done.out
        counts = journal_counts(journal)
        assert counts.get("in_flight", 0) == 0 and counts.get("pending", 0) > 0
        assert len(emu.acceptance_counts("tag")) == counts["accepted"]  # recorded == sent

        done = await run_cli(*args, "--rate", "5000", *connection(emu))  # the same run, resumed faster
        assert done.code == 0, done.err
        assert_each_sent_once(emu, rows)


@pytest.mark.slow
async def test_status_while_running_then_sigterm_then_resume(tmp_path: Path, emulator_factory: EmulatorFactory) -> None:
    rows = 500
    path = tmp_path / "list.csv"
    write_campaign(path, rows)
    journal = Path(str(path) + ".journal")
    # 40/s: 12.5 s for the whole file, so the status and report commands surely run while the
    # campaign is still sending, even on a busy machine.
    args = ["campaign", "run", str(path), "--template", TEMPLATE, "--rate", "40"]
    async with emulator_factory() as emu:
        proc = await spawn(*args, *connection(emu))
        await wait_for(proc, lambda: journal_counts(journal).get("accepted", 0) >= 20)
        status = await run_cli("campaign", "status", str(journal))
        assert status.code == 1, status.err  # not complete yet
        assert "Not complete" in status.out and f"of {rows:,} rows in a final state" in status.out
        report = await run_cli("campaign", "report", str(journal))
        assert report.code == 2 and "in use by a running campaign" in report.err
        proc.send_signal(signal.SIGTERM)
        done = await finish(proc)
        assert done.code == 143 and "Stopped by SIGTERM" in done.out

        done = await run_cli(*args, "--rate", "5000", *connection(emu))
        assert done.code == 0, done.err
        assert_each_sent_once(emu, rows)


async def test_max_error_rate_pauses_with_exit_3_and_resumes(tmp_path: Path, emulator_factory: EmulatorFactory) -> None:
    rows = 400
    path = tmp_path / "list.csv"
    write_campaign(path, rows)
    journal = Path(str(path) + ".journal")
    args = ["campaign", "run", str(path), "--template", TEMPLATE, "--max-attempts", "1", "--max-error-rate", "0.5"]
    async with emulator_factory(p_500=1.0) as emu:
        done = await run_cli(*args, *connection(emu))
        assert done.code == 3, done.err
        assert "Paused:" in done.out and "--max-error-rate" in done.out and "--retry-failed" in done.out
        counts = journal_counts(journal)
        assert counts["failed"] >= 50 and counts["pending"] > 0 and "in_flight" not in counts
        assert not emu.accepted

        emu.config.p_500 = 0.0
        done = await run_cli(*args, "--retry-failed", *connection(emu))
        assert done.code == 0, done.err
        assert_each_sent_once(emu, rows)


# --- Help and the demo --------------------------------------------------------------------------------


def test_help_lists_the_commands_options_and_examples() -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["campaign", "--help"])
    assert result.exit_code == 0
    commands = result.output.split("Commands:")[1]
    assert commands.index("run") < commands.index("status") < commands.index("report")
    result = runner.invoke(cli, ["campaign", "run", "--help"])
    assert result.exit_code == 0
    for option in (
        "--template", "--template-file", "--rate", "--concurrency", "--journal", "--key-column", "--dry-run",
        "--retry-ambiguous", "--max-error-rate", "--opt-out", "--callbacks", "--wait-delivery", "--settle",
        "--no-progress", "--campaign-id", "--account-id", "--base-url", "--emulator", "BW_CALLBACK_PASSWORD",
        "--strict-numbers",
    ):  # fmt: skip
        assert option in result.output, option
    assert "Examples:" in result.output and "Exit status: 0 every row" in result.output


def test_demo_campaign_runs_a_small_campaign_end_to_end() -> None:
    result = CliRunner().invoke(cli, ["demo", "campaign", "--rows", "300", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "Done: all 300 rows reached a final state (294 sent by this run)" in result.output
    assert "delivered" in result.output and "skipped (opt-out)" in result.output
    assert "Emulator: 294 create requests, 294 accepted" in result.output


def test_duplicate_keys_are_invalid_rows_in_a_real_run(tmp_path: Path) -> None:
    path = tmp_path / "dups.csv"
    path.write_text("id,to,name\na1,+15550000001,Ann\na2,+15550000002,Bob\na1,+15550000003,Cy\n", encoding="utf-8")
    result = CliRunner().invoke(
        cli,
        ["campaign", "run", str(path), "--template", "Hi {name}", "--key-column", "id", "--emulator", "--no-progress"],
    )
    assert result.exit_code == 0, result.output
    conn = sqlite3.connect(f"{path}.journal")
    try:
        rows = dict(conn.execute("SELECT line, status FROM rows"))
        [error] = [e for (e,) in conn.execute("SELECT error FROM rows WHERE status = 'invalid'")]
    finally:
        conn.close()
    assert rows == {2: "accepted", 3: "accepted", 4: "invalid"}
    assert "duplicate key 'a1'" in error and "line 2" in error
