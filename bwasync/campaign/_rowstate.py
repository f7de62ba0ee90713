"""Where a campaign row stands, and the one table of how it may move.

Every change of a row's ``status`` — in the journal's SQL, in the runner, in the live progress
counters — is an :class:`Event` applied through :data:`TRANSITIONS`::

    pending ──MARKED──▶ in_flight ──ACCEPTED──▶ accepted    (final: never resent)
       ▲                   │      ├──FAILED────▶ failed      (certainly not sent)
       │                   │      └──AMBIGUOUS─▶ ambiguous   (may have been sent)
       └─────NOT_SENT──────┘
    failed, ambiguous ──REQUEUE (the user asked)──▶ pending
    pending ──OPT_OUT──▶ skipped;  pending, in_flight, ambiguous ──RECEIPT──▶ accepted
    pending ──HOLD──▶ pending (not before a time: quiet hours; kept in the ``held`` table)
    invalid, skipped: no way out (never sendable)

:func:`next_state` is the pure rule; the SQL ``IN (...)`` lists (:func:`sql_in` over
:func:`sources`), the final-state set (:data:`FINAL_STATUSES`) and the runner's counters are
derived from the same table, so they cannot drift apart.

Decisions the table encodes:

* ``accepted`` is final. An ``ACCEPTED`` result may still *complete* an accepted row (a
  status callback can beat the 202 to the journal: same message, the result only adds what the
  callback could not know); the journal checks it is the same message.
* A status callback (``RECEIPT``) proves Bandwidth accepted the message, so a row whose fate
  was open (``pending`` after a requeue, ``in_flight``, ``ambiguous``) becomes ``accepted``.
  A receipt for a row that had no accepted message and no open fate (``invalid``, ``skipped``,
  ``failed``) changes nothing: it is *unmatched*, counted apart, never a delivery.
* ``in_flight`` may be marked again: a retry of the same send marks again.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from typing import Final

__all__ = [
    "FINAL_STATUSES",
    "OPEN_STATUSES",
    "TRANSITIONS",
    "DeliveryStatus",
    "Event",
    "RowStatus",
    "count_final",
    "next_state",
    "sources",
    "sql_in",
]


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


class Event(enum.StrEnum):
    """What happens to a row."""

    #: Its ``in_flight`` mark is committed: the request is about to leave.
    MARKED = "marked"
    #: Bandwidth answered 202 (or reconciliation found the message in Bandwidth's list).
    ACCEPTED = "accepted"
    #: Certainly not sent, and not to be sent again by itself.
    FAILED = "failed"
    #: May have been sent: the answer was lost.
    AMBIGUOUS = "ambiguous"
    #: Taken but never sent (a stop, a cancellation before it left, credentials refused).
    NOT_SENT = "not_sent"
    #: A status callback for it arrived: proof that Bandwidth accepted a message for it.
    RECEIPT = "receipt"
    #: The user asked to resend it (``retry_ambiguous``, ``retry_failed`` options).
    REQUEUE = "requeue"
    #: A recipient is on the opt-out list.
    OPT_OUT = "opt_out"
    #: Not to be sent before a time (quiet hours in a recipient's zone): stays pending.
    HOLD = "hold"


_P, _F, _A = RowStatus.PENDING, RowStatus.FAILED, RowStatus.AMBIGUOUS
_IF, _OK = RowStatus.IN_FLIGHT, RowStatus.ACCEPTED
#: States a send result may overwrite (a later result of the same row wins).
_RESULTABLE: Final = (_P, _IF, _F, _A)

#: (state, event) -> next state. A pair that is not here is refused: the row does not change.
TRANSITIONS: Final[Mapping[tuple[RowStatus, Event], RowStatus]] = {
    **{(s, Event.MARKED): _IF for s in _RESULTABLE},
    **{(s, Event.ACCEPTED): _OK for s in (*_RESULTABLE, _OK)},
    **{(s, Event.FAILED): _F for s in _RESULTABLE},
    **{(s, Event.AMBIGUOUS): _A for s in _RESULTABLE},
    **{(s, Event.NOT_SENT): _P for s in _RESULTABLE},
    **{(s, Event.RECEIPT): _OK for s in (_P, _IF, _A, _OK)},
    (_A, Event.REQUEUE): _P,
    (_F, Event.REQUEUE): _P,
    (_P, Event.OPT_OUT): RowStatus.SKIPPED,
    (_P, Event.HOLD): _P,
}

#: The states a row leaves by itself (by being sent, or by its result arriving).
OPEN_STATUSES: Final = frozenset({RowStatus.PENDING, RowStatus.IN_FLIGHT})
#: States a row never leaves by itself: a campaign is complete when every row has one.
FINAL_STATUSES: Final = frozenset(RowStatus) - OPEN_STATUSES


def next_state(current: RowStatus | str, event: Event) -> RowStatus | None:
    """The state ``event`` moves a row in ``current`` to; None if the table refuses it.

    >>> next_state("in_flight", Event.ACCEPTED)
    <RowStatus.ACCEPTED: 'accepted'>
    >>> next_state("invalid", Event.RECEIPT) is None
    True
    """
    # A state's name finds its entry directly (a StrEnum member hashes and compares as its
    # value): the conversion below is only for what is not a state at all.
    found = TRANSITIONS.get((current, event))  # type: ignore[arg-type]
    if found is not None or current in _NAMES:
        return found
    try:
        state = RowStatus(current)
    except ValueError:
        return None
    return TRANSITIONS.get((state, event))


_NAMES: Final = frozenset(RowStatus)


def count_final(by_status: Mapping[str, int]) -> int:
    """Rows in a final state, from counts by state."""
    return sum(by_status.get(s, 0) for s in FINAL_STATUSES)


def sources(event: Event) -> frozenset[RowStatus]:
    """Every state ``event`` may be applied to."""
    return frozenset(state for state, ev in TRANSITIONS if ev is event)


def sql_in(states: Iterable[RowStatus | str]) -> str:
    """``('a', 'b')``: an SQL ``IN`` list of states, in a stable order (safe: enum values only)."""
    names = sorted(str(RowStatus(s)) for s in states)
    return "(" + ", ".join(f"'{n}'" for n in names) + ")"
