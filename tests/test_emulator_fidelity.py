"""The emulator's answers against Bandwidth's OpenAPI document, field by field.

The list item and page-info fields are read from the spec itself at test time
(``../shared/reference/bandwidth.yml`` beside the repository, as in CI), so a field the spec
adds is a failing test here rather than a silent gap.
"""

from __future__ import annotations

import functools
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import msgspec
import pytest

from bwasync.emulator import Emulator
from bwasync.emulator._countries import country_a3, is_toll_free
from bwasync.emulator._listing import parse_query

from .conftest import ACCOUNT_ID, CallbackReceiver, EmulatorFactory
from .test_emulator import BASIC, FROM, LOGO, TO, FakeClock, get, post, sms

SPEC = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "bandwidth.yml"
UK = "+447700900123"
CAMPAIGN = "CJEUMDK"
Http = aiohttp.ClientSession


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@dataclass
class Schema:
    """One ``components.schemas`` entry: its type, enum values, required and property attributes."""

    type: str = ""
    enum: set[str] = field(default_factory=set)
    required: set[str] = field(default_factory=set)
    properties: dict[str, dict[str, str]] = field(default_factory=dict)


@functools.cache
def spec_schema(name: str) -> Schema:
    """Read one schema of the spec by indentation (no YAML parser is a dependency).

    A schema sits at 4 spaces, its keys at 6, list items and properties at 8, a property's
    attributes at 10. The first entry of that name wins: ``components.schemas`` comes first.
    """
    if not SPEC.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{SPEC} is missing: CI lays shared/ beside the repository")
        pytest.skip(f"{SPEC} is not beside this checkout")
    lines = SPEC.read_text().splitlines()
    start = lines.index(f"    {name}:")
    schema = Schema()
    section = ""
    current: dict[str, str] | None = None
    for line in lines[start + 1 :]:
        text = line.strip()
        indent = len(line) - len(line.lstrip())
        if text and indent <= 4:
            break
        if indent == 6:
            section, _, value = text.partition(":")
            if section == "type":
                schema.type = value.strip()
        elif indent == 8 and text.startswith("- ") and section in ("enum", "required"):
            (schema.enum if section == "enum" else schema.required).add(text[2:].strip("'"))
        elif indent == 8 and section == "properties" and text.endswith(":"):
            current = schema.properties[text[:-1]] = {}
        elif indent == 10 and section == "properties" and current is not None and ":" in text:
            key, _, value = text.partition(":")
            current[key] = value.strip().strip("'")
    return schema


_PYTHON_TYPES: dict[str, type | tuple[type, ...]] = {
    "string": str,
    "integer": int,
    "boolean": bool,
    "array": list,
    "object": dict,
}


def assert_value(where: str, value: Any, attributes: dict[str, str]) -> None:
    """``value`` fits a property: its type, its enum, its nested schema; null only if nullable."""
    if value is None:
        assert attributes.get("nullable") == "true", f"{where} is null but not nullable in the spec"
        return
    ref = attributes.get("$ref")
    if ref is None:
        kind = attributes["type"]
        assert isinstance(value, _PYTHON_TYPES[kind]), (where, value)
        assert kind == "boolean" or not isinstance(value, bool), (where, value)
        return
    target = spec_schema(ref.rsplit("/", 1)[-1])
    if target.enum:
        assert value in target.enum, (where, value, target.enum)
    elif target.properties:
        assert_matches_schema(where, value, target)
    else:
        assert_value(where, value, {"type": target.type})


def assert_matches_schema(where: str, body: Any, schema: Schema) -> None:
    """``body`` has only the schema's properties, every required one, each of the right shape."""
    assert isinstance(body, dict), (where, body)
    assert set(body) <= set(schema.properties), f"{where}: not in the spec: {set(body) - set(schema.properties)}"
    assert schema.required <= set(body), f"{where}: required but missing: {schema.required - set(body)}"
    for key, value in body.items():
        assert_value(f"{where}.{key}", value, schema.properties[key])


