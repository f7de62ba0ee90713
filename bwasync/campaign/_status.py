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

import os
import sqlite3
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import _schema
from ._exceptions import JournalError
from ._rowstate import count_final

if TYPE_CHECKING:
    from ._records import CampaignInfo, Counts

__all__ = ["JournalStatus", "read_status", "status_of"]


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
    #: Accepted rows by delivery summary (``sent``, ``delivered``, ``failed``).
    by_delivery: dict[str, int]
    #: Segments of the accepted rows.
    accepted_segments: int
    #: When the journal was last written (the file's, or its WAL's, modification time).
    updated_at: float | None
    #: The latest send or result time recorded in a row.
    last_activity: float | None
    #: Rows in a final status.
    done: int = 0
    #: Receipts for rows that had no accepted message (never counted as deliveries).
    unmatched_receipts: int = 0
    #: Pending rows held by quiet hours (``--quiet-hours``) past the time of reading.
    held: int = 0
    #: When the first of them may go (None: none held).
    held_until: float | None = None

    @property
    def complete(self) -> bool:
        return self.load_complete and self.done == self.total


def read_status(path: str | os.PathLike[str], *, now: float | None = None) -> JournalStatus:
    """Read a journal's campaign record and counts, read-only, without its lock.

    ``held`` counts the rows quiet hours hold past ``now`` (default: the current time).

    Raises :class:`~bwasync.campaign.JournalError` if the file does not exist or is not a
    campaign journal.
    """
    p = os.fspath(path)
    if os.path.isdir(p):
        raise JournalError(f"{p}: is a directory, not a campaign journal (give the journal file, e.g. FILE.journal)")
    if not os.path.isfile(p):
        raise JournalError(f"{p}: no such journal")
    with _schema.read_only(p) as conn:
        try:
            # One read transaction: every figure comes from the same committed state.
            conn.execute("BEGIN")
            campaign = _schema.campaign(conn)
            counts = _schema.read_counts(conn)
            last = _schema.last_activity(conn)
            held, held_until = _schema.held_rows(conn, time.time() if now is None else now)
            conn.execute("COMMIT")
        except (sqlite3.Error, ValueError) as exc:
            raise JournalError(f"{p}: not a readable bwasync campaign journal ({exc})") from None
    if campaign is None:
        raise JournalError(f"{p}: the journal holds no campaign yet")
    return status_of(
        p,
        campaign,
        counts,
        updated_at=_schema.last_write_time(p),
        last_activity=last,
        held=held,
        held_until=held_until,
    )


def status_of(
    path: str,
    campaign: CampaignInfo,
    counts: Counts,
    *,
    updated_at: float | None,
    last_activity: float | None,
    held: int = 0,
    held_until: float | None = None,
) -> JournalStatus:
    """The snapshot of a campaign from its record and counts, wherever it is kept (a journal,
    see :func:`read_status`, or a shared campaign in Redis); ``path`` names the place."""
    return JournalStatus(
        path=path,
        campaign_id=campaign.campaign_id,
        input_path=campaign.input_path,
        template=campaign.template,
        settings=campaign.settings,
        created_at=campaign.created_at,
        loaded_through=campaign.loaded_through,
        load_complete=campaign.load_complete,
        total=counts.total,
        by_status=counts.by_status,
        by_delivery=counts.by_delivery,
        accepted_segments=counts.accepted_segments,
        updated_at=updated_at,
        last_activity=last_activity,
        done=count_final(counts.by_status),
        unmatched_receipts=counts.unmatched_receipts,
        held=held,
        held_until=held_until,
    )
