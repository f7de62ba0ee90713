"""Delivery merging: status callbacks, in any order and any number of times, into one state.

Bandwidth delivers callbacks at least once, in no particular order. Per recipient,
``message-sent`` < ``message-delivered`` = ``message-failed``: a state only moves forward, so a
late ``message-sent`` never overwrites a final state, a repeated event is a duplicate, and a
second, contradicting final state is ignored (each recipient gets exactly one). A row's summary
is ``failed`` (with that recipient's error code) if any recipient failed, ``delivered`` when
every recipient was, else ``sent``.

Whether a receipt may touch a row at all is :mod:`._rowstate`'s ``RECEIPT`` rule: it proves an
open row was accepted; a row with no accepted message and no open fate (``invalid``,
``skipped``, ``failed``) gets no delivery: the receipt is stored in ``unmatched`` instead.
Runs on the journal's writer thread, inside its transaction.
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Final

from ._records import DeliveryOutcome, DeliveryStatus, RowStatus
from ._rowstate import Event, next_state, sources, sql_in

__all__ = ["EVENT_STATUS", "apply_receipt"]

#: The callback types that carry a delivery state.
EVENT_STATUS: Final = {
    "message-sent": DeliveryStatus.SENT,
    "message-delivered": DeliveryStatus.DELIVERED,
    "message-failed": DeliveryStatus.FAILED,
}
_RANK: Final = {"sent": 1, "delivered": 2, "failed": 2}

#: Open rows a receipt proves accepted.
_PROMOTE_SQL: Final = (
    "UPDATE rows SET status = 'accepted', message_id = COALESCE(message_id, ?), error = NULL, error_code = NULL,"
    " finished_at = COALESCE(finished_at, ?) WHERE key = ? AND status IN "
    + sql_in(sources(Event.RECEIPT) - {RowStatus.ACCEPTED})
)


def apply_receipt(
    conn: sqlite3.Connection,
    key: str,
    event_type: str,
    *,
    error_code: int | None,
    when: float,
    message_id: str | None,
    recipient: str | None,
) -> DeliveryOutcome:
    """Record one status callback for row ``key``; ``recipient`` None means every recipient."""
    found = conn.execute("SELECT recipients, status FROM rows WHERE key = ?", (key,)).fetchone()
    if found is None:
        return DeliveryOutcome.UNKNOWN
    recipients: list[str] = json.loads(found[0])
    if recipient is not None and recipient not in recipients:
        return DeliveryOutcome.UNKNOWN
    status = EVENT_STATUS.get(event_type)
    if status is None:
        return DeliveryOutcome.IGNORED
    if next_state(found[1], Event.RECEIPT) is None:
        cur = conn.execute(
            "INSERT OR IGNORE INTO unmatched (key, recipient, type, row_status, message_id, event_time)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (key, recipient or "", event_type, found[1], message_id, when),
        )
        return DeliveryOutcome.UNMATCHED if cur.rowcount else DeliveryOutcome.DUPLICATE
    outcome = _merge(conn, key, recipients if recipient is None else [recipient], status, error_code, when, message_id)
    if outcome is DeliveryOutcome.CHANGED:
        _summarise(conn, key, recipients)
        conn.execute(_PROMOTE_SQL, (message_id, time.time(), key))
    return outcome


def _merge(
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


def _summarise(conn: sqlite3.Connection, key: str, recipients: list[str]) -> None:
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