async def list_messages(http: Http, emu: Emulator, **params: Any) -> Any:
    status, body, _ = await get(http, f"{emu.url}/users/{ACCOUNT_ID}/messages", params=params)
    assert status == 200, body
    return body


# --- media ---------------------------------------------------------------------------------------


async def test_deleting_media_twice_answers_204_both_times(emulator: Emulator, http: Http) -> None:
    url = f"{emulator.url}/users/{ACCOUNT_ID}/media/py_cat.jpeg"
    async with http.put(url, data=b"\xff\xd8cat", headers={"Authorization": BASIC, "Content-Type": "image/jpeg"}) as r:
        assert r.status == 204
    for _ in range(2):
        async with http.delete(url, headers={"Authorization": BASIC}) as resp:
            assert resp.status == 204
            assert await resp.read() == b""
    assert (await get(http, url))[0] == 404  # gone, for all that
    # A never-uploaded id: also 204 (a store that forgets deleted ids cannot tell the two apart).
    async with http.delete(
        f"{emulator.url}/users/{ACCOUNT_ID}/media/never/was.png", headers={"Authorization": BASIC}
    ) as r:
        assert r.status == 204
    async with http.delete(url) as resp:  # but credentials still count
        assert resp.status == 401
    async with http.delete(f"{emulator.url}/users/42/media/py_cat.jpeg", headers={"Authorization": BASIC}) as r:
        assert r.status == 403


async def test_media_list_items_are_the_spec_media_schema(emulator: Emulator, http: Http) -> None:
    url = f"{emulator.url}/users/{ACCOUNT_ID}/media/a/b.png"
    async with http.put(url, data=b"12345", headers={"Authorization": BASIC, "Content-Type": "image/png"}) as r:
        assert r.status == 204
    status, items, _ = await get(http, f"{emulator.url}/users/{ACCOUNT_ID}/media")
    assert status == 200
    schema = spec_schema("media")
    assert [set(item) for item in items] == [set(schema.properties)]
    assert_matches_schema("media", items[0], schema)
    assert items[0] == {"content": url, "contentLength": 5, "mediaName": "a/b.png"}


# --- list items ------------------------------------------------------------------------------------


async def test_a_us_to_uk_list_item_carries_every_spec_field(emulator_factory: EmulatorFactory, http: Http) -> None:
    async with emulator_factory(campaign_id=CAMPAIGN) as emu:
        status, msg, _ = await post(http, emu, sms(to=[UK], text="Hello from bwasync"))
        assert status == 202
        body = await list_messages(http, emu, messageId=msg["id"])
    [item] = body["messages"]
    schema = spec_schema("listMessageItem")
    assert list(item) == list(schema.properties)  # every field, in the spec's order, nothing else
    assert_matches_schema("item", item, schema)
    assert_matches_schema("list", body, spec_schema("messagesList"))
    assert all(value is not None for value in item.values()), item
    assert item["callingNumberCountryA3"] == "USA" and item["calledNumberCountryA3"] == "GBR"
    assert item["sourceTn"] == FROM and item["destinationTn"] == UK and item["accountId"] == ACCOUNT_ID
    assert item["messageStatus"] == "DELIVERED" and item["errorCode"] == 0
    assert item["messageDirection"] == "OUTBOUND" and item["messageType"] == "sms"
    assert item["messageLength"] == 18 and item["messageSize"] == 16  # 18 GSM-7 septets packed in 16 bytes
    assert item["attachmentCount"] == 0 and item["recipientCount"] == 1
    assert item["product"] == "LOCAL_A2P" and item["campaignId"] == CAMPAIGN and item["campaignClass"] == "T"
    assert item["bwLatency"] == 0 and item["carrierLatency"] == 0 and item["location"] == "emulator"
    assert item["receiveTime"] == msg["time"]


