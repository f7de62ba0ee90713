"""The campaign runner in-process: loading, reconciliation, stopping, error rate, callbacks, dry run.

Everything runs against the in-process emulator on 127.0.0.1 and a real SQLite journal; the
ground truth is the emulator's record of what it accepted. The command line, crashes and signals
are tested in ``test_campaign_cli.py``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bwasync import MessageRequest, MessagingClient, RetryPolicy, SendResult
from bwasync._constants import MIN_CONFIGURED_RATE
from bwasync._exceptions import ConfigurationError
from bwasync._models import encode_request
from bwasync.campaign import (
    CallbackReceiver,
    CampaignOptions,
    CampaignRunner,
    ErrorWindow,
    Journal,
    JournalError,
    JournalMismatchError,
    NewRow,
    NoteKind,
    RowStatus,
    RunNote,
    StopReason,
    Template,
    _runner,
    dry_run,
    match_rows,
    read_status,
)
from bwasync.campaign._reconcile import Candidate, last_write_time, signature_of
from bwasync.emulator import Emulator

from .conftest import ACCOUNT_ID, PASSWORD, USERNAME, EmulatorFactory

APP = "93de2206-9669-4e07-948d-329f4b722ee2"
SENDER = "+15553332222"
TEMPLATE = "Hi {name}, your code is {code}"


def number(i: int) -> str:
    return f"+1555{i:07d}"


def write_csv(path: Path, n: int, *, extra: str = "", key: bool = False) -> Path:
    header = "id,to,name,code\n" if key else "to,name,code\n"
    lines = [(f"k{i}," if key else "") + f"{number(i)},Ann{i},{i:04d}\n" for i in range(n)]
    path.write_text(header + "".join(lines) + extra, encoding="utf-8")
    return path


def options(path: Path, **overrides: Any) -> CampaignOptions:
    values: dict[str, Any] = {
        "input_path": str(path),
        "application_id": APP,
        "default_from": SENDER,
        "template": TEMPLATE,
        "concurrency": 20,
        "settle": 0.0,
    }
    values.update(overrides)
    return CampaignOptions(**values)


def client_for(emu: Emulator, **kwargs: Any) -> MessagingClient:
    return MessagingClient(ACCOUNT_ID, username=USERNAME, password=PASSWORD, base_url=emu.url, **kwargs)


def statuses(journal: Path) -> dict[str, str]:
    conn = sqlite3.connect(journal)
    try:
        return dict(conn.execute("SELECT key, status FROM rows"))
    finally:
        conn.close()


def tags_of(emu: Emulator) -> dict[str, int]:
    return dict(emu.acceptance_counts("tag"))


async def run_once(journal: Path, opts: CampaignOptions, emu: Emulator, **client: Any) -> Any:
    async with CampaignRunner(journal, opts) as runner, client_for(emu, **client) as c:
        await runner.load()
        return await runner.run(c)


# --- Pure policy ------------------------------------------------------------------------------------


def test_error_window_needs_a_minimum_sample_and_slides() -> None:
    window = ErrorWindow(size=10, min_sample=4)
    for _ in range(3):
        window.add(True)
    assert window.rate is None and not window.exceeded(0.5)
    window.add(False)
    assert window.rate == 0.75 and window.exceeded(0.5)
    for _ in range(10):
        window.add(False)
    assert window.count == 10 and window.rate == 0.0
    for _ in range(5):
        window.add(True)
    assert window.rate == 0.5 and not window.exceeded(0.5)  # "more than" the threshold
    window.add(True)
    assert window.exceeded(0.5)
    with pytest.raises(ValueError):
        ErrorWindow(size=5, min_sample=6)


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"concurrency": 2.5}, "concurrency must be a whole number, got 2.5"),
        ({"concurrency": 0}, "concurrency must be at least 1, got 0"),
        ({"rate": 1e-300}, "rate must be at least one segment a day"),
    ],
)
def test_campaign_options_make_send_manys_checks_before_anything_is_loaded(
    tmp_path: Path, setting: dict[str, Any], message: str
) -> None:
    # The same checks as send_many and the limiter: otherwise the load pass ran and wrote the
    # journal before the send pass refused them.
    with pytest.raises(ConfigurationError, match=message):
        options(tmp_path / "list.csv", **setting)


def sig(text: str = "Hi Ann, your code is 0001", recipients: int = 1) -> Any:
    to = [number(i) for i in range(recipients)]
    body = encode_request(MessageRequest(application_id=APP, to=to, from_=SENDER, text=text)).decode()
    result = signature_of(body)
    assert result is not None
    return result


def cand(mid: str, at: float, text: str = "Hi Ann, your code is 0001", **kw: Any) -> Candidate:
    fields: dict[str, Any] = {"mms": False, "recipients": 1, "segments": 1, "length": len(text)}
    fields.update(kw)
    return Candidate(message_id=mid, received=at, **fields)


def test_match_rows_takes_an_unclaimed_lookalike_inside_the_window() -> None:
    row = [("7", 1000.0, sig())]
    assert match_rows(row, [cand("m1", 1000.2)], horizon=60) == {"7": "m1"}
    # A message another row already holds is not this row's.
    assert match_rows(row, [cand("m1", 1000.2)], horizon=60, claimed={"m1"}) == {"7": None}
    # Outside the window: long before the mark (beyond the clock margin), or after the horizon.
    assert match_rows(row, [cand("m1", 900.0)], horizon=60, margin=10) == {"7": None}
    assert match_rows(row, [cand("m1", 1100.0)], horizon=60) == {"7": None}
    # A message that does not look like the row's: other segments, length, type or recipients.
    assert match_rows(row, [cand("m1", 1000.2, segments=2)], horizon=60) == {"7": None}
    assert match_rows(row, [cand("m1", 1000.2, length=3)], horizon=60) == {"7": None}
    assert match_rows(row, [cand("m1", 1000.2, mms=True)], horizon=60) == {"7": None}
    assert match_rows(row, [cand("m1", 1000.2, recipients=2)], horizon=60) == {"7": None}
    # Fields Bandwidth leaves out are not held against a candidate.
    unknown = Candidate(message_id="m1", received=1000.2)
    assert match_rows(row, [unknown], horizon=60) == {"7": "m1"}


def test_match_rows_accepts_the_length_in_any_plausible_unit() -> None:
    text = "Zoë 👋 {x}"  # characters != UTF-16 units != UTF-8 bytes
    row = [("1", 0.0, sig(text))]
    for length in (len(text), len(text.encode("utf-16-le")) // 2, len(text.encode())):
        assert match_rows(row, [cand("m", 0.5, text, length=length)], horizon=60) == {"1": "m"}


def test_match_rows_same_recipient_by_time_order_and_refuses_to_guess() -> None:
    same = sig()
    rows = [("a", 1000.0, same), ("b", 1001.0, same)]
    both = [cand("m2", 1001.3), cand("m1", 1000.1)]
    assert match_rows(rows, both, horizon=60) == {"a": "m1", "b": "m2"}
    # Two lookalike rows, one message: which of them went out cannot be told apart.
    assert match_rows(rows, [cand("m2", 1001.3)], horizon=60) == {"a": None, "b": None}
    # Rows that look different are told apart whatever the order.
    other = sig("Hi Ann, your code is 0001 and more")
    rows = [("a", 1000.0, same), ("b", 1001.0, other)]
    found = [cand("mb", 1001.2, "Hi Ann, your code is 0001 and more")]
    assert match_rows(rows, found, horizon=60) == {"a": None, "b": "mb"}


# --- Loading --------------------------------------------------------------------------------------


async def test_a_partially_invalid_csv_reports_bad_lines_and_sends_the_rest(tmp_path: Path, emulator: Emulator) -> None:
    path = tmp_path / "list.csv"
    rows = [
        "id,to,name,code",
        "a,+15550000001,Ann,1",  # line 2
        "b,+15550000002,Ben",  # 3: a column short
        "c,555-0100,Cy,3",  # 4: not E.164
        f"d,+15550000004,{'x' * 2100},4",  # 5: a text over 2048 characters
        "a,+15550000005,Dup,5",  # 6: duplicate key
        "",  # 7: blank, ignored
        'e,"+15550000006;+15550000007",Group,6',  # 8: a group message
        "f,+15550000008,Eve,8",  # 9
    ]
    raw = ("\n".join(rows) + "\n").encode() + b"g,+15550000009,\xff\xfe,9\n"  # 10: not UTF-8
    path.write_bytes(raw)
    journal = tmp_path / "j"
    outcome = await run_once(journal, options(path, key_column="id"), emulator)
    assert outcome.complete and outcome.stop_reason is None
    async with Journal(journal) as j:
        invalid = {r.line: r.error for r in [r async for r in j.rows_with_status("invalid")]}
    assert set(invalid) == {3, 4, 5, 6, 10}
    assert "expected 4 columns" in (invalid[3] or "")
    assert "E164" in (invalid[4] or "")
    assert "2048" in (invalid[5] or "")
    assert "duplicate key 'a'" in (invalid[6] or "")
    assert "UTF-8" in (invalid[10] or "")
    tags = tags_of(emulator)
    cid = read_status(journal).campaign_id
    assert tags == {f"{cid}:a": 1, f"{cid}:e": 1, f"{cid}:f": 1}
    group = next(m for m in emulator.accepted if m.tag == f"{cid}:e")
    assert group.to == ["+15550000006", "+15550000007"]


async def test_jsonl_rows_lists_and_broken_lines(tmp_path: Path, emulator: Emulator) -> None:
    path = tmp_path / "list.jsonl"
    lines = [
        json.dumps({"to": "+15550000001", "name": "Ann", "code": 1}),  # 1
        "{not json",  # 2
        "[1, 2]",  # 3
        json.dumps({"to": ["+15550000002", "+15550000003"], "name": "G", "code": 2}),  # 4: group
        "",  # 5
        json.dumps({"to": "+15550000004", "text": "Own text, no template"}),  # 6
        json.dumps({"to": "+15550000005", "name": "NoCode"}),  # 7
        json.dumps({"to": "+15550000006", "name": "M", "code": 3, "media": ["https://example.com/a.jpg"]}),  # 8
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    journal = tmp_path / "j"
    outcome = await run_once(journal, options(path), emulator)
    assert outcome.complete
    states = statuses(journal)
    assert states == {"1": "accepted", "2": "invalid", "3": "invalid", "4": "accepted", "6": "accepted",
                      "7": "invalid", "8": "accepted"}  # fmt: skip
    by_tag = {m.tag.split(":", 1)[1]: m for m in emulator.accepted if m.tag}
    assert by_tag["6"].text == "Own text, no template"
    assert by_tag["8"].media == ["https://example.com/a.jpg"]
    assert sorted(tags_of(emulator).values()) == [1, 1, 1, 1]


@pytest.mark.parametrize("late_pages", [False, True])
async def test_pending_rows_are_sent_a_prefetched_page_at_a_time(
    tmp_path: Path, emulator: Emulator, monkeypatch: pytest.MonkeyPatch, late_pages: bool
) -> None:
    # Pages of 4 rows, each fetched while the previous one is sent. When a page is not fetched
    # in time (forced here every other time) the pass ends and the next one goes on from there.
    monkeypatch.setattr(_runner, "PAGE_SIZE", 4)
    if late_pages:
        ready = _runner._PendingPages.ready
        calls = iter(range(1000))
        monkeypatch.setattr(_runner._PendingPages, "ready", lambda self: None if next(calls) % 2 else ready(self))
    path = write_csv(tmp_path / "list.csv", 23, key=True)
    outcome = await run_once(tmp_path / "j", options(path, key_column="id", concurrency=3), emulator)
    assert outcome.complete and outcome.sent == 23
    cid = read_status(tmp_path / "j").campaign_id
    assert tags_of(emulator) == {f"{cid}:k{i}": 1 for i in range(23)}


async def test_resume_refuses_other_settings(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "list.csv", 3, key=True)
    journal = tmp_path / "j"
    async with CampaignRunner(journal, options(path, key_column="id")) as runner:
        await runner.load()
    for change in ({"key_column": None}, {"default_from": "+15559990000"}, {"template": "Other {name}"}):
        async with CampaignRunner(journal, options(path, **{"key_column": "id", **change})) as runner:
            with pytest.raises(JournalMismatchError):
                await runner.load()


async def test_the_load_pass_prepares_ahead_of_the_writes_and_gives_the_writer_turns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Batches go to the journal's thread while the next ones are prepared, at most
    # LOAD_WRITES_AHEAD of them queued; the thread is given turns meanwhile; every row arrives.
    monkeypatch.setattr(_runner, "LOAD_BATCH", 60)
    outstanding, most, turns = 0, 0, 0
    add_rows, give_turn = Journal.add_rows, Journal.give_turn

    async def counting_add_rows(self: Journal, rows: Any, **kwargs: Any) -> int:
        nonlocal outstanding, most
        outstanding += 1
        most = max(most, outstanding)
        try:
            return await add_rows(self, rows, **kwargs)
        finally:
            outstanding -= 1

    def counting_give_turn(self: Journal) -> None:
        nonlocal turns
        turns += 1
        give_turn(self)

    monkeypatch.setattr(Journal, "add_rows", counting_add_rows)
    monkeypatch.setattr(Journal, "give_turn", counting_give_turn)
    path = write_csv(tmp_path / "list.csv", 300)
    async with CampaignRunner(tmp_path / "j", options(path)) as runner:
        await runner.load()
        assert (await runner.journal.counts())["pending"] == 300
    assert most == _runner.LOAD_WRITES_AHEAD
    assert _runner.LOAD_TURN_ROWS == 25
    assert turns == 5 * 2  # at rows 25 and 50 of each batch of 60


async def test_a_failed_batch_write_leaves_no_other_write_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The load pass stops on the failure, and the batches it had already handed over finish
    # first: none is left running (its outcome unread) after the error.
    monkeypatch.setattr(_runner, "LOAD_BATCH", 60)
    started = finished = 0
    add_rows = Journal.add_rows

    async def failing_second(self: Journal, rows: Any, **kwargs: Any) -> int:
        nonlocal started, finished
        n = started
        started += 1
        try:
            if n == 1:
                await asyncio.sleep(0)
                raise JournalError("disk full")
            return await add_rows(self, rows, **kwargs)
        finally:
            finished += 1

    monkeypatch.setattr(Journal, "add_rows", failing_second)
    path = write_csv(tmp_path / "list.csv", 300)
    async with CampaignRunner(tmp_path / "j", options(path)) as runner:
        with pytest.raises(JournalError, match="disk full"):
            await runner.load()
        assert started == finished == 3


# --- Opt-out --------------------------------------------------------------------------------------


async def test_opt_out_at_load_and_on_resume(tmp_path: Path, emulator: Emulator) -> None:
    path = write_csv(tmp_path / "list.csv", 6)
    journal = tmp_path / "j"
    async with CampaignRunner(journal, options(path, opt_out=frozenset({number(1)}))) as runner:
        await runner.load()  # loaded, not sent: every row pending but line 3 (number 1)
    assert statuses(journal)["3"] == "skipped"
    outcome = await run_once(journal, options(path, opt_out=frozenset({number(1), number(4)})), emulator)
    assert outcome.complete and outcome.opted_out == 1
    states = statuses(journal)
    assert states["3"] == states["6"] == "skipped"
    sent_to = {m.to[0] for m in emulator.accepted}
    assert sent_to == {number(i) for i in (0, 2, 3, 5)}


# --- Stopping -------------------------------------------------------------------------------------


class StopAfter(CampaignRunner):
    """Requests an orderly stop (what Ctrl-C does) once ``after`` rows were accepted."""

    def __init__(self, *args: Any, after: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.after = after

    def _on_result(self, result: SendResult) -> None:
        super()._on_result(result)
        if self.progress.sent >= self.after:
            self.request_stop(StopReason.INTERRUPTED, "stopped by the test")


async def test_an_orderly_stop_finishes_in_flight_and_resumes_without_loss(
    tmp_path: Path, emulator_factory: EmulatorFactory
) -> None:
    path = write_csv(tmp_path / "list.csv", 400)
    journal = tmp_path / "j"
    async with emulator_factory(latency=0.002, jitter=0.004) as emu:
        async with StopAfter(journal, options(path), after=100) as runner, client_for(emu) as client:
            await runner.load()
            outcome = await runner.run(client)
        assert outcome.stop_reason is StopReason.INTERRUPTED and not outcome.complete
        states = statuses(journal)
        # Nothing is left in flight: every request on the wire was answered and recorded.
        assert "in_flight" not in states.values()
        accepted = {k for k, s in states.items() if s == "accepted"}
        assert 100 <= len(accepted) < 400
        assert len(tags_of(emu)) == len(accepted)  # what was recorded is exactly what was sent
        outcome = await run_once(journal, options(path), emu)
        assert outcome.complete and outcome.sent == 400 - len(accepted)
        counts = tags_of(emu)
        assert len(counts) == 400 and set(counts.values()) == {1}


async def test_a_stop_does_not_wait_for_the_rows_the_limiter_holds(tmp_path: Path, emulator: Emulator) -> None:
    # At 1e-300 segments/s every row after the first waits in the limiter for ever; a stop from
    # outside the results (Ctrl-C's handler) must hand them back at once, not at their turn.
    path = write_csv(tmp_path / "list.csv", 5)
    journal = tmp_path / "j"
    loop = asyncio.get_running_loop()

    def stop_soon(result: SendResult) -> None:  # after the first result, from outside the results
        loop.call_soon(runner.request_stop, StopReason.INTERRUPTED, "Ctrl-C")

    opts = options(path, rate=MIN_CONFIGURED_RATE, concurrency=2)
    async with CampaignRunner(journal, opts, on_result=stop_soon) as runner, client_for(emulator) as c:
        await runner.load()
        async with asyncio.timeout(30):  # a guard: before the fix, the run waited for ever
            outcome = await runner.run(c)
    assert outcome.stop_reason is StopReason.INTERRUPTED and not outcome.complete
    assert sorted(statuses(journal).values()) == ["accepted"] + ["pending"] * 4  # nothing left in flight
    assert emulator.stats.creates == 1


class CancelAfter(CampaignRunner):
    """Cancels the task running it (what a second Ctrl-C does) once ``after`` rows were accepted.

    The cancel comes from the ``before_send`` hook, right after a row's mark is committed and
    before its request leaves: so at least that request is on the wire when the cancellation
    lands, however slowly this machine consumes results (cancelling from the result handler
    instead could find every request already answered, with nothing left in flight).
    """

    def __init__(self, *args: Any, after: int, task: asyncio.Future[Any], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.after, self.task = after, task

    async def _before_send(self, index: int, request: MessageRequest) -> None:
        await super()._before_send(index, request)
        if self.progress.sent >= self.after:
            self.task.cancel()


async def test_a_cancelled_run_leaves_rows_in_flight_for_reconciliation(
    tmp_path: Path, emulator_factory: EmulatorFactory
) -> None:
    path = write_csv(tmp_path / "list.csv", 300)
    journal = tmp_path / "j"
    async with emulator_factory(latency=0.05, jitter=0.01) as emu:
        ready: asyncio.Future[asyncio.Task[Any]] = asyncio.get_running_loop().create_future()

        async def first_run() -> None:
            async with CancelAfter(journal, options(path), after=50, task=await ready) as runner:
                async with client_for(emu) as client:
                    await runner.load()
                    await runner.run(client)

        task = asyncio.ensure_future(first_run())
        ready.set_result(task)
        with pytest.raises(asyncio.CancelledError):
            await task
        await emu.drain_callbacks()
        in_flight = [k for k, s in statuses(journal).items() if s == "in_flight"]
        assert 0 < len(in_flight) <= 20
        outcome = await run_once(journal, options(path), emu)
        assert outcome.complete and outcome.reconciled is not None
        assert outcome.reconciled.rows == len(in_flight)
        # The server answered every request that left, so reconciliation proves them all.
        assert outcome.reconciled.accepted == len(in_flight) and outcome.counts["ambiguous"] == 0
        counts = tags_of(emu)
        assert len(counts) == 300 and set(counts.values()) == {1}


# --- Reconciliation ---------------------------------------------------------------------------------


async def crash_with_in_flight(journal: Path, path: Path, emu: Emulator, *, sent: list[int], unsent: list[int]) -> None:
    """What a killed run leaves: rows marked in flight, some of whose requests reached Bandwidth."""
    async with CampaignRunner(journal, options(path)) as runner, client_for(emu) as client:
        info = await runner.load()
        pending = {r.key: r async for r in runner.journal.iter_pending()}
        for line in sent + unsent:
            await runner.journal.mark_in_flight(str(line))
        for line in sent:
            await client.create_message(pending[str(line)].message_request())
        assert info.campaign_id


async def test_reconcile_credits_what_bandwidth_accepted_and_never_silently_resends(
    tmp_path: Path, emulator: Emulator
) -> None:
    path = write_csv(tmp_path / "list.csv", 10)
    journal = tmp_path / "j"
    await crash_with_in_flight(journal, path, emulator, sent=[3, 5, 6], unsent=[4, 8])
    ids = {m.tag.split(":")[1]: m.id for m in emulator.accepted if m.tag}
    outcome = await run_once(journal, options(path), emulator)
    assert outcome.complete
    assert outcome.reconciled is not None and (outcome.reconciled.accepted, outcome.reconciled.ambiguous) == (3, 2)
    async with Journal(journal) as j:
        for key in ("3", "5", "6"):
            row = await j.get_row(key)
            assert row is not None and row.status == "accepted" and row.message_id == ids[key]
        for key in ("4", "8"):
            row = await j.get_row(key)
            assert row is not None and row.status == "ambiguous" and "may or may not" in (row.error or "")
    counts = tags_of(emulator)
    cid = read_status(journal).campaign_id
    assert f"{cid}:4" not in counts and f"{cid}:8" not in counts  # not silently resent
    assert len(counts) == 8 and set(counts.values()) == {1}
    # Knowingly: looked up once more (still not there), then resent exactly once.
    outcome = await run_once(journal, options(path, retry_ambiguous=True), emulator)
    assert outcome.complete and outcome.requeued == 2 and outcome.counts["ambiguous"] == 0
    counts = tags_of(emulator)
    assert len(counts) == 10 and set(counts.values()) == {1}


async def test_the_settle_window_catches_a_request_the_dead_run_left_on_the_wire(
    tmp_path: Path, emulator: Emulator
) -> None:
    path = write_csv(tmp_path / "list.csv", 4)
    journal = tmp_path / "j"
    await crash_with_in_flight(journal, path, emulator, sent=[], unsent=[3])
    waiting = asyncio.Event()
    notes: list[RunNote] = []

    def on_note(note: RunNote) -> None:
        notes.append(note)
        if note.kind is NoteKind.SETTLING:
            waiting.set()

    # The settle window is anchored at the later of the row's mark and the dead run's last
    # journal write (both before this run starts), in Unix time: measure from there.
    anchor = max(last_write_time(journal) or 0.0, in_flight_at(journal, "3"))
    async with CampaignRunner(journal, options(path, settle=0.5), on_note=on_note) as runner:
        async with client_for(emulator) as client:
            await runner.load()
            run = asyncio.ensure_future(runner.run(client))
            await waiting.wait()
            # The dead run's request reaches Bandwidth late, while the runner waits.
            await client.create_message(stored_request(journal, "3"))
            outcome = await run
            assert time.time() >= anchor + 0.5
    assert outcome.complete and outcome.reconciled is not None and outcome.reconciled.accepted == 1
    assert [n.kind for n in notes][:3] == [NoteKind.SETTLING, NoteKind.RECONCILING, NoteKind.RECONCILED]
    assert notes[0].rows == 1 and notes[0].status == "in_flight" and 0 < (notes[0].seconds or 0) <= 0.5
    counts = tags_of(emulator)
    assert len(counts) == 4 and set(counts.values()) == {1}


def in_flight_at(journal: Path, key: str) -> float:
    conn = sqlite3.connect(journal)
    try:
        return float(conn.execute("SELECT in_flight_at FROM rows WHERE key = ?", (key,)).fetchone()[0])
    finally:
        conn.close()


def stored_request(journal: Path, key: str) -> MessageRequest:
    """A row's stored request, read through a separate connection (the runner holds the lock)."""
    conn = sqlite3.connect(journal)
    try:
        body = conn.execute("SELECT request FROM rows WHERE key = ?", (key,)).fetchone()[0]
    finally:
        conn.close()
    return MessageRequest.from_json(body)


