"""The journal's records: what goes in (a new row) and what comes out (rows, counts, stats).

Plain frozen records, no SQLite: the journal (:mod:`._journal`) builds them from its
queries, the runner, reports and exports read them. The two built once per row on a
campaign's hot path (:class:`NewRow` by the load pass, :class:`PendingRow` by every page of
the send pass) are frozen msgspec structs instead: built in C, several times cheaper than
a frozen dataclass's ``__init__`` (one ``object.__setattr__`` per field);
``msgspec.structs.replace`` copies one with changes.
"""

from __future__ import annotations

import enum
import hashlib
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import msgspec

from .._exceptions import ValidationError
from .._models import MessageRequest
from .._validation import FieldError
from ._constants import FINGERPRINT_BYTES
from ._exceptions import JournalError
from ._rowstate import DeliveryStatus, RowStatus

__all__ = [
    "CampaignInfo",
    "CommitInfo",
    "Counts",
    "DeliveryOutcome",
    "DeliveryStatus",
    "FileFingerprint",
    "JournalStats",
    "LatencyStats",
    "NewRow",
    "PendingRow",
    "RowRecord",
    "RowStatus",
    "fingerprint_file",
    "fingerprint_input",
    "nearest_rank",
    "synthetic_key",
]


_REQUEST_DECODER = msgspec.json.Decoder(MessageRequest)


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
    #: The tag names a row that has no accepted message and no open fate (invalid, skipped,
    #: failed): recorded apart as an unmatched receipt, never as a delivery.
    UNMATCHED = "unmatched"

    def __bool__(self) -> bool:
        return self is DeliveryOutcome.CHANGED


def synthetic_key(line: int) -> str:
    """The key of a row that has no usable key of its own (``#<line>``).

    User keys may not start with ``#``, so these never collide with one.
    """
    return f"#{line}"


class NewRow(msgspec.Struct, frozen=True):
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
    #: The recipient's time zone from the input (``timezone_column``), for quiet hours.
    zone: str | None = None
    #: Recipients that cannot be valid numbers, ``(number, reason)``: sent anyway, reported.
    flagged: tuple[tuple[str, str], ...] = ()


# gc=False: it holds only strings, numbers and a tuple of strings, so it can be in no cycle.
class PendingRow(msgspec.Struct, frozen=True, gc=False):
    """What the runner needs to send one row, as :meth:`Journal.iter_pending` yields it."""

    key: str
    line: int
    #: The request's JSON body with wire names; :meth:`message_request` decodes it.
    request: str
    segments: int
    recipients: tuple[str, ...]
    sender: str | None
    attempts: int
    #: The time zone given for the row (quiet hours with a ``timezone_column``), if any.
    zone: str | None = None

    def message_request(self) -> MessageRequest:
        """Decode (and re-validate) the stored request.

        Raises :class:`bwasync.ValidationError` if it no longer passes, which happens when
        its ``expiration`` has passed since it was loaded: record that row as failed.
        """
        # Straight into the Struct (it validates itself): the stored body is ours, wire-named,
        # so the generic JSON -> dict -> keywords path of ``MessageRequest.from_json`` is not needed.
        try:
            return _REQUEST_DECODER.decode(self.request)
        except msgspec.ValidationError as exc:  # a type error: only a hand-edited journal has one
            raise ValidationError([FieldError("request", str(exc))]) from None


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

    def resume_mismatches(self, input_file: FileFingerprint, template: str | None) -> list[str]:
        """What a resume would change that it must not: ``"input file"`` (another fingerprint,
        see :func:`fingerprint_input`) and ``"template"``, in that order; empty if neither."""
        problems = []
        if input_file.size != self.input_size or input_file.digest != self.input_hash:
            problems.append("input file")
        if template != self.template:
            problems.append("template")
        return problems


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
    #: Receipts for rows that had no accepted message (see :attr:`DeliveryOutcome.UNMATCHED`).
    unmatched_receipts: int = 0
    #: STOP-type replies received during runs that opted their sender out (see ``Journal.record_reply``).
    opt_outs_received: int = 0
    #: START-type replies received during runs that opted their sender back in.
    opt_ins_received: int = 0

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


def nearest_rank(percentile: float, count: int) -> int:
    """The 1-based position, among ``count`` sorted values, of the ``percentile`` th one by the
    nearest-rank rule: the smallest value with at least that share of the values at or below it.

    >>> nearest_rank(50, 4), nearest_rank(99, 4), nearest_rank(0, 4)
    (2, 4, 1)
    """
    # round(): 2.2 * 1500 / 100 is 33.00000000000001 in floats, which must stay rank 33.
    return min(count, max(1, math.ceil(round(percentile * count / 100, 9))))


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
    #: Receipts for rows without an accepted message (recorded apart, see ``DeliveryOutcome``).
    unmatched: int = 0
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


def fingerprint_input(path: str) -> FileFingerprint:
    """:func:`fingerprint_file` of a campaign's input file; :class:`JournalError` if it cannot be read."""
    try:
        return fingerprint_file(path)
    except OSError as exc:
        raise JournalError(f"{path}: cannot read the input file: {exc.strerror or exc}") from None
