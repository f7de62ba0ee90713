"""The campaign journal on a real SQLite file: durability, group commit, batching, resume."""

from __future__ import annotations

import asyncio
import random
import signal
import sqlite3
import sys
import textwrap
import time
from pathlib import Path

import pytest
from msgspec.structs import replace

from bwasync import MessageRequest
from bwasync._models import encode_request
from bwasync.campaign import (
    CommitInfo,
    DeliveryOutcome,
    Journal,
    JournalClosedError,
    JournalError,
    JournalLockedError,
    JournalMismatchError,
    JournalStateError,
    NewRow,
    RowStatus,
    _journal,
    _schema,
)
from bwasync.campaign._records import nearest_rank

APP = "93de2206-9669-4e07-948d-329f4b722ee2"
SENDER = "+15553332222"


def new_row(
    line: int, *, key: str | None = None, status: RowStatus = RowStatus.PENDING, to: list[str] | None = None
) -> NewRow:
    recipients = to or [f"+1555{line:07d}"]
    request = encode_request(
        MessageRequest(application_id=APP, to=recipients, from_=SENDER, text=f"hello {line}", tag=f"c:{key or line}")
    ).decode()
    return NewRow(
        key=key or str(line),
        line=line,
        status=status,
        recipients=recipients,
        sender=SENDER,
        request=request if status is not RowStatus.INVALID else None,
        segments=len(recipients),
        error="bad row" if status is RowStatus.INVALID else None,
    )


def row_table(path: Path, extra: str) -> list[tuple[object, ...]]:
    """Every row's result columns and ``extra`` ones, in line order, read as a crash leaves them."""
    conn = sqlite3.connect(path)
    try:
        columns = "key, status, message_id, error, error_code, attempts, latency, segments, finished_at IS NULL, "
        return list(conn.execute(f"SELECT {columns}{extra} FROM rows ORDER BY line"))
    finally:
        conn.close()


def statuses(path: Path) -> dict[str, str]:
    """Every row's status, read through a separate sqlite3 connection (what a crash leaves)."""
    conn = sqlite3.connect(path)
    try:
        return dict(conn.execute("SELECT key, status FROM rows"))
    finally:
        conn.close()


@pytest.fixture
def input_file(tmp_path: Path) -> Path:
    p = tmp_path / "list.csv"
    p.write_text("to,name\n+15552223333,Ann\n", encoding="utf-8")
    return p


@pytest.fixture
async def journal(tmp_path: Path, input_file: Path):
    j = await Journal.open(tmp_path / "c.journal")
    await j.init_campaign(input_path=input_file, template="Hi {name}", settings={"rate": 10})
    yield j
    await j.close()


# --- Opening, campaign record, locking --------------------------------------------------------------


async def test_open_creates_a_wal_journal(tmp_path: Path) -> None:
    path = tmp_path / "c.journal"
    async with await Journal.open(path) as j:
        assert await j.campaign_info() is None
        assert j.campaign_id is None
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"campaign", "rows", "deliveries"} <= tables
    conn.close()


async def test_campaign_id_is_stable_across_resumes(tmp_path: Path, input_file: Path) -> None:
    path = tmp_path / "c.journal"
    async with Journal(path) as j:
        info = await j.init_campaign(input_path=input_file, template="Hi {name}", settings={"rate": 10})
        assert len(info.campaign_id) == 16
        assert info.settings == {"rate": 10}
        assert info.input_size == input_file.stat().st_size
        assert not info.load_complete
    async with Journal(path) as j:
        assert j.campaign_id == info.campaign_id  # known on open, before init_campaign
        again = await j.init_campaign(input_path=input_file, template="Hi {name}", settings={"rate": 99})
        assert again.campaign_id == info.campaign_id
        assert again.settings == {"rate": 10}  # the stored settings, for the caller to compare
        assert again.tag_prefix == f"{info.campaign_id}:"


async def test_resume_with_another_file_or_template_is_refused(tmp_path: Path, input_file: Path) -> None:
    path = tmp_path / "c.journal"
    async with Journal(path) as j:
        await j.init_campaign(input_path=input_file, template="Hi {name}")
    async with Journal(path) as j:
        with pytest.raises(JournalMismatchError, match="template"):
            await j.init_campaign(input_path=input_file, template="Hello {name}")
        input_file.write_text("to,name\n+15552223333,Bob\n", encoding="utf-8")
        with pytest.raises(JournalMismatchError, match="input file"):
            await j.init_campaign(input_path=input_file, template="Hi {name}")


