"""Compliance inside a campaign run: STOP/START replies received mid-run, impossible numbers.

The run sends to the in-process emulator on 127.0.0.1 and keeps a real journal; replies are
POSTed to the run's real callback receiver, exactly as Bandwidth posts them.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from click.testing import CliRunner

from bwasync import MessageRequest
from bwasync.campaign import (
    CallbackReceiver,
    CampaignRunner,
    DryRunReport,
    FlaggedNumber,
    Journal,
    NoteKind,
    RowStatus,
    RunNote,
    Template,
    build_report,
    dry_run,
    load_opt_out,
    prepare_row,
    read_rows,
    read_status,
)
from bwasync.campaign import _inputs as inputs_module
from bwasync.campaign._receiver import campaign_event_handler
from bwasync.campaign._schema import SCHEMA, flagged_numbers, read_only
from bwasync.cli import cli
from bwasync.cli._campaign._render import print_status, status_json
from bwasync.compliance import FileOptOutStore, QuietHours, ReplyProcessor
from bwasync.emulator import Emulator

from .test_campaign_run import client_for, number, options, run_once, statuses, tags_of
from .test_compliance_replies import inbound

USER, PASSWORD = "bw", "reply-secret"
AUTH = {"Authorization": "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}
#: The handset that replies STOP mid-run, and the one that replies START (it was on the list).
STOPPER, STARTER = number(1), number(2)


def write_repeating_csv(path: Path, rows: int) -> Path:
    """Rows to numbers 0..4 in turn, so each number has rows early and late in the file."""
    lines = [f"k{i},{number(i % 5)},Ann{i},{i:04d}\n" for i in range(rows)]
    path.write_text("id,to,name,code\n" + "".join(lines), encoding="utf-8")
    return path


class ReplyWhileSending(CampaignRunner):
    """Posts ``bodies`` to the receiver right before the row ``at`` is sent (one row at a time)."""

    def __init__(self, *args: Any, at: str, bodies: list[Any], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.at, self.bodies = at, bodies
        self.url: str | None = None
        self.answers: list[int] = []

    async def _before_send(self, index: int, request: MessageRequest) -> None:
        if self._keys.get(index) == self.at and not self.answers:
            assert self.url is not None
            async with aiohttp.ClientSession() as session:
                for body in self.bodies:
                    async with session.post(self.url, json=body, headers=AUTH) as resp:
                        self.answers.append(resp.status)
        await super()._before_send(index, request)


async def test_stop_and_start_received_mid_campaign(tmp_path: Path, emulator: Emulator) -> None:
    path = write_repeating_csv(tmp_path / "list.csv", 40)
    stop_file = tmp_path / "stop.txt"
    stop_file.write_text(f"{STARTER}\n", encoding="utf-8")
    journal = tmp_path / "j"
    stop = inbound("Stop", message_id="in-stop", sender=STOPPER, time="2026-12-02T03:00:00.000Z")
    start = inbound("START", message_id="in-start", sender=STARTER, time="2026-12-02T03:00:01.000Z")
    again = inbound("STOP", message_id="in-stop-2", sender=STOPPER, time="2026-12-02T03:00:02.000Z")
    # The STOP, then Bandwidth's retry of it (same event), a START, and a second STOP that
    # changes nothing (already out).
    bodies = [[stop], [stop], [start], [again]]
    opts = options(path, key_column="id", concurrency=1, opt_out=load_opt_out(stop_file))
    runner = ReplyWhileSending(journal, opts, at="k13", bodies=bodies)
    async with runner:
        await runner.load()
        replies = ReplyProcessor(FileOptOutStore(stop_file), on_reply=runner.receive_reply)
        on_event = campaign_event_handler(runner.journal, replies.apply)
        async with CallbackReceiver("127.0.0.1", 0, on_event=on_event, username=USER, password=PASSWORD) as rx:
            runner.url = rx.url
            async with client_for(emulator) as client:
                outcome = await runner.run(client)
            assert rx.stats.duplicates == 1  # the retried STOP was dropped at the door
        counts = await runner.journal.counts()
        assert runner.progress.by_status == dict(counts.by_status)  # live counters agree
        report = await build_report(runner.journal)
    assert runner.answers == [200, 200, 200, 200]
    assert outcome.complete
    states = statuses(journal)
    # The stopper's rows up to the reply were sent (k1, k6, k11); every later one was skipped.
    sent_to_stopper = sorted(m.tag.split(":")[1] for m in emulator.accepted if m.to == [STOPPER] and m.tag)
    assert sent_to_stopper == ["k1", "k11", "k6"]
    assert all(states[f"k{i}"] == "skipped" for i in range(16, 40, 5))
    # The START re-subscribed the number for later campaigns (the --opt-out file) but does not
    # bring back rows this campaign skipped at load.
    assert STARTER not in load_opt_out(stop_file) and STOPPER in load_opt_out(stop_file)
    assert all(states[f"k{i}"] == "skipped" for i in range(2, 40, 5))
    assert counts["skipped"] == 8 + 5 and counts["accepted"] == 40 - 13
    assert (report.opt_outs_received, report.opt_ins_received) == (1, 1)


async def test_a_reply_applied_twice_across_runs_skips_once(tmp_path: Path) -> None:
    """Bandwidth retries for a day, so a STOP can come again to a later run's receiver."""
    path = write_repeating_csv(tmp_path / "list.csv", 10)
    journal = tmp_path / "j"
    async with CampaignRunner(journal, options(path, key_column="id")) as runner:
        await runner.load()
        first = await runner.journal.record_reply("in-9", STOPPER, "opt-out", changed=True)
    async with CampaignRunner(journal, options(path, key_column="id")) as runner:
        await runner.load()
        second = await runner.journal.record_reply("in-9", STOPPER, "opt-out", changed=True)
        counts = await runner.journal.counts()
    assert (first, second) == (2, 0)
    assert counts["skipped"] == 2 and counts.opt_outs_received == 1
    conn = sqlite3.connect(journal)
    try:
        assert conn.execute("SELECT number, skipped FROM replies").fetchall() == [(STOPPER, 2)]
    finally:
        conn.close()