async def test_list_item_values_follow_the_message(emulator_factory: EmulatorFactory, http: Http) -> None:
    clock = FakeClock()
    async with emulator_factory(dequeue_rate=1.0, callback_delay=3.0, clock=clock, location=None) as emu:
        media = f"{emu.url}/users/{ACCOUNT_ID}/media/pic.png"
        async with http.put(media, data=b"x" * 1000, headers={"Authorization": BASIC}) as resp:
            assert resp.status == 204
        await post(http, emu, sms(text="ж" * 80))  # UCS-2, 2 parts: 160 bytes + 2 headers; then 2 s in queue
        await post(http, emu, sms(to=["+16135550100"], text="hi", media=[media, LOGO]))  # to Canada
        await post(http, emu, sms(**{"from": "ACMECorp", "to": ["+33612345678"]}))
        await post(http, emu, sms(**{"from": "+18885550100"}))  # toll-free

        async def item(**params: Any) -> dict[str, Any]:
            [found] = (await list_messages(http, emu, **params))["messages"]
            return dict(found)

        long = await item(sourceTn=FROM, messageType="sms", destinationTn=TO)
        assert long["messageSize"] == 160 + 12 and long["segmentCount"] == 2 and long["messageLength"] == 80
        assert long["product"] == "P2P" and long["campaignId"] is None and long["campaignClass"] is None
        assert long["location"] is None
        mms = await item(messageType="mms")
        assert mms["messageStatus"] == "QUEUED" and mms["bwLatency"] is None and mms["carrierLatency"] is None
        assert mms["messageSize"] == 2 + 1000  # the text in UTF-8 and the file uploaded here; LOGO unknown
        assert mms["carrierName"] is None and mms["calledNumberCountryA3"] == "CAN"
        assert mms["attachmentCount"] == 2
        alpha = await item(sourceTn="ACMECorp")
        assert alpha["product"] == "ALPHA_NUMERIC" and alpha["callingNumberCountryA3"] is None
        assert alpha["calledNumberCountryA3"] == "FRA"
        assert (await item(sourceTn="+18885550100"))["product"] == "TOLL_FREE"

        clock.now += 2 + 3  # the MMS left the queue after 2 s, was sending for 3
        mms = await item(messageType="mms")
        assert mms["messageStatus"] == "SENT" and mms["bwLatency"] == 5 and mms["carrierLatency"] is None
        clock.now += 3
        mms = await item(messageType="mms")
        assert mms["messageStatus"] == "DELIVERED" and mms["bwLatency"] == 5 and mms["carrierLatency"] == 3

        # The fields the spec lets a search filter on are applied.
        async def count(**params: Any) -> int:
            return int((await list_messages(http, emu, **params))["totalCount"])

        assert await count(calledNumberCountryA3="can") == 1
        assert await count(callingNumberCountryA3="USA") == 3
        assert await count(product="TOLL_FREE") == 1
        assert await count(fromMessageSize=1000) == 1
        assert await count(toMessageSize=172, fromMessageSize=172) == 1
        assert await count(fromBwLatency=5) == 1
        assert await count(fromCarrierLatency=3, messageType="mms") == 1
        assert await count(bwQueued="true") == 0
        assert await count(carrierQueued="false") == 4
        status, err, _ = await get(http, f"{emu.url}/users/{ACCOUNT_ID}/messages", params={"product": "FAX"})
        assert status == 400 and err["type"] == "request-validation"


async def test_a_failed_recipient_lists_its_error_code(emulator_factory: EmulatorFactory, http: Http) -> None:
    async with emulator_factory(p_delivered=0.0, failure_codes=(4770,)) as emu:
        await post(http, emu, sms())
        [item] = (await list_messages(http, emu, sourceTn=FROM))["messages"]
    assert item["messageStatus"] == "FAILED" and item["errorCode"] == 4770
    assert item["carrierLatency"] == 0


# --- page info -------------------------------------------------------------------------------------


