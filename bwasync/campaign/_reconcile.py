"""Reconciliation: which rows left ``in_flight`` by a dead run did Bandwidth really accept?

A row is ``in_flight`` from the moment its mark is committed until its result is. A run killed
in between leaves it there, and its request may or may not have reached Bandwidth. Sending it
again could deliver it twice; dropping it could deliver it never. So before a resumed run sends
anything, each such row is looked up in Bandwidth's message list:

* **Query**: ``GET /messages?sourceTn=<row's sender>&destinationTn=<row's first recipient>
  &messageDirection=OUTBOUND&fromDateTime=<marked - margin>&toDateTime=<marked + horizon>``,
  one query per (sender, first recipient) pair. ``margin`` (:data:`CLOCK_MARGIN`) absorbs clock
  skew between this machine and Bandwidth; ``horizon`` covers the row's retries (the retry
  policy's deadline plus the request timeout).
* **Candidates**: list results whose ``sourceTn`` and ``destinationTn`` are *exactly* the row's
  (Bandwidth also matches partial numbers), whose message id no row of the journal holds yet
  (a message already credited to another row is not this one), and which look like the row's
  message. Bandwidth's list results carry no ``tag`` and no text, so "look like" means the same
  ``messageType`` (sms/mms), ``recipientCount``, ``segmentCount`` and ``messageLength`` (the
  length is accepted in characters, UTF-16 units, UTF-8 bytes or GSM-7 septets, since the spec
  does not say which; a field Bandwidth leaves out is not compared).
* **Matching**: rows of one (sender, recipient) pair are taken in the order they were marked,
  and each takes the earliest unclaimed candidate received inside its window. A row with no
  candidate is **ambiguous**: never silently resent (``CampaignOptions.retry_ambiguous`` resends it knowingly).
* **Limits**: a message sent to the same number from the same number *outside this campaign*,
  inside the window, with the same type, recipients, segments and length, would be taken for
  the row's. Rows of this campaign to the same recipient are told apart only by that signature
  and by time order; so when rows with the *same* signature were left in flight together and
  fewer messages than rows are found, none of them is credited (they all become ambiguous)
  rather than guess which ones were sent.

Settle window: a request written by the dead process may still be on its way or in
Bandwidth's hands after the process died, and would then be listed only later. A row is looked
up only once ``settle`` seconds (by default the client's request timeout) have passed since the
later of its mark and the dead run's last journal write (a retry may have left after the mark);
the runner waits for the youngest row, visibly.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import msgspec

from .._client import MessagingClient
from .._exceptions import APIError, APIStatusError, RateLimitError
from .._models import ListMessageItem
from .._segments import segments
from ._constants import CLOCK_MARGIN, LIST_CONCURRENCY
from ._exceptions import ReconcileError
from ._records import RowRecord
from ._schema import last_write_time

__all__ = [
    "CLOCK_MARGIN",
    "Candidate",
    "MessageOwners",
    "ReconcileSummary",
    "Signature",
    "last_write_time",
    "match_rows",
    "reconcile_rows",
    "settle_deadline",
    "signature_of",
]

_json = msgspec.json.Decoder()


@dataclass(frozen=True, slots=True)
class Signature:
    """What Bandwidth's list result shows of a message: enough to tell most messages apart."""

    mms: bool
    recipients: int
    #: Segments of one copy (Bandwidth's ``segmentCount``; 1 for MMS).
    segments: int
    #: The text's length under each plausible reading of ``messageLength``.
    lengths: frozenset[int]


@dataclass(frozen=True, slots=True)
class Candidate:
    """A list result that could be a row's message."""

    message_id: str
    #: ``receiveTime`` as Unix epoch seconds.
    received: float
    mms: bool | None = None
    recipients: int | None = None
    segments: int | None = None
    length: int | None = None

    def fits(self, sig: Signature) -> bool:
        """Whether nothing Bandwidth shows contradicts ``sig`` (unknown fields are not compared)."""
        return (
            (self.mms is None or self.mms == sig.mms)
            and (self.recipients is None or self.recipients == sig.recipients)
            and (self.segments is None or self.segments == sig.segments)
            and (self.length is None or self.length in sig.lengths)
        )


