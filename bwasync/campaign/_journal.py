"""The campaign journal: every row's fate, in one SQLite file, durable against a crash.

The journal is what makes a campaign safe to kill and resume. Each input row is one ``rows``
record whose ``status`` moves as :mod:`._rowstate`'s table says (``pending`` ─mark─▶
``in_flight`` ─result─▶ ``accepted`` / ``failed`` / ``ambiguous``; ``invalid`` and ``skipped``
never move).

The journal is built from parts, one job each: :mod:`._records` (what goes in and comes
out), :mod:`._writer` (the thread that group-commits), :mod:`._schema` (the tables and the
read queries, shared with the read-only readers), :mod:`._deliveries` (status callbacks merged
into a row's delivery state). This module is the async API over them, and owns the file lock.

Invariants the runner relies on:

* The future :meth:`Journal.mark_in_flight` returns resolves only once the row's
  ``in_flight`` status is **committed**, so after a crash every send that may have left this
  process has its row in ``in_flight`` (or in a final status). Marks from many coroutines are
  group-committed: the writer thread drains everything queued, applies it in one transaction
  (marks and results of different rows: one autocommit statement), commits, then resolves all
  the waiting futures at once.
* An ``accepted`` row is never changed by a result and never marked in flight again.
* :meth:`Journal.record_result` does not wait: results are queued and committed with the next
  mark's transaction, or at most ``flush_interval`` later when no mark is flowing, and on
  :meth:`~Journal.flush`/:meth:`~Journal.close`. A result lost in a crash leaves its row
  ``in_flight``, which resume reconciles: losing a result is safe, losing a mark would not be.

Durability: the file is in WAL mode with ``synchronous=NORMAL``. A commit then writes the WAL
with ``write()`` but does not ``fsync`` it (only checkpoints do): a committed transaction
survives the process being killed (``kill -9``, OOM, a crash), which is the failure we promise
to survive, but the last few may be lost to a power cut or kernel panic. ``synchronous=FULL``
would fsync every group commit and cap marks at the disk's flush rate.

Threading: every SQLite call runs on the writer thread (:mod:`._writer`), which owns the only
connection; a journal is bound to the event loop that opened it. Reads go through the same
thread, in queue order, so a read sees every write requested before it (read-your-writes).

Usage::

    async with await Journal.open("campaign.journal") as journal:
        info = await journal.init_campaign(input_path="list.csv", template=text, settings={})
        await journal.add_rows(batch, loaded_through=batch[-1].line)
        async for row in journal.iter_pending():
            ...
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import secrets
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Sequence
from datetime import datetime
from typing import Any, Final, TypeVar

import msgspec

from . import _schema
from ._constants import BUSY_TIMEOUT_MS, PAGE_SIZE, RESULT_FLUSH_INTERVAL, SENDING_TOUCH_INTERVAL
from ._deliveries import apply_receipt
from ._exceptions import JournalClosedError, JournalError, JournalLockedError, JournalMismatchError, JournalStateError
from ._records import (
    CampaignInfo,
    CommitInfo,
    Counts,
    DeliveryOutcome,
    JournalStats,
    LatencyStats,
    NewRow,
    PendingRow,
    RowRecord,
    RowStatus,
    fingerprint_input,
    synthetic_key,
)
from ._rowstate import Event, sources, sql_in
from ._store import CampaignStore
from ._writer import GroupCommitWriter, StartClose

try:  # POSIX only; on Windows the journal is not protected against a second runner.
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

__all__ = ["Journal"]

logger = logging.getLogger("bwasync.campaign")

T = TypeVar("T")

#: Send results a caller may record, as the event each one is.
_RESULT_EVENTS: Final = {
    "accepted": Event.ACCEPTED,
    "failed": Event.FAILED,
    "ambiguous": Event.AMBIGUOUS,
    "pending": Event.NOT_SENT,
}
#: Rows a result may overwrite: the same for every result (an ``accepted`` row is completed
#: only by the same message's ``accepted`` result, the extra clause below).
_RESULTABLE: Final = sources(Event.FAILED)
assert all(sources(e) - {RowStatus.ACCEPTED} == _RESULTABLE for e in _RESULT_EVENTS.values())

_json_encoder = msgspec.json.Encoder()
_decode = msgspec.json.Decoder().decode
_text = bytes.decode

_CAMPAIGN_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _skip_opted_out(conn: sqlite3.Connection, blocked: frozenset[str], one: str | None) -> int:
    """Skip the pending rows with a recipient in ``blocked``; ``one``: its only number, to let
    SQLite pre-filter the rows by text before each candidate's recipients are decoded."""
    pending = sql_in(sources(Event.OPT_OUT))
    if one is None:
        rows = conn.execute("SELECT key, recipients FROM rows WHERE status IN " + pending)
    else:
        rows = conn.execute(
            "SELECT key, recipients FROM rows WHERE status IN " + pending + " AND instr(recipients, ?) > 0",
            (json.dumps(one),),
        )
    keys = [key for key, recipients in rows if not blocked.isdisjoint(json.loads(recipients))]
    conn.executemany(
        "UPDATE rows SET status = 'skipped', error = 'opted out' WHERE key = ? AND status IN " + pending,
        [(k,) for k in keys],
    )
    return len(keys)