async def test_page_info_links_follow_the_spec(emulator: Emulator, http: Http) -> None:
    for i in range(5):
        await post(http, emulator, sms(tag=str(i)))
    schema = spec_schema("pageInfo").properties
    assert set(schema) == {"prevPage", "nextPage", "prevPageToken", "nextPageToken"}
    first = await list_messages(http, emulator, sourceTn=FROM, limit=2, sort="receiveTime:asc")
    # A page without a neighbour leaves its link out, as Bandwidth's own example ("pageInfo": {}).
    assert set(first["pageInfo"]) == {"nextPage", "nextPageToken"}
    info = first["pageInfo"]
    for key in info:
        assert isinstance(info[key], str) and schema[key]["type"] == "string"
    link = urlsplit(info["nextPage"])
    # The link is absolute, to the same endpoint, keeps every filter and carries the token.
    assert f"{link.scheme}://{link.netloc}{link.path}" == f"{emulator.url}/users/{ACCOUNT_ID}/messages"
    query = parse_qs(link.query)
    assert query["pageToken"] == [info["nextPageToken"]]
    assert query["sourceTn"] == [FROM] and query["limit"] == ["2"] and query["sort"] == ["receiveTime:asc"]

    status, second, _ = await get(http, info["nextPage"])
    assert status == 200 and set(second["pageInfo"]) == set(schema)
    status, by_token, _ = await get(
        http,
        f"{emulator.url}/users/{ACCOUNT_ID}/messages",
        params={"sourceTn": FROM, "limit": 2, "sort": "receiveTime:asc", "pageToken": info["nextPageToken"]},
    )
    assert by_token["messages"] == second["messages"]  # the token alone reaches the same page
    status, back, _ = await get(http, second["pageInfo"]["prevPage"])
    assert back["messages"] == first["messages"] and "prevPage" not in back["pageInfo"]
    status, last, _ = await get(http, second["pageInfo"]["nextPage"])
    assert [m["messageId"] for m in last["messages"]] == [emulator.accepted[4].id]
    assert set(last["pageInfo"]) == {"prevPage", "prevPageToken"}
    single = await list_messages(http, emulator, sourceTn=FROM)
    assert single["pageInfo"] == {} and single["totalCount"] == 5


# --- pure parts ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "a3"),
    [
        ("+15553332222", "USA"),
        ("+447700900123", "GBR"),
        ("+16135550100", "CAN"),  # NANP: the area code decides
        ("+18765550100", "JAM"),
        ("+17875550100", "PRI"),
        ("+74951234567", "RUS"),
        ("+77012345678", "KAZ"),
        ("+33612345678", "FRA"),
        ("+212612345678", "MAR"),  # three-digit code
        ("+8613812345678", "CHN"),
        ("+80012345678", None),  # non-geographic
        ("ACMECorp", None),
    ],
)
def test_country_a3_from_the_calling_code(number: str, a3: str | None) -> None:
    assert country_a3(number) == a3


def test_toll_free_numbers() -> None:
    assert is_toll_free("+18885550100") and is_toll_free("+18335550100")
    assert not is_toll_free("+15553332222") and not is_toll_free("+448005550100")


def test_every_list_filter_of_the_spec_counts_as_a_filter() -> None:
    values = {
        "product": "P2P",
        "location": "x",
        "callingNumberCountryA3": "USA",
        "calledNumberCountryA3": "GBR",
        "fromMessageSize": "1",
        "toMessageSize": "2",
        "fromBwLatency": "1",
        "fromCarrierLatency": "1",
        "bwQueued": "true",
        "carrierQueued": "false",
    }
    for name, value in values.items():
        assert len(parse_query({name: value}).predicates) == 1, name


# --- every other answer against its schema -------------------------------------------------------


async def test_the_202_body_is_the_message_schema(emulator: Emulator, http: Http) -> None:
    expiration = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    for fields in (
        {},
        {"to": [TO, UK], "media": [LOGO], "tag": "t", "priority": "high", "expiration": expiration},
        {"from": "ACMECorp", "text": "hi"},
    ):
        status, body, resp = await post(http, emulator, sms(**fields))
        assert status == 202 and resp.content_type == "application/json"
        assert_matches_schema("202", body, spec_schema("message"))
        assert body["direction"] == "out" and body["owner"] == body["from"]


