"""The journal's SQLite schema and its read queries, shared by every reader.

Each query is a plain function of a :class:`sqlite3.Connection`, so the journal's writer
thread (:mod:`._journal`) and the read-only readers (:mod:`._status`, :mod:`._reconcile`:
:func:`read_only` connections that take no lock and work while a run is writing) run the very
same SQL. Status lists come from :mod:`._rowstate`.

Schema version 1. Tables added later with ``CREATE TABLE IF NOT EXISTS`` (``unmatched``,
``sending``, ``replies``: STOP/START replies received during a run, ``held``: pending rows
not to be sent before a time, by quiet hours, ``zones``: a row's time zone from the input,
``flagged``: recipients that cannot be valid numbers, sent anyway) appear in an older journal
the first time a runner opens it; readers treat a missing one as empty.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final

from ._exceptions import JournalError
from ._records import CampaignInfo, Counts, LatencyStats, RowRecord, nearest_rank
from ._rowstate import DeliveryStatus, RowStatus

__all__ = [
    "REPLY_OPT_IN",
    "REPLY_OPT_OUT",
    "ROW_COLUMNS",
    "SCHEMA",
    "SCHEMA_VERSION",
    "campaign",
    "claimed_ids",
    "create_schema",
    "delivery_failed_by_error_code",
    "failed_by_error_code",
    "flagged_numbers",
    "held_rows",
    "last_activity",
    "last_write_time",
    "latency_stats",
    "read_counts",
    "read_only",
    "record",
    "replies_received",
    "sending_seconds",
    "set_loaded",
    "time_span",
    "unmatched_receipts",
]

SCHEMA_VERSION: Final = 1
#: ``replies.kind`` values (:class:`bwasync.compliance.ReplyKind` values).
REPLY_OPT_OUT: Final = "opt-out"
REPLY_OPT_IN: Final = "opt-in"

SCHEMA: Final = """
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
CREATE TABLE IF NOT EXISTS unmatched (
    key         TEXT NOT NULL,
    recipient   TEXT NOT NULL,
    type        TEXT NOT NULL,
    row_status  TEXT NOT NULL,
    message_id  TEXT,
    event_time  REAL,
    PRIMARY KEY (key, recipient, type)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS replies (
    message_id  TEXT PRIMARY KEY,
    number      TEXT NOT NULL,
    kind        TEXT NOT NULL,
    changed     INTEGER NOT NULL,
    event_time  REAL,
    skipped     INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS zones (
    key         TEXT PRIMARY KEY,
    zone        TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS flagged (
    key         TEXT NOT NULL,
    line        INTEGER NOT NULL,
    number      TEXT NOT NULL,
    reason      TEXT NOT NULL,
    PRIMARY KEY (key, number)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS held (
    key         TEXT PRIMARY KEY,
    not_before  REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sending (
    id          INTEGER PRIMARY KEY,
    started_at  REAL NOT NULL,
    last_at     REAL NOT NULL
);
"""

ROW_COLUMNS: Final = (
    "key, line, status, recipients, sender, request, segments, message_id, error, error_code, attempts, "
    "latency, in_flight_at, finished_at, delivery_status, delivery_error_code, delivered_at"
)

#: Message ids looked up per query (SQLite's bound-parameter limit is far above this).
_ID_CHUNK: Final = 500


def create_schema(conn: sqlite3.Connection, path: str) -> str | None:
    """Create or check the schema (inside the caller's transaction); the campaign id, if any."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version not in (0, SCHEMA_VERSION):
        raise JournalError(f"{path}: journal schema version {version} is not supported (expected 1)")
    if version == 0:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if tables:
            raise JournalError(f"{path}: this SQLite file is not a bwasync campaign journal")
    # Statement by statement: executescript() would commit the surrounding transaction.
    for statement in SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    row = conn.execute("SELECT campaign_id FROM campaign WHERE id = 1").fetchone()
    return None if row is None else str(row[0])


@contextlib.contextmanager
def read_only(path: str | os.PathLike[str]) -> Iterator[sqlite3.Connection]:
    """A read-only connection to the journal at ``path`` (no lock taken; closed on exit).

    Raises :class:`JournalError` if it cannot be opened.
    """
    p = os.fspath(path)
    try:
        conn = sqlite3.connect(Path(p).absolute().as_uri() + "?mode=ro", uri=True, timeout=5.0)
    except sqlite3.Error as exc:
        raise JournalError(f"{p}: cannot open the journal: {exc}") from None
    try:
        yield conn
    finally:
        conn.close()


def last_write_time(path: str | os.PathLike[str]) -> float | None:
    """When the journal (or its WAL) was last written, as Unix time; None if it does not exist.

    An empty WAL is a reader's (``campaign status``), not a write.
    """
    times = []
    for suffix in ("", "-wal"):
        with contextlib.suppress(OSError):
            st = os.stat(os.fspath(path) + suffix)
            if suffix and st.st_size == 0:
                continue
            times.append(st.st_mtime)
    return max(times) if times else None


def record(row: Sequence[Any]) -> RowRecord:
    """A :class:`RowRecord` from a row selected with :data:`ROW_COLUMNS`."""
    return RowRecord(row[0], row[1], row[2], tuple(json.loads(row[3])), *row[4:])


def campaign(conn: sqlite3.Connection) -> CampaignInfo | None:
    """The campaign record, or None before one was created."""
    row = conn.execute(
        "SELECT campaign_id, input_path, input_size, input_hash, template, settings, created_at, loaded_through,"
        " load_complete FROM campaign WHERE id = 1"
    ).fetchone()
    if row is None:
        return None
    return CampaignInfo(row[0], row[1], row[2], row[3], row[4], json.loads(row[5]), row[6], row[7], bool(row[8]))


def set_loaded(conn: sqlite3.Connection, line: int, complete: bool) -> None:
    conn.execute(
        "UPDATE campaign SET loaded_through = MAX(loaded_through, ?), load_complete = MAX(load_complete, ?)"
        " WHERE id = 1",
        (line, int(complete)),
    )


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    found = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone()
    return found is not None


def read_counts(conn: sqlite3.Connection) -> Counts:
    """Rows by status and by delivery status, the accepted rows' segments, unmatched receipts."""
    by_status = dict.fromkeys((str(s) for s in RowStatus), 0)
    segments = 0
    for status, n, segs in conn.execute("SELECT status, COUNT(*), SUM(segments) FROM rows GROUP BY status"):
        by_status[status] = n
        if status == RowStatus.ACCEPTED:
            segments = segs or 0
    by_delivery = dict.fromkeys((str(s) for s in DeliveryStatus), 0)
    # Only accepted rows carry a delivery: a receipt for any other row is unmatched.
    for status, n in conn.execute(
        "SELECT delivery_status, COUNT(*) FROM rows WHERE delivery_status IS NOT NULL AND status = ?"
        " GROUP BY delivery_status",
        (str(RowStatus.ACCEPTED),),
    ):
        by_delivery[status] = n
    opt_outs, opt_ins = replies_received(conn)
    return Counts(
        sum(by_status.values()), by_status, by_delivery, segments, unmatched_receipts(conn), opt_outs, opt_ins
    )


def unmatched_receipts(conn: sqlite3.Connection) -> int:
    """Receipts for rows that had no accepted message (see :mod:`._rowstate`)."""
    if not _has_table(conn, "unmatched"):
        return 0
    return int(conn.execute("SELECT COUNT(*) FROM unmatched").fetchone()[0])


def replies_received(conn: sqlite3.Connection) -> tuple[int, int]:
    """Keyword replies received during runs that changed the opt-out list: (opt-outs, opt-ins)."""
    if not _has_table(conn, "replies"):
        return 0, 0
    found = dict(conn.execute("SELECT kind, COUNT(*) FROM replies WHERE changed GROUP BY kind").fetchall())
    return int(found.get(REPLY_OPT_OUT, 0)), int(found.get(REPLY_OPT_IN, 0))


def flagged_numbers(conn: sqlite3.Connection, limit: int) -> tuple[int, list[tuple[int, str, str, str]]]:
    """Recipients flagged as impossible numbers at load: how many, and the first ``limit``
    as ``(line, key, number, reason)`` in line order."""
    if not _has_table(conn, "flagged"):
        return 0, []
    n = int(conn.execute("SELECT COUNT(*) FROM flagged").fetchone()[0])
    first = conn.execute(
        "SELECT line, key, number, reason FROM flagged ORDER BY line, number LIMIT ?", (limit,)
    ).fetchall()
    return n, [(int(line), str(key), str(number), str(reason)) for line, key, number, reason in first]


def held_rows(conn: sqlite3.Connection, now: float) -> tuple[int, float | None]:
    """Pending rows held by quiet hours past ``now``, and the earliest time one of them may go."""
    if not _has_table(conn, "held"):
        return 0, None
    n, first = conn.execute(
        "SELECT COUNT(*), MIN(held.not_before) FROM held JOIN rows ON rows.key = held.key "
        "WHERE rows.status = 'pending' AND held.not_before > ?",
        (now,),
    ).fetchone()
    return int(n), first


def _by_code(conn: sqlite3.Connection, sql: str) -> dict[int | None, int]:
    return {code: n for code, n in conn.execute(sql)}


def failed_by_error_code(conn: sqlite3.Connection) -> dict[int | None, int]:
    """Rows that failed to send (``failed``), by ``error_code`` (the HTTP status; None if none)."""
    return _by_code(
        conn,
        "SELECT error_code, COUNT(*) FROM rows WHERE status = 'failed' GROUP BY error_code ORDER BY 2 DESC, 1",
    )


def delivery_failed_by_error_code(conn: sqlite3.Connection) -> dict[int | None, int]:
    """Accepted rows whose delivery failed, by Bandwidth's callback error code (4xxx, 5xxx, 9xxx)."""
    return _by_code(
        conn,
        "SELECT delivery_error_code, COUNT(*) FROM rows WHERE delivery_status = 'failed' AND status = 'accepted' "
        "GROUP BY delivery_error_code ORDER BY 2 DESC, 1",
    )


def latency_stats(conn: sqlite3.Connection, percentiles: Sequence[float] = (50, 90, 99)) -> LatencyStats:
    """Latency of accepted rows: nearest-rank percentiles, max and mean, in seconds (streamed)."""
    wanted = sorted(float(p) for p in percentiles)
    n, total, top = conn.execute(
        "SELECT COUNT(latency), SUM(latency), MAX(latency) FROM rows WHERE status = 'accepted'"
    ).fetchone()
    if not n:
        return LatencyStats(0, {}, None, None)
    ranks = {p: nearest_rank(p, n) for p in wanted}
    result: dict[float, float] = {}
    cursor = conn.execute("SELECT latency FROM rows WHERE status = 'accepted' AND latency IS NOT NULL ORDER BY latency")
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


def time_span(conn: sqlite3.Connection) -> tuple[float | None, float | None]:
    """(first ``in_flight_at``, last ``finished_at``) over accepted rows: wall time, pauses included."""
    sql = "SELECT MIN(in_flight_at), MAX(finished_at) FROM rows WHERE status = 'accepted'"
    first, last = conn.execute(sql).fetchone()
    return first, last


def sending_seconds(conn: sqlite3.Connection) -> float | None:
    """Seconds spent in send passes, summed over every run (None: no run recorded one).

    Each send pass records when it started and, with every transaction that carries results,
    when it last recorded one; the time between runs is not counted.
    """
    if not _has_table(conn, "sending"):
        return None
    n, total = conn.execute("SELECT COUNT(*), SUM(last_at - started_at) FROM sending").fetchone()
    return None if not n else max(0.0, float(total or 0.0))


def last_activity(conn: sqlite3.Connection) -> float | None:
    """The latest send or result time recorded in a row."""
    value = conn.execute("SELECT MAX(COALESCE(finished_at, in_flight_at)) FROM rows").fetchone()[0]
    return None if value is None else float(value)


def claimed_ids(conn: sqlite3.Connection, ids: Sequence[str]) -> dict[str, str]:
    """Which of ``ids`` some row holds: message id -> row key (one scan per 500 ids)."""
    found: dict[str, str] = {}
    for start in range(0, len(ids), _ID_CHUNK):
        chunk = list(ids[start : start + _ID_CHUNK])
        marks = ",".join("?" * len(chunk))
        found.update(conn.execute(f"SELECT message_id, key FROM rows WHERE message_id IN ({marks})", chunk).fetchall())
    return found
