"""The journal's group-commit writer, on its own: one thread, one connection, few commits."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
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


# --- Commits on the event loop ----------------------------------------------------------------------------


class JointWriter(GroupCommitWriter):
    """A writer whose ``"mark"`` items may commit on the loop; records the thread of each commit."""

    def __init__(self, path: Path, connect: Callable[[], sqlite3.Connection] | None = None, **options: Any) -> None:
        self.threads: list[int] = []
        self.infos: list[CommitInfo] = []
        super().__init__(
            "joint",
            connect or (lambda: connect_to(path)),
            batches={"mark": insert},
            joint={"mark": 0},
            apply_joint=self._joint_insert,
            on_commit=self.infos.append,
            **{"flush_interval": 60.0, **options},
        )

    def _joint_insert(
        self, conn: sqlite3.Connection, groups: dict[str, list[tuple[Any, ...]]]
    ) -> dict[str, list[BaseException | None] | None]:
        self.threads.append(threading.get_ident())
        return {"mark": insert(conn, groups["mark"])}


connect_to = connect


async def turns(n: int = 5) -> None:
    """Let the loop run ``n`` turns (a commit happens at the end of the turn that queued it)."""
    for _ in range(n):
        await asyncio.sleep(0)


async def test_a_commit_runs_on_the_loop_when_the_thread_has_nothing_outstanding(tmp_path: Path) -> None:
    w = JointWriter(tmp_path / "j.db")
    w.start()
    try:
        await w.flush()  # the thread has opened the connection
        await asyncio.gather(*(w.submit("mark", (f"k{i}", i)) for i in range(100)))
        assert w.threads == [threading.get_ident()]  # one commit, on this (the loop's) thread
        assert w.stats.inline >= 1 and w.stats.marks == 100
        # Resolved means committed: another connection sees every row.
        assert len(rows(tmp_path / "j.db")) == 100
    finally:
        await w.stop()


async def test_what_is_queued_while_the_thread_works_waits_for_it_and_keeps_its_order(tmp_path: Path) -> None:
    w = JointWriter(tmp_path / "j.db")
    w.start()
    release = threading.Event()

    def slow(conn: sqlite3.Connection) -> None:
        assert release.wait(10)
        conn.execute("INSERT INTO t (k, v) VALUES ('a', 0)")

    try:
        await w.flush()
        op = w.call(slow)
        await turns()  # the operation is on the thread, waiting
        marks = [w.submit("mark", ("a", 1)), w.submit("mark", ("b", 2))]
        await turns()
        assert not any(m.done() for m in marks) and w.qsize() == 2  # held on the loop, behind it
        release.set()
        await op
        results = await asyncio.gather(*marks, return_exceptions=True)
        # Applied after the operation, as queued: its row stays, the first mark is refused.
        assert rows(tmp_path / "j.db") == {"a": 0, "b": 2}
        assert isinstance(results[0], KeyError) and results[1] is None
        assert w.threads == [threading.get_ident()]  # and committed on the loop once it could
    finally:
        release.set()
        await w.stop()


async def test_lazy_items_whose_time_came_while_the_thread_worked_are_committed_after_it(tmp_path: Path) -> None:
    w = JointWriter(tmp_path / "j.db", flush_interval=0.0)
    w.start()
    release = threading.Event()
    try:
        await w.flush()
        op = w.call(lambda conn: release.wait(10))
        await turns()
        w.submit_lazy("mark", ("lazy", 1))
        for _ in range(100):  # its flush timer fires while the thread still works
            if not w._timer:
                break
            await asyncio.sleep(0)
        assert not w._timer and w.qsize() == 1
        release.set()
        await op
        committed = asyncio.Event()
        w._on_commit = lambda info: committed.set() if info.marks else None
        # Nothing else is queued: only the thread's report may bring the lazy item to its commit.
        await asyncio.wait_for(committed.wait(), timeout=10)
        assert rows(tmp_path / "j.db") == {"lazy": 1}
    finally:
        release.set()
        await w.stop()


async def test_checkpoints_run_on_the_thread_on_a_connection_of_their_own(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    made: list[sqlite3.Connection] = []

    def counted() -> sqlite3.Connection:
        made.append(connect(db))
        return made[-1]

    # Every commit changes more rows than this: each asks the thread for a checkpoint.
    w = JointWriter(db, counted, checkpoint_rows=0)
    w.start()
    await w.flush()
    for i in range(40):
        await w.submit("mark", (f"k{i}", i))
        await w.call(lambda conn: None)  # queued behind the checkpoint that commit asked for
    # The writer's connection never checkpoints by itself (that would happen inside a commit,
    # on the loop); a second connection, on the thread, did, while the marks committed inline.
    assert await w.call(lambda conn: conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]) == 0
    assert len(made) == 2
    assert len(w.threads) == 40 and set(w.threads) == {threading.get_ident()}
    # Checkpointed WAL is reused from its start: 40 commits of a page or more each would need more.
    assert os.path.getsize(f"{db}-wal") < 40 * 4096
    await w.stop()
    # The checkpointer closes first, so the writer's connection is the last: it removes the WAL.
    assert not os.path.exists(f"{db}-wal")
    assert len(rows(db)) == 40
