"""A message's life after acceptance, as one pure timeline.

Both the list endpoint (``messageStatus``) and the status callbacks derive from
:func:`timeline`, so they cannot disagree: the callback announcing a state is never sent before
the list shows that state. Offsets are seconds after the message leaves the account queue
(``AcceptedMessage.dequeue_at``); ``step`` is the ``callback_delay`` captured at acceptance::

    SMS:  +0 message-sent          +step  message-delivered|failed (one per recipient)
    MMS:  +0 message-sending  +step message-sent  +2·step  message-delivered|failed (per recipient)
    expired before dequeue:   +0 message-failed 4360 (per recipient), nothing else
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any, NamedTuple

from ._state import AcceptedMessage

__all__ = [
    "DELIVERED",
    "EXPIRED_CODE",
    "FAILED",
    "RECEIVED",
    "SENDING",
    "SENT",
    "Event",
    "callback_event",
    "carrier_for",
    "message_payload",
    "reply_event",
    "status_at",
    "timeline",
]

RECEIVED = "message-received"
SENDING = "message-sending"
SENT = "message-sent"
DELIVERED = "message-delivered"
FAILED = "message-failed"
#: Bandwidth's error code for a message whose ``expiration`` passed before it was sent.
EXPIRED_CODE = 4360

_DESCRIPTIONS = {
    SENDING: "Message is sending to carrier.",
    SENT: "Message sent to carrier",
    DELIVERED: "Message delivered to handset.",
}
#: Descriptions for the failure codes an emulated delivery may draw (BANDWIDTH.md).
_FAILURE_DESCRIPTIONS = {
    4360: "Message expired",
    4405: "unallocated to number",
    4432: "forbidden to country",
    4470: "rejected-spam-detected",
    4720: "Invalid destination",
    4750: "Carrier rejected message",
    4770: "Carrier rejected as SPAM",
    4775: "Destination opted out",
    4780: "Carrier volumetric violation",
    5600: "Carrier service unavailable",
    9902: "Delivery receipt expired",
}


class Event(NamedTuple):
    """One lifecycle event: when (after dequeue), what, and for which recipient (None: the message)."""

    offset: float
    type: str
    recipient: int | None


def timeline(msg: AcceptedMessage) -> list[Event]:
    """Every event of ``msg`` in the order Bandwidth would send them."""
    n = len(msg.to)
    if msg.expired:
        return [Event(0.0, FAILED, i) for i in range(n)]
    step = msg.step
    events: list[Event] = []
    start = 0.0
    if msg.media:
        events.append(Event(0.0, SENDING, None))
        start = step
    events.append(Event(start, SENT, None))
    end = start + step
    events.extend(Event(end, FAILED if msg.error_code(i) else DELIVERED, i) for i in range(n))
    return events


def status_at(msg: AcceptedMessage, index: int, now: float) -> tuple[str, int]:
    """``(messageStatus, errorCode)`` of recipient ``index`` at ``now``; errorCode 0 unless FAILED."""
    elapsed = now - msg.dequeue_at
    if elapsed < 0:
        return "QUEUED", 0
    if msg.expired:
        return "FAILED", EXPIRED_CODE
    step = msg.step
    sent_at = step if msg.media else 0.0
    if elapsed >= sent_at + step:
        code = msg.error_code(index)
        return ("FAILED", code) if code else ("DELIVERED", 0)
    if elapsed >= sent_at:
        return "SENT", 0
    return "SENDING", 0


def carrier_for(number: str, carriers: Sequence[str]) -> str:
    """The carrier of a number: a stable pick (same number, same carrier, every run)."""
    return carriers[zlib.crc32(number.encode()) % len(carriers)] if carriers else "other"


def message_payload(msg: AcceptedMessage) -> dict[str, Any]:
    """The ``message`` object inside a callback. Bandwidth keeps no text: it is always ``""``."""
    payload: dict[str, Any] = {
        "id": msg.id,
        "owner": msg.from_,
        "applicationId": msg.application_id,
        "time": msg.time,
        "segmentCount": msg.segment_count,
        "direction": "out",
        "to": msg.to,
        "from": msg.from_,
        "text": "",
    }
    if msg.tag is not None:
        payload["tag"] = msg.tag
    if msg.media:
        payload["media"] = msg.media
    if msg.priority is not None:
        payload["priority"] = msg.priority
    return payload


def callback_event(
    msg: AcceptedMessage, event: Event, *, time: str, payload: dict[str, Any], carriers: Sequence[str]
) -> dict[str, Any]:
    """One status callback event, shaped like the spec's ``statusCallback``.

    A per-message event (sending, sent) names the first recipient in ``to``; a per-recipient
    one (delivered, failed) names its recipient while ``message.to`` keeps the whole group.
    """
    to = msg.to[0 if event.recipient is None else event.recipient]
    body: dict[str, Any] = {"time": time, "type": event.type, "to": to}
    if event.type == FAILED:
        code = EXPIRED_CODE if msg.expired else msg.error_code(event.recipient or 0)
        body["description"] = _FAILURE_DESCRIPTIONS.get(code, "Message failed")
        body["errorCode"] = code
    else:
        body["description"] = _DESCRIPTIONS[event.type]
    body["message"] = payload
    if event.recipient is not None:
        body["carrierName"] = carrier_for(to, carriers)
    return body


def reply_event(
    msg: AcceptedMessage, index: int, *, message_id: str, time: str, text: str, carrier: str
) -> dict[str, Any]:
    """The inbound callback of recipient ``index`` replying ``text`` to ``msg``'s sender, shaped
    like the spec's ``inboundCallback``: ``to`` is the Bandwidth number, ``message.from`` the
    handset, and the text is kept (unlike an outbound message's)."""
    sender = msg.to[index]
    return {
        "time": time,
        "type": RECEIVED,
        "to": msg.from_,
        "description": "Incoming message received",
        "message": {
            "id": message_id,
            "owner": msg.from_,
            "applicationId": msg.application_id,
            "time": time,
            "segmentCount": 1,
            "direction": "in",
            "to": [msg.from_],
            "from": sender,
            "text": text,
        },
        "carrierName": carrier,
    }
