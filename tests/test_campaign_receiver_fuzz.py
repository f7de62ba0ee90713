"""Property: whatever bytes or JSON reach the callback receiver, it never answers 5xx.

Bandwidth redelivers anything not answered 2xx for 24 hours; a hostile or broken body must get
a 4xx (nothing to retry), never a 500. One receiver, on 127.0.0.1, serves every example.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bwasync.campaign import CallbackReceiver, Journal

from .test_campaign_receiver import AUTH, event

#: The example counts come from the profile (tests/conftest.py: a few dozen; ``fuzz``: 10,000).
RX = tuple[CallbackReceiver, aiohttp.ClientSession, str]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
#: Fields of a real event, each replaced by anything.
FIELDS = ["type", "time", "description", "to", "message", "errorCode", "eventTime"]
MESSAGE_FIELDS = ["id", "owner", "applicationId", "time", "segmentCount", "direction", "to", "from", "tag"]


@pytest.fixture
async def rx(tmp_path: Path) -> AsyncIterator[RX]:
    source = tmp_path / "list.csv"
    source.write_text("to\n", encoding="utf-8")
    async with Journal(tmp_path / "f.journal") as journal:
        info = await journal.init_campaign(input_path=source, template=None, campaign_id="fz")
        async with (
            CallbackReceiver("127.0.0.1", 0, journal=journal, username="bandwidth", password="s3cret") as receiver,
            aiohttp.ClientSession() as client,
        ):
            yield receiver, client, info.tag_prefix


async def answer(client: aiohttp.ClientSession, url: str, body: bytes, auth: str | None = AUTH) -> int:
    headers = {"Content-Type": "application/json", **({"Authorization": auth} if auth else {})}
    async with client.post(url, data=body, headers=headers) as response:
        return response.status


@given(body=st.binary(max_size=512))
async def test_arbitrary_bytes_never_get_a_5xx(rx: RX, body: bytes) -> None:
    receiver, client, _ = rx
    assert await answer(client, receiver.url, body) < 500


@given(value=json_values)
async def test_arbitrary_json_never_gets_a_5xx(rx: RX, value: Any) -> None:
    receiver, client, _ = rx
    assert await answer(client, receiver.url, json.dumps(value).encode()) < 500


@given(
    field=st.sampled_from(FIELDS + [f"message.{f}" for f in MESSAGE_FIELDS]),
    value=json_values | st.integers(min_value=-(2**70), max_value=2**70),
    kind=st.sampled_from(["message-delivered", "message-failed", "message-sent", "message-sending", "x"]),
)
async def test_an_event_with_any_one_field_replaced_never_gets_a_5xx(rx: RX, field: str, value: Any, kind: str) -> None:
    receiver, client, prefix = rx
    body = event(kind, prefix + "2", error_code=4720 if kind == "message-failed" else None)
    if field.startswith("message."):
        body["message"][field.split(".", 1)[1]] = value
    else:
        body[field] = value
    assert await answer(client, receiver.url, json.dumps([body]).encode()) < 500
    assert receiver.stats.errors == 0
