"""The campaign journal: every row's fate, in one SQLite file, durable against a crash.

The journal is what makes a campaign safe to kill and resume. Each input row is one ``rows``
record whose ``status`` moves along::

    pending ──mark_in_flight──▶ in_flight ──record_result──▶ accepted   (final: never resent)
       ▲                            │                    ├──▶ failed     (not sent)
       └──── requeue / reconcile ───┴────────────────────┴──▶ ambiguous  (may have been sent)
    invalid, skipped                                        (never sendable)

Invariants the runner relies on:

* :meth:`Journal.mark_in_flight` returns only once the row's ``in_flight`` status is
  **committed**, so after a crash every send that may have left this process has its row in
  ``in_flight`` (or in a final status). Marks from many coroutines are group-committed: the
  writer thread drains everything queued, applies it in one transaction, commits, then resolves
  all the waiting futures at once.
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

Threading: SQLite calls block, so all of them run on one dedicated writer thread that owns the
only connection. The event loop only puts items on a queue and awaits futures; a journal is
bound to the event loop that opened it. Reads go through the same thread, in queue order, so a
read sees every write requested before it (read-your-writes).

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
import enum
import hashlib
import json
import logging
import math
import os
import queue
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, Final, NamedTuple, TypeVar

from .._models import MessageRequest
from ._constants import (
    BUSY_TIMEOUT_MS,
    FINGERPRINT_BYTES,
    MAX_TRANSACTION_ITEMS,
    PAGE_SIZE,
    RESULT_FLUSH_INTERVAL,
)
from ._exceptions import (
    JournalClosedError,
    JournalError,
    JournalLockedError,
    JournalMismatchError,
    JournalStateError,
)

try:  # POSIX only; on Windows the journal is not protected against a second runner.
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "CampaignInfo",
    "CommitInfo",
    "Counts",
    "DeliveryOutcome",
    "DeliveryStatus",
    "FileFingerprint",
    "Journal",
    "JournalStats",
    "LatencyStats",
    "NewRow",
    "PendingRow",
    "RowRecord",
    "RowStatus",
    "fingerprint_file",
    "synthetic_key",
]

logger = logging.getLogger("bwasync.campaign")

T = TypeVar("T")

SCHEMA_VERSION: Final = 1


class RowStatus(enum.StrEnum):
    """Where a row stands. Stored as these strings; members compare equal to them."""

    #: Loaded and sendable, not sent yet.
    PENDING = "pending"
    #: Never sendable: the row broke a rule (``error`` lists the field errors).
    INVALID = "invalid"
    #: Never sent on purpose: a recipient opted out (``error`` is ``"opted out"``).
    SKIPPED = "skipped"
    #: A send may be on its way. Committed before the request leaves; reconciled on resume.
    IN_FLIGHT = "in_flight"
    #: Bandwidth answered 202 (``message_id`` set). Final: never resent.
    ACCEPTED = "accepted"
    #: Certainly not sent: a 4xx/5xx answer, or retries exhausted without the request leaving.
    FAILED = "failed"
    #: May or may not have been sent (a timeout after the request left). Resent only on request.
    AMBIGUOUS = "ambiguous"


class DeliveryStatus(enum.StrEnum):
    """A row's delivery, summarised from status callbacks."""

    SENT = "sent"
    DELIVERED = "delivered"
    FAILED = "failed"


class DeliveryOutcome(enum.Enum):
    """What :meth:`Journal.record_delivery` did with one event.

    Truthy only for :attr:`CHANGED`, so ``if await journal.record_delivery(...)`` reads as
    "did it change anything".
    """

    #: The event moved a recipient's delivery state forward (and maybe the row's summary).
    CHANGED = "changed"
    #: The recipient already had exactly this state: a redelivered callback.
    DUPLICATE = "duplicate"
    #: The event is older than what is known (``message-sent`` after ``message-delivered``),
    #: or contradicts a final state already recorded. Ignored.
    STALE = "stale"
    #: An event type that does not change delivery state (``message-sending``, ``-read``).
    IGNORED = "ignored"
    #: No row of this campaign matches the tag, or the recipient is not one of the row's.
    UNKNOWN = "unknown"

    def __bool__(self) -> bool:
        return self is DeliveryOutcome.CHANGED


# A row may be (re)marked in flight, and a result may overwrite it, only while it is pending,
# in_flight, failed or ambiguous (see _MARK_SQL and _RESULT_SQL): ``accepted`` is final, and
# ``invalid``/``skipped`` rows are never sendable. ``in_flight`` itself is markable so that a
# retry of the same send may mark again.
#: Statuses a result may set.
_RESULT_STATUSES = frozenset({"accepted", "failed", "ambiguous", "pending"})
#: Statuses a status callback promotes to ``accepted``: the callback proves the send happened.
_PROMOTABLE = ("pending", "in_flight", "ambiguous")

