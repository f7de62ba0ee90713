"""Property: whatever bytes or JSON reach the inbound handler, it never answers 5xx.

Bandwidth redelivers anything not answered 2xx for 24 hours; a hostile or broken body must get
a 4xx (nothing to retry) or be ignored, never a 500. One server, on 127.0.0.1, serves every example.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from bwasync.compliance import InboundHandler, MemoryOptOutStore

from .test_compliance_replies import AUTH, inbound

Server = tuple[InboundHandler, aiohttp.ClientSession, str]
#: The example count comes from the profile (tests/conftest.py): a few dozen in ``make test``,
#: 10,000 in ``make fuzz``.
pytestmark = pytest.mark.fuzz

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
FIELDS = ["type", "time", "description", "to", "message", "carrierName"]
MESSAGE_FIELDS = ["id", "owner", "applicationId", "time", "segmentCount", "direction", "to", "from", "text", "media"]


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    handler = InboundHandler(MemoryOptOutStore(), username="bw", password="s3cret")
    app = web.Application()
    app.router.add_post("/", handler.handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    async with aiohttp.ClientSession() as client:
        yield handler, client, f"http://127.0.0.1:{runner.addresses[0][1]}/"
    await runner.cleanup()


async def answer(server: Server, body: bytes) -> int:
    _, client, url = server
    async with client.post(url, data=body, headers={"Content-Type": "application/json", "Authorization": AUTH}) as r:
        return r.status


@given(body=st.binary(max_size=512))
async def test_arbitrary_bytes_never_get_a_5xx(server: Server, body: bytes) -> None:
    assert await answer(server, body) < 500


@given(value=json_values)
async def test_arbitrary_json_never_gets_a_5xx(server: Server, value: Any) -> None:
    assert await answer(server, json.dumps(value).encode()) < 500


@given(
    field=st.sampled_from(FIELDS + [f"message.{f}" for f in MESSAGE_FIELDS]),
    value=json_values | st.integers(min_value=-(2**70), max_value=2**70),
    text=st.sampled_from(["STOP", "start", "hello", None]),
)
async def test_an_event_with_any_one_field_replaced_never_gets_a_5xx(
    server: Server, field: str, value: Any, text: str | None
) -> None:
    body = inbound(text, message_id="fuzz")
    if field.startswith("message."):
        body["message"][field.split(".", 1)[1]] = value
    else:
        body[field] = value
    assert await answer(server, json.dumps([body]).encode()) < 500
    assert server[0].stats.errors == 0


async def test_a_field_nested_deeper_than_the_decoder_goes_gets_400(server: Server) -> None:
    body = json.dumps([inbound("STOP")])[:-2] + ', "extra": ' + "[" * 5000 + "]" * 5000 + "}]"
    assert await answer(server, body.encode()) == 400