# --- Impossible numbers ---------------------------------------------------------------------------

#: A number libphonenumber accepts, and one whose area code no place uses.
REAL, IMPOSSIBLE = "+19195551234", "+15550001234"


def write_mixed_csv(path: Path) -> Path:
    rows = f"id,to,name,code\na,{REAL},Ann,1\nb,{IMPOSSIBLE},Bob,2\nc,{REAL};{IMPOSSIBLE},Cy,3\n"
    path.write_text(rows, encoding="utf-8")
    return path


def test_the_dry_run_flags_impossible_numbers_and_strict_makes_them_invalid(tmp_path: Path) -> None:
    path = write_mixed_csv(tmp_path / "list.csv")
    rules: dict[str, Any] = {"template": Template("Hi {name}"), "application_id": "app", "default_from": REAL}
    rules["key_column"] = "id"
    unchecked = dry_run(path, **rules)
    assert not unchecked.numbers_checked and unchecked.impossible == 0 and unchecked.valid == 3
    flagged = dry_run(path, check_numbers=True, **rules)
    assert (flagged.valid, flagged.invalid, flagged.impossible) == (3, 0, 2)
    assert [(r.key, r.error) for r in flagged.impossible_rows] == [
        ("b", f"to: {IMPOSSIBLE} cannot be a valid number: invalid area code 555: no place uses it"),
        ("c", f"to: {IMPOSSIBLE} cannot be a valid number: invalid area code 555: no place uses it"),
    ]
    strict = dry_run(path, check_numbers=True, strict_numbers=True, **rules)
    assert (strict.valid, strict.invalid, strict.impossible) == (1, 2, 0)
    assert [r.key for r in strict.invalid_rows] == ["b", "c"]