_EVENT_STATUS: Final = {
    "message-sent": DeliveryStatus.SENT,
    "message-delivered": DeliveryStatus.DELIVERED,
    "message-failed": DeliveryStatus.FAILED,
}
_RANK: Final = {"sent": 1, "delivered": 2, "failed": 2}

_CAMPAIGN_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS campaign (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    campaign_id     TEXT NOT NULL,
    input_path      TEXT NOT NULL,
    input_size      INTEGER NOT NULL,
    input_hash      TEXT NOT NULL,
    template        TEXT,
    settings        TEXT NOT NULL,
    created_at      REAL NOT NULL,
    loaded_through  INTEGER NOT NULL DEFAULT 0,
    load_complete   INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS rows (
    key                 TEXT PRIMARY KEY,
    line                INTEGER NOT NULL,
    status              TEXT NOT NULL,
    recipients          TEXT NOT NULL,
    sender              TEXT,
    request             TEXT,
    segments            INTEGER NOT NULL DEFAULT 0,
    message_id          TEXT,
    error               TEXT,
    error_code          INTEGER,
    attempts            INTEGER NOT NULL DEFAULT 0,
    latency             REAL,
    in_flight_at        REAL,
    finished_at         REAL,
    delivery_status     TEXT,
    delivery_error_code INTEGER,
    delivered_at        REAL
);
CREATE INDEX IF NOT EXISTS rows_by_status ON rows (status, line, key);
CREATE INDEX IF NOT EXISTS rows_by_line ON rows (line, key);
CREATE TABLE IF NOT EXISTS deliveries (
    key         TEXT NOT NULL,
    recipient   TEXT NOT NULL,
    status      TEXT NOT NULL,
    error_code  INTEGER,
    event_time  REAL,
    message_id  TEXT,
    PRIMARY KEY (key, recipient)
) WITHOUT ROWID;
"""

_ROW_COLUMNS = (
    "key, line, status, recipients, sender, request, segments, message_id, error, error_code, attempts, "
    "latency, in_flight_at, finished_at, delivery_status, delivery_error_code, delivered_at"
)


def synthetic_key(line: int) -> str:
    """The key of a row that has no usable key of its own (``#<line>``).

    User keys may not start with ``#``, so these never collide with one.
    """
    return f"#{line}"


# --- Records -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewRow:
    """A row as the load pass writes it (see :func:`~bwasync.campaign.prepare_row`)."""

    key: str
    line: int
    status: RowStatus
    recipients: Sequence[str]
    sender: str | None
    #: The rendered request's JSON body (wire names, tag included); None for an invalid row.
    request: str | None
    #: Segments counted against the rate limit: segments of the text (1 for MMS) × recipients.
    segments: int = 0
    #: Why an invalid or skipped row is so.
    error: str | None = None


@dataclass(frozen=True, slots=True)
class PendingRow:
    """What the runner needs to send one row, as :meth:`Journal.iter_pending` yields it."""

    key: str
    line: int
    #: The request's JSON body with wire names; :meth:`message_request` decodes it.
    request: str
    segments: int
    recipients: tuple[str, ...]
    sender: str | None
    attempts: int

    def message_request(self) -> MessageRequest:
        """Decode (and re-validate) the stored request.

        Raises :class:`bwasync.ValidationError` if it no longer passes, which happens when
        its ``expiration`` has passed since it was loaded: record that row as failed.
        """
        return MessageRequest.from_json(self.request)


@dataclass(frozen=True, slots=True)
class RowRecord:
    """One row with everything the journal knows (times are Unix epoch seconds)."""

    key: str
    line: int
    status: str
    recipients: tuple[str, ...]
    sender: str | None
    request: str | None
    segments: int
    message_id: str | None
    error: str | None
    error_code: int | None
    attempts: int
    #: Seconds from the send to Bandwidth's answer, as the runner measured it.
    latency: float | None
    in_flight_at: float | None
    finished_at: float | None
    delivery_status: str | None
    delivery_error_code: int | None
    delivered_at: float | None


@dataclass(frozen=True, slots=True)
class CampaignInfo:
    """The campaign record: created once, identical on every resume."""

    #: Stable id; every message's tag is ``f"{campaign_id}:{row key}"``.
    campaign_id: str
    input_path: str
    input_size: int
    #: SHA-256 over the size and the first and last MiB of the input (see :func:`fingerprint_file`).
    input_hash: str
    template: str | None
    settings: dict[str, Any]
    created_at: float
    #: Highest input line whose row is in the journal (the load pass resumes after it).
    loaded_through: int
    #: Whether the load pass read the whole file.
    load_complete: bool

    @property
    def tag_prefix(self) -> str:
        """``"<campaign id>:"``, the start of every tag of this campaign."""
        return f"{self.campaign_id}:"


@dataclass(frozen=True, slots=True)
class Counts:
    """Rows by status and by delivery status."""

    total: int
    #: Every :class:`RowStatus` value, zero included.
    by_status: dict[str, int]
    #: Every :class:`DeliveryStatus` value, zero included (rows without callbacks are not counted).
    by_delivery: dict[str, int]
    #: Segments of the accepted rows (segments × recipients, as loaded).
    accepted_segments: int

    def __getitem__(self, status: str) -> int:
        return self.by_status.get(status, 0)


@dataclass(frozen=True, slots=True)
class LatencyStats:
    """Latency of accepted rows, in seconds (nearest-rank percentiles)."""

    count: int
    #: Percentile (e.g. ``50.0``) -> seconds; empty when ``count`` is 0.
    percentiles: dict[float, float]
    max: float | None
    mean: float | None


class FileFingerprint(NamedTuple):
    size: int
    digest: str


class CommitInfo(NamedTuple):
    """Passed to ``on_commit`` after every transaction."""

    #: Transactions committed so far, this one included.
    transaction: int
    #: Queued items applied in this transaction.
    items: int
    marks: int
    results: int


@dataclass(slots=True)
class JournalStats:
    """Live counters (written by the writer thread, read anywhere)."""

    #: Transactions committed. Each group commit is one, however many marks it carried.
    transactions: int = 0
    #: Items applied (marks, results, deliveries, reads...).
    items: int = 0
    marks: int = 0
    results: int = 0
    #: Results not applied because the row's status forbids it (an ``accepted`` row, or no row).
    ignored_results: int = 0
    deliveries: int = 0
    #: Most items applied in one transaction.
    max_batch: int = 0
    #: Pages read by the iterators (each at most their ``batch`` rows).
    pages: int = 0


def fingerprint_file(path: str | os.PathLike[str]) -> FileFingerprint:
    """Size and a SHA-256 of (size, first MiB, last MiB): recognises an input file on resume."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        digest = hashlib.sha256(str(size).encode())
        digest.update(f.read(FINGERPRINT_BYTES))
        if size > FINGERPRINT_BYTES:
            f.seek(max(FINGERPRINT_BYTES, size - FINGERPRINT_BYTES))
            digest.update(f.read(FINGERPRINT_BYTES))
    return FileFingerprint(size, digest.hexdigest())


def _epoch(value: datetime | float | None) -> float:
    if value is None:
        return time.time()
    if isinstance(value, datetime):
        return value.timestamp()
    return float(value)


def read_counts(conn: sqlite3.Connection) -> Counts:
    """Rows by status and by delivery status, and the accepted rows' segments, from ``conn``."""
    by_status = dict.fromkeys((str(s) for s in RowStatus), 0)
    segments = 0
    for status, n, segs in conn.execute("SELECT status, COUNT(*), SUM(segments) FROM rows GROUP BY status"):
        by_status[status] = n
        if status == "accepted":
            segments = segs or 0
    by_delivery = dict.fromkeys((str(s) for s in DeliveryStatus), 0)
    for status, n in conn.execute(
        "SELECT delivery_status, COUNT(*) FROM rows WHERE delivery_status IS NOT NULL GROUP BY delivery_status"
    ):
        by_delivery[status] = n
    return Counts(sum(by_status.values()), by_status, by_delivery, segments)


def _record(row: Sequence[Any]) -> RowRecord:
    return RowRecord(
        row[0],
        row[1],
        row[2],
        tuple(json.loads(row[3])),
        *row[4:],
    )


# --- The writer thread's queue items -------------------------------------------------------------


class _Item:
    """One unit of work for the writer thread, applied inside the current transaction.

    Marks and results carry only their SQL parameters: a run of consecutive ones is applied
    with one ``executemany`` (the hot path). Any other item carries ``fn(conn)``.
    """

    __slots__ = ("fn", "future", "kind", "lazy", "params")

    def __init__(
        self,
        fn: Callable[[sqlite3.Connection], Any] | None,
        future: asyncio.Future[Any] | None,
        kind: str = "op",
        lazy: bool = False,
        params: tuple[Any, ...] = (),
    ) -> None:
        self.fn = fn
        self.future = future
        #: "op", "mark", "result", "delivery" or "stop".
        self.kind = kind
        #: A lazy item (a result) does not by itself force a commit before the flush deadline.
        self.lazy = lazy
        self.params = params


_MARK_SQL: Final = (
    "UPDATE rows SET status = 'in_flight', "
    "in_flight_at = CASE WHEN status = 'in_flight' THEN in_flight_at ELSE ? END "
    "WHERE key = ? AND status IN ('pending', 'in_flight', 'failed', 'ambiguous')"
)
# An ``accepted`` result may also complete a row a status callback already promoted to
# ``accepted`` (the callback can beat the 202 to the journal): same message, so it only fills in
# what the callback could not know (attempts, latency, Bandwidth's segment count).
_RESULT_SQL: Final = (
    "UPDATE rows SET status = ?1, message_id = COALESCE(?2, message_id), error = ?3, error_code = ?4, "
    "attempts = attempts + ?5, latency = COALESCE(?6, latency), finished_at = ?7, segments = COALESCE(?8, segments) "
    "WHERE key = ?9 AND (status IN ('pending', 'in_flight', 'failed', 'ambiguous') "
    "OR (?1 = 'accepted' AND status = 'accepted' AND (message_id IS NULL OR message_id = ?2)))"
)


def _noop(conn: sqlite3.Connection) -> None:
    return None


def _resolve(done: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    """Runs on the event loop: complete the futures of one transaction."""
    for future, value, exc in done:
        if future.cancelled():
            continue
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(value)


# --- The journal -------------------------------------------------------------------------------------


class Journal:
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
        self._flush_interval = flush_interval
        self._on_commit = on_commit
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock_fd: int | None = None
        self._closed = False
        #: Set (by the writer) after a database error: every later item fails with it.
        self._broken: BaseException | None = None
        #: The campaign id, once known: record_delivery strips ``<id>:`` from tags.
        self._campaign_id: str | None = None

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open" if self._thread is not None else "new"
        if self._broken is not None:
            state = "broken"
        return (
            f"<Journal {self.path!r} {state} transactions={self.stats.transactions} "
            f"marks={self.stats.marks} results={self.stats.results} queued={self._queue.qsize()}>"
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
        if self._thread is not None:
            return
        if self._closed:
            raise JournalClosedError(f"{self.path}: the journal was closed")
        self._loop = asyncio.get_running_loop()
        self._acquire_lock()
        self._thread = threading.Thread(target=self._writer_main, name=f"bwasync-journal:{self.path}", daemon=True)
        self._thread.start()
        try:
            self._campaign_id = await self._call(self._op_init)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Commit everything queued, close the database and release the lock. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._thread is not None and self._loop is not None:
                future: asyncio.Future[Any] = self._loop.create_future()
                self._queue.put(_Item(_noop, future, kind="stop"))
                with contextlib.suppress(JournalError):
                    await future
                # The thread resolves the stop future as its very last act, so this join is
                # immediate; it only ensures the connection is gone before the lock is released.
                self._thread.join()
        finally:
            self._release_lock()

    async def __aenter__(self) -> Journal:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def _acquire_lock(self) -> None:
        if fcntl is None:  # pragma: no cover
            return
        try:
            fd = os.open(self.path + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise JournalError(f"{self.path}: cannot open the journal: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise JournalLockedError(f"{self.path}: the journal is in use by another runner") from None
        self._lock_fd = fd

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    # -- Queueing ---------------------------------------------------------------------------

    def _check_open(self) -> asyncio.AbstractEventLoop:
        if self._closed or self._loop is None:
            raise JournalClosedError(f"{self.path}: the journal is closed" if self._closed else "journal not opened")
        if self._broken is not None:
            raise JournalClosedError(f"{self.path}: the journal stopped after an error: {self._broken}")
        return self._loop

    def _call(self, fn: Callable[[sqlite3.Connection], T], kind: str = "op") -> asyncio.Future[T]:
        loop = self._check_open()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Item(fn, future, kind))
        return future

    # -- The writer thread ------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            conn.close()
            raise JournalError(f"{self.path}: cannot switch the journal to WAL mode (got {mode!r})")
        # NORMAL in WAL mode: commits survive a process crash (see the module docstring).
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    def _writer_main(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            conn = self._connect()
        except (sqlite3.Error, JournalError) as exc:
            self._broken = exc
        buffered: list[_Item] = []
        deadline: float | None = None
        stop: _Item | None = None
        get = self._queue.get
        get_nowait = self._queue.get_nowait
        while stop is None:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                item: _Item | None = get(timeout=timeout)
            except queue.Empty:
                item = None
            eager = False
            # Group commit: take whatever else is queued right now, up to a bound.
            while item is not None:
                buffered.append(item)
                if not item.lazy:
                    eager = True
                    if item.kind == "stop":
                        stop = item
                        break
                if len(buffered) >= MAX_TRANSACTION_ITEMS:
                    break
                try:
                    item = get_nowait()
                except queue.Empty:
                    item = None
            if not buffered:
                continue
            now = time.monotonic()
            if deadline is None:
                deadline = now + self._flush_interval
            # Invariant: `buffered` holds only lazy items whenever we loop back to wait.
            if not eager and now < deadline and len(buffered) < MAX_TRANSACTION_ITEMS:
                continue
            self._execute(conn, buffered)
            buffered = []
            deadline = None
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        if stop is not None and stop.future is not None:
            self._post([(stop.future, None, None)], None)

    def _execute(self, conn: sqlite3.Connection | None, items: list[_Item]) -> None:
        """Apply ``items`` in queue order in one transaction, commit, then resolve their futures."""
        done: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        info: CommitInfo | None = None
        if conn is None or self._broken is not None:
            err: JournalError = JournalClosedError(f"{self.path}: the journal stopped after an error: {self._broken}")
            done = [(it.future, None, err) for it in items if it.future is not None and it.kind != "stop"]
            self._post(done, None)
            return
        marks = results = 0
        try:
            conn.execute("BEGIN IMMEDIATE")
            i, n = 0, len(items)
            while i < n:
                it = items[i]
                kind = it.kind
                if kind == "mark" or kind == "result":
                    j = i + 1
                    while j < n and items[j].kind == kind:
                        j += 1
                    if kind == "mark":
                        self._apply_marks(conn, items[i:j], done)
                        marks += j - i
                    else:
                        self._apply_results(conn, items[i:j])
                        results += j - i
                    i = j
                    continue
                i += 1
                if it.fn is None or kind == "stop":  # the stop item is resolved after the close
                    continue
                try:
                    value = it.fn(conn)
                except sqlite3.Error:
                    raise
                except Exception as exc:  # a refusal (JournalStateError...): nothing was written
                    if it.future is not None:
                        done.append((it.future, None, exc))
                    continue
                if it.future is not None:
                    done.append((it.future, value, None))
            conn.execute("COMMIT")
        except Exception as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            logger.error("journal %s: transaction failed, the journal stops: %s", self.path, exc)
            self._broken = exc
            err = JournalError(f"{self.path}: journal write failed: {exc}")
            done = [(it.future, None, err) for it in items if it.future is not None and it.kind != "stop"]
        else:
            stats = self.stats
            stats.transactions += 1
            stats.items += len(items)
            stats.marks += marks
            stats.results += results
            stats.max_batch = max(stats.max_batch, len(items))
            info = CommitInfo(stats.transactions, len(items), marks, results)
        self._post(done, info)

    def _apply_marks(
        self,
        conn: sqlite3.Connection,
        group: list[_Item],
        done: list[tuple[asyncio.Future[Any], Any, BaseException | None]],
    ) -> None:
        before = conn.total_changes
        conn.executemany(_MARK_SQL, [it.params for it in group])
        if conn.total_changes - before == len(group):
            done.extend((it.future, None, None) for it in group if it.future is not None)
            return
        # Some row refused the mark: find out which (rare, so the slow way is fine).
        for it in group:
            key = it.params[1]
            found = conn.execute("SELECT status FROM rows WHERE key = ?", (key,)).fetchone()
            exc = None if found is not None and found[0] == "in_flight" else JournalStateError(key, found and found[0])
            if it.future is not None:
                done.append((it.future, None, exc))

    def _apply_results(self, conn: sqlite3.Connection, group: list[_Item]) -> None:
        before = conn.total_changes
        conn.executemany(_RESULT_SQL, [it.params for it in group])
        ignored = len(group) - (conn.total_changes - before)
        if ignored:
            self.stats.ignored_results += ignored
            logger.warning("journal: %d results ignored (their rows are final or missing)", ignored)

    def _post(self, done: list[tuple[asyncio.Future[Any], Any, BaseException | None]], info: CommitInfo | None) -> None:
        """Hand completed futures (and the commit notification) to the event loop in one call."""
        if not done and (info is None or self._on_commit is None):
            return
        assert self._loop is not None
        on_commit = self._on_commit

        def deliver() -> None:
            _resolve(done)
            if info is not None and on_commit is not None:
                try:
                    on_commit(info)
                except Exception:
                    logger.exception("journal: on_commit callback failed")

        # A closed loop raises RuntimeError: nobody is waiting any more.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(deliver)

    # -- Operations (run on the writer thread, inside a transaction) ----------------------

    def _op_init(self, conn: sqlite3.Connection) -> str | None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, SCHEMA_VERSION):
            raise JournalError(f"{self.path}: journal schema version {version} is not supported (expected 1)")
        if version == 0:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if tables:
                raise JournalError(f"{self.path}: this SQLite file is not a bwasync campaign journal")
        # Statement by statement: executescript() would commit the surrounding transaction.
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        row = conn.execute("SELECT campaign_id FROM campaign WHERE id = 1").fetchone()
        return None if row is None else str(row[0])

    # -- Campaign ---------------------------------------------------------------------------

    async def init_campaign(
        self,
        *,
        input_path: str | os.PathLike[str],
        template: str | None,
        settings: Mapping[str, Any] | None = None,
        campaign_id: str | None = None,
    ) -> CampaignInfo:
        """Create the campaign record, or check a resume against it and return it.

        On creation the campaign id is ``campaign_id`` or a fresh random 16-hex-digit one; the
        input file is fingerprinted. On resume (a record exists) the input file must have the
        same fingerprint and the template must be identical, otherwise
        :class:`JournalMismatchError`; ``settings`` are not compared (the stored ones are
        returned, for the caller to compare if it cares), nor is the path (a moved file is fine).
        """
        if campaign_id is not None and not _CAMPAIGN_ID_RE.fullmatch(campaign_id):
            raise ValueError("campaign_id must be 1-64 characters of A-Z a-z 0-9 _ -")
        path = os.fspath(input_path)
        settings_json = json.dumps(dict(settings or {}), sort_keys=True, default=str)

        def op(conn: sqlite3.Connection) -> CampaignInfo:
            try:
                fp = fingerprint_file(path)
            except OSError as exc:
                raise JournalError(f"{path}: cannot read the input file: {exc.strerror or exc}") from None
            existing = _campaign(conn)
            if existing is None:
                cid = campaign_id or secrets.token_hex(8)
                conn.execute(
                    "INSERT INTO campaign (id, campaign_id, input_path, input_size, input_hash, template, settings,"
                    " created_at) VALUES (1, ?, ?, ?, ?, ?, ?, ?)",
                    (cid, os.path.abspath(path), fp.size, fp.digest, template, settings_json, time.time()),
                )
                info = _campaign(conn)
                assert info is not None
                return info
            problems = []
            if campaign_id is not None and campaign_id != existing.campaign_id:
                problems.append(f"campaign id {campaign_id!r} is not the journal's {existing.campaign_id!r}")
            if fp.size != existing.input_size or fp.digest != existing.input_hash:
                problems.append(
                    f"the input file {path} is not the one this journal was loaded from "
                    f"({existing.input_path}, {existing.input_size} bytes)"
                )
            if template != existing.template:
                problems.append("the message template differs from the journal's")
            if problems:
                raise JournalMismatchError(f"{self.path}: cannot resume: " + "; ".join(problems))
            return existing

        info = await self._call(op)
        self._campaign_id = info.campaign_id
        return info

    async def campaign_info(self) -> CampaignInfo | None:
        """The campaign record, or None before :meth:`init_campaign`."""
        return await self._call(_campaign)

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

        def op(conn: sqlite3.Connection) -> int:
            # Built here, on the writer thread, to keep the event loop free.
            params = [
                (r.key, r.line, str(r.status), json.dumps(list(r.recipients)), r.sender, r.request, r.segments, r.error)
                for r in batch
            ]
            before = conn.total_changes
            insert = (
                "INSERT OR IGNORE INTO rows (key, line, status, recipients, sender, request, segments, error)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            )
            conn.executemany(insert, params)
            inserted = conn.total_changes - before
            if inserted < len(params):
                for p in params:
                    found = conn.execute("SELECT line FROM rows WHERE key = ?", (p[0],)).fetchone()
                    if found is not None and found[0] != p[1]:
                        error = f"duplicate key {p[0]!r} (already on line {found[0]})"
                        cur = conn.execute(insert, (synthetic_key(p[1]), p[1], "invalid", p[3], p[4], None, 0, error))
                        inserted += cur.rowcount
            if loaded_through is not None:
                _set_loaded(conn, loaded_through, False)
            return inserted

        return await self._call(op)

    async def set_loaded_through(self, line: int, *, complete: bool = False) -> None:
        """Record that every row up to ``line`` is in the journal (and, if ``complete``, all rows).

        ``loaded_through`` never moves backwards. On resume, re-read the input from its start
        (so duplicate keys are still detected) and skip rows with ``line <= loaded_through``.
        """
        await self._call(lambda conn: _set_loaded(conn, line, complete))

    async def apply_opt_out(self, numbers: Collection[str]) -> int:
        """Mark ``skipped`` (``opted out``) every pending row with a recipient in ``numbers``.

        For a resume with a newer opt-out list. Scans every pending row in one transaction,
        so call it before sending, not during. Returns how many rows it skipped.
        """
        blocked = frozenset(numbers)

        def op(conn: sqlite3.Connection) -> int:
            keys = [
                key
                for key, recipients in conn.execute("SELECT key, recipients FROM rows WHERE status = 'pending'")
                if not blocked.isdisjoint(json.loads(recipients))
            ]
            conn.executemany(
                "UPDATE rows SET status = 'skipped', error = 'opted out' WHERE key = ? AND status = 'pending'",
                [(k,) for k in keys],
            )
            return len(keys)

        return await self._call(op)

    async def requeue(self, status: str) -> int:
        """Move every ``ambiguous`` (or ``failed``) row back to ``pending``; return how many.

        Requeueing ``ambiguous`` rows means resending messages that may already have been
        delivered: only on the user's explicit request (``--retry-ambiguous``).
        """
        if status not in ("ambiguous", "failed"):
            raise ValueError("only 'ambiguous' or 'failed' rows can be requeued")

        def op(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "UPDATE rows SET status = 'pending', finished_at = NULL WHERE status = ?",
                (status,),
            )
            return cur.rowcount

        return await self._call(op)

    # -- Sending ----------------------------------------------------------------------------

    async def mark_in_flight(self, key: str) -> None:
        """Mark a row ``in_flight``; return once that is committed (durable against a crash).

        Call it right before the request leaves. Concurrent marks are committed together (one
        transaction for whatever is queued), so thousands per second cost a few commits.
        Raises :class:`JournalStateError` when the row does not exist or may not be sent
        (``accepted``, ``invalid``, ``skipped``): let it propagate to cancel that send.
        Marking a row already ``in_flight`` again (a retry of the same send) is allowed; its
        ``in_flight_at`` keeps the first attempt's time.

        If the caller is cancelled while waiting, the mark may still be committed: the row is
        then ``in_flight`` and treated as possibly sent, which is the safe side.
        """
        loop = self._check_open()
        future: asyncio.Future[None] = loop.create_future()
        self._queue.put(_Item(None, future, "mark", params=(time.time(), key)))
        await future

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
        if status not in _RESULT_STATUSES:
            raise ValueError(f"status must be one of {sorted(_RESULT_STATUSES)}, not {status!r}")
        self._check_open()
        finished = None if status == "pending" else time.time()
        params = (status, message_id, error, error_code, attempts, latency, finished, segments, key)
        self._queue.put(_Item(None, None, "result", lazy=True, params=params))

    async def flush(self) -> None:
        """Return once everything queued so far (results included) is committed."""
        await self._call(_noop)

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
        ``in_flight`` or ``ambiguous`` becomes ``accepted`` (with the event's message id).
        """
        status = _EVENT_STATUS.get(event_type)
        key = self._key_from_tag(tag_or_key)
        if key is None:
            self._check_open()
            return DeliveryOutcome.UNKNOWN
        when = _epoch(event_time)
        stats = self.stats

        def op(conn: sqlite3.Connection) -> DeliveryOutcome:
            stats.deliveries += 1
            found = conn.execute("SELECT recipients FROM rows WHERE key = ?", (key,)).fetchone()
            if found is None:
                return DeliveryOutcome.UNKNOWN
            recipients: list[str] = json.loads(found[0])
            if recipient is not None and recipient not in recipients:
                return DeliveryOutcome.UNKNOWN
            if status is None:
                return DeliveryOutcome.IGNORED
            outcome = _apply_delivery(
                conn, key, recipients if recipient is None else [recipient], status, error_code, when, message_id
            )
            if outcome is DeliveryOutcome.CHANGED:
                _summarise_delivery(conn, key, recipients, message_id)
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
        async for page in self._pages(
            "SELECT key, line, request, segments, recipients, sender, attempts FROM rows "
            "WHERE status = 'pending' AND (line, key) > (?, ?) ORDER BY line, key LIMIT ?",
            (),
            batch,
        ):
            for r in page:
                yield PendingRow(r[0], r[1], r[2], r[3], tuple(json.loads(r[4])), r[5], r[6])

    async def rows_with_status(self, status: str, batch: int = PAGE_SIZE) -> AsyncIterator[RowRecord]:
        """Every row with ``status``, in line order, ``batch`` at a time."""
        async for page in self._pages(
            f"SELECT {_ROW_COLUMNS} FROM rows WHERE status = ? AND (line, key) > (?, ?) ORDER BY line, key LIMIT ?",
            (status,),
            batch,
        ):
            for r in page:
                yield _record(r)

    async def iter_all(self, batch: int = PAGE_SIZE) -> AsyncIterator[RowRecord]:
        """Every row in line order, ``batch`` at a time (for exports)."""
        async for page in self._pages(
            f"SELECT {_ROW_COLUMNS} FROM rows WHERE (line, key) > (?, ?) ORDER BY line, key LIMIT ?",
            (),
            batch,
        ):
            for r in page:
                yield _record(r)

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
            r = conn.execute(f"SELECT {_ROW_COLUMNS} FROM rows WHERE key = ?", (key,)).fetchone()
            return None if r is None else _record(r)

        return await self._call(op)

    async def in_flight_rows(self) -> list[RowRecord]:
        """Rows left ``in_flight`` (after a crash: the sends to reconcile; at most the concurrency)."""
        return [r async for r in self.rows_with_status("in_flight")]

    async def counts(self) -> Counts:
        """Rows by status and by delivery status, and the accepted rows' segments."""

        return await self._call(read_counts)

    async def total_rows(self) -> int:
        return await self._call(lambda conn: int(conn.execute("SELECT COUNT(*) FROM rows").fetchone()[0]))

    async def failed_by_error_code(self) -> dict[int | None, int]:
        """Rows that failed to send (``failed``), by ``error_code`` (the HTTP status; None if none)."""
        return await self._call(
            lambda conn: {
                code: n
                for code, n in conn.execute(
                    "SELECT error_code, COUNT(*) FROM rows WHERE status = 'failed' "
                    "GROUP BY error_code ORDER BY 2 DESC, 1"
                )
            }
        )

    async def delivery_failed_by_error_code(self) -> dict[int | None, int]:
        """Rows whose delivery failed, by Bandwidth's callback error code (4xxx, 5xxx, 9xxx)."""
        return await self._call(
            lambda conn: {
                code: n
                for code, n in conn.execute(
                    "SELECT delivery_error_code, COUNT(*) FROM rows WHERE delivery_status = 'failed' "
                    "GROUP BY delivery_error_code ORDER BY 2 DESC, 1"
                )
            }
        )

    async def latency_stats(self, percentiles: Sequence[float] = (50, 90, 99)) -> LatencyStats:
        """Latency of accepted rows: nearest-rank percentiles, max and mean, in seconds.

        Streams the sorted latencies on the writer thread, never holding them all in memory.
        """
        wanted = sorted(float(p) for p in percentiles)

        def op(conn: sqlite3.Connection) -> LatencyStats:
            n, total, top = conn.execute(
                "SELECT COUNT(latency), SUM(latency), MAX(latency) FROM rows WHERE status = 'accepted'"
            ).fetchone()
            if not n:
                return LatencyStats(0, {}, None, None)
            # Nearest rank: the smallest value with at least p% of values at or below it.
            ranks = {p: min(n, max(1, math.ceil(round(p * n / 100, 9)))) for p in wanted}
            result: dict[float, float] = {}
            cursor = conn.execute(
                "SELECT latency FROM rows WHERE status = 'accepted' AND latency IS NOT NULL ORDER BY latency"
            )
            pending = sorted(ranks.items(), key=lambda kv: kv[1])
            i = 0
            for position, (value,) in enumerate(cursor, start=1):
                while i < len(pending) and pending[i][1] == position:
                    result[pending[i][0]] = value
                    i += 1
                if i == len(pending):
                    break
            cursor.close()
            return LatencyStats(n, result, top, total / n)

        return await self._call(op)

    async def time_span(self) -> tuple[float | None, float | None]:
        """(first ``in_flight_at``, last ``finished_at``) over accepted rows: the run's wall time.

        Across resumes this includes the time the campaign was stopped.
        """

        def op(conn: sqlite3.Connection) -> tuple[float | None, float | None]:
            first, last = conn.execute(
                "SELECT MIN(in_flight_at), MAX(finished_at) FROM rows WHERE status = 'accepted'"
            ).fetchone()
            return first, last

        return await self._call(op)


# --- Helpers run on the writer thread ------------------------------------------------------------


def _campaign(conn: sqlite3.Connection) -> CampaignInfo | None:
    row = conn.execute(
        "SELECT campaign_id, input_path, input_size, input_hash, template, settings, created_at, loaded_through,"
        " load_complete FROM campaign WHERE id = 1"
    ).fetchone()
    if row is None:
        return None
    return CampaignInfo(row[0], row[1], row[2], row[3], row[4], json.loads(row[5]), row[6], row[7], bool(row[8]))


def _set_loaded(conn: sqlite3.Connection, line: int, complete: bool) -> None:
    conn.execute(
        "UPDATE campaign SET loaded_through = MAX(loaded_through, ?), load_complete = MAX(load_complete, ?)"
        " WHERE id = 1",
        (line, int(complete)),
    )


def _apply_delivery(
    conn: sqlite3.Connection,
    key: str,
    recipients: list[str],
    status: DeliveryStatus,
    error_code: int | None,
    when: float,
    message_id: str | None,
) -> DeliveryOutcome:
    outcome = DeliveryOutcome.DUPLICATE
    for number in recipients:
        found = conn.execute("SELECT status FROM deliveries WHERE key = ? AND recipient = ?", (key, number)).fetchone()
        if found is None:
            conn.execute(
                "INSERT INTO deliveries (key, recipient, status, error_code, event_time, message_id)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (key, number, str(status), error_code, when, message_id),
            )
            outcome = DeliveryOutcome.CHANGED
        elif found[0] == status:
            continue
        elif _RANK[status] > _RANK[found[0]]:
            conn.execute(
                "UPDATE deliveries SET status = ?, error_code = ?, event_time = ?, message_id = ?"
                " WHERE key = ? AND recipient = ?",
                (str(status), error_code, when, message_id, key, number),
            )
            outcome = DeliveryOutcome.CHANGED
        elif outcome is DeliveryOutcome.DUPLICATE:
            outcome = DeliveryOutcome.STALE
    return outcome


def _summarise_delivery(conn: sqlite3.Connection, key: str, recipients: list[str], message_id: str | None) -> None:
    states = {
        number: (status, code, when)
        for number, status, code, when in conn.execute(
            "SELECT recipient, status, error_code, event_time FROM deliveries WHERE key = ?", (key,)
        )
    }
    failures = sorted((s for s in states.values() if s[0] == "failed"), key=lambda s: s[2] or 0.0)
    if failures:
        summary, code, when = "failed", failures[0][1], failures[0][2]
    elif all(states.get(n, ("",))[0] == "delivered" for n in recipients):
        summary, code, when = "delivered", None, max(s[2] or 0.0 for s in states.values())
    else:
        summary, code, when = "sent", None, None
    conn.execute(
        "UPDATE rows SET delivery_status = ?, delivery_error_code = ?, delivered_at = ? WHERE key = ?",
        (summary, code, when, key),
    )
    # A status callback is proof that Bandwidth accepted the message.
    conn.execute(
        "UPDATE rows SET status = 'accepted', message_id = COALESCE(message_id, ?), error = NULL, error_code = NULL,"
        " finished_at = COALESCE(finished_at, ?) WHERE key = ? AND status IN (?, ?, ?)",
        (message_id, time.time(), key, *_PROMOTABLE),
    )