@dataclass(frozen=True, slots=True)
class _Pending:
    key: str
    line: int
    at: float
    signature: Signature


@dataclass(slots=True)
class ReconcileSummary:
    """What a reconciliation found."""

    #: Rows looked up.
    rows: int = 0
    #: Rows proven accepted (a matching message was found): recorded ``accepted``.
    accepted: int = 0
    #: Rows not proven: recorded ``ambiguous``.
    ambiguous: int = 0
    #: List queries made.
    queries: int = 0


def signature_of(request_json: str | None) -> Signature | None:
    """The signature of a stored request (None if it cannot be read)."""
    if not request_json:
        return None
    try:
        body = _json.decode(request_json)
    except msgspec.DecodeError:
        return None
    if not isinstance(body, dict):
        return None
    to = body.get("to")
    recipients = len(to) if isinstance(to, list) else 1
    text = body.get("text") or ""
    media = body.get("media") or None
    if not isinstance(text, str):
        return None
    info = segments(text, media)
    lengths = frozenset({len(text), len(text.encode("utf-16-le")) // 2, len(text.encode()), info.units})
    return Signature(bool(media), recipients, info.segments, lengths)


def _candidate(item: ListMessageItem) -> Candidate | None:
    if item.receive_time is None:
        return None  # cannot be placed in a row's window: never credited
    received = item.receive_time
    if received.tzinfo is None:
        received = received.replace(tzinfo=UTC)
    mms = None if item.message_type is None else item.message_type.lower() == "mms"
    return Candidate(
        message_id=item.message_id,
        received=received.timestamp(),
        mms=mms,
        recipients=item.recipient_count,
        segments=item.segment_count,
        length=item.message_length,
    )


def match_rows(
    rows: Sequence[tuple[str, float, Signature]],
    candidates: Iterable[Candidate],
    *,
    margin: float = CLOCK_MARGIN,
    horizon: float,
    claimed: Collection[str] = (),
) -> dict[str, str | None]:
    """Credit rows of one (sender, first recipient) pair with messages; key -> message id or None.

    ``rows`` are ``(key, marked at, signature)``; ``candidates`` the pair's list results;
    ``claimed`` message ids already held by other rows. Pure: see the module docstring for the
    rule. A message is credited to at most one row.
    """
    free = sorted((c for c in candidates if c.message_id not in claimed), key=lambda c: (c.received, c.message_id))
    taken: set[str] = set()
    result: dict[str, str | None] = {}
    for key, at, sig in sorted(rows, key=lambda r: (r[1], r[0])):
        found: str | None = None
        for cand in free:
            if cand.message_id in taken or cand.received < at - margin:
                continue
            if cand.received > at + horizon:
                break
            if cand.fits(sig):
                found = cand.message_id
                break
        if found is not None:
            taken.add(found)
        result[key] = found
    # Rows that look alike and were not all found: which ones went out cannot be told apart.
    by_signature: dict[Signature, list[str]] = {}
    for key, _, sig in rows:
        by_signature.setdefault(sig, []).append(key)
    for keys in by_signature.values():
        if len(keys) > 1 and any(result[k] is None for k in keys):
            for k in keys:
                result[k] = None
    return result


async def _query(client: MessagingClient, sender: str, recipient: str, start: float, end: float) -> list[Candidate]:
    found: list[Candidate] = []
    async for item in client.list_messages(
        source_tn=sender,
        destination_tn=recipient,
        message_direction="OUTBOUND",
        from_date_time=datetime.fromtimestamp(start, UTC),
        to_date_time=datetime.fromtimestamp(end, UTC),
    ):
        # Bandwidth matches partial numbers too: keep exact matches only.
        if item.source_tn not in (None, sender) or item.destination_tn not in (None, recipient):
            continue
        cand = _candidate(item)
        if cand is not None:
            found.append(cand)
    return found


class MessageOwners(Protocol):
    """Where reconciliation learns which messages rows already hold: a journal, or a shared
    campaign in Redis (:class:`bwasync.redis._campaign.SharedCampaign`)."""

    async def flush(self) -> None:
        """Return once every result recorded so far is readable."""

    async def claimed_message_ids(self, ids: Collection[str]) -> dict[str, str]:
        """Which of ``ids`` some row already holds: message id -> row key."""


async def reconcile_rows(
    client: MessagingClient,
    journal: MessageOwners,
    rows: Sequence[RowRecord],
    *,
    horizon: float,
    margin: float = CLOCK_MARGIN,
    now: float,
) -> tuple[dict[str, str | None], dict[str, str], int]:
    """Look ``rows`` up; return (key -> message id or None, key -> why not found, queries made).

    Raises :class:`ReconcileError` if the list endpoint cannot be reached; a 4xx answer (other
    than 429) for a pair leaves that pair's rows unproven (a query that cannot succeed must not
    block the campaign forever).
    """
    groups: dict[tuple[str, str], list[_Pending]] = {}
    result: dict[str, str | None] = {}
    reasons: dict[str, str] = {}
    for row in rows:
        sig = signature_of(row.request)
        if sig is None or not row.sender or not row.recipients or row.in_flight_at is None:
            result[row.key] = None
            reasons[row.key] = "its stored request cannot be matched against Bandwidth's list"
            continue
        groups.setdefault((row.sender, row.recipients[0]), []).append(
            _Pending(row.key, row.line, row.in_flight_at, sig)
        )

    gate = asyncio.Semaphore(LIST_CONCURRENCY)
    found: dict[tuple[str, str], list[Candidate]] = {}
    failures: dict[tuple[str, str], str] = {}

    async def fetch(pair: tuple[str, str], members: list[_Pending]) -> None:
        start = min(p.at for p in members) - margin
        end = min(max(p.at for p in members) + horizon, now + margin)
        async with gate:
            try:
                found[pair] = await _query(client, pair[0], pair[1], start, end)
            except APIStatusError as exc:
                if exc.status_code >= 500 or isinstance(exc, RateLimitError):
                    raise ReconcileError(f"Bandwidth's message list failed: {exc}") from exc
                failures[pair] = f"the message list refused the lookup ({exc})"
            except APIError as exc:
                raise ReconcileError(f"Bandwidth's message list could not be reached: {exc}") from exc

    await asyncio.gather(*(fetch(pair, members) for pair, members in groups.items()))

    every_id = {c.message_id for cands in found.values() for c in cands}
    await journal.flush()  # every committed result is seen
    claimed = await journal.claimed_message_ids(every_id)
    for pair, members in groups.items():
        if pair in failures:
            for p in members:
                result[p.key] = None
                reasons[p.key] = failures[pair]
            continue
        own = {p.key for p in members}
        others = {mid for mid, key in claimed.items() if key not in own}
        matched = match_rows(
            [(p.key, p.at, p.signature) for p in members],
            found.get(pair, ()),
            margin=margin,
            horizon=horizon,
            claimed=others,
        )
        for key, mid in matched.items():
            result[key] = mid
            if mid is None:
                reasons[key] = "no matching message in Bandwidth's list"
    return result, reasons, len(groups)


def settle_deadline(rows: Iterable[RowRecord], last_write: float | None, settle: float) -> float:
    """Unix time after which every row in ``rows`` may be looked up (see the module docstring)."""
    latest = max((r.in_flight_at or 0.0 for r in rows), default=0.0)
    return max(latest, last_write or 0.0) + settle