# --- Error rate -----------------------------------------------------------------------------------


async def test_max_error_rate_pauses_then_resumes(tmp_path: Path, emulator_factory: EmulatorFactory) -> None:
    path = write_csv(tmp_path / "list.csv", 300)
    journal = tmp_path / "j"
    no_retry = RetryPolicy(max_attempts=1)
    async with emulator_factory(p_500=1.0) as emu:
        outcome = await run_once(journal, options(path, retry=no_retry, max_error_rate=0.5), emu)
        assert outcome.stop_reason is StopReason.ERROR_RATE and not outcome.complete
        assert "over the limit of 0.5" in (outcome.message or "")
        failed = outcome.counts["failed"]
        # Judged after 50 results; the requests already in flight then still finish.
        assert 50 <= failed <= 50 + 20
        assert outcome.counts["pending"] == 300 - failed and outcome.counts["in_flight"] == 0
        assert not emu.accepted
        emu.config.p_500 = 0.0
        outcome = await run_once(journal, options(path, retry=no_retry, retry_failed=True), emu)
        assert outcome.complete and outcome.requeued == failed
        counts = tags_of(emu)
        assert len(counts) == 300 and set(counts.values()) == {1}


async def test_refused_credentials_stop_the_run_and_keep_rows_sendable(tmp_path: Path, emulator: Emulator) -> None:
    path = write_csv(tmp_path / "list.csv", 50)
    journal = tmp_path / "j"
    async with CampaignRunner(journal, options(path)) as runner:
        await runner.load()
        async with MessagingClient(ACCOUNT_ID, username="u", password="wrong", base_url=emulator.url) as bad:
            outcome = await runner.run(bad)
    assert outcome.stop_reason is StopReason.FATAL and "credentials" in (outcome.message or "")
    assert set(statuses(journal).values()) == {"pending"}
    outcome = await run_once(journal, options(path), emulator)
    assert outcome.complete and len(tags_of(emulator)) == 50