#: ?1: when; ?2: the key (or, below, a JSON array of keys). A re-mark keeps the first time.
_MARK_SET: Final = (
    "UPDATE rows SET status = 'in_flight', in_flight_at = CASE WHEN status = 'in_flight' THEN in_flight_at ELSE ?1 END "
)
_MARK_SQL: Final = _MARK_SET + "WHERE key = ?2 AND status IN " + sql_in(sources(Event.MARKED))
# An ``accepted`` result may also complete a row a status callback already promoted to
# ``accepted`` (the callback can beat the 202 to the journal): same message, so it only fills in
# what the callback could not know (attempts, latency, Bandwidth's segment count).
_RESULT_SQL: Final = (
    "UPDATE rows SET status = ?1, message_id = COALESCE(?2, message_id), error = ?3, error_code = ?4, "
    "attempts = attempts + ?5, latency = COALESCE(?6, latency), finished_at = ?7, segments = COALESCE(?8, segments) "
    "WHERE key = ?9 AND (status IN " + sql_in(_RESULTABLE) + " "
    "OR (?1 = 'accepted' AND status = 'accepted' AND (message_id IS NULL OR message_id = ?2)))"
)

# The same two updates for a whole group at once, over a JSON array of the items' parameters (and
# a load batch's insert, below).
# The writer thread gives up and retakes the GIL around every statement it steps, each time
# taking it back from the event loop; ``executemany`` steps one statement per row, these one per
# group, so a busy run's loop is interrupted once per transaction instead of twice per row (and
# a load batch is inserted while the loop prepares the next one, instead of waiting on the GIL).
# They need SQLite 3.38 (``->>``; ``UPDATE ... FROM`` is 3.33); older versions use the ones above.
# The unary ``+`` keeps the planner off the status index: rows are found by key, one lookup per
# item, never by scanning every pending row.
_GROUP_UPDATES: Final = sqlite3.sqlite_version_info >= (3, 38, 0)
#: ?1: the group's earliest mark time (every mark is committed before its request leaves, so it
#: precedes every send of the group); ?2: a JSON array of keys.
_MARK_GROUP_SQL: Final = (
    _MARK_SET + "WHERE key IN (SELECT value FROM json_each(?2)) AND +status IN " + sql_in(sources(Event.MARKED))
)
#: ?1: a JSON array of result parameters, each in ``_RESULT_SQL``'s order; keys must be distinct.
_RESULT_GROUP_SQL: Final = (
    "UPDATE rows SET status = r.status, message_id = COALESCE(r.message_id, rows.message_id), error = r.error, "
    "error_code = r.error_code, attempts = rows.attempts + r.attempts, latency = COALESCE(r.latency, rows.latency), "
    "finished_at = r.finished_at, segments = COALESCE(r.segments, rows.segments) "
    "FROM (SELECT value ->> 0 AS status, value ->> 1 AS message_id, value ->> 2 AS error, value ->> 3 AS error_code, "
    "value ->> 4 AS attempts, value ->> 5 AS latency, value ->> 6 AS finished_at, value ->> 7 AS segments, "
    "value ->> 8 AS key FROM json_each(?1)) AS r "
    "WHERE rows.key = r.key AND (+rows.status IN " + sql_in(_RESULTABLE) + " "
    "OR (r.status = 'accepted' AND rows.status = 'accepted' "
    "AND (rows.message_id IS NULL OR rows.message_id = r.message_id)))"
)
#: Marks and results of one transaction in one statement (their keys distinct; see the writer's
#: "one statement"): ?1: the earliest mark's time; ?2: a JSON array of the marks' keys, ?3 one of
#: results' parameters (as ``_RESULT_GROUP_SQL``'s). A mark changes only the status and the first
#: ``in_flight_at``; a result what ``_RESULT_GROUP_SQL`` does.
_JOINT_SQL: Final = (
    "UPDATE rows SET status = r.status, "
    "in_flight_at = CASE WHEN r.kind = 'm' AND rows.status <> 'in_flight' THEN ?1 ELSE rows.in_flight_at END, "
    "message_id = COALESCE(r.message_id, rows.message_id), "
    "error = CASE WHEN r.kind = 'm' THEN rows.error ELSE r.error END, "
    "error_code = CASE WHEN r.kind = 'm' THEN rows.error_code ELSE r.error_code END, "
    "attempts = rows.attempts + r.attempts, latency = COALESCE(r.latency, rows.latency), "
    "finished_at = CASE WHEN r.kind = 'm' THEN rows.finished_at ELSE r.finished_at END, "
    "segments = COALESCE(r.segments, rows.segments) "
    "FROM (SELECT 'm' AS kind, 'in_flight' AS status, NULL AS message_id, NULL AS error, NULL AS error_code, "
    "0 AS attempts, NULL AS latency, NULL AS finished_at, NULL AS segments, value AS key FROM json_each(?2) "
    "UNION ALL SELECT 'r', value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5, "
    "value ->> 6, value ->> 7, value ->> 8 FROM json_each(?3)) AS r "
    "WHERE rows.key = r.key AND (+rows.status IN " + sql_in(_RESULTABLE) + " "
    "OR (r.status = 'accepted' AND rows.status = 'accepted' "
    "AND (rows.message_id IS NULL OR rows.message_id = r.message_id)))"
)
assert sources(Event.MARKED) == _RESULTABLE  # one WHERE serves both kinds