async def test_error_bodies_are_the_spec_error_schemas(emulator_factory: EmulatorFactory, http: Http) -> None:
    plain = spec_schema("messagingRequestError")
    async with emulator_factory(dequeue_rate=0.001, queue_seconds=1000, list_rate_limit=(1, 60.0)) as emu:
        messages = f"{emu.url}/users/{ACCOUNT_ID}/messages"
        status, body, _ = await post(http, emu, sms(**{"from": "+1invalid", "to": ["12"]}))
        assert status == 400
        assert_matches_schema("400", body, spec_schema("createMessageRequestError"))
        assert [e["fieldName"] for e in body["fieldErrors"]] == ["from", "to"]
        answers = [
            await post(http, emu, sms(), auth=None),  # 401
            await post(http, emu, sms(), account="42"),  # 403
            await post(http, emu, b"<xml/>", headers={"Content-Type": "application/xml"}),  # 415
        ]
        assert (await post(http, emu, sms()))[0] == 202  # fills the one-segment queue
        answers.append(await post(http, emu, sms()))  # 429: queue full
        answers.append(await get(http, messages))  # 400: a list needs a filter
        answers.append(await get(http, messages, params={"sourceTn": FROM}))  # 429: list rate limit
        answers.append(await get(http, f"{emu.url}/users/{ACCOUNT_ID}/media/none"))  # 404
        async with http.delete(messages, headers={"Authorization": BASIC}) as resp:  # 405
            answers.append((resp.status, await resp.json(), resp))
        assert [status for status, _, _ in answers] == [401, 403, 415, 429, 400, 429, 404, 405]
        for status, body, resp in answers:
            assert resp.content_type == "application/json"
            assert_matches_schema(str(status), body, plain)


async def test_status_callbacks_are_the_spec_schema(
    emulator_factory: EmulatorFactory, callback_receiver: CallbackReceiver, http: Http
) -> None:
    async with emulator_factory(callback_url=callback_receiver.url, p_delivered=0.5, seed=7) as emu:
        await post(http, emu, sms(to=[TO, UK], tag="group"))
        await post(http, emu, sms(media=[LOGO], priority="high"))
        deliveries = await callback_receiver.collect(3 + 3)  # sent + 2 final; sending + sent + final
    schema = spec_schema("statusCallback")
    types = set()
    for delivery in deliveries:
        assert delivery.headers["Content-Type"] == "application/json; charset=utf-8"
        events = msgspec.json.decode(delivery.body)
        assert isinstance(events, list) and len(events) == 1
        assert_matches_schema("callback", events[0], schema)
        assert events[0]["message"]["text"] == ""
        types.add(events[0]["type"])
        if events[0]["type"] == "message-failed":
            assert isinstance(events[0]["errorCode"], int)
    assert {"message-sending", "message-sent"} <= types


async def test_the_token_answer_is_an_oauth2_client_credentials_answer(emulator: Emulator, http: Http) -> None:
    form = {"grant_type": "client_credentials"}
    async with http.post(emulator.token_url, data=form, headers={"Authorization": BASIC}) as resp:
        assert resp.status == 200 and resp.content_type == "application/json"
        assert resp.headers["Cache-Control"] == "no-store"
        body = await resp.json()
    assert set(body) == {"access_token", "token_type", "expires_in"}  # RFC 6749 §5.1
    assert body["token_type"] == "Bearer" and isinstance(body["expires_in"], int)
    async with http.post(emulator.token_url, data=form, headers={"Authorization": "Basic eDp5"}) as resp:
        assert resp.status == 401 and (await resp.json()) == {"error": "invalid_client"}  # RFC 6749 §5.2
        assert resp.headers["WWW-Authenticate"].startswith("Basic")
