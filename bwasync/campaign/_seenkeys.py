"""Which keys a file has already used, and on which line: exact, in bounded memory.

A dry run (and any reader asked to report duplicate keys) must remember every key it has read;
a Python ``dict`` of a million keys costs ~130 MB. :class:`SeenKeys` keeps them in a temporary
SQLite table instead (a private on-disk database in the temp directory, deleted on close; SQLite
holds a small page cache of it in memory), and checks them a batch at a time: one
``INSERT OR IGNORE`` over the batch, in order, keeps each key's first line; only when the
batch added fewer keys than it had (a duplicate is in it) are its keys looked up one by one.
A real run does not need this: the journal's primary key finds duplicates there.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

__all__ = ["SeenKeys"]

#: SQLite page cache for the table, in KiB (negative ``cache_size`` is KiB): what the structure
#: costs in memory whatever the number of keys. The lookups of a batch are mostly for keys near
#: each other or new, so a small cache keeps them fast.
_CACHE_KIB = 4096


class SeenKeys:
    """First line of every key added so far.

    >>> seen = SeenKeys()
    >>> seen.first_lines([("a", 2), ("b", 3), ("a", 4)])
    [2, 3, 2]
    >>> seen.first_lines([("b", 5)])
    [3]
    >>> seen.close()
    """

    __slots__ = ("_conn",)

    def __init__(self) -> None:
        # "" is a temporary on-disk database, private to this connection, deleted when it closes.
        self._conn: sqlite3.Connection | None = sqlite3.connect("", isolation_level=None)
        self._conn.execute(f"PRAGMA cache_size = -{_CACHE_KIB}")
        self._conn.execute("PRAGMA journal_mode = OFF")
        self._conn.execute("PRAGMA synchronous = OFF")
        self._conn.execute("CREATE TABLE seen (key TEXT PRIMARY KEY, line INTEGER NOT NULL) WITHOUT ROWID")

    def first_lines(self, batch: Sequence[tuple[str, int]]) -> list[int]:
        """Add ``(key, line)`` pairs in order; for each, the line its key was first added on
        (its own line the first time). Lines must grow from one call to the next."""
        conn = self._conn
        if conn is None:
            raise RuntimeError("SeenKeys is closed")
        before = conn.total_changes
        conn.execute("BEGIN")
        try:
            conn.executemany("INSERT OR IGNORE INTO seen (key, line) VALUES (?, ?)", batch)
            if conn.total_changes - before == len(batch):
                return [line for _, line in batch]
            # A duplicate is in this batch (rare): find every key's first line.
            lookup = "SELECT line FROM seen WHERE key = ?"
            return [conn.execute(lookup, (key,)).fetchone()[0] for key, _ in batch]
        finally:
            conn.execute("COMMIT")

    def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.close()