async def test_explicit_campaign_id(tmp_path: Path, input_file: Path) -> None:
    async with Journal(tmp_path / "c.journal") as j:
        with pytest.raises(ValueError):
            await j.init_campaign(input_path=input_file, template=None, campaign_id="has:colon")
        info = await j.init_campaign(input_path=input_file, template=None, campaign_id="spring-sale")
        assert info.campaign_id == "spring-sale"


async def test_a_second_journal_on_the_same_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.journal"
    async with Journal(path):
        with pytest.raises(JournalLockedError):
            await Journal.open(path)
    async with Journal(path):  # released on close
        pass


async def test_a_foreign_sqlite_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE customers (id INTEGER)")
    conn.commit()
    conn.close()
    with pytest.raises(JournalError, match="not a bwasync campaign journal"):
        await Journal.open(path)


async def test_closed_journal_refuses_work(tmp_path: Path) -> None:
    j = await Journal.open(tmp_path / "c.journal")
    await j.close()
    await j.close()  # idempotent
    with pytest.raises(JournalClosedError):
        await j.mark_in_flight("1")
    with pytest.raises(JournalClosedError):
        j.record_result("1", status="accepted")
    assert "closed" in repr(j)


# --- Load pass -----------------------------------------------------------------------------------------


async def test_add_rows_is_idempotent_and_records_progress(journal: Journal) -> None:
    batch = [new_row(n) for n in range(2, 12)]
    assert await journal.add_rows(batch, loaded_through=11) == 10
    # A crash after the commit but before the runner noticed: the batch is replayed.
    assert await journal.add_rows(batch, loaded_through=11) == 0
    assert await journal.total_rows() == 10
    info = await journal.campaign_info()
    assert info is not None and info.loaded_through == 11 and not info.load_complete
    await journal.set_loaded_through(5)  # never moves backwards
    await journal.set_loaded_through(20, complete=True)
    info = await journal.campaign_info()
    assert info is not None and info.loaded_through == 20 and info.load_complete


async def test_rows_read_back_are_immutable_values(journal: Journal) -> None:
    row = new_row(2)
    await journal.add_rows([row, replace(row, key="3", line=3)])
    pending = [r async for r in journal.iter_pending()]
    assert [(r.key, r.line, r.recipients, r.sender, r.attempts) for r in pending] == [
        ("2", 2, ("+15550000002",), SENDER, 0),
        ("3", 3, ("+15550000002",), SENDER, 0),
    ]
    first = pending[0]
    assert first == replace(first) and first != pending[1] and hash(first) == hash(replace(first))
    assert first.message_request().to == ["+15550000002"]
    for record in (row, first):
        with pytest.raises(AttributeError):
            record.key = "other"  # type: ignore[misc]
    assert repr(first).startswith("PendingRow(key='2', line=2,")


async def test_load_pass_resumes_where_it_stopped(tmp_path: Path, input_file: Path) -> None:
    path = tmp_path / "c.journal"
    rows = [new_row(n) for n in range(2, 102)]
    async with Journal(path) as j:
        await j.init_campaign(input_path=input_file, template=None)
        await j.add_rows(rows[:40], loaded_through=rows[39].line)
        # The process dies here, mid-load.
    async with Journal(path) as j:
        info = await j.init_campaign(input_path=input_file, template=None)
        remaining = [r for r in rows if r.line > info.loaded_through]
        assert len(remaining) == 60
        assert await j.add_rows(remaining, loaded_through=remaining[-1].line) == 60
        await j.set_loaded_through(remaining[-1].line, complete=True)
        assert (await j.counts())["pending"] == 100


async def test_duplicate_key_on_another_line_is_stored_invalid(journal: Journal) -> None:
    await journal.add_rows([new_row(2, key="A"), new_row(3, key="B")])
    assert await journal.add_rows([new_row(9, key="A")]) == 1
    row = await journal.get_row("#9")
    assert row is not None and row.status == "invalid" and row.line == 9
    assert row.error == "duplicate key 'A' (first on line 2)"
    original = await journal.get_row("A")
    assert original is not None and original.line == 2 and original.status == "pending"


# --- Iteration -------------------------------------------------------------------------------------------