def test_the_dry_run_gives_every_row_the_load_pass_verdict(tmp_path: Path) -> None:
    """What the dry run says of a row is what a real run records of it: same state, same error."""
    opted_out = "+19195551235"
    path = tmp_path / "list.csv"
    path.write_text(
        "id,to,name,tz\n"
        f"a,{REAL},Ann,America/Chicago\n"
        f"b,{IMPOSSIBLE},Bob,Nowhere/City\n"
        f"c,{opted_out},Cy,\n"
        "d,12,Di,\n"
        f"e,{REAL};{IMPOSSIBLE},Ed,\n",
        encoding="utf-8",
    )
    rules: dict[str, Any] = {"template": Template("Hi {name}"), "application_id": "app", "default_from": REAL}
    checks: dict[str, Any] = {"strict_numbers": True, "timezone_column": "tz", "opt_out": frozenset({opted_out})}
    report = dry_run(path, key_column="id", check_numbers=True, **rules, **checks)
    with read_rows(path, key_column="id") as reader:
        loaded = {row.key: prepare_row(row, campaign_id="camp", **rules, **checks) for row in reader}
    invalid = {key: new.error for key, new in loaded.items() if new.status is RowStatus.INVALID}
    assert {r.key: r.error for r in report.invalid_rows} == invalid
    # Two problems with one row: the dry run names both, as the journal will.
    assert "Nowhere/City" in (invalid["b"] or "") and IMPOSSIBLE in (invalid["b"] or "")
    assert sorted(invalid) == ["b", "d", "e"] and loaded["c"].status is RowStatus.SKIPPED
    assert (report.rows, report.valid, report.skipped, report.invalid) == (5, 2, 1, 3)
    assert report.total_segments == loaded["a"].segments and [m.key for m in report.sample] == ["a"]


async def test_strict_numbers_makes_impossible_numbers_invalid_rows(tmp_path: Path, emulator: Emulator) -> None:
    path = write_mixed_csv(tmp_path / "list.csv")
    lax = await run_once(tmp_path / "lax", options(path, key_column="id"), emulator)
    assert lax.complete and lax.counts["accepted"] == 3
    emulator.accepted.clear()
    strict = await run_once(tmp_path / "strict", options(path, key_column="id", strict_numbers=True), emulator)
    assert strict.complete and (strict.counts["accepted"], strict.counts["invalid"]) == (1, 2)
    assert [m.to for m in emulator.accepted] == [[REAL]]
    states = statuses(tmp_path / "strict")
    assert states == {"a": "accepted", "b": "invalid", "c": "invalid"}
    conn = sqlite3.connect(tmp_path / "strict")
    try:
        (error,) = conn.execute("SELECT error FROM rows WHERE key = 'b'").fetchone()
    finally:
        conn.close()
    assert error == f"to: {IMPOSSIBLE} cannot be a valid number: invalid area code 555: no place uses it"


REASON = "invalid area code 555: no place uses it"


