"""The emulator's answers against Bandwidth's OpenAPI document, field by field.

The list item and page-info fields are read from the spec itself at test time
(``../shared/reference/bandwidth.yml`` beside the repository, as in CI), so a field the spec
adds is a failing test here rather than a silent gap.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from bwasync.emulator import Emulator
from bwasync.emulator._countries import country_a3, is_toll_free
from bwasync.emulator._listing import parse_query

from .conftest import ACCOUNT_ID, EmulatorFactory
from .test_emulator import BASIC, FROM, LOGO, TO, FakeClock, get, post, sms

SPEC = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "bandwidth.yml"
UK = "+447700900123"
CAMPAIGN = "CJEUMDK"
Http = aiohttp.ClientSession


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def spec_schema(name: str) -> dict[str, dict[str, str]]:
    """``{property: {"type"|"$ref"|"nullable": ...}}`` of one ``components.schemas`` entry.

    The document is YAML, read by indentation (no YAML parser is a dependency): a schema at
    4 spaces, its ``properties:`` at 6, each property at 8, its attributes at 10.
    """
    if not SPEC.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{SPEC} is missing: CI lays shared/ beside the repository")
        pytest.skip(f"{SPEC} is not beside this checkout")
    lines = SPEC.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line == f"    {name}:")
    props: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    in_props = False
    for line in lines[start + 1 :]:
        indent = len(line) - len(line.lstrip())
        if line.strip() and indent <= 4:
            break
        if indent == 6:
            in_props = line.strip() == "properties:"
        elif in_props and indent == 8 and line.rstrip().endswith(":"):
            current = props[line.strip()[:-1]] = {}
        elif in_props and indent == 10 and current is not None and ":" in line:
            key, _, value = line.strip().partition(":")
            current[key] = value.strip().strip("'")
    return props


def spec_enum(name: str) -> set[str]:
    lines = SPEC.read_text().splitlines()
    start = lines.index(f"    {name}:")
    values: set[str] = set()
    for line in lines[start + 1 :]:
        if line.strip() and len(line) - len(line.lstrip()) <= 4:
            break
        if line.startswith("        - "):
            values.add(line.strip()[2:])
    return values


def assert_matches_spec(item: dict[str, Any], schema: dict[str, dict[str, str]]) -> None:
    """Each value has the spec's type; a ``$ref`` to an enum holds one of its values."""
    for field, prop in schema.items():
        value = item[field]
        if value is None:
            assert prop.get("nullable") == "true", f"{field} is null but not nullable in the spec"
            continue
        ref = prop.get("$ref", "")
        if ref:
            target = ref.rsplit("/", 1)[-1]
            if target == "segmentCount":
                assert isinstance(value, int), field
            else:
                assert value in spec_enum(target), (field, value)
        elif prop["type"] == "integer":
            assert isinstance(value, int) and not isinstance(value, bool), (field, value)
        else:
            assert prop["type"] == "string" and isinstance(value, str), (field, value)


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
    assert [set(item) for item in items] == [set(schema)]
    assert_matches_spec(items[0], schema)
    assert items[0] == {"content": url, "contentLength": 5, "mediaName": "a/b.png"}


# --- list items ------------------------------------------------------------------------------------


async def test_a_us_to_uk_list_item_carries_every_spec_field(emulator_factory: EmulatorFactory, http: Http) -> None:
    async with emulator_factory(campaign_id=CAMPAIGN) as emu:
        status, msg, _ = await post(http, emu, sms(to=[UK], text="Hello from bwasync"))
        assert status == 202
        body = await list_messages(http, emu, messageId=msg["id"])
    [item] = body["messages"]
    schema = spec_schema("listMessageItem")
    assert list(item) == list(schema)  # every field, in the spec's order, nothing else
    assert_matches_spec(item, schema)
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
    schema = spec_schema("pageInfo")
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