async def test_iter_pending_is_in_line_order_and_paged(journal: Journal) -> None:
    lines = list(range(2, 2 + 95))
    random.Random(7).shuffle(lines)
    rows = [new_row(n) for n in lines]
    rows.append(new_row(500, status=RowStatus.INVALID))
    await journal.add_rows(rows)
    pages_before = journal.stats.pages
    seen = [r async for r in journal.iter_pending(batch=10)]
    assert [r.line for r in seen] == sorted(lines)
    # Keyset pagination: 10 pages of at most 10 rows; no page ever holds more.
    assert journal.stats.pages - pages_before == 10
    first = seen[0]
    assert first.recipients == (f"+1555{first.line:07d}",)
    assert first.sender == SENDER and first.segments == 1 and first.attempts == 0
    request = first.message_request()
    assert request.text == f"hello {first.line}"


async def test_iter_pending_skips_rows_marked_meanwhile(journal: Journal) -> None:
    await journal.add_rows([new_row(n) for n in range(2, 32)])
    yielded: list[int] = []
    async for row in journal.iter_pending(batch=5):
        yielded.append(row.line)
        if row.line == 3:
            # Rows ahead of the cursor are sent by someone else (e.g. a concurrent pass).
            for ahead in (10, 11, 12):
                await journal.mark_in_flight(str(ahead))
        await journal.mark_in_flight(row.key)
    assert yielded == [n for n in range(2, 32) if n not in (10, 11, 12)]
    assert len(yielded) == len(set(yielded))


async def test_rows_with_status_and_iter_all(journal: Journal) -> None:
    await journal.add_rows([new_row(n) for n in range(2, 9)] + [new_row(9, status=RowStatus.INVALID)])
    await journal.mark_in_flight("4")
    await journal.mark_in_flight("6")
    assert [r.key for r in await journal.in_flight_rows()] == ["4", "6"]
    assert [r.key async for r in journal.rows_with_status("invalid")] == ["9"]
    assert [r.line async for r in journal.iter_all(batch=3)] == list(range(2, 10))
    flying = await journal.get_row("4")
    assert flying is not None and flying.in_flight_at is not None and flying.sender == SENDER


# --- Marks: durability and group commit ----------------------------------------------------------------------


async def test_a_mark_is_committed_when_it_returns(journal: Journal) -> None:
    await journal.add_rows([new_row(n) for n in range(2, 52)])
    observer = sqlite3.connect(journal.path)
    try:

        async def mark_and_look(key: str) -> str:
            await journal.mark_in_flight(key)
            # Right after the await, another connection (another process, after a crash) sees it.
            return observer.execute("SELECT status FROM rows WHERE key = ?", (key,)).fetchone()[0]

        seen = await asyncio.gather(*(mark_and_look(str(n)) for n in range(2, 52)))
        assert seen == ["in_flight"] * 50
    finally:
        observer.close()


async def test_group_commit_batches_concurrent_marks(tmp_path: Path, input_file: Path) -> None:
    path = tmp_path / "c.journal"
    n, workers = 20_000, 200
    async with Journal(path) as j:
        await j.init_campaign(input_path=input_file, template=None)
        for start in range(0, n, 2000):
            await j.add_rows([new_row(line) for line in range(start + 2, start + 2002)])
        keys = iter(str(line) for line in range(2, n + 2))

        async def worker() -> None:
            for key in keys:
                await j.mark_in_flight(key)

        transactions = j.stats.transactions
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(workers)))
        elapsed = time.perf_counter() - started
        commits = j.stats.transactions - transactions
        print(f"\n{n} marks from {workers} coroutines: {n / elapsed:,.0f} marks/s in {commits} transactions")
        assert j.stats.marks == n
        # Every transaction carried many marks: far fewer commits than marks.
        assert commits <= n // 20
        assert j.stats.max_batch >= workers // 2
    assert set(statuses(path).values()) == {"in_flight"}


async def test_mark_refuses_rows_that_must_not_be_sent(journal: Journal) -> None:
    await journal.add_rows([new_row(2), new_row(3), new_row(4, status=RowStatus.INVALID)])
    await journal.mark_in_flight("2")
    journal.record_result("2", status="accepted", message_id="m-2")
    await journal.flush()
    results = await asyncio.gather(
        journal.mark_in_flight("2"),
        journal.mark_in_flight("3"),
        journal.mark_in_flight("4"),
        journal.mark_in_flight("nope"),
        return_exceptions=True,
    )
    assert isinstance(results[0], JournalStateError) and results[0].status == "accepted"
    assert results[1] is None  # its batch-mates' refusals do not affect it
    assert isinstance(results[2], JournalStateError) and results[2].status == "invalid"
    assert isinstance(results[3], JournalStateError) and results[3].status is None
    assert statuses(Path(journal.path))["3"] == "in_flight"