async def test_an_expired_row_fails_without_being_sent(tmp_path: Path, emulator: Emulator) -> None:
    path = write_csv(tmp_path / "list.csv", 3)
    journal = tmp_path / "j"
    async with CampaignRunner(journal, options(path)) as runner:
        await runner.load()
    conn = sqlite3.connect(journal)
    with conn:
        body = json.loads(conn.execute("SELECT request FROM rows WHERE key = '3'").fetchone()[0])
        body["expiration"] = "2001-01-01T00:00:00Z"  # passed since the load
        conn.execute("UPDATE rows SET request = ? WHERE key = '3'", (json.dumps(body),))
    conn.close()
    outcome = await run_once(journal, options(path), emulator)
    assert outcome.complete and statuses(journal)["3"] == "failed"
    assert len(emulator.accepted) == 2


# --- Delivery ---------------------------------------------------------------------------------------


def callback(kind: str, tag: str, message_id: str, to: str, code: int | None = None) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": kind,
        "time": "2026-11-26T12:00:01.000Z",
        "description": kind,
        "to": to,
        "message": {
            "id": message_id,
            "owner": SENDER,
            "applicationId": APP,
            "time": "2026-11-26T12:00:00.000Z",
            "segmentCount": 1,
            "direction": "out",
            "to": [to],
            "from": SENDER,
            "text": "",
            "tag": tag,
        },
    }
    if code is not None:
        event["errorCode"] = code
    return event