_INSERT_COLUMNS: Final = "key, line, status, recipients, sender, request, segments, error"
#: A load batch in one statement (see _GROUP_UPDATES), in array order: the first of two rows
#: with one key wins, as it would one statement per row.
_INSERT_GROUP_SQL: Final = (
    f"INSERT OR IGNORE INTO rows ({_INSERT_COLUMNS}) SELECT j.value ->> 0, j.value ->> 1, j.value ->> 2, "
    "j.value ->> 3, j.value ->> 4, j.value ->> 5, j.value ->> 6, j.value ->> 7 FROM json_each(?1) AS j ORDER BY j.id"
)

_PENDING_SQL: Final = (
    "SELECT key, line, request, segments, recipients, sender, attempts FROM rows "
    "WHERE status = 'pending' AND (line, key) > (?, ?) ORDER BY line, key LIMIT ?"
)
#: The same, without the rows held (quiet hours) past ``?4``.
_RELEASED_SQL: Final = (
    "SELECT key, line, request, segments, recipients, sender, attempts, "
    "(SELECT zone FROM zones WHERE zones.key = rows.key) FROM rows "
    "WHERE status = 'pending' AND (line, key) > (?1, ?2) "
    "AND NOT EXISTS (SELECT 1 FROM held WHERE held.key = rows.key AND held.not_before > ?4) "
    "ORDER BY line, key LIMIT ?3"
)
_HOLD_SQL: Final = (
    "INSERT OR REPLACE INTO held (key, not_before) SELECT ?1, ?2 "
    "WHERE EXISTS (SELECT 1 FROM rows WHERE key = ?1 AND status IN " + sql_in(sources(Event.HOLD)) + ")"
)
#: A recipient of a loaded row that cannot be a valid number (``key, line, number, reason``).
_FLAG_SQL: Final = (
    "INSERT OR IGNORE INTO flagged (key, line, number, reason) SELECT ?1, ?2, ?3, ?4 "
    "WHERE EXISTS (SELECT 1 FROM rows WHERE key = ?1 AND line = ?2)"
)
#: The same for a load batch's flags, over a JSON array of them, in order (see _GROUP_UPDATES).
_FLAG_GROUP_SQL: Final = (
    "INSERT OR IGNORE INTO flagged (key, line, number, reason) "
    "SELECT j.value ->> 0, j.value ->> 1, j.value ->> 2, j.value ->> 3 FROM json_each(?1) AS j "
    "WHERE EXISTS (SELECT 1 FROM rows WHERE key = j.value ->> 0 AND line = j.value ->> 1) ORDER BY j.id"
)
#: A row's time zone from the input (``key, zone``), one at a time and for a batch.
_ZONE_SQL: Final = "INSERT OR IGNORE INTO zones (key, zone) VALUES (?, ?)"
_ZONE_GROUP_SQL: Final = (
    "INSERT OR IGNORE INTO zones (key, zone) SELECT j.value ->> 0, j.value ->> 1 FROM json_each(?1) AS j ORDER BY j.id"
)


def _epoch(value: datetime | float | None) -> float:
    if value is None:
        return time.time()
    if isinstance(value, datetime):
        return value.timestamp()
    return float(value)