async def test_remarking_an_in_flight_row_keeps_the_first_time(journal: Journal) -> None:
    await journal.add_rows([new_row(2)])
    await journal.mark_in_flight("2")
    first = await journal.get_row("2")
    await journal.mark_in_flight("2")  # a retry of the same send
    again = await journal.get_row("2")
    assert first is not None and again is not None
    assert again.status == "in_flight" and again.in_flight_at == first.in_flight_at


# --- Results ---------------------------------------------------------------------------------------------------


async def test_results_are_batched_and_flushed(journal: Journal) -> None:
    await journal.add_rows([new_row(n) for n in range(2, 1002)])
    await asyncio.gather(*(journal.mark_in_flight(str(n)) for n in range(2, 1002)))
    transactions = journal.stats.transactions
    for n in range(2, 1002):
        journal.record_result(str(n), status="accepted", message_id=f"m-{n}", attempts=1, latency=0.1)
    await journal.flush()
    assert journal.stats.transactions - transactions <= 3
    assert set(statuses(Path(journal.path)).values()) == {"accepted"}
    row = await journal.get_row("7")
    assert row is not None
    assert (row.message_id, row.attempts, row.latency) == ("m-7", 1, 0.1)
    assert row.finished_at is not None


async def test_a_result_is_committed_soon_without_a_flush(tmp_path: Path, input_file: Path) -> None:
    committed = asyncio.Event()

    def on_commit(info: CommitInfo) -> None:
        if info.results:
            committed.set()

    async with Journal(tmp_path / "c.journal", flush_interval=0.05, on_commit=on_commit) as j:
        await j.init_campaign(input_path=input_file, template=None)
        await j.add_rows([new_row(2)])
        await j.mark_in_flight("2")
        j.record_result("2", status="failed", error="HTTP 400", error_code=400)
        # No flush and no mark: only the flush deadline can commit it (the timeout bounds a hang).
        await asyncio.wait_for(committed.wait(), timeout=5)
        assert statuses(tmp_path / "c.journal")["2"] == "failed"


async def test_results_ride_along_with_the_next_mark(tmp_path: Path, input_file: Path) -> None:
    # A long flush interval: only the mark's commit can carry the result.
    async with Journal(tmp_path / "c.journal", flush_interval=3600) as j:
        await j.init_campaign(input_path=input_file, template=None)
        await j.add_rows([new_row(2), new_row(3)])
        await j.mark_in_flight("2")
        j.record_result("2", status="accepted", message_id="m-2")
        await j.mark_in_flight("3")
        assert statuses(tmp_path / "c.journal")["2"] == "accepted"


async def test_close_commits_queued_results(tmp_path: Path, input_file: Path) -> None:
    path = tmp_path / "c.journal"
    async with Journal(path, flush_interval=3600) as j:
        await j.init_campaign(input_path=input_file, template=None)
        await j.add_rows([new_row(2)])
        await j.mark_in_flight("2")
        j.record_result("2", status="ambiguous", error="timed out after the request was sent")
        assert statuses(path)["2"] == "in_flight"
    assert statuses(path)["2"] == "ambiguous"


