"""The row-state table: the one place a campaign row's status changes (no SQLite here)."""

from __future__ import annotations

import pytest

from bwasync.campaign._rowstate import (
    FINAL_STATUSES,
    OPEN_STATUSES,
    TRANSITIONS,
    Event,
    RowStatus,
    next_state,
    sources,
    sql_in,
)


@pytest.mark.parametrize(
    ("current", "event", "expected"),
    [
        ("pending", Event.MARKED, "in_flight"),
        ("in_flight", Event.MARKED, "in_flight"),  # a retry of the same send marks again
        ("in_flight", Event.ACCEPTED, "accepted"),
        ("in_flight", Event.FAILED, "failed"),
        ("in_flight", Event.AMBIGUOUS, "ambiguous"),
        ("in_flight", Event.NOT_SENT, "pending"),
        ("pending", Event.FAILED, "failed"),  # e.g. its expiration passed before it was sent
        ("accepted", Event.ACCEPTED, "accepted"),  # the 202 completing a row a receipt accepted
        ("ambiguous", Event.RECEIPT, "accepted"),  # a receipt proves the send happened
        ("in_flight", Event.RECEIPT, "accepted"),
        ("ambiguous", Event.REQUEUE, "pending"),
        ("failed", Event.REQUEUE, "pending"),
        ("pending", Event.OPT_OUT, "skipped"),
        ("pending", Event.HOLD, "pending"),  # quiet hours: it stays sendable, later
    ],
)
def test_allowed_moves(current: str, event: Event, expected: str) -> None:
    assert next_state(current, event) == expected


@pytest.mark.parametrize(
    ("current", "event"),
    [
        ("accepted", Event.FAILED),  # accepted is final: never overwritten, never resent
        ("accepted", Event.AMBIGUOUS),
        ("accepted", Event.MARKED),
        ("accepted", Event.NOT_SENT),
        ("invalid", Event.MARKED),  # never sendable
        ("skipped", Event.MARKED),
        ("invalid", Event.RECEIPT),  # a receipt for a row never sent: unmatched, not a delivery
        ("skipped", Event.RECEIPT),
        ("failed", Event.RECEIPT),
        ("pending", Event.REQUEUE),
        ("in_flight", Event.OPT_OUT),  # a send may be on its way: too late to skip
        ("in_flight", Event.HOLD),  # too late to hold
        ("failed", Event.HOLD),
        ("no such state", Event.ACCEPTED),
    ],
)
def test_refused_moves(current: str, event: Event) -> None:
    assert next_state(current, event) is None


def test_invalid_and_skipped_rows_never_move() -> None:
    for state in (RowStatus.INVALID, RowStatus.SKIPPED):
        assert all(next_state(state, event) is None for event in Event)


def test_final_states_are_those_the_send_pass_never_takes_again() -> None:
    assert {"pending", "in_flight"} == OPEN_STATUSES
    assert {"accepted", "failed", "ambiguous", "invalid", "skipped"} == FINAL_STATUSES
    # Only the user's request (REQUEUE) takes a final row back to pending.
    for (state, event), target in TRANSITIONS.items():
        if state in FINAL_STATUSES and target in OPEN_STATUSES and event is not Event.MARKED:
            assert event in (Event.REQUEUE, Event.NOT_SENT), (state, event)


def test_sql_lists_derive_from_the_table() -> None:
    assert sources(Event.MARKED) == {"pending", "in_flight", "failed", "ambiguous"}
    assert sql_in(sources(Event.MARKED)) == "('ambiguous', 'failed', 'in_flight', 'pending')"
    assert sources(Event.RECEIPT) == {"pending", "in_flight", "ambiguous", "accepted"}
    with pytest.raises(ValueError):
        sql_in(["pending'; DROP TABLE rows; --"])