async def test_duplicate_and_out_of_order_callbacks_are_recorded_once(
    tmp_path: Path, emulator_factory: EmulatorFactory
) -> None:
    path = write_csv(tmp_path / "list.csv", 200)
    journal = tmp_path / "j"
    user, password = "bw", "callback-secret"
    auth = {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
    async with CampaignRunner(journal, options(path)) as runner:
        await runner.load()
        async with CallbackReceiver("127.0.0.1", 0, journal=runner.journal, username=user, password=password) as rx:
            knobs = {
                "callback_url": rx.url,
                "callback_username": user,
                "callback_password": password,
                "p_duplicate_callback": 0.5,
                "p_delivered": 0.8,
                "seed": 11,
            }
            async with emulator_factory(**knobs) as emu, client_for(emu) as client:
                outcome = await runner.run(client)
                assert outcome.complete
                awaiting = await runner.wait_for_delivery(20, activity=lambda: rx.stats.recorded)
                assert awaiting == 0
                await emu.drain_callbacks()
                assert emu.stats.callbacks_duplicated > 0 and rx.stats.duplicates > 0
                # Hand-posted, out of order: an old message-sent and a contradicting final state
                # after the row's delivery was recorded change nothing.
                delivered = [r async for r in runner.journal.rows_with_status("accepted") if r.delivery_status]
                row = delivered[len(delivered) // 2]
                tag = f"{runner.info.campaign_id}:{row.key}"
                assert row.message_id is not None
                contrary = "message-failed" if row.delivery_status == "delivered" else "message-delivered"
                late = [
                    callback("message-sent", tag, row.message_id, row.recipients[0]),
                    callback(contrary, tag, row.message_id, row.recipients[0], 4750),
                ]
                async with aiohttp.ClientSession() as session:
                    async with session.post(rx.url, json=late, headers=auth) as resp:
                        assert resp.status == 200
                    async with session.post(rx.url, json=late[:1], headers=auth) as resp:
                        assert resp.status == 200  # a redelivery of it: dropped as a duplicate
                after = await runner.journal.get_row(row.key)
                assert after is not None and after.delivery_status == row.delivery_status
                counts = await runner.journal.counts()
    assert counts.by_delivery["delivered"] + counts.by_delivery["failed"] == 200
    assert 100 < counts.by_delivery["delivered"] < 200
    conn = sqlite3.connect(journal)
    try:
        # One delivery record per recipient, however many times its events came.
        assert conn.execute("SELECT COUNT(*) FROM deliveries").fetchone()[0] == 200
    finally:
        conn.close()


async def test_an_accepted_result_completes_a_row_a_callback_accepted_first(tmp_path: Path) -> None:
    """The journal fix: a status callback can reach the journal before the 202's result does."""
    path = write_csv(tmp_path / "list.csv", 2)
    async with Journal(tmp_path / "j") as j:
        info = await j.init_campaign(input_path=path, template=None)
        request = MessageRequest(application_id=APP, to=[number(1)], from_=SENDER, text="hi")
        body = encode_request(request).decode()
        await j.add_rows([NewRow(str(n), n, RowStatus.PENDING, [number(1)], SENDER, body, 1) for n in (2, 3)])
        for key in ("2", "3"):
            await j.mark_in_flight(key)
            await j.record_delivery(f"{info.campaign_id}:{key}", "message-sent", message_id=f"m-{key}")
        j.record_result("2", status="accepted", message_id="m-2", attempts=1, latency=0.25, segments=1)
        j.record_result("3", status="accepted", message_id="m-other", attempts=1, latency=0.5)
        await j.flush()
        two, three = await j.get_row("2"), await j.get_row("3")
        assert two is not None and (two.status, two.latency, two.attempts) == ("accepted", 0.25, 1)
        assert three is not None and (three.message_id, three.latency) == ("m-3", None)
        assert j.stats.ignored_results == 1


# --- Dry run ----------------------------------------------------------------------------------------


def test_dry_run_counts_encodings_segments_and_time(tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    long = "x" * 200
    path.write_text(
        f"to,name,code\n{number(1)},Ann,1\n{number(2)},Zoë 👋,2\n{number(3)},{long},3\n12,Bad,4\n{number(5)},Opted,5\n",
        encoding="utf-8",
    )
    report = dry_run(
        path, template=Template(TEMPLATE), application_id=APP, default_from=SENDER, opt_out=frozenset({number(5)})
    )
    assert (report.rows, report.valid, report.invalid, report.skipped, report.sendable) == (5, 4, 1, 1, 3)
    assert (report.gsm7, report.ucs2, report.mms) == (2, 1, 0)
    assert report.histogram == {1: 2, 2: 1}
    assert report.total_segments == 4
    assert report.duration(2.0) == 2.0 and report.duration(None) is None
    assert [m.line for m in report.sample] == [2, 3, 4]
    assert report.sample[1].encoding == "UCS-2"
    assert report.invalid_rows[0].line == 5 and "E164" in report.invalid_rows[0].error