async def test_the_send_pass_ends_at_its_last_result_though_its_end_moves_once_a_second(
    tmp_path: Path, input_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Results move the recorded end of the pass at most once a second (one statement less per
    # commit); a flush and the close move it to the last result, so the report's throughput
    # counts the whole pass.
    monkeypatch.setattr(_journal, "SENDING_TOUCH_INTERVAL", 3600.0)  # however slow this machine
    path = tmp_path / "c.journal"

    def pass_and_last_result() -> tuple[float, float]:
        conn = sqlite3.connect(path)
        try:
            (last_at,) = conn.execute("SELECT last_at FROM sending").fetchone()
            (finished,) = conn.execute("SELECT MAX(finished_at) FROM rows").fetchone()
            return last_at, finished
        finally:
            conn.close()

    async with Journal(path, flush_interval=0.001) as j:
        await j.init_campaign(input_path=input_file, template=None)
        await j.add_rows([new_row(n) for n in range(2, 6)])
        await j.begin_sending()
        for key in ("2", "3"):
            await j.mark_in_flight(key)
            j.record_result(key, status="accepted", message_id=f"m-{key}")
        await j.flush()
        last_at, finished = pass_and_last_result()
        assert last_at >= finished
        await j.mark_in_flight("4")
        j.record_result("4", status="accepted", message_id="m-4")
        await j.mark_in_flight("5")  # commits the result, too soon after the last move
        last_at, finished = pass_and_last_result()
        assert last_at < finished
    last_at, finished = pass_and_last_result()
    assert last_at >= finished


@pytest.mark.skipif(not _journal._GROUP_UPDATES, reason="this SQLite applies groups row by row anyway")
async def test_a_group_of_rows_and_results_applies_exactly_like_one_at_a_time(
    tmp_path: Path, input_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One INSERT or UPDATE over a JSON array (the fast path) must leave every row as one statement
    # per row would: columns and their types, statuses, kept and overwritten values, NULLs,
    # refusals of final rows.
    async def play(name: str) -> list[tuple[object, ...]]:
        async with Journal(tmp_path / name, flush_interval=3600) as j:
            await j.init_campaign(input_path=input_file, template=None)
            await j.add_rows([new_row(n) for n in range(2, 10)] + [new_row(10, status=RowStatus.INVALID)])
            await asyncio.gather(*(j.mark_in_flight(str(n)) for n in range(2, 9)))
            await j.record_delivery(f"{j.campaign_id}:8", "message-delivered", message_id="m-8")
            j.record_result("2", status="accepted", message_id="m-2", attempts=1, latency=0.25, segments=3)
            j.record_result("3", status="failed", error="HTTP 400 (to: bad)", error_code=400, attempts=1, latency=0.5)
            j.record_result("4", status="ambiguous", error="timed out", attempts=2, latency=None)
            j.record_result("5", status="pending", attempts=1)
            j.record_result("6", status="accepted", message_id="m-6", attempts=3, latency=1e-05)
            j.record_result("8", status="accepted", message_id="m-8", attempts=1, latency=0.125, segments=2)
            j.record_result("9", status="accepted", message_id="m-9")  # pending, never marked: still applies
            j.record_result("10", status="accepted", message_id="m-10")  # invalid: refused
            j.record_result("nope", status="failed", error="x")  # no such row: ignored
            await j.flush()
            ignored = j.stats.ignored_results
        extra = "line, recipients, sender, request, typeof(line), typeof(segments)"
        return [*row_table(tmp_path / name, extra), ("ignored", ignored)]

    grouped = await play("grouped.journal")
    monkeypatch.setattr(_journal, "_GROUP_UPDATES", False)
    one_by_one = await play("one-by-one.journal")
    assert grouped == one_by_one
    assert grouped[0][:8] == ("2", "accepted", "m-2", None, None, 1, 0.25, 3)
    assert grouped[-1] == ("ignored", 2)


async def test_marks_and_results_of_one_commit_apply_exactly_like_one_at_a_time(
    tmp_path: Path, input_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Marks and results queued in the same turn reach the writer as one transaction, applied
    # as one statement (results and marks of distinct rows) or, when a row has two results,
    # results then marks: the rows, the refusals and the commit count must be what applying
    # them one by one in queue order gives.
    async def play(name: str) -> list[object]:
        async with Journal(tmp_path / name, flush_interval=3600) as j:
            await j.init_campaign(input_path=input_file, template=None)
            await j.add_rows([new_row(n) for n in range(2, 20)] + [new_row(20, status=RowStatus.INVALID)])
            await asyncio.gather(*(j.mark_in_flight(str(n)) for n in range(2, 10)))
            j.record_result("2", status="accepted", message_id="m-2", attempts=1, latency=0.25, segments=3)
            j.record_result("3", status="failed", error="HTTP 400", error_code=400, attempts=1, latency=0.5)
            j.record_result("4", status="ambiguous", error="timed out", attempts=2)
            j.record_result("5", status="pending", error="refused", attempts=1)
            marks = [j.mark_in_flight(k) for k in ("10", "11", "12", "20", "nope", "15")]
            j.record_result("6", status="accepted", message_id="m-6", attempts=1)
            marks.append(j.mark_in_flight("13"))
            outcomes = await asyncio.gather(*marks, return_exceptions=True)
            first = j.stats.transactions
            # A row with two results in one commit: applied in order, the marks after them.
            j.record_result("7", status="failed", error="first", attempts=1)
            j.record_result("7", status="failed", error="second", attempts=1)
            j.record_result("8", status="accepted", message_id="m-8")
            more = await asyncio.gather(j.mark_in_flight("14"), j.mark_in_flight("2"), return_exceptions=True)
            commits = j.stats.transactions - first
            # A row given a result and marked in one commit: applied in queue order.
            j.record_result("15", status="failed", error="late", attempts=1)
            more.append(await j.mark_in_flight("15"))
            j.record_result("15", status="accepted", message_id="m-15", attempts=1)
            await j.flush()
            ignored = j.stats.ignored_results
        table = row_table(tmp_path / name, "in_flight_at IS NULL, typeof(attempts)")
        kinds = [type(o).__name__ for o in [*outcomes, *more]]
        return [*table, kinds, ("commits", commits), ("ignored", ignored)]

    calls: list[list[str]] = []
    apply_joint = Journal._apply_joint

    def spy(self: Journal, conn: sqlite3.Connection, groups: dict[str, list[tuple[object, ...]]]) -> object:
        calls.append(sorted(groups))
        return apply_joint(self, conn, groups)

    monkeypatch.setattr(Journal, "_apply_joint", spy)
    joint = await play("joint.journal")
    assert calls[1:] == [["mark", "result"], ["mark", "result"]]  # the third commit: in queue order
    monkeypatch.setattr(_journal, "_GROUP_UPDATES", False)
    one_by_one = await play("one-by-one.journal")
    assert joint == one_by_one
    refused = "JournalStateError"
    assert joint[-3] == [*["NoneType"] * 3, refused, refused, *["NoneType"] * 3, refused, "NoneType"]
    assert joint[-2] == ("commits", 1)
    assert [row[:2] for row in joint[8:14]] == [
        ("10", "in_flight"),
        ("11", "in_flight"),
        ("12", "in_flight"),
        ("13", "in_flight"),
        ("14", "in_flight"),
        ("15", "accepted"),
    ]
    assert joint[5][:4] == ("7", "failed", None, "second")


def test_group_updates_find_rows_by_key_not_by_scanning_a_status() -> None:
    conn = sqlite3.connect(":memory:")
    for statement in _schema.SCHEMA.split(";"):
        conn.execute(statement)
    statements = [(_journal._MARK_GROUP_SQL, (0.0, "[]")), (_journal._RESULT_GROUP_SQL, ("[]",))]
    statements += [(_journal._JOINT_SQL, (0.0, "[]", "[]"))]
    statements += [(_journal._MARK_SQL, (0.0, "k")), (_journal._RESULT_SQL, ("failed", *[None] * 7, "k"))]
    for sql, params in statements:
        plan = " / ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params))
        assert "SEARCH rows USING INDEX sqlite_autoindex_rows_1 (key=?)" in plan, plan
        assert "rows_by_status" not in plan, plan


async def test_an_accepted_row_is_never_overwritten(journal: Journal) -> None:
    await journal.add_rows([new_row(2), new_row(3, status=RowStatus.INVALID)])
    await journal.mark_in_flight("2")
    journal.record_result("2", status="accepted", message_id="m-2", attempts=1)
    journal.record_result("2", status="failed", error="late duplicate", error_code=500)
    journal.record_result("3", status="accepted", message_id="m-3")
    await journal.flush()
    row = await journal.get_row("2")
    assert row is not None and row.status == "accepted" and row.message_id == "m-2" and row.error is None
    assert statuses(Path(journal.path))["3"] == "invalid"
    assert journal.stats.ignored_results == 2
    with pytest.raises(ValueError):
        journal.record_result("2", status="delivered")


async def test_requeue_and_reconcile_to_pending(journal: Journal) -> None:
    await journal.add_rows([new_row(n) for n in range(2, 6)])
    for key in ("2", "3", "4"):
        await journal.mark_in_flight(key)
    journal.record_result("2", status="ambiguous", attempts=1)
    journal.record_result("3", status="failed", error_code=503, attempts=4)
    journal.record_result("4", status="pending")  # reconciliation proved it was never sent
    await journal.flush()
    assert [r.key async for r in journal.iter_pending()] == ["4", "5"]
    assert await journal.requeue("ambiguous") == 1
    assert [r.key async for r in journal.iter_pending()] == ["2", "4", "5"]
    with pytest.raises(ValueError):
        await journal.requeue("accepted")


async def test_apply_opt_out_skips_pending_rows(journal: Journal) -> None:
    await journal.add_rows(
        [new_row(2, to=["+15550000001"]), new_row(3, to=["+15550000002", "+15550000003"]), new_row(4)]
    )
    assert await journal.apply_opt_out({"+15550000003"}) == 1
    row = await journal.get_row("3")
    assert row is not None and row.status == "skipped" and row.error == "opted out"


# --- Deliveries -----------------------------------------------------------------------------------------------


async def accepted(journal: Journal, line: int, to: list[str] | None = None) -> str:
    await journal.add_rows([new_row(line, to=to)])
    await journal.mark_in_flight(str(line))
    journal.record_result(str(line), status="accepted", message_id=f"m-{line}")
    await journal.flush()
    return f"{journal.campaign_id}:{line}"


async def test_delivery_is_order_tolerant_and_idempotent(journal: Journal) -> None:
    tag = await accepted(journal, 2)
    number = "+15550000002"
    delivered = await journal.record_delivery(tag, "message-delivered", message_id="m-2", recipient=number)
    assert delivered is DeliveryOutcome.CHANGED and delivered
    # The late message-sent never overwrites the final state; a repeat is a duplicate.
    assert await journal.record_delivery(tag, "message-sent", recipient=number) is DeliveryOutcome.STALE
    assert await journal.record_delivery(tag, "message-delivered", recipient=number) is DeliveryOutcome.DUPLICATE
    assert not await journal.record_delivery(tag, "message-failed", error_code=4720, recipient=number)
    assert await journal.record_delivery(tag, "message-sending", recipient=number) is DeliveryOutcome.IGNORED
    row = await journal.get_row("2")
    assert row is not None and row.delivery_status == "delivered" and row.delivered_at is not None
    counts = await journal.counts()
    assert counts.by_delivery["delivered"] == 1


async def test_delivery_sent_then_failed(journal: Journal) -> None:
    tag = await accepted(journal, 2)
    assert await journal.record_delivery(tag, "message-sent")
    assert (await journal.get_row("2")).delivery_status == "sent"  # type: ignore[union-attr]
    assert await journal.record_delivery(tag, "message-failed", error_code=4770)
    row = await journal.get_row("2")
    assert row is not None and row.delivery_status == "failed" and row.delivery_error_code == 4770
    assert await journal.delivery_failed_by_error_code() == {4770: 1}


async def test_group_delivery_is_summarised_per_recipient(journal: Journal) -> None:
    group = ["+15550000011", "+15550000012", "+15550000013"]
    tag = await accepted(journal, 2, to=group)
    for number in group[:2]:
        assert await journal.record_delivery(tag, "message-delivered", recipient=number)
    row = await journal.get_row("2")
    assert row is not None and row.delivery_status == "sent"  # not every recipient yet
    assert await journal.record_delivery(tag, "message-delivered", recipient=group[2])
    assert (await journal.get_row("2")).delivery_status == "delivered"  # type: ignore[union-attr]

    tag = await accepted(journal, 3, to=group)
    assert await journal.record_delivery(tag, "message-delivered", recipient=group[0])
    assert await journal.record_delivery(tag, "message-failed", error_code=4406, recipient=group[1])
    row = await journal.get_row("3")
    assert row is not None and row.delivery_status == "failed" and row.delivery_error_code == 4406
    # A recipient that is not in the group does not belong to this row.
    assert await journal.record_delivery(tag, "message-delivered", recipient="+15559999999") is DeliveryOutcome.UNKNOWN


async def test_unknown_tags(journal: Journal) -> None:
    await accepted(journal, 2)
    assert await journal.record_delivery("othercampaign:2", "message-delivered") is DeliveryOutcome.UNKNOWN
    assert await journal.record_delivery(f"{journal.campaign_id}:999", "message-sent") is DeliveryOutcome.UNKNOWN
    assert await journal.record_delivery("2", "message-sent") is DeliveryOutcome.CHANGED  # a bare key


async def test_a_callback_proves_an_ambiguous_send_was_accepted(journal: Journal) -> None:
    await journal.add_rows([new_row(2)])
    await journal.mark_in_flight("2")
    journal.record_result("2", status="ambiguous", error="read timeout")
    await journal.flush()
    assert await journal.record_delivery(f"{journal.campaign_id}:2", "message-delivered", message_id="m-late")
    row = await journal.get_row("2")
    assert row is not None
    assert (row.status, row.message_id, row.error, row.delivery_status) == ("accepted", "m-late", None, "delivered")
    with pytest.raises(JournalStateError):
        await journal.mark_in_flight("2")


# --- Queries ---------------------------------------------------------------------------------------------------


async def test_counts_latency_and_time_span(journal: Journal) -> None:
    await journal.add_rows([new_row(n) for n in range(2, 102)] + [new_row(200, status=RowStatus.INVALID)])
    for n in range(2, 102):
        await journal.mark_in_flight(str(n))
        journal.record_result(str(n), status="accepted", message_id=f"m-{n}", latency=(n - 1) / 100, attempts=1)
    await journal.flush()
    counts = await journal.counts()
    assert counts.total == 101 and counts["accepted"] == 100 and counts["invalid"] == 1 and counts["pending"] == 0
    assert counts.accepted_segments == 100
    stats = await journal.latency_stats((50, 90, 99, 100))
    assert stats.count == 100
    assert stats.percentiles == {50.0: 0.5, 90.0: 0.9, 99.0: 0.99, 100.0: 1.0}
    assert stats.max == 1.0 and stats.mean == pytest.approx(0.505)
    first, last = await journal.time_span()
    assert first is not None and last is not None and first <= last


@pytest.mark.parametrize(
    ("percentile", "count", "rank"),
    [(50, 4, 2), (99, 4, 4), (100, 4, 4), (0, 4, 1), (50, 1, 1), (2.2, 1500, 33)],
)
def test_nearest_rank(percentile: float, count: int, rank: int) -> None:
    # The journal's and the shared campaign's latency percentiles both use this rule;
    # 2.2 % of 1500 is 33.00000000000001 in floats and must not become rank 34.
    assert nearest_rank(percentile, count) == rank


async def test_failed_by_error_code(journal: Journal) -> None:
    await journal.add_rows([new_row(n) for n in range(2, 7)])
    for n, code in zip(range(2, 7), (400, 400, 403, None, 400), strict=True):
        await journal.mark_in_flight(str(n))
        journal.record_result(str(n), status="failed", error_code=code, error="x")
    assert await journal.failed_by_error_code() == {400: 3, 403: 1, None: 1}


# --- A writer killed mid-run ------------------------------------------------------------------------------------

MARKER = textwrap.dedent(
    """
    import asyncio, os, sys
    from bwasync.campaign import Journal

    async def main(path, n, workers):
        journal = await Journal.open(path)
        keys = iter(range(2, n + 2))

        async def worker():
            for key in keys:
                await journal.mark_in_flight(str(key))
                os.write(1, b"%d\\n" % key)  # only once the mark's await returned

        await asyncio.gather(*(worker() for _ in range(workers)))
        os.write(1, b"done\\n")
        await asyncio.Event().wait()  # never closes: the test kills us

    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
    """
)


#: The marker's output our reader buffers at most (times two) before it stops reading the pipe.
READ_LIMIT = 4096


@pytest.mark.slow
async def test_every_returned_mark_survives_sigkill(tmp_path: Path, input_file: Path) -> None:
    path = tmp_path / "c.journal"
    # How far the marker can get ahead of our reading is bounded by what the pipe (64 KiB) and our
    # reader (at most 2 x READ_LIMIT before it stops reading, plus one 64 KiB read) hold: about
    # 140 KiB, under 30,000 lines of at most 6 bytes. So it cannot be done with n marks when we kill it.
    n, workers = 40_000, 50
    # The marker only needs rows to mark: they share one validated request (100,000 validations
    # would be most of this test's time and test nothing here).
    row = new_row(2)
    async with Journal(path) as j:
        await j.init_campaign(input_path=input_file, template=None)
        for start in range(0, n, 5000):
            await j.add_rows([replace(row, key=str(line), line=line) for line in range(start + 2, start + 5002)])
    script = tmp_path / "marker.py"
    script.write_text(MARKER, encoding="utf-8")

    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(script), str(path), str(n), str(workers), stdout=asyncio.subprocess.PIPE, limit=READ_LIMIT
    )
    assert proc.stdout is not None
    returned: list[str] = []
    try:
        while len(returned) < 3000:
            line = await asyncio.wait_for(proc.stdout.readline(), timeout=60)
            assert line, "the marker process exited early"
            returned.append(line.decode().strip())
    finally:
        proc.send_signal(signal.SIGKILL)
    # Everything it printed before dying (read to the end first: the process is reaped only once
    # its pipe is drained): each line was written after that mark's await returned.
    rest = (await asyncio.wait_for(proc.stdout.read(), timeout=30)).decode().split()
    assert await asyncio.wait_for(proc.wait(), timeout=30) == -signal.SIGKILL
    returned += rest
    assert "done" not in returned, "killed too late to test anything"

    after = statuses(path)
    flying = {k for k, s in after.items() if s == "in_flight"}
    print(f"\nkilled after {len(returned)} returned marks; {len(flying)} rows in flight in the file")
    assert set(returned) <= flying  # every mark whose await returned is in the file
    # Marks committed but not yet returned: at most one per worker (each awaits one at a time).
    assert len(flying - set(returned)) <= workers

    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    async with Journal(path) as j:  # the dead writer's lock is gone; the journal reopens
        assert len(await j.in_flight_rows()) == len(flying)
        counts = await j.counts()
        assert counts["in_flight"] + counts["pending"] == n