async def test_without_strict_numbers_impossible_numbers_are_sent_and_reported(
    tmp_path: Path, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # no wrapping in what the test reads
    path = write_mixed_csv(tmp_path / "list.csv")
    journal = tmp_path / "j"
    outcome = await run_once(journal, options(path, key_column="id"), emulator)
    # Flagged, not refused: every row goes, the impossible number included.
    assert outcome.complete and outcome.counts["accepted"] == 3
    assert sorted(tuple(m.to) for m in emulator.accepted) == sorted([(REAL,), (IMPOSSIBLE,), (REAL, IMPOSSIBLE)])
    async with Journal(journal) as j:
        report = await build_report(j)
    assert report.numbers_flagged == 2
    assert report.flagged_numbers == [
        FlaggedNumber(3, "b", IMPOSSIBLE, REASON),
        FlaggedNumber(4, "c", IMPOSSIBLE, REASON),
    ]
    # The CLI runs its own event loop: in a thread, off this test's loop.
    text = await asyncio.to_thread(CliRunner().invoke, cli, ["campaign", "report", str(journal)])
    assert text.exit_code == 0, text.output
    assert "numbers flagged" in text.output and f"line 3  b  {IMPOSSIBLE}: {REASON}" in text.output
    as_json = await asyncio.to_thread(CliRunner().invoke, cli, ["campaign", "report", str(journal), "--format", "json"])
    summary = json.loads(as_json.output)
    assert summary["numbers_flagged"] == 2
    assert summary["flagged_numbers"][0] == {"line": 3, "key": "b", "number": IMPOSSIBLE, "reason": REASON}


async def test_numbers_are_not_checked_at_load_without_libphonenumber(
    tmp_path: Path, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bwasync.campaign._runner as runner_module

    monkeypatch.setattr(runner_module, "numbers_checkable", lambda: False)
    monkeypatch.setattr(inputs_module, "check_number", _no_check)
    journal = tmp_path / "j"
    outcome = await run_once(journal, options(write_mixed_csv(tmp_path / "list.csv"), key_column="id"), emulator)
    assert outcome.complete and outcome.counts["accepted"] == 3
    async with Journal(journal) as j:
        assert (await build_report(j)).numbers_flagged == 0


def _no_check(number: str) -> Any:
    raise AssertionError(f"{number} was checked although libphonenumber is not installed")


def test_a_journal_from_before_flagging_reports_no_flagged_numbers(tmp_path: Path) -> None:
    journal = tmp_path / "j"
    conn = sqlite3.connect(journal)
    conn.executescript(SCHEMA)
    conn.execute("DROP TABLE flagged")
    conn.execute(
        "INSERT INTO campaign (id, campaign_id, input_path, input_size, input_hash, settings, created_at)"
        " VALUES (1, 'c', 'list.csv', 0, '', '{}', 0)"
    )
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    with read_only(journal) as ro:
        assert flagged_numbers(ro, 10) == (0, [])
    result = CliRunner().invoke(cli, ["campaign", "report", str(journal), "--format", "json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert (summary["numbers_flagged"], summary["flagged_numbers"]) == (0, [])


def test_the_cli_dry_run_shows_impossible_numbers_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # no wrapping in what the test reads
    path = write_mixed_csv(tmp_path / "list.csv")
    base = ["campaign", "run", str(path), "--template", "Hi {name}", "--key-column", "id", "--from", REAL]
    result = CliRunner().invoke(cli, [*base, "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "2 rows to numbers that cannot be valid" in result.output and "3 to send" in result.output
    assert "invalid area code 555: no place uses it" in result.output
    strict = [*base, "--dry-run", "--strict-numbers", "--allow-invalid"]  # 2 of 3 invalid: mostly
    result = CliRunner().invoke(cli, strict)
    assert result.exit_code == 0, result.output
    assert "1 to send, 2 invalid" in result.output and "Invalid rows: 2" in result.output


# --- Quiet hours ----------------------------------------------------------------------------------

NEW_YORK, LOS_ANGELES = "+19195550001", "+12135550002"
#: 13:30 UTC: 08:30 in New York (allowed), 05:30 in Los Angeles (quiet until 08:00 = 16:00 UTC).
MORNING = datetime(2026, 12, 2, 13, 30, tzinfo=UTC).timestamp()
LA_OPENS = datetime(2026, 12, 2, 16, 0, tzinfo=UTC).timestamp()


class FakeClock:
    """The runner's wall clock; ``sleep`` advances it instead of waiting."""

    def __init__(self, now: float) -> None:
        self.now = now
        self.slept: list[float] = []
        #: Called at each sleep (e.g. to see what was sent before it, or to crash the run).
        self.on_sleep: Callable[[], None] = lambda: None

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.on_sleep()
        self.now += seconds


def write_zoned_csv(path: Path) -> Path:
    rows = f"id,to,name,code\nny,{NEW_YORK},Ann,1\nla,{LOS_ANGELES},Bob,2\ngroup,{NEW_YORK};{LOS_ANGELES},Cy,3\n"
    path.write_text(rows, encoding="utf-8")
    return path


def sent_keys(emu: Emulator) -> list[str]:
    return sorted(m.tag.split(":")[1] for m in emu.accepted if m.tag)


async def test_rows_in_quiet_hours_are_held_until_the_window_opens(tmp_path: Path, emulator: Emulator) -> None:
    path = write_zoned_csv(tmp_path / "list.csv")
    clock = FakeClock(MORNING)
    before_sleep: list[list[str]] = []
    clock.on_sleep = lambda: before_sleep.append(sent_keys(emulator))
    notes: list[RunNote] = []
    opts = options(path, key_column="id", quiet_hours=QuietHours.parse("21:00-08:00"))
    runner = CampaignRunner(tmp_path / "j", opts, on_note=notes.append, clock=clock, sleep=clock.sleep)
    async with runner, client_for(emulator) as client:
        await runner.load()
        outcome = await runner.run(client)
    # New York's row went at once; the Los Angeles row and the group (one recipient in LA) waited
    # for 08:00 in Los Angeles, in one sleep, and then went.
    assert before_sleep == [["ny"]]
    assert clock.slept == [LA_OPENS - MORNING]
    assert [(n.rows, n.seconds) for n in notes if n.kind is NoteKind.HELD] == [(2, LA_OPENS - MORNING)]
    assert outcome.complete and outcome.counts["accepted"] == 3
    assert sent_keys(emulator) == ["group", "la", "ny"]


class Crash(Exception):
    """What kill -9 does to the run, as far as the journal can tell: it stops mid-run."""


async def test_held_rows_survive_a_crash_and_wait_again_on_resume(
    tmp_path: Path, emulator: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_zoned_csv(tmp_path / "list.csv")
    journal = tmp_path / "j"
    opts = options(path, key_column="id", quiet_hours=QuietHours.parse("21:00-08:00"))
    clock = FakeClock(MORNING)

    def crash() -> None:
        raise Crash

    clock.on_sleep = crash
    runner = CampaignRunner(journal, opts, clock=clock, sleep=clock.sleep)
    with pytest.raises(Crash):
        async with runner, client_for(emulator) as client:  # the journal is closed mid-run
            await runner.load()
            await runner.run(client)
    assert statuses(journal) == {"ny": "accepted", "la": "pending", "group": "pending"}
    conn = sqlite3.connect(journal)
    try:
        assert dict(conn.execute("SELECT key, not_before FROM held").fetchall()) == {"la": LA_OPENS, "group": LA_OPENS}
    finally:
        conn.close()
    # `campaign status` says how many rows wait for quiet hours, and until when.
    status = read_status(journal, now=MORNING)
    assert (status.held, status.held_until) == (2, LA_OPENS)
    assert json.loads(status_json(status))["held"] == 2
    print_status(status)
    assert "2 pending rows held; the first may go at" in capsys.readouterr().out
    assert read_status(journal, now=LA_OPENS).held == 0  # the window is open: nothing held any more
    # Resumed an hour later, still before 08:00 in Los Angeles: it waits the rest, then sends.
    later = FakeClock(MORNING + 3600)
    runner = CampaignRunner(journal, opts, clock=later, sleep=later.sleep)
    async with runner, client_for(emulator) as client:
        await runner.load()
        outcome = await runner.run(client)
    assert later.slept == [LA_OPENS - MORNING - 3600]
    assert outcome.complete and outcome.sent == 2
    assert sorted(tags_of(emulator).values()) == [1, 1, 1]  # each row sent exactly once


def quiet_dry_run(path: Path, **extra: Any) -> DryRunReport:
    """A dry run under 21:00-08:00 quiet hours at :data:`MORNING`."""
    at = datetime.fromtimestamp(MORNING, UTC)
    quiet = QuietHours.parse("21:00-08:00")
    return dry_run(path, template=Template("Hi {name}"), application_id="app", default_from=REAL, key_column="id",
                   quiet_hours=quiet, now=at, **extra)  # fmt: skip


def test_the_dry_run_says_how_many_rows_quiet_hours_would_hold_and_until_when(tmp_path: Path) -> None:
    path = write_zoned_csv(tmp_path / "list.csv")
    report = quiet_dry_run(path)
    assert report.valid == 3 and report.held == 2
    assert report.held_until == datetime.fromtimestamp(LA_OPENS, UTC)


def test_a_malformed_quiet_hours_window_is_a_usage_error(tmp_path: Path) -> None:
    path = write_zoned_csv(tmp_path / "list.csv")
    args = ["campaign", "run", str(path), "--template", "Hi {name}", "--emulator", "--quiet-hours", "9pm-8am"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and "--quiet-hours" in result.output
    assert not Path(str(path) + ".journal").exists()


@pytest.mark.parametrize("flag", [["--strict-numbers"], ["--quiet-hours", "21:00-08:00"]])
def test_number_flags_without_libphonenumber_exit_2_before_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flag: list[str]
) -> None:
    import bwasync.cli._campaign._commands as commands

    monkeypatch.setattr(commands, "_numbers_checkable", lambda: False)
    path = write_zoned_csv(tmp_path / "list.csv")
    result = CliRunner().invoke(cli, ["campaign", "run", str(path), "--template", "Hi {name}", "--emulator", *flag])
    assert result.exit_code == 2 and "pip install 'bwasync[compliance]'" in result.output
    assert not Path(str(path) + ".journal").exists()


async def test_a_timezone_column_overrides_the_numbers_zones(tmp_path: Path, emulator: Emulator) -> None:
    path = tmp_path / "list.csv"
    # A New York number whose owner lives in Los Angeles, one with no zone given, one misspelt.
    rows = (
        f"id,to,name,code,tz\nmoved,{NEW_YORK},Ann,1,America/Los_Angeles\nhome,{NEW_YORK},Bob,2,\n"
        f"bad,{NEW_YORK},Cy,3,Mars/Base\n"
    )
    path.write_text(rows, encoding="utf-8")
    quiet = QuietHours.parse("21:00-08:00")
    report = quiet_dry_run(path, timezone_column="tz")
    assert (report.valid, report.invalid, report.held) == (2, 1, 1)
    assert report.invalid_rows[0].error == "tz: 'Mars/Base' is not a time zone (IANA names: America/Chicago)"
    clock = FakeClock(MORNING)
    before_sleep: list[list[str]] = []
    clock.on_sleep = lambda: before_sleep.append(sent_keys(emulator))
    opts = options(path, key_column="id", quiet_hours=quiet, timezone_column="tz")
    runner = CampaignRunner(tmp_path / "j", opts, clock=clock, sleep=clock.sleep)
    async with runner, client_for(emulator) as client:
        await runner.load()
        outcome = await runner.run(client)
    assert before_sleep == [["home"]] and clock.slept == [LA_OPENS - MORNING]
    assert outcome.complete and statuses(tmp_path / "j") == {"moved": "accepted", "home": "accepted", "bad": "invalid"}


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--timezone-column", "tz"], "--timezone-column is for --quiet-hours"),
        (["--quiet-hours", "21:00-08:00", "--timezone-column", "tz"], "has no column 'tz'"),
    ],
)
def test_timezone_column_usage_errors_exit_2(tmp_path: Path, flags: list[str], says: str) -> None:
    path = write_zoned_csv(tmp_path / "list.csv")
    result = CliRunner().invoke(cli, ["campaign", "run", str(path), "--template", "Hi {name}", "--emulator", *flags])
    assert result.exit_code == 2 and says in result.output
    assert not Path(str(path) + ".journal").exists()
