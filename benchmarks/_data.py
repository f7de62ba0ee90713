"""Shared data generation: the same account, numbers and personalised texts for every contender."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import msgspec

from bwasync import MessageRequest

ACCOUNT_ID = "9900000"
USERNAME = "bench-token"
PASSWORD = "bench-secret"
APPLICATION_ID = "93de2206-9669-4e07-948d-329f4b722ee2"
SENDER = "+15553332222"

#: Bandwidth's 202 example for a create (the ``message`` schema's examples in reference/bandwidth.yml).
RESPONSE_202 = msgspec.json.encode(
    {
        "id": "1589228074636lm4k2je7j7jklbn2",
        "owner": "+15554443333",
        "applicationId": APPLICATION_ID,
        "time": "2024-12-02T20:15:57.278Z",
        "segmentCount": 1,
        "direction": "out",
        "to": ["+15552223333"],
        "from": SENDER,
        "text": "Hello world",
    }
)

_NAMES = ("Ada", "Grace", "Linus", "Barbara", "Ken", "Margaret", "Dennis", "Frances", "Guido", "Radia")


def recipient(i: int) -> str:
    """A distinct E.164 number per index (wraps after ten million)."""
    return f"+1555{i % 10_000_000:07d}"


def text(i: int) -> str:
    """A personalised one-segment GSM-7 text, different for every index."""
    return f"Hi {_NAMES[i % len(_NAMES)]}, your code is {i % 1_000_000:06d}. Reply STOP to opt out."


def request_kwargs(i: int) -> dict[str, Any]:
    return {"application_id": APPLICATION_ID, "to": recipient(i), "from_": SENDER, "text": text(i)}


def request_dict(i: int) -> dict[str, Any]:
    """The same request as a dict with Bandwidth's wire names."""
    return {"applicationId": APPLICATION_ID, "to": [recipient(i)], "from": SENDER, "text": text(i)}


def requests(n: int, *, deadline: float = float("inf")) -> Iterator[MessageRequest]:
    """``n`` validated ``MessageRequest``s, built lazily (as the caller's loop pulls them).

    Stops early once ``time.perf_counter()`` passes ``deadline``: every load loop is bounded in
    time as well as count.
    """
    for i in range(n):
        if time.perf_counter() >= deadline:
            return
        yield MessageRequest(application_id=APPLICATION_ID, to=[recipient(i)], from_=SENDER, text=text(i))


def cycled_requests(
    fields: list[tuple[str, str]], n: int, *, deadline: float = float("inf")
) -> Iterator[MessageRequest]:
    """``n`` ``MessageRequest``s built and validated one by one as the caller's loop pulls them,
    cycling through ``fields`` (:func:`message_fields`, made before the clock starts).

    The throughput contenders send the same :data:`CYCLE` distinct messages: the bare aiohttp
    loop posts them pre-encoded (:func:`encoded_bodies`), bwasync gets their recipient and text
    pre-formatted and builds, validates and encodes every message itself. Formatting the
    personalised text is the caller's work, paid by neither side's timed loop. Stops early
    once ``time.perf_counter()`` passes ``deadline``.
    """
    mask = len(fields) - 1
    for i in range(n):
        if time.perf_counter() >= deadline:
            return
        to, body = fields[i & mask]
        yield MessageRequest(application_id=APPLICATION_ID, to=[to], from_=SENDER, text=body)


def request_dicts(n: int, *, deadline: float = float("inf")) -> Iterator[dict[str, Any]]:
    """As :func:`requests`, but plain dicts (``send_many`` validates them)."""
    for i in range(n):
        if time.perf_counter() >= deadline:
            return
        yield request_dict(i)


#: Distinct messages the throughput contenders cycle through (a power of two: index & (CYCLE - 1)).
CYCLE = 1024


def message_fields(count: int = CYCLE) -> list[tuple[str, str]]:
    """(recipient, text) of the first ``count`` messages, formatted once."""
    return [(recipient(i), text(i)) for i in range(count)]


def encoded_bodies(count: int = CYCLE) -> list[bytes]:
    """Pre-encoded JSON bodies for the bare aiohttp loop (cycled; no validation, no encoding)."""
    return [msgspec.json.encode(request_dict(i)) for i in range(count)]


def sdk_request(i: int) -> Any:
    """The same request as the official SDK's pydantic model (imported lazily: it is slow to import)."""
    from bandwidth.models.message_request import MessageRequest as SdkMessageRequest

    return SdkMessageRequest(application_id=APPLICATION_ID, to=[recipient(i)], var_from=SENDER, text=text(i))
