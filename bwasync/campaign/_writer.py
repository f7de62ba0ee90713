"""The journal's writer: one SQLite connection, group commits, most of them on the event loop.

SQLite calls block. A commit of a few hundred marks and results is one short statement (a
millisecond or so, no ``fsync``): it runs **inline**, on the event loop, at the end of the
loop's turn that queued them. Everything else runs on the writer's **thread**: operations
(reads, the load pass's inserts, anything given as a function), transactions too large to stall
the loop for, and WAL checkpoints (the only SQLite work that waits for the disk). Either way a
future resolves only once its write is committed, and a thousand concurrent writers cost a few
commits, not a thousand.

Two kinds of item:

* an **operation** ``fn(conn)`` (any read or write), whose return value resolves its future;
  an exception other than :class:`sqlite3.Error` is a refusal: it goes to that future only,
  nothing else is affected;
* a **batched** item: only SQL parameters, for a kind registered in ``batches``; a run of
  consecutive items of one kind is applied with one call (``executemany``: the hot path). A
  batched item may be *lazy* (no future, nobody waits): it does not by itself force a commit
  before ``flush_interval`` has passed, so it rides along with the next eager item's commit.

Items queued during one turn of the event loop are committed together, at the end of that turn:
inline when they may be, else handed to the thread in one queue put (one wake-up of the thread,
however many items). Lazy items alone wait on the loop for an eager one, or ``flush_interval``.

**One statement.** A transaction holding only batched items of the kinds in ``joint`` (a row key
in no two of them) is handed whole to ``apply_joint``, on an autocommit connection: the owner of
those kinds applies it in as few statements as it can (the journal: one), and promises that each
of them commits a state that is safe to crash in. Only such transactions, of at most
``inline_max`` items, run inline.

**Why inline.** On the thread, each SQLite call gives the GIL up and must win it back from the
event loop, which takes up to the interpreter's switch interval (5 ms) while the loop is busy;
waking the thread and stepping the statement cost two such waits per commit, and the loop, its
requests all waiting for marks, sat idle ~10% of a busy send pass. Inline, a mark's commit is
done within the turn that queued it.

**One user of the connection at a time.** The connection is created on the thread and used by
whoever holds ``_lock``: the thread around each transaction; the loop only with a non-blocking
acquire, and only while nothing it handed to the thread is unfinished (``_backlog``, counted on
the loop), so items still apply in queue order. When either test fails the turn's items go to
the thread, behind what is there.

**Checkpoints.** SQLite's automatic checkpoint runs inside the commit that crosses its threshold,
and a checkpoint ``fsync`` s the WAL and the database: tens of milliseconds that would stall the
loop. With ``checkpoint_rows``, automatic checkpoints are off and the loop asks the thread for a
checkpoint every ``checkpoint_rows`` rows changed; the thread runs it on a connection of its own,
mostly while commits go on (see ``_checkpoint``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Self, TypeVar

from ._constants import INLINE_COMMIT_ITEMS, MAX_TRANSACTION_ITEMS
from ._exceptions import JournalClosedError, JournalError
from ._records import CommitInfo, JournalStats

__all__ = ["BatchApply", "GroupCommitWriter", "JointApply", "StartClose"]

logger = logging.getLogger("bwasync.campaign")

T = TypeVar("T")

#: Applies one run of batched items (their parameters, in queue order) inside the transaction;
#: returns None when every item took effect, else one refusal (or None) per item.
BatchApply = Callable[[sqlite3.Connection, list[tuple[Any, ...]]], Sequence[BaseException | None] | None]

#: Applies a transaction of several batched kinds (their parameters by kind, each in queue
#: order) in autocommit mode; returns each kind's refusals as :data:`BatchApply` does.
JointApply = Callable[
    [sqlite3.Connection, dict[str, list[tuple[Any, ...]]]], Mapping[str, Sequence[BaseException | None] | None]
]

_Done = list[tuple[asyncio.Future[Any], Any, BaseException | None]]

_STOP = "stop"
_OP = "op"
#: A checkpoint the loop asked for: run by the thread between transactions, resolves nothing.
_CHECKPOINT = "checkpoint"


class _Item:
    """One unit of work for the writer (see the module docstring)."""

    __slots__ = ("fn", "future", "kind", "lazy", "params", "short")

    def __init__(
        self,
        fn: Callable[[sqlite3.Connection], Any] | None,
        future: asyncio.Future[Any] | None,
        kind: str = _OP,
        lazy: bool = False,
        params: tuple[Any, ...] = (),
        short: bool = False,
    ) -> None:
        self.fn = fn
        self.future = future
        self.kind = kind
        self.lazy = lazy
        self.params = params
        #: An operation its caller knows to be short: it may run inline.
        self.short = short


class StartClose:
    """``async with obj``: :meth:`start` on entry, :meth:`close` on exit (the journal, the receiver)."""

    async def start(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


def _noop(conn: sqlite3.Connection) -> None:
    return None


def _resolve(done: _Done) -> None:
    """Runs on the event loop: complete the futures of one transaction."""
    for future, value, exc in done:
        if future.cancelled():
            continue
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(value)


#: What an inline commit does, in queue order: one ``apply_joint`` call (batched items by kind)
#: or one short operation in a transaction of its own.
_Step = dict[str, list[_Item]] | _Item


class GroupCommitWriter:
    """Applies queued items to one SQLite connection in group commits, inline or on its thread.

    ``connect()`` runs on the thread and returns the connection (autocommit mode: the writer
    issues ``BEGIN IMMEDIATE``/``COMMIT`` itself; made with ``check_same_thread=False``, as the
    loop uses it too, never at the same time: see the module docstring). ``batches`` maps a
    batched kind to how a run of its items is applied. ``on_commit`` is called on the event loop
    after every commit. ``inline_max``: the most items a commit on the loop may hold (0: every
    commit on the thread). ``checkpoint_rows``: checkpoint the WAL from the thread, on a
    connection of its own (another ``connect()``), each time this many rows changed (None:
    SQLite's automatic checkpoints; see the module docstring).
    ``stats.transactions``, ``items``, ``max_batch`` and ``inline`` are kept here;
    ``stats.marks`` and ``stats.results`` count the ``"mark"`` and ``"result"`` kinds.
    """

    def __init__(
        self,
        name: str,
        connect: Callable[[], sqlite3.Connection],
        *,
        batches: Mapping[str, BatchApply],
        flush_interval: float,
        on_commit: Callable[[CommitInfo], None] | None = None,
        stats: JournalStats | None = None,
        joint: Mapping[str, int] | None = None,
        apply_joint: JointApply | None = None,
        inline_max: int = INLINE_COMMIT_ITEMS,
        checkpoint_rows: int | None = None,
    ) -> None:
        self.name = name
        self.stats = stats if stats is not None else JournalStats()
        self._connect = connect
        self._batches = dict(batches)
        #: kind -> the index of the row key in its parameters, for ``apply_joint`` (module docstring).
        self._joint = dict(joint or {}) if apply_joint is not None else {}
        self._apply_joint = apply_joint
        self._flush_interval = flush_interval
        self._on_commit = on_commit
        self.inline_max = inline_max
        self._checkpoint_rows = checkpoint_rows
        #: ``conn.total_changes`` after the last commit (read under the lock), and when the last
        #: checkpoint was asked for.
        self._changes = 0
        self._checkpointed_at = 0
        self._queue: queue.SimpleQueue[list[_Item]] = queue.SimpleQueue()
        # Loop side only: items queued during the current turn (or, all lazy, waiting for an
        # eager one); whether they are due (an eager one, or lazy ones' time is up); whether a
        # commit is scheduled for the turn's end; whether a timer will make lazy items due;
        # hand-overs the thread has not finished (inline commits only at 0); whether a
        # checkpoint is asked for.
        self._outbox: list[_Item] = []
        self._due = False
        self._scheduled = False
        self._timer = False
        self._backlog = 0
        self._checkpointing = False
        #: Held by whoever uses the connection (module docstring).
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        #: Set after a database error: every later item fails with it.
        self.broken: BaseException | None = None

    @property
    def started(self) -> bool:
        return self._thread is not None

    @property
    def closed(self) -> bool:
        return self._closed

    def qsize(self) -> int:
        """Items queued and not yet taken by a commit."""
        return len(self._outbox) + self._queue.qsize()

    def start(self) -> None:
        """Start the thread; the writer is bound to the running event loop from now on."""
        if self._thread is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._main, name=f"bwasync-journal:{self.name}", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        """Commit everything queued, close the connection and end the thread. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._thread is None or self._loop is None:
            return
        future: asyncio.Future[Any] = self._loop.create_future()
        self._put(_Item(_noop, future, kind=_STOP))
        with contextlib.suppress(JournalError):
            await future
        # The thread resolves the stop future as its very last act: this join is immediate.
        self._thread.join()

    # -- Queueing and inline commits (event loop side) -------------------------------------

    def check_open(self) -> asyncio.AbstractEventLoop:
        if self._closed or self._loop is None:
            raise JournalClosedError(f"{self.name}: the journal is closed" if self._closed else "journal not opened")
        if self.broken is not None:
            raise JournalClosedError(f"{self.name}: the journal stopped after an error: {self.broken}")
        return self._loop

    def call(self, fn: Callable[[sqlite3.Connection], T], kind: str = _OP, *, short: bool = False) -> asyncio.Future[T]:
        """Run ``fn(conn)`` inside a transaction; the future resolves after the commit.

        ``short``: ``fn`` takes a millisecond or so (a few statements, a page of rows), so it
        may run on the event loop, with the turn's marks and results, instead of on the thread.
        """
        loop = self.check_open()
        future: asyncio.Future[T] = loop.create_future()
        self._put(_Item(fn, future, kind, short=short))
        return future

    def flush(self) -> asyncio.Future[None]:
        """A future resolved once everything queued so far is committed."""
        return self.call(_noop, short=True)

    def submit(self, kind: str, params: tuple[Any, ...]) -> asyncio.Future[None]:
        """Queue a batched item; the future resolves once it is committed (or refused)."""
        loop = self.check_open()
        future: asyncio.Future[None] = loop.create_future()
        self._put(_Item(None, future, kind, params=params))
        return future

    def submit_lazy(self, kind: str, params: tuple[Any, ...]) -> None:
        """Queue a batched item nobody waits for: committed within ``flush_interval``."""
        self.check_open()
        self._put(_Item(None, None, kind, lazy=True, params=params))

    def _put(self, item: _Item) -> None:
        outbox = self._outbox
        outbox.append(item)
        if item.lazy and len(outbox) < MAX_TRANSACTION_ITEMS:
            if not self._timer:
                self._timer = True
                assert self._loop is not None
                self._loop.call_later(self._flush_interval, self._flush_lazy)
            return
        self._due = True
        self._schedule()

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            assert self._loop is not None
            self._loop.call_soon(self._end_of_turn)

    def _flush_lazy(self) -> None:
        """``flush_interval`` after a lazy item came with nothing eager: commit what waits."""
        self._timer = False
        if self._outbox:
            self._due = True
            self._schedule()

    def _end_of_turn(self) -> None:
        self._scheduled = False
        if self._outbox:
            self._commit()

    def _commit(self) -> None:
        """Commit the outbox: inline when it may be (module docstring), else on the thread."""
        items = self._outbox
        conn = self._conn
        steps = self._steps(items) if conn is not None and len(items) <= self.inline_max else None
        if steps is not None and conn is not None:
            if self._backlog:
                # The thread has the connection: these wait, and are committed here as soon as
                # it reports back (through the queue they would wait as long).
                return
            if self._lock.acquire(blocking=False):
                self._take()
                try:
                    done, info = self._execute_inline(conn, steps, len(items))
                finally:
                    self._lock.release()
                self._deliver(done, info)
                return
        self._take()
        self._backlog += 1
        self._queue.put(items)

    def _take(self) -> None:
        self._outbox = []
        self._due = False

    def _steps(self, items: list[_Item]) -> list[_Step] | None:
        """``items`` as inline steps, in order; None if one of them must go to the thread."""
        steps: list[_Step] = []
        run: list[_Item] = []
        for it in items:
            if it.kind in self._joint:
                run.append(it)
                continue
            if not it.short:
                return None
            if run:
                groups = self._jointly(run)
                if groups is None:
                    return None
                steps.append(groups)
                run = []
            steps.append(it)
        if run:
            groups = self._jointly(run)
            if groups is None:
                return None
            steps.append(groups)
        return steps

    def _execute_inline(self, conn: sqlite3.Connection, steps: list[_Step], n: int) -> tuple[_Done, CommitInfo | None]:
        """Run ``steps`` in order, each committed on its own (see ``_steps``)."""
        if self.broken is not None:
            closed = JournalClosedError(f"{self.name}: the journal stopped after an error: {self.broken}")
            return self._fail_all([it for step in steps for it in _items(step)], closed), None
        done: _Done = []
        marks = results = 0
        for i, step in enumerate(steps):
            try:
                if isinstance(step, _Item):
                    conn.execute("BEGIN IMMEDIATE")
                    self._run_op(conn, step, done)
                    conn.execute("COMMIT")
                else:
                    self._apply_groups(conn, step, done)
                    marks += len(step.get("mark", ()))
                    results += len(step.get("result", ()))
            except Exception as exc:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                logger.error("journal %s: write failed, the journal stops: %s", self.name, exc)
                self.broken = exc
                err = JournalError(f"{self.name}: journal write failed: {exc}")
                return done + self._fail_all([it for step in steps[i:] for it in _items(step)], err), None
        self.stats.inline += 1
        return done, self._count(conn, n, marks, results)

    def _deliver(self, done: _Done, info: CommitInfo | None, handovers: int = 0) -> None:
        """On the loop, after a commit: resolve its futures, tell ``on_commit``, maybe checkpoint."""
        self._backlog -= handovers
        _resolve(done)
        if info is not None and self._on_commit is not None:
            try:
                self._on_commit(info)
            except Exception:
                logger.exception("journal: on_commit callback failed")
        if self._due and not self._backlog:
            self._schedule()  # what waited for the thread (see _commit)
        if self._checkpoint_due():
            self._checkpointing = True
            self._checkpointed_at = self._changes
            self._queue.put([_Item(None, None, kind=_CHECKPOINT)])

    def _checkpoint_due(self) -> bool:
        every = self._checkpoint_rows
        if every is None or self._checkpointing or self._closed or self.broken is not None:
            return False
        return self._changes - self._checkpointed_at > every

    def _checkpointed(self) -> None:
        self._checkpointing = False

    # -- The thread ------------------------------------------------------------------------

    def _main(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            conn = self._connect()
            if self._checkpoint_rows is not None:
                conn.execute("PRAGMA wal_autocheckpoint=0")
        except (sqlite3.Error, JournalError) as exc:
            self.broken = exc
        self._conn = conn
        checkpointer: sqlite3.Connection | None = None
        stop: _Item | None = None
        get = self._queue.get
        get_nowait = self._queue.get_nowait
        while stop is None:
            items: list[_Item] | None = get()
            buffered: list[_Item] = []
            handovers = 0
            # Group commit: take whatever else is queued right now, up to a bound (a hand-over
            # is taken whole: the bound may be passed by one hand-over's worth).
            while items is not None:
                if items[0].kind == _CHECKPOINT:  # alone in its put, and not a hand-over
                    checkpointer = self._checkpoint(conn, checkpointer)
                else:
                    handovers += 1
                    buffered += items
                    if items[-1].kind == _STOP:  # always the last item handed over
                        stop = items[-1]
                        break
                    if len(buffered) >= MAX_TRANSACTION_ITEMS:
                        break
                try:
                    items = get_nowait()
                except queue.Empty:
                    items = None
            if not handovers:
                continue
            with self._lock:
                done, info = self._execute(conn, buffered)
            self._post(self._deliver, done, info, handovers)
        if checkpointer is not None:  # first: the last connection to close checkpoints the WAL
            with contextlib.suppress(sqlite3.Error):
                checkpointer.close()
        with self._lock:
            self._conn = None
            if conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
        if stop is not None and stop.future is not None:
            self._post(self._deliver, [(stop.future, None, None)], None, 0)

    def _checkpoint(self, conn: sqlite3.Connection | None, own: sqlite3.Connection | None) -> sqlite3.Connection | None:
        """Checkpoint the WAL on a connection of its own; returns that connection.

        ``PASSIVE`` (waits for no reader nor writer) twice: the bulk, copied and ``fsync`` ed while
        commits go on; then, holding the writer's connection (commits meanwhile wait), what
        they added, so that the checkpoint completes and the next commit starts the WAL over.
        Without that second pass a busy run's WAL would grow for as long as it runs.
        """
        try:
            if own is None and conn is not None and self.broken is None:
                own = self._connect()
            if own is not None:
                own.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                with self._lock:
                    own.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except (sqlite3.Error, JournalError) as exc:  # not a lost write: the WAL holds every commit
            logger.warning("journal %s: checkpoint failed: %s", self.name, exc)
        self._post(self._checkpointed)
        return own

    def _fail_all(self, items: list[_Item], err: BaseException) -> _Done:
        return [(it.future, None, err) for it in items if it.future is not None and it.kind != _STOP]

    def _jointly(self, items: list[_Item]) -> dict[str, list[_Item]] | None:
        """``items`` by kind, if ``apply_joint`` may take them (see the module docstring)."""
        keys = self._joint
        if not keys:
            return None
        groups: dict[str, list[_Item]] = {}
        for it in items:
            if it.kind not in keys:
                return None
            groups.setdefault(it.kind, []).append(it)
        if len(groups) > 1:
            seen: set[Any] = set()
            for kind, group in groups.items():
                index = keys[kind]
                mine = {it.params[index] for it in group}
                if not seen.isdisjoint(mine):
                    return None
                seen |= mine
        return groups

    def _apply_groups(self, conn: sqlite3.Connection, groups: dict[str, list[_Item]], done: _Done) -> None:
        """One ``apply_joint`` call (autocommit); the items' outcomes go to ``done``."""
        assert self._apply_joint is not None
        refusals = self._apply_joint(conn, {kind: [it.params for it in group] for kind, group in groups.items()})
        for kind, group in groups.items():
            self._resolve_group(group, refusals.get(kind), done)

    def _count(self, conn: sqlite3.Connection, n: int, marks: int, results: int) -> CommitInfo:
        """Count a commit (under the lock, as ``conn.total_changes`` is read here)."""
        self._changes = conn.total_changes
        stats = self.stats
        stats.transactions += 1
        stats.items += n
        stats.marks += marks
        stats.results += results
        stats.max_batch = max(stats.max_batch, n)
        return CommitInfo(stats.transactions, n, marks, results)

    def _execute(self, conn: sqlite3.Connection | None, items: list[_Item]) -> tuple[_Done, CommitInfo | None]:
        """On the thread: apply ``items`` in queue order in one transaction (or one ``apply_joint``
        call) and commit; returns what to resolve, and the commit."""
        if conn is None or self.broken is not None:
            err = JournalClosedError(f"{self.name}: the journal stopped after an error: {self.broken}")
            return self._fail_all(items, err), None
        done: _Done = []
        per_kind: dict[str, int] = {}
        groups = self._jointly(items)
        try:
            if groups is not None:
                self._apply_groups(conn, groups, done)
                per_kind = {kind: len(group) for kind, group in groups.items()}
            else:
                conn.execute("BEGIN IMMEDIATE")
                self._apply_items(conn, items, done, per_kind)
                conn.execute("COMMIT")
        except Exception as exc:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            logger.error("journal %s: transaction failed, the journal stops: %s", self.name, exc)
            self.broken = exc
            return self._fail_all(items, JournalError(f"{self.name}: journal write failed: {exc}")), None
        return done, self._count(conn, len(items), per_kind.get("mark", 0), per_kind.get("result", 0))

    def _apply_items(self, conn: sqlite3.Connection, items: list[_Item], done: _Done, per_kind: dict[str, int]) -> None:
        """Inside a transaction: every item in order, runs of one batched kind in one call each."""
        i, n = 0, len(items)
        while i < n:
            it = items[i]
            kind = it.kind
            apply = self._batches.get(kind)
            if apply is not None:
                j = i + 1
                while j < n and items[j].kind == kind:
                    j += 1
                group = items[i:j]
                self._resolve_group(group, apply(conn, [g.params for g in group]), done)
                per_kind[kind] = per_kind.get(kind, 0) + j - i
                i = j
                continue
            i += 1
            if kind != _STOP:  # the stop item is resolved after the close
                self._run_op(conn, it, done)

    @staticmethod
    def _run_op(conn: sqlite3.Connection, it: _Item, done: _Done) -> None:
        """An operation, inside the caller's transaction; a refusal goes to its future alone."""
        assert it.fn is not None
        try:
            value = it.fn(conn)
        except sqlite3.Error:
            raise
        except Exception as exc:  # a refusal (JournalStateError...): nothing was written
            if it.future is not None:
                done.append((it.future, None, exc))
            return
        if it.future is not None:
            done.append((it.future, value, None))

    @staticmethod
    def _resolve_group(group: list[_Item], refusals: Sequence[BaseException | None] | None, done: _Done) -> None:
        if refusals is None:
            done.extend((it.future, None, None) for it in group if it.future is not None)
            return
        for it, exc in zip(group, refusals, strict=True):
            if it.future is not None:
                done.append((it.future, None, exc))

    def _post(self, callback: Callable[..., None], *args: Any) -> None:
        """From the thread: run ``callback(*args)`` on the event loop."""
        assert self._loop is not None
        # A closed loop raises RuntimeError: nobody is waiting any more.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(callback, *args)


def _items(step: _Step) -> list[_Item]:
    return [step] if isinstance(step, _Item) else [it for group in step.values() for it in group]
