"""The journal's group-commit writer, on its own: one thread, one connection, few commits."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bwasync.campaign import CommitInfo, JournalClosedError, JournalError
from bwasync.campaign._writer import GroupCommitWriter


def connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY, v INTEGER NOT NULL)")
    return conn


def insert(conn: sqlite3.Connection, group: list[tuple[Any, ...]]) -> list[BaseException | None] | None:
    before = conn.total_changes
    conn.executemany("INSERT OR IGNORE INTO t (k, v) VALUES (?, ?)", group)
    if conn.total_changes - before == len(group):
        return None
    return [
        None if conn.execute("SELECT v FROM t WHERE k = ?", (p[0],)).fetchone()[0] == p[1] else KeyError(p[0])
        for p in group
    ]


def rows(path: Path) -> dict[str, int]:
    conn = sqlite3.connect(path)
    try:
        return dict(conn.execute("SELECT k, v FROM t"))
    finally:
        conn.close()


@pytest.fixture
async def writer(tmp_path: Path) -> AsyncIterator[GroupCommitWriter]:
    commits: list[CommitInfo] = []
    w = GroupCommitWriter(
        "test",
        lambda: connect(tmp_path / "w.db"),
        batches={"mark": insert},
        flush_interval=60.0,
        on_commit=commits.append,
    )
    w.start()
    w.commits = commits  # type: ignore[attr-defined]
    yield w
    await w.stop()


async def test_concurrent_batched_items_share_a_few_commits(writer: GroupCommitWriter, tmp_path: Path) -> None:
    await asyncio.gather(*(writer.submit("mark", (f"k{i}", i)) for i in range(500)))
    assert writer.stats.marks == 500
    assert writer.stats.transactions <= 50  # far fewer commits than items
    assert len(rows(tmp_path / "w.db")) == 500
    assert sum(c.marks for c in writer.commits) == 500  # type: ignore[attr-defined]


async def test_a_refused_batched_item_fails_alone(writer: GroupCommitWriter) -> None:
    await writer.submit("mark", ("a", 1))
    results = await asyncio.gather(
        writer.submit("mark", ("a", 2)), writer.submit("mark", ("b", 3)), return_exceptions=True
    )
    assert isinstance(results[0], KeyError) and results[1] is None


async def test_lazy_items_wait_for_the_next_eager_commit(writer: GroupCommitWriter, tmp_path: Path) -> None:
    writer.submit_lazy("mark", ("lazy", 1))
    # The flush interval is a minute: only an eager item can have committed it.
    await writer.call(lambda conn: None)
    assert rows(tmp_path / "w.db") == {"lazy": 1}


async def test_an_operation_returns_its_value_and_a_refusal_is_its_own(writer: GroupCommitWriter) -> None:
    def refuse(conn: sqlite3.Connection) -> None:
        raise ValueError("no")

    count = writer.call(lambda conn: conn.execute("SELECT COUNT(*) FROM t").fetchone()[0])
    refused = writer.call(refuse)
    assert await count == 0
    with pytest.raises(ValueError):
        await refused
    assert writer.broken is None


async def test_a_database_error_rolls_back_and_breaks_the_writer(writer: GroupCommitWriter, tmp_path: Path) -> None:
    ok = writer.submit("mark", ("x", 1))
    bad = writer.call(lambda conn: conn.execute("INSERT INTO nosuch VALUES (1)"))
    for future in (ok, bad):
        with pytest.raises(JournalError):
            await future
    assert rows(tmp_path / "w.db") == {}  # rolled back together
    with pytest.raises(JournalClosedError):
        writer.call(lambda conn: None)


async def test_stop_commits_what_is_queued(tmp_path: Path) -> None:
    w = GroupCommitWriter("t", lambda: connect(tmp_path / "s.db"), batches={"mark": insert}, flush_interval=60.0)
    w.start()
    w.submit_lazy("mark", ("late", 7))
    await w.stop()
    await w.stop()  # idempotent
    assert rows(tmp_path / "s.db") == {"late": 7}
    with pytest.raises(JournalClosedError):
        w.submit_lazy("mark", ("x", 1))


async def test_the_loop_yields_the_gil_after_handing_over_a_commit_someone_waits_for(
    writer: GroupCommitWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bwasync.campaign import _writer

    yields: list[float] = []
    sleep = _writer.time.sleep
    monkeypatch.setattr(_writer.time, "sleep", lambda s: (yields.append(s), sleep(s)))
    await writer.submit("mark", ("a", 1))  # a mark is waited for: the thread should start at once
    assert yields == [0]
    writer.submit_lazy("mark", ("b", 2))  # a lazy result alone is not worth the switch
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert yields == [0]
    await writer.flush()
    assert yields == [0, 0]


async def test_give_turn_yields_the_gil_only_while_the_thread_has_work(
    writer: GroupCommitWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The load pass calls give_turn every millisecond or so of its own work: while the thread
    # applies items it gives the GIL up (the thread needs it between its SQLite calls); idle,
    # it costs no system call.
    from bwasync.campaign import _writer

    await writer.flush()
    yields: list[float] = []
    sleep = _writer.time.sleep
    monkeypatch.setattr(_writer.time, "sleep", lambda s: (yields.append(s), sleep(s)))
    writer.give_turn()
    assert yields == [] and not writer.working
    inside, release = threading.Event(), threading.Event()

    def blocking(conn: sqlite3.Connection) -> None:
        inside.set()
        release.wait(5)

    done = writer.call(blocking)
    await asyncio.to_thread(inside.wait, 5)
    assert writer.working
    writer.give_turn()
    assert yields[-1:] == [0]
    release.set()
    await done  # nothing else queued: the flag is cleared before the future resolves
    assert not writer.working
    count = len(yields)
    writer.give_turn()
    assert len(yields) == count
