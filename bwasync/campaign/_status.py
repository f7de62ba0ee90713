"""A journal's state read without disturbing a run: for ``bwasync campaign status``.

:func:`read_status` opens the SQLite file **read-only** through its own connection and does not
take the journal's lock, so it works while a runner is sending (SQLite's WAL mode lets readers
and the one writer proceed together; a reader sees the last committed state) and after it
ended::

    status = read_status("list.csv.journal")
    print(status.campaign_id, status.by_status["accepted"], status.updated_at)

Everything is aggregates, so it is cheap at any campaign size.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from ._exceptions import JournalError
from ._journal import read_counts

__all__ = ["JournalStatus", "read_status"]


@dataclass(frozen=True, slots=True)
class JournalStatus:
    """A snapshot of a journal (times are Unix epoch seconds)."""

    path: str
    campaign_id: str
    input_path: str
    template: str | None
    settings: dict[str, object]
    created_at: float
    loaded_through: int
    load_complete: bool
    total: int
    #: Every :class:`~bwasync.campaign.RowStatus` value, zero included.
    by_status: dict[str, int]
    #: Rows by delivery summary (``sent``, ``delivered``, ``failed``).
    by_delivery: dict[str, int]
    #: Segments of the accepted rows.
    accepted_segments: int
    #: When the journal was last written (the file's, or its WAL's, modification time).
    updated_at: float | None
    #: The latest send or result time recorded in a row.
    last_activity: float | None

    @property
    def done(self) -> int:
        """Rows in a final status."""
        final = ("accepted", "failed", "ambiguous", "invalid", "skipped")
        return sum(self.by_status.get(s, 0) for s in final)

    @property
    def complete(self) -> bool:
        return self.load_complete and self.done == self.total


def _mtime(path: str) -> float | None:
    times = []
    for suffix in ("", "-wal"):
        with contextlib.suppress(OSError):
            st = os.stat(path + suffix)
            if not suffix or st.st_size:
                times.append(st.st_mtime)
    return max(times) if times else None


def read_status(path: str | os.PathLike[str]) -> JournalStatus:
    """Read a journal's campaign record and counts, read-only, without its lock.

    Raises :class:`~bwasync.campaign.JournalError` if the file does not exist or is not a
    campaign journal.
    """
    p = os.fspath(path)
    if not os.path.isfile(p):
        raise JournalError(f"{p}: no such journal")
    try:
        conn = sqlite3.connect(Path(p).absolute().as_uri() + "?mode=ro", uri=True, timeout=5.0)
    except sqlite3.Error as exc:
        raise JournalError(f"{p}: cannot open the journal: {exc}") from None
    try:
        try:
            # One read transaction: every figure comes from the same committed state.
            conn.execute("BEGIN")
            campaign = conn.execute(
                "SELECT campaign_id, input_path, template, settings, created_at, loaded_through, load_complete"
                " FROM campaign WHERE id = 1"
            ).fetchone()
            counts = read_counts(conn)
            last = conn.execute("SELECT MAX(COALESCE(finished_at, in_flight_at)) FROM rows").fetchone()[0]
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise JournalError(f"{p}: not a readable bwasync campaign journal ({exc})") from None
    finally:
        conn.close()
    if campaign is None:
        raise JournalError(f"{p}: the journal holds no campaign yet")
    return JournalStatus(
        path=p,
        campaign_id=campaign[0],
        input_path=campaign[1],
        template=campaign[2],
        settings=json.loads(campaign[3]),
        created_at=campaign[4],
        loaded_through=campaign[5],
        load_complete=bool(campaign[6]),
        total=counts.total,
        by_status=counts.by_status,
        by_delivery=counts.by_delivery,
        accepted_segments=counts.accepted_segments,
        updated_at=_mtime(p),
        last_activity=last,
    )