class Journal(StartClose, CampaignStore):
    """A campaign's journal in one SQLite file. See the module docstring for the guarantees.

    Open it with ``await Journal.open(path)`` or ``async with Journal(path) as journal``.
    ``flush_interval`` bounds how long a result waits for its commit when no mark is flowing;
    ``on_commit`` (called on the event loop after each transaction) is for progress and metrics.

    Only one :class:`Journal` may have a file open at a time, across processes: a second
    ``open`` raises :class:`JournalLockedError` (a lock on ``<path>.lock``, released by the
    kernel when the holder dies, even by ``kill -9``).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        flush_interval: float = RESULT_FLUSH_INTERVAL,
        on_commit: Callable[[CommitInfo], None] | None = None,
    ) -> None:
        self.path = os.fspath(path)
        self.stats = JournalStats()
        self._writer = GroupCommitWriter(
            self.path,
            self._connect,
            batches={"mark": self._apply_marks, "result": self._apply_results},
            flush_interval=flush_interval,
            on_commit=on_commit,
            stats=self.stats,
            # One statement per transaction of marks and results (SQLite >= 3.38): see _apply_joint.
            joint={"mark": 1, "result": 8},
            apply_joint=self._apply_joint if _GROUP_UPDATES else None,
        )
        self._lock_fd: int | None = None
        #: The campaign id, once known: record_delivery strips ``<id>:`` from tags.
        self._campaign_id: str | None = None
        #: The ``sending`` record of this run's send pass (see :meth:`begin_sending`), and
        #: (writer thread) when its end was last moved, and whether results came since.
        self._sending_id: int | None = None
        self._touched_at = 0.0
        self._untouched = False

    def __repr__(self) -> str:
        w = self._writer
        state = "closed" if w.closed else "open" if w.started else "new"
        if w.broken is not None:
            state = "broken"
        return (
            f"<Journal {self.path!r} {state} transactions={self.stats.transactions} "
            f"marks={self.stats.marks} results={self.stats.results} queued={w.qsize()}>"
        )

    @property
    def campaign_id(self) -> str | None:
        """The campaign id (None until :meth:`init_campaign` ran on a new journal)."""
        return self._campaign_id

    # -- Lifecycle --------------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        path: str | os.PathLike[str],
        *,
        flush_interval: float = RESULT_FLUSH_INTERVAL,
        on_commit: Callable[[CommitInfo], None] | None = None,
    ) -> Journal:
        """Open (creating if needed) the journal at ``path`` and start its writer thread."""
        journal = cls(path, flush_interval=flush_interval, on_commit=on_commit)
        await journal.start()
        return journal

    async def start(self) -> None:
        """Lock the file, start the writer thread, create or check the schema."""
        if self._writer.started:
            return
        if self._writer.closed:
            raise JournalClosedError(f"{self.path}: the journal was closed")
        self._acquire_lock()
        self._writer.start()
        try:
            self._campaign_id = await self._call(lambda conn: _schema.create_schema(conn, self.path))
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Commit everything queued, close the database and release the lock. Idempotent.

        The lock file is removed too, so a clean exit leaves only the journal (and SQLite's
        own ``-wal``/``-shm`` files while another reader has it open).
        """
        if self._writer.closed:
            return
        try:
            if self._sending_id is not None:
                with contextlib.suppress(JournalError):
                    await self._call(self._touch_sending)
            await self._writer.stop()
        finally:
            self._release_lock()

    def _acquire_lock(self) -> None:
        if fcntl is None:  # pragma: no cover
            return
        lock_path = self.path + ".lock"
        while True:
            try:
                fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise JournalError(f"{self.path}: cannot open the journal: {exc.strerror or exc}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise JournalLockedError(f"{self.path}: the journal is in use by another runner") from None
            # The holder we waited on may have unlinked the file as it closed: then this lock
            # guards nothing, and the next open creates the file that counts.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(lock_path))
            except OSError:
                same = False
            if same:
                self._lock_fd = fd
                return
            os.close(fd)

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            # Unlink while still holding the lock: a runner that opened the old file meanwhile
            # finds it unlinked when it gets the lock (see below) and retries; closing the
            # descriptor releases the flock.
            with contextlib.suppress(OSError):
                os.unlink(self.path + ".lock")
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- Queueing ---------------------------------------------------------------------------

    def _check_open(self) -> None:
        self._writer.check_open()

    def _call(self, fn: Callable[[sqlite3.Connection], T], kind: str = "op") -> asyncio.Future[T]:
        return self._writer.call(fn, kind)

    # -- Run on the writer thread -------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            conn.close()
            raise JournalError(f"{self.path}: cannot switch the journal to WAL mode (got {mode!r})")
        # NORMAL in WAL mode: commits survive a process crash (see the module docstring).
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    @staticmethod
    def _apply_marks(conn: sqlite3.Connection, group: list[tuple[Any, ...]]) -> list[BaseException | None] | None:
        before = conn.total_changes
        if _GROUP_UPDATES and len(group) > 1:
            keys = msgspec.json.encode([params[1] for params in group]).decode()
            conn.execute(_MARK_GROUP_SQL, (min(params[0] for params in group), keys))
        else:
            conn.executemany(_MARK_SQL, group)
        if conn.total_changes - before == len(group):
            return None
        return Journal._mark_refusals(conn, group)

    @staticmethod
    def _mark_refusals(conn: sqlite3.Connection, group: list[tuple[Any, ...]]) -> list[BaseException | None]:
        """Which marks of ``group`` did not take (rare, so the slow way is fine)."""
        refusals: list[BaseException | None] = []
        for params in group:
            key = params[1]
            found = conn.execute("SELECT status FROM rows WHERE key = ?", (key,)).fetchone()
            ok = found is not None and found[0] == RowStatus.IN_FLIGHT
            refusals.append(None if ok else JournalStateError(key, found and found[0]))
        return refusals

    def _apply_results(self, conn: sqlite3.Connection, group: list[tuple[Any, ...]]) -> None:
        before = conn.total_changes
        # Distinct keys only: two results for one row must apply in order, which one statement
        # over both would not do.
        if _GROUP_UPDATES and len(group) > 1 and len({params[8] for params in group}) == len(group):
            conn.execute(_RESULT_GROUP_SQL, (msgspec.json.encode(group).decode(),))
        else:
            conn.executemany(_RESULT_SQL, group)
        self._results_applied(conn, len(group) - (conn.total_changes - before))

    def _results_applied(self, conn: sqlite3.Connection, ignored: int) -> None:
        self._untouched = True
        if time.monotonic() - self._touched_at >= SENDING_TOUCH_INTERVAL:
            self._touch_sending(conn)
        if ignored:
            self.stats.ignored_results += ignored
            logger.warning("journal: %d results ignored (their rows are final or missing)", ignored)

    def _apply_joint(
        self, conn: sqlite3.Connection, groups: dict[str, list[tuple[Any, ...]]]
    ) -> dict[str, list[BaseException | None] | None]:
        """One transaction's marks and results (keys distinct across the two), autocommitted.

        One statement when every key is distinct. Otherwise results first, then marks, each its
        own commit: a crash between them leaves rows out of flight that the queue's order would
        still have in flight, never the reverse (a row's result is queued only after its mark
        was committed, so the queue's marks and results name different rows).
        """
        marks, results = groups.get("mark", []), groups.get("result", [])
        if not marks:
            self._apply_results(conn, results)
            return {}
        if not results:
            return {"mark": self._apply_marks(conn, marks)}
        keys = {params[1] for params in marks} | {params[8] for params in results}
        if len(keys) < len(marks) + len(results):
            self._apply_results(conn, results)
            return {"mark": self._apply_marks(conn, marks)}
        encode = _json_encoder.encode
        first = min(params[0] for params in marks)
        before = conn.total_changes
        conn.execute(_JOINT_SQL, (first, _text(encode([p[1] for p in marks])), _text(encode(results))))
        changed = conn.total_changes - before
        refusals: list[BaseException | None] | None = None
        ignored = 0
        if changed < len(marks) + len(results):
            refusals = self._mark_refusals(conn, marks)
            taken = sum(r is None for r in refusals)
            ignored = len(results) - (changed - taken)
            if taken == len(marks):
                refusals = None
        self._results_applied(conn, ignored)
        return {"mark": refusals}

    def _touch_sending(self, conn: sqlite3.Connection) -> None:
        """Move the send pass's end to now, if results were recorded since it last moved."""
        if self._sending_id is not None and self._untouched:
            conn.execute("UPDATE sending SET last_at = ? WHERE id = ?", (time.time(), self._sending_id))
            self._touched_at = time.monotonic()
            self._untouched = False

    # -- Campaign ---------------------------------------------------------------------------

    async def _init_campaign(
        self, path: str, template: str | None, settings_json: str, campaign_id: str | None
    ) -> CampaignInfo:
        """A new campaign's id is ``campaign_id`` or a fresh random 16-hex-digit one."""
        if campaign_id is not None and not _CAMPAIGN_ID_RE.fullmatch(campaign_id):
            raise ValueError("campaign_id must be 1-64 characters of A-Z a-z 0-9 _ -")

        def op(conn: sqlite3.Connection) -> CampaignInfo:
            fp = fingerprint_input(path)
            existing = _schema.campaign(conn)
            if existing is None:
                cid = campaign_id or secrets.token_hex(8)
                conn.execute(
                    "INSERT INTO campaign (id, campaign_id, input_path, input_size, input_hash, template, settings,"
                    " created_at) VALUES (1, ?, ?, ?, ?, ?, ?, ?)",
                    (cid, os.path.abspath(path), fp.size, fp.digest, template, settings_json, time.time()),
                )
                info = _schema.campaign(conn)
                assert info is not None
                return info
            problems = ["campaign id"] if campaign_id is not None and campaign_id != existing.campaign_id else []
            problems += existing.resume_mismatches(fp, template)
            if problems:
                raise JournalMismatchError(self.path, problems)
            return existing

        info = await self._call(op)
        self._campaign_id = info.campaign_id
        return info

    async def campaign_info(self) -> CampaignInfo | None:
        """The campaign record, or None before :meth:`init_campaign`."""
        return await self._call(_schema.campaign)

    # -- Load pass --------------------------------------------------------------------------

    async def add_rows(self, rows: Iterable[NewRow], *, loaded_through: int | None = None) -> int:
        """Insert a batch of rows in one transaction; return how many were new.

        Idempotent: a row whose key is already there with the same line is skipped, so a load
        pass may be replayed after a crash. A row whose key is already there with a *different*
        line is a duplicate key: it is stored as ``invalid`` under :func:`synthetic_key` of its
        line, so it is never sent and the report shows it. ``loaded_through`` records, in the
        same transaction, how far the load got (see :meth:`set_loaded_through`).
        """
        batch = list(rows)
        # Built here, on the event loop, with C encoders: Python work on the writer thread would
        # take the GIL from the loop anyway, and hand it back and forth on top.
        encode = _json_encoder.encode
        params = [
            (r.key, r.line, str(r.status), _text(encode(list(r.recipients))), r.sender, r.request, r.segments, r.error)
            for r in batch
        ]
        zones = [(r.key, r.zone) for r in batch if r.zone]
        flags = [(r.key, r.line, n, why) for r in batch for n, why in r.flagged]
        payload = encode(params).decode() if _GROUP_UPDATES else None

        def op(conn: sqlite3.Connection) -> int:
            before = conn.total_changes
            insert = f"INSERT OR IGNORE INTO rows ({_INSERT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            if payload is not None:
                conn.execute(_INSERT_GROUP_SQL, (payload,))
            else:
                conn.executemany(insert, params)
            inserted = conn.total_changes - before
            if inserted < len(params):
                for p in params:
                    found = conn.execute("SELECT line FROM rows WHERE key = ?", (p[0],)).fetchone()
                    if found is not None and found[0] != p[1]:
                        error = f"duplicate key {p[0]!r} (first on line {found[0]})"
                        cur = conn.execute(insert, (synthetic_key(p[1]), p[1], "invalid", p[3], p[4], None, 0, error))
                        inserted += cur.rowcount
            # Flags only for the row stored under its own key (not a duplicate key's invalid row).
            for sql, group_sql, items in ((_ZONE_SQL, _ZONE_GROUP_SQL, zones), (_FLAG_SQL, _FLAG_GROUP_SQL, flags)):
                if items and payload is not None:
                    conn.execute(group_sql, (_text(encode(items)),))
                elif items:
                    conn.executemany(sql, items)
            if loaded_through is not None:
                _schema.set_loaded(conn, loaded_through, False)
            return inserted

        return await self._call(op)

    def give_turn(self) -> None:
        """Let the writer thread take the GIL now if it has work (see ``GroupCommitWriter.give_turn``)."""
        self._writer.give_turn()

    async def set_loaded_through(self, line: int, *, complete: bool = False) -> None:
        """Record that every row up to ``line`` is in the journal (and, if ``complete``, all rows).

        ``loaded_through`` never moves backwards. On resume, re-read the input from its start
        (so duplicate keys are still detected) and skip rows with ``line <= loaded_through``.
        """
        await self._call(lambda conn: _schema.set_loaded(conn, line, complete))

    async def apply_opt_out(self, numbers: Collection[str]) -> int:
        """Mark ``skipped`` (``opted out``) every pending row with a recipient in ``numbers``.

        For a resume with a newer opt-out list. Scans every pending row in one transaction,
        so call it before sending, not during. Returns how many rows it skipped.
        """
        blocked = frozenset(numbers)
        return await self._call(lambda conn: _skip_opted_out(conn, blocked, None))

    async def record_reply(
        self, message_id: str, number: str, kind: str, *, changed: bool, event_time: datetime | float | None = None
    ) -> int:
        """Record a STOP/START keyword reply received during a run; how many rows it skipped.

        ``kind`` is ``"opt-out"`` or ``"opt-in"`` (a :class:`bwasync.compliance.ReplyKind`
        value). An opt-out skips the pending rows with ``number`` among their recipients, in
        the same transaction, safe while sending: a row already taken for sending is refused
        its ``in_flight`` mark. Rows already in flight or sent are not undone, and an opt-in
        does not bring skipped rows back (``skipped`` is final). The same ``message_id`` twice
        (Bandwidth's retry, even across runs) is recorded and applied once.
        """
        when = None if event_time is None else _epoch(event_time)

        def op(conn: sqlite3.Connection) -> int:
            before = conn.total_changes
            conn.execute(
                "INSERT OR IGNORE INTO replies (message_id, number, kind, changed, event_time) VALUES (?, ?, ?, ?, ?)",
                (message_id, number, kind, int(changed), when),
            )
            if conn.total_changes == before or kind != _schema.REPLY_OPT_OUT:
                return 0
            skipped = _skip_opted_out(conn, frozenset((number,)), number)
            conn.execute("UPDATE replies SET skipped = ? WHERE message_id = ?", (skipped, message_id))
            return skipped

        return await self._call(op)

    async def hold(self, rows: Sequence[tuple[str, float]]) -> None:
        """Hold pending rows: ``(key, not_before)``, epoch seconds (quiet hours). Durable, so a
        resumed run knows when they may go; a row that is no longer pending is left alone."""
        if not rows:
            return

        def op(conn: sqlite3.Connection) -> None:
            conn.executemany(_HOLD_SQL, rows)

        await self._call(op)

    async def next_release(self, now: float) -> tuple[int, float | None]:
        """Pending rows held past ``now``, and the earliest time one of them may go."""
        return await self._call(lambda conn: _schema.held_rows(conn, now))

    async def requeue(self, status: str) -> int:
        """Move every ``ambiguous`` (or ``failed``) row back to ``pending``; return how many.

        Requeueing ``ambiguous`` rows means resending messages that may already have been
        delivered: only on the user's explicit request (``CampaignOptions.retry_ambiguous``).
        """
        if status not in sources(Event.REQUEUE):
            raise ValueError("only 'ambiguous' or 'failed' rows can be requeued")

        def op(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "UPDATE rows SET status = 'pending', finished_at = NULL WHERE status = ?",
                (status,),
            )
            return cur.rowcount

        return await self._call(op)

    # -- Sending ----------------------------------------------------------------------------

    def mark_in_flight(self, key: str) -> asyncio.Future[None]:
        """Mark a row ``in_flight``; the returned future resolves once that is committed (durable
        against a crash): ``await journal.mark_in_flight(key)``. The mark is queued at the call.

        Call it right before the request leaves. Concurrent marks are committed together (one
        transaction for whatever is queued), so thousands per second cost a few commits.
        Raises :class:`JournalStateError` when the row does not exist or may not be sent
        (``accepted``, ``invalid``, ``skipped``): let it propagate to cancel that send.
        Marking a row already ``in_flight`` again (a retry of the same send) is allowed; its
        ``in_flight_at`` keeps the first attempt's time.

        If the caller is cancelled while waiting, the mark may still be committed: the row is
        then ``in_flight`` and treated as possibly sent, which is the safe side.
        """
        return self._writer.submit("mark", (time.time(), key))

    def record_result(
        self,
        key: str,
        *,
        status: str,
        message_id: str | None = None,
        error: str | None = None,
        error_code: int | None = None,
        attempts: int = 0,
        latency: float | None = None,
        segments: int | None = None,
    ) -> None:
        """Queue a send's outcome; returns at once (committed within ``flush_interval``).

        ``status`` is ``accepted`` (give ``message_id``), ``failed`` (certainly not sent:
        ``error``, ``error_code`` = HTTP status), ``ambiguous`` (may have been sent), or
        ``pending`` (proven not sent, e.g. by reconciliation: sendable again). ``attempts``
        (HTTP attempts made) is added to the row's total; ``latency`` is in seconds;
        ``segments`` overrides the loaded count (e.g. Bandwidth's ``segmentCount`` × recipients).

        A result never overwrites an ``accepted`` row (nor an ``invalid``/``skipped`` one):
        such a result is dropped, logged and counted in ``stats.ignored_results``. The one
        exception: an ``accepted`` result for the same message (or a row a status callback
        accepted without a message id) completes it with its attempts, latency and segments.
        """
        if status not in _RESULT_EVENTS:
            raise ValueError(f"status must be one of {sorted(_RESULT_EVENTS)}, not {status!r}")
        finished = None if status == "pending" else time.time()
        params = (status, message_id, error, error_code, attempts, latency, finished, segments, key)
        self._writer.submit_lazy("result", params)

    async def flush(self) -> None:
        """Return once everything queued so far (results included) is committed."""
        await self._call(self._touch_sending)

    async def begin_sending(self) -> None:
        """Record that a send pass starts now: the report's throughput counts only such time.

        Until the journal closes, every transaction that records results moves this pass's
        end forward, so a pass cut short by a crash still counts up to its last result.
        """
        now = time.time()

        def op(conn: sqlite3.Connection) -> int:
            cur = conn.execute("INSERT INTO sending (started_at, last_at) VALUES (?, ?)", (now, now))
            return int(cur.lastrowid or 0)

        self._sending_id = await self._call(op)

    # -- Status callbacks -------------------------------------------------------------------

    async def record_delivery(
        self,
        tag_or_key: str,
        event_type: str,
        *,
        error_code: int | None = None,
        event_time: datetime | float | None = None,
        message_id: str | None = None,
        recipient: str | None = None,
    ) -> DeliveryOutcome:
        """Record one status-callback event; idempotent and tolerant of any arrival order.

        ``tag_or_key`` is the message's tag (``"<campaign id>:<key>"``) or a bare key; a value
        with a ``:`` that does not start with this campaign's id is another campaign's tag
        (:attr:`DeliveryOutcome.UNKNOWN`). ``recipient`` is the event's ``to``; None applies
        the event to every recipient of the row.

        Per recipient, ``message-sent`` < ``message-delivered`` = ``message-failed``: a state
        only moves forward, so a late ``message-sent`` never overwrites a final state, a
        repeated event is a duplicate, and a second, contradicting final state is ignored (each
        recipient gets exactly one). The row's summary: ``failed`` (with that recipient's
        error code) if any recipient failed, ``delivered`` when every recipient was delivered,
        else ``sent``. A callback proves the message was accepted, so a row still ``pending``,
        ``in_flight`` or ``ambiguous`` becomes ``accepted`` (with the event's message id). A
        callback for an ``invalid``, ``skipped`` or ``failed`` row is
        :attr:`DeliveryOutcome.UNMATCHED`: kept apart, never counted as a delivery.
        """
        key = self._key_from_tag(tag_or_key)
        if key is None:
            self._check_open()
            return DeliveryOutcome.UNKNOWN
        when = _epoch(event_time)
        stats = self.stats
        if error_code is not None and not -(2**63) <= error_code < 2**63:
            error_code = None  # not a Bandwidth code (they have four digits), and SQLite cannot hold it

        def op(conn: sqlite3.Connection) -> DeliveryOutcome:
            stats.deliveries += 1
            outcome = apply_receipt(
                conn, key, event_type, error_code=error_code, when=when, message_id=message_id, recipient=recipient
            )
            if outcome is DeliveryOutcome.UNMATCHED:
                stats.unmatched += 1
            return outcome

        return await self._call(op, "delivery")

    def _key_from_tag(self, tag_or_key: str) -> str | None:
        cid = self._campaign_id
        if cid is not None and tag_or_key.startswith(cid + ":"):
            return tag_or_key[len(cid) + 1 :]
        if ":" in tag_or_key:
            return None
        return tag_or_key

    # -- Queries ----------------------------------------------------------------------------

    async def iter_pending(self, batch: int = PAGE_SIZE) -> AsyncIterator[PendingRow]:
        """Pending rows in line order, fetched ``batch`` at a time (memory stays bounded).

        Keyset pagination on ``(line, key)``: rows marked in flight meanwhile are not seen
        twice, and rows that become pending again behind the cursor are left for a next pass.
        """
        after = (-1, "")
        while True:
            page = await self.pending_page(after, batch)
            for row in page:
                yield row
            if len(page) < batch:
                return
            after = (page[-1].line, page[-1].key)

    def pending_page(
        self, after: tuple[int, str] = (-1, ""), batch: int = PAGE_SIZE, *, released_at: float | None = None
    ) -> asyncio.Future[list[PendingRow]]:
        """The first ``batch`` pending rows after ``after`` (a row's ``(line, key)``), in line
        order, as a future: a sender can fetch the next page while it sends this one.
        With ``released_at`` (epoch seconds), rows held (:meth:`hold`) past it are left out."""
        if batch < 1:
            raise ValueError("batch must be at least 1")
        stats = self.stats

        def op(conn: sqlite3.Connection) -> list[PendingRow]:
            stats.pages += 1
            if released_at is None:
                found = conn.execute(_PENDING_SQL, (after[0], after[1], batch)).fetchall()
                return [PendingRow(r[0], r[1], r[2], r[3], tuple(_decode(r[4])), r[5], r[6]) for r in found]
            found = conn.execute(_RELEASED_SQL, (after[0], after[1], batch, released_at)).fetchall()
            return [PendingRow(r[0], r[1], r[2], r[3], tuple(_decode(r[4])), r[5], r[6], r[7]) for r in found]

        return self._call(op)

    async def rows_with_status(self, status: str, batch: int = PAGE_SIZE) -> AsyncIterator[RowRecord]:
        """Every row with ``status``, in line order, ``batch`` at a time."""
        async for page in self._pages(
            f"SELECT {_schema.ROW_COLUMNS} FROM rows "
            "WHERE status = ? AND (line, key) > (?, ?) ORDER BY line, key LIMIT ?",
            (status,),
            batch,
        ):
            for r in page:
                yield _schema.record(r)

    async def iter_all(self, batch: int = PAGE_SIZE) -> AsyncIterator[RowRecord]:
        """Every row in line order, ``batch`` at a time (for exports)."""
        async for page in self._pages(
            f"SELECT {_schema.ROW_COLUMNS} FROM rows WHERE (line, key) > (?, ?) ORDER BY line, key LIMIT ?",
            (),
            batch,
        ):
            for r in page:
                yield _schema.record(r)

    async def _pages(self, sql: str, params: tuple[Any, ...], batch: int) -> AsyncIterator[list[tuple[Any, ...]]]:
        if batch < 1:
            raise ValueError("batch must be at least 1")
        # The (line, key) columns sit at positions 1 and 0 of every query above.
        after: tuple[int, str] = (-1, "")
        stats = self.stats
        while True:
            cursor = after

            def op(conn: sqlite3.Connection, cursor: tuple[int, str] = cursor) -> list[tuple[Any, ...]]:
                stats.pages += 1
                return conn.execute(sql, (*params, cursor[0], cursor[1], batch)).fetchall()

            page = await self._call(op)
            if not page:
                return
            yield page
            if len(page) < batch:
                return
            after = (page[-1][1], page[-1][0])

    async def get_row(self, key: str) -> RowRecord | None:
        """One row by key."""

        def op(conn: sqlite3.Connection) -> RowRecord | None:
            r = conn.execute(f"SELECT {_schema.ROW_COLUMNS} FROM rows WHERE key = ?", (key,)).fetchone()
            return None if r is None else _schema.record(r)

        return await self._call(op)

    async def in_flight_rows(self) -> list[RowRecord]:
        """Rows left ``in_flight`` (after a crash: the sends to reconcile; at most the concurrency)."""
        return [r async for r in self.rows_with_status("in_flight")]

    async def counts(self) -> Counts:
        """Rows by status and by delivery status, the accepted rows' segments, unmatched receipts."""
        return await self._call(_schema.read_counts)

    async def total_rows(self) -> int:
        return await self._call(lambda conn: int(conn.execute("SELECT COUNT(*) FROM rows").fetchone()[0]))

    async def failed_by_error_code(self) -> dict[int | None, int]:
        """Rows that failed to send (``failed``), by ``error_code`` (the HTTP status; None if none)."""
        return await self._call(_schema.failed_by_error_code)

    async def flagged_numbers(self, limit: int) -> tuple[int, list[tuple[int, str, str, str]]]:
        """Recipients flagged at load as impossible numbers: how many, and the first ``limit``
        as ``(line, key, number, reason)``."""
        return await self._call(lambda conn: _schema.flagged_numbers(conn, limit))

    async def delivery_failed_by_error_code(self) -> dict[int | None, int]:
        """Rows whose delivery failed, by Bandwidth's callback error code (4xxx, 5xxx, 9xxx)."""
        return await self._call(_schema.delivery_failed_by_error_code)

    async def latency_stats(self, percentiles: Sequence[float] = (50, 90, 99)) -> LatencyStats:
        """Latency of accepted rows: nearest-rank percentiles, max and mean, in seconds.

        Streams the sorted latencies on the writer thread, never holding them all in memory.
        """
        return await self._call(lambda conn: _schema.latency_stats(conn, percentiles))

    async def time_span(self) -> tuple[float | None, float | None]:
        """(first ``in_flight_at``, last ``finished_at``) over accepted rows: the run's wall time.

        Across resumes this includes the time the campaign was stopped.
        """
        return await self._call(_schema.time_span)

    async def sending_seconds(self) -> float | None:
        """Seconds spent sending, over every run (None: no run recorded it; see :meth:`begin_sending`)."""
        return await self._call(_schema.sending_seconds)

    async def claimed_message_ids(self, ids: Collection[str]) -> dict[str, str]:
        """Which of ``ids`` some row already holds: message id -> row key."""
        wanted = sorted(ids)
        if not wanted:
            return {}
        return await self._call(lambda conn: _schema.claimed_ids(conn, wanted))
