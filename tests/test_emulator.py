"""The emulator, driven over HTTP by a raw aiohttp client (not bwasync's own client).

Every status code and body Bandwidth documents, the queue model, list and media endpoints,
OAuth2, faults (including dropped connections), reproducibility, status callbacks, and the
standalone ``python -m bwasync.emulator``. Timing-dependent parts use an injected clock or wait
on queues/events with a timeout; none sleeps a fixed time.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp import web

from bwasync._models import decode_message
from bwasync._validation import validate_wire
from bwasync.emulator import AcceptedMessage, Emulator, EmulatorConfig, build_parser, config_from_args
from bwasync.emulator._config import knob_fields
from bwasync.emulator._lifecycle import FAILED, SENT, status_at, timeline
from bwasync.emulator._listing import ListQueryError, parse_query
from bwasync.emulator._state import AccountQueue, TokenStore, WindowLimiter, queue_full_description

from .conftest import ACCOUNT_ID, CallbackReceiver, EmulatorFactory

APP_ID = "93de2206-9669-4e07-948d-329f4b722ee2"
FROM = "+15553332222"
TO = "+15554443333"
TO2 = "+15552223333"
LOGO = "https://dev.bandwidth.com/images/bandwidth-logo.png"
GITHUB = "https://dev.bandwidth.com/images/github_logo.png"
BASIC = "Basic " + base64.b64encode(b"u:p").decode()
ID_RE = re.compile(r"^\d{13}[0-9a-z]{16}$")
TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
DROPPED = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)
Http = aiohttp.ClientSession


class FakeClock:
    """A monotonic clock a test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def sms(**fields: Any) -> dict[str, Any]:
    return {"applicationId": APP_ID, "to": [TO], "from": FROM, "text": "Hello world", **fields}


async def post(
    http: Http,
    emu: Emulator,
    body: Any,
    *,
    account: str = ACCOUNT_ID,
    auth: str | None = BASIC,
    **kwargs: Any,
) -> tuple[int, Any, aiohttp.ClientResponse]:
    headers = dict(kwargs.pop("headers", {}))
    if auth is not None:
        headers["Authorization"] = auth
    data = body if isinstance(body, bytes) else msgspec.json.encode(body)
    headers.setdefault("Content-Type", "application/json")
    async with http.post(f"{emu.url}/users/{account}/messages", data=data, headers=headers, **kwargs) as resp:
        raw = await resp.read()
        parsed = msgspec.json.decode(raw) if resp.content_type == "application/json" and raw else raw
        return resp.status, parsed, resp


async def get(
    http: Http, url: str, *, auth: str | None = BASIC, **kwargs: Any
) -> tuple[int, Any, aiohttp.ClientResponse]:
    headers = dict(kwargs.pop("headers", {}))
    if auth is not None:
        headers["Authorization"] = auth
    async with http.get(url, headers=headers, **kwargs) as resp:
        raw = await resp.read()
        parsed = msgspec.json.decode(raw) if resp.content_type == "application/json" and raw else raw
        return resp.status, parsed, resp


# --- create: the five documented sends ----------------------------------------------------------

FIVE_SENDS = {
    "single SMS": ({"to": [TO], "text": "Hello world"}, 1),
    "MMS": ({"to": [TO], "text": "Look", "media": [LOGO]}, 1),
    "several pictures": ({"to": [TO], "media": [LOGO, GITHUB, LOGO + "?2"]}, 1),
    "group SMS": ({"to": [TO, TO2], "text": "Hello group"}, 1),
    "group MMS": ({"to": [TO, TO2], "text": "Hello group", "media": [LOGO]}, 1),
}


@pytest.mark.parametrize("name", list(FIVE_SENDS))
async def test_the_five_documented_sends_answer_202_with_the_message(emulator: Emulator, http: Http, name: str) -> None:
    fields, segment_count = FIVE_SENDS[name]
    body = {"applicationId": APP_ID, "from": FROM, "tag": name, **fields}
    status, msg, resp = await post(http, emulator, body)
    assert status == 202
    assert resp.content_type == "application/json"
    assert ID_RE.match(msg["id"]) and TIME_RE.match(msg["time"])
    assert msg["owner"] == FROM and msg["from"] == FROM
    assert msg["applicationId"] == APP_ID
    assert msg["direction"] == "out"
    assert msg["to"] == fields["to"]
    assert msg["segmentCount"] == segment_count
    assert msg["tag"] == name
    assert msg.get("media") == fields.get("media")
    assert msg.get("text") == fields.get("text")
    decoded = decode_message(msgspec.json.encode(msg))  # the client's decoder reads it
    assert decoded.id == msg["id"]
    [record] = emulator.accepted
    assert record.id == msg["id"] and record.account_id == ACCOUNT_ID
    assert record.segment_count == segment_count and record.recipients == len(fields["to"])
    assert record.time == msg["time"]


@pytest.mark.parametrize(
    ("text", "segments"),
    [("a" * 160, 1), ("a" * 161, 2), ("👋" * 35, 1), ("é" + "ü" * 70, 1), ("Ω" * 70 + "ж", 2), ("[" * 80, 1)],
)
async def test_segment_count_follows_the_encoding(emulator: Emulator, http: Http, text: str, segments: int) -> None:
    status, msg, _ = await post(http, emulator, sms(text=text))
    assert status == 202 and msg["segmentCount"] == segments


async def test_optional_fields_are_echoed_and_to_becomes_a_list(emulator: Emulator, http: Http) -> None:
    expiration = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    status, msg, _ = await post(http, emulator, sms(to=TO, tag="t", priority="high", expiration=expiration))
    assert status == 202
    assert msg["to"] == [TO]
    assert (msg["tag"], msg["priority"], msg["expiration"]) == ("t", "high", expiration)
    assert "media" not in msg


async def test_ids_are_unique(emulator: Emulator, http: Http) -> None:
    ids = {(await post(http, emulator, sms()))[1]["id"] for _ in range(50)}
    assert len(ids) == 50


# --- create: errors -------------------------------------------------------------------------------


async def test_400_lists_every_field_error(emulator: Emulator, http: Http) -> None:
    body = {"applicationId": "", "to": ["12", TO, TO], "from": "+1invalid", "text": "x" * 2049, "priority": "urgent"}
    status, err, _ = await post(http, emulator, body)
    assert status == 400
    assert err["type"] == "request-validation"
    assert err["description"] == "Your request could not be accepted."
    expected = msgspec.to_builtins(validate_wire(body))
    assert err["fieldErrors"] == expected
    assert {e["fieldName"] for e in err["fieldErrors"]} == {"applicationId", "to", "from", "text", "priority"}
    assert {
        "fieldName": "from",
        "description": "'+1invalid' must be replaced with a valid E164 formatted telephone number",
    } in err["fieldErrors"]
    assert emulator.accepted == [] and emulator.stats.accepted == 0


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b'"text"'])
async def test_400_for_a_body_that_is_not_a_json_object(emulator: Emulator, http: Http, raw: bytes) -> None:
    status, err, _ = await post(http, emulator, raw)
    assert status == 400
    assert err["type"] == "request-validation"
    assert [e["fieldName"] for e in err["fieldErrors"]] == ["body"]


@pytest.mark.parametrize(
    "auth",
    [None, "Basic " + base64.b64encode(b"u:wrong").decode(), "Basic !!notbase64", "Bearer unknown-token", "Digest x"],
)
async def test_401_without_valid_credentials(emulator: Emulator, http: Http, auth: str | None) -> None:
    status, err, _ = await post(http, emulator, sms(), auth=auth)
    assert status == 401
    assert err == {"type": "unauthorized", "description": "Authentication Failed"}
    assert emulator.accepted == []


async def test_basic_credentials_in_another_spelling_are_accepted(emulator: Emulator, http: Http) -> None:
    status, _, _ = await post(http, emulator, sms(), auth="basic  " + base64.b64encode(b"u:p").decode())
    assert status == 202


async def test_credentials_can_change_mid_run(emulator: Emulator, http: Http) -> None:
    emulator.config.password = "rotated"
    assert (await post(http, emulator, sms()))[0] == 401
    assert (await post(http, emulator, sms(), auth="Basic " + base64.b64encode(b"u:rotated").decode()))[0] == 202


async def test_403_for_another_account(emulator: Emulator, http: Http) -> None:
    status, err, _ = await post(http, emulator, sms(), account="1234567")
    assert status == 403
    assert err == {"type": "forbidden", "description": "Access Denied"}


async def test_403_for_a_sender_not_allowed(emulator_factory: EmulatorFactory, http: Http) -> None:
    async with emulator_factory(allowed_senders={FROM}) as emu:
        assert (await post(http, emu, sms()))[0] == 202
        status, err, _ = await post(http, emu, sms(**{"from": "+15550001111"}))
        assert status == 403 and err["type"] == "forbidden"
        assert len(emu.accepted) == 1


async def test_415_for_another_content_type(emulator: Emulator, http: Http) -> None:
    status, err, _ = await post(http, emulator, b"hello", headers={"Content-Type": "text/plain"})
    assert status == 415
    assert err == {
        "type": "unsupported-content-type",
        "description": "Content type 'text/plain' not supported. Please use 'application/json'",
    }
    ok, _, _ = await post(http, emulator, sms(), headers={"Content-Type": "application/json; charset=utf-8"})
    assert ok == 202


async def test_404_spring_body_for_an_unknown_path(emulator: Emulator, http: Http) -> None:
    status, err, _ = await get(http, f"{emulator.url}/users/{ACCOUNT_ID}/nothing-here")
    assert status == 404
    assert set(err) == {"timestamp", "status", "error", "message", "path"}
    assert err["status"] == 404 and err["error"] == "Not Found" and err["message"] == "No message available"
    assert err["path"] == f"/api/v2/users/{ACCOUNT_ID}/nothing-here"
    assert TIME_RE.match(err["timestamp"])


async def test_405_for_a_method_a_resource_does_not_serve(emulator: Emulator, http: Http) -> None:
    async with http.delete(f"{emulator.url}/users/{ACCOUNT_ID}/messages", headers={"Authorization": BASIC}) as resp:
        assert resp.status == 405
        assert resp.headers["Allow"] == "GET, POST"
        assert (await resp.json())["type"] == "method-not-allowed"


# --- OAuth2 ------------------------------------------------------------------------------------


async def test_token_endpoint_issues_bearer_tokens_that_expire(emulator_factory: EmulatorFactory, http: Http) -> None:
    clock = FakeClock()
    async with emulator_factory(client_id="cid", client_secret="secret", token_ttl=60, clock=clock) as emu:
        creds = "Basic " + base64.b64encode(b"cid:secret").decode()
        form = {"grant_type": "client_credentials"}
        async with http.post(emu.token_url, data=form, headers={"Authorization": creds}) as resp:
            assert resp.status == 200
            assert resp.headers["Cache-Control"] == "no-store"
            token = await resp.json()
        assert token["token_type"] == "Bearer" and token["expires_in"] == 60
        bearer = f"Bearer {token['access_token']}"
        assert (await post(http, emu, sms(), auth=bearer))[0] == 202
        clock.now += 59.9
        assert (await post(http, emu, sms(), auth=bearer))[0] == 202
        clock.now += 0.2
        status, err, _ = await post(http, emu, sms(), auth=bearer)
        assert status == 401 and err["type"] == "unauthorized"
        # Client credentials in the form work too.
        form_creds = {**form, "client_id": "cid", "client_secret": "secret"}
        async with http.post(emu.token_url, data=form_creds) as resp:
            assert resp.status == 200
        assert emu.stats.tokens_issued == 2
        assert len(emu.accepted) == 2


async def test_token_endpoint_rejects_wrong_clients_and_grants(emulator: Emulator, http: Http) -> None:
    wrong = "Basic " + base64.b64encode(b"u:nope").decode()
    async with http.post(
        emulator.token_url, data={"grant_type": "client_credentials"}, headers={"Authorization": wrong}
    ) as r:
        assert r.status == 401 and await r.json() == {"error": "invalid_client"}
    async with http.post(emulator.token_url, data={"grant_type": "client_credentials"}) as r:
        assert r.status == 401
    async with http.post(emulator.token_url, data={"grant_type": "password"}, headers={"Authorization": BASIC}) as r:
        assert r.status == 400 and await r.json() == {"error": "unsupported_grant_type"}
    assert emulator.stats.tokens_issued == 0


def test_token_store_expiry_is_on_the_given_clock() -> None:
    store = TokenStore()
    token = store.issue(now=10.0, ttl=5.0)
    assert store.valid(token, 14.9) and not store.valid(token, 15.0)
    assert not store.valid("other", 11.0)


# --- the account queue ----------------------------------------------------------------------------


async def test_queue_full_is_429_without_retry_after(emulator_factory: EmulatorFactory, http: Http) -> None:
    clock = FakeClock()
    # 0.05 segments/s for 60 s: a queue of 3 segments.
    async with emulator_factory(dequeue_rate=0.05, queue_seconds=60, clock=clock) as emu:
        assert (await post(http, emu, sms(text="a" * 200)))[0] == 202  # 2 segments
        status, err, resp = await post(http, emu, sms(to=[TO, TO2]))  # 1 segment × 2 recipients
        assert status == 429
        assert "Retry-After" not in resp.headers
        assert err == {
            "type": "max-message-queue-size-exceeded",
            "description": "The SMS queue for your account is full and cannot accept more messages right now. "
            "Your allowed rate is 3 messages per minute. The capacity of this queue is 3 messages (1 minutes). "
            "Reduce your message sending rate, or contact support to increase your allowed rate.",
        }
        assert (await post(http, emu, sms()))[0] == 202  # one segment still fits
        clock.now += 20  # one segment drained
        assert (await post(http, emu, sms()))[0] == 202
        assert emu.stats.by_status[429] == 1 and len(emu.accepted) == 3
        emu.config.retry_after_on_429 = 7
        status, _, resp = await post(http, emu, sms(to=[TO, TO2]))
        assert status == 429 and resp.headers["Retry-After"] == "7"


def test_queue_description_with_bandwidths_defaults() -> None:
    text = queue_full_description(1.0, 900)
    assert "Your allowed rate is 60 messages per minute." in text
    assert "The capacity of this queue is 900 messages (15 minutes)." in text


def test_account_queue_is_a_leaky_bucket_of_segments() -> None:
    q = AccountQueue()
    assert q.admit(5, now=0.0, rate=1.0, queue_seconds=10) == 0.0
    assert q.admit(5, now=0.0, rate=1.0, queue_seconds=10) == 5.0  # waits behind the first five
    assert q.admit(1, now=0.0, rate=1.0, queue_seconds=10) is None
    assert q.level == 10
    assert q.admit(3, now=3.0, rate=1.0, queue_seconds=10) == 7.0
    assert q.admit(11, now=100.0, rate=1.0, queue_seconds=10) is None  # never fits
    assert q.level == 0


# --- list messages -------------------------------------------------------------------------------


async def list_messages(http: Http, emu: Emulator, **params: Any) -> tuple[int, Any, Any]:
    return await get(http, f"{emu.url}/users/{ACCOUNT_ID}/messages", params=params)


async def test_list_needs_at_least_one_filter(emulator: Emulator, http: Http) -> None:
    status, err, _ = await list_messages(http, emulator)
    assert status == 400 and err["type"] == "request-validation"
    assert "At least one" in err["description"]
    status, _, _ = await list_messages(http, emulator, limit=10)  # paging alone is not a filter
    assert status == 400


async def test_list_filters(emulator_factory: EmulatorFactory, http: Http) -> None:
    async with emulator_factory(campaign_id="CJEUMDK") as emu:
        await post(http, emu, sms(tag="a"))
        await post(http, emu, sms(to=[TO, TO2], text="b" * 300))  # group, 2 segments
        await post(http, emu, sms(**{"from": "+15550001111", "media": [LOGO]}))
        emu.config.p_delivered = 0.0
        emu.config.failure_codes = (4720,)
        await post(http, emu, sms(to=["+15557778888"]))

        async def count(**params: Any) -> int:
            status, body, _ = await list_messages(http, emu, **params)
            assert status == 200, body
            assert body["totalCount"] == len(body["messages"])
            return int(body["totalCount"])

        assert await count(sourceTn=FROM) == 4  # one item per recipient: 1 + 2 + 1
        assert await count(sourceTn="+15550001111") == 1
        assert await count(destinationTn=f"{TO},{TO2}") == 4
        assert await count(destinationTn="5554443") == 3  # a partial of 5+ characters
        assert await count(messageType="mms") == 1
        assert await count(messageStatus="FAILED") == 1
        assert await count(errorCode=4720) == 1
        assert await count(messageStatus="DELIVERED") == 4
        assert await count(messageDirection="OUTBOUND") == 5
        assert await count(messageDirection="INBOUND") == 0
        assert await count(fromSegmentCount=2) == 2
        assert await count(toSegmentCount=1) == 3
        assert await count(campaignId="CJEUMDK") == 5
        first = emu.accepted[0]
        assert await count(messageId=first.id) == 1
        assert await count(fromDateTime=first.time, toDateTime=emu.accepted[-1].time) == 5
        assert await count(toDateTime="2001-01-01T00:00:00Z") == 0

        _, body, _ = await list_messages(http, emu, errorCode=4720)
        [failed] = body["messages"]
        assert failed["messageStatus"] == "FAILED" and failed["destinationTn"] == "+15557778888"
        _, body, _ = await list_messages(http, emu, destinationTn=TO2)
        [item] = body["messages"]
        assert item["recipientCount"] == 2 and item["segmentCount"] == 2 and item["messageType"] == "sms"
        assert "text" not in item and item["errorCode"] == 0
        assert item["carrierName"] in emu.config.carrier_names
        _, body, _ = await list_messages(http, emu, carrierName=item["carrierName"].lower(), destinationTn=TO2)
        assert body["totalCount"] == 1
        _, body, _ = await list_messages(http, emu, sourceTn=FROM, sort="destinationTn:asc")
        tns = [m["destinationTn"] for m in body["messages"]]
        assert tns == sorted(tns)


@pytest.mark.parametrize(
    "params",
    [
        {"destinationTn": "+155"},  # partial shorter than 5
        {"sourceTn": ",".join(f"+1555000{i:04d}" for i in range(11))},  # more than 10
        {"messageStatus": "LOST"},
        {"messageType": "fax"},
        {"errorCode": "x"},
        {"fromDateTime": "yesterday"},
        {"sourceTn": FROM, "sort": "text:asc"},
        {"sourceTn": FROM, "sort": "receiveTime:up"},
        {"sourceTn": FROM, "pageToken": "garbage!"},
        {"sourceTn": FROM, "limit": "0"},
        {"sourceTn": FROM, "limit": "10001"},
    ],
)
async def test_list_rejects_bad_queries(emulator: Emulator, http: Http, params: dict[str, str]) -> None:
    status, err, _ = await list_messages(http, emulator, **params)
    assert status == 400
    assert set(err) == {"type", "description"}


async def test_list_pages_with_tokens_and_full_urls(emulator: Emulator, http: Http) -> None:
    for i in range(7):
        await post(http, emulator, sms(tag=str(i)))
    seen: list[str] = []
    status, body, _ = await list_messages(http, emulator, sourceTn=FROM, limit=3, sort="receiveTime:asc")
    pages = 1
    assert status == 200 and body["totalCount"] == 7
    assert "prevPageToken" not in body["pageInfo"]
    while True:
        seen += [m["messageId"] for m in body["messages"]]
        info = body["pageInfo"]
        if "nextPageToken" not in info:
            assert "nextPage" not in info
            break
        assert info["nextPage"].startswith(f"{emulator.url}/users/{ACCOUNT_ID}/messages?")
        assert f"pageToken={info['nextPageToken']}" in info["nextPage"]
        status, body, _ = await get(http, info["nextPage"])  # the link works as is
        pages += 1
        assert status == 200 and "prevPageToken" in body["pageInfo"]
    assert pages == 3
    assert seen == [m.id for m in emulator.accepted]
    # limit + offset may not pass 10,000
    status, _, _ = await list_messages(http, emulator, sourceTn=FROM, limit=9999, pageToken=encode_offset(2))
    assert status == 400


def encode_offset(offset: int) -> str:
    from bwasync.emulator._state import encode_token

    return encode_token(offset)


async def test_list_rate_limit_is_429_with_retry_after(emulator_factory: EmulatorFactory, http: Http) -> None:
    clock = FakeClock()
    async with emulator_factory(list_rate_limit=(2, 60.0), clock=clock) as emu:
        for _ in range(2):
            assert (await list_messages(http, emu, sourceTn=FROM))[0] == 200
        clock.now += 10.5
        status, err, resp = await list_messages(http, emu, sourceTn=FROM)
        assert status == 429
        assert resp.headers["Retry-After"] == "50"
        assert err == {
            "type": "rate_limit_exceeded",
            "description": "Rate limit exceeded. Wait for Retry-After time before sending another request.",
        }
        clock.now += 50
        assert (await list_messages(http, emu, sourceTn=FROM))[0] == 200


def test_window_limiter() -> None:
    limiter = WindowLimiter()
    assert limiter.hit("ip", 0.0, 1, 10.0) is None
    assert limiter.hit("ip", 9.2, 1, 10.0) == 1
    assert limiter.hit("other", 9.2, 1, 10.0) is None
    assert limiter.hit("ip", 10.0, 1, 10.0) is None


async def test_list_status_follows_the_queue_and_the_lifecycle(emulator_factory: EmulatorFactory, http: Http) -> None:
    clock = FakeClock()
    async with emulator_factory(dequeue_rate=1.0, callback_delay=10.0, clock=clock) as emu:
        await post(http, emu, sms(text="x" * 500))  # 4 segments: the next message waits 4 s
        await post(http, emu, sms(to=[TO2], media=[LOGO]))

        async def status() -> str:
            _, body, _ = await list_messages(http, emu, destinationTn=TO2)
            return str(body["messages"][0]["messageStatus"])

        assert await status() == "QUEUED"
        clock.now += 4
        assert await status() == "SENDING"
        clock.now += 10
        assert await status() == "SENT"
        clock.now += 10
        assert await status() == "DELIVERED"


async def test_a_message_expiring_in_the_queue_fails_with_4360(emulator_factory: EmulatorFactory, http: Http) -> None:
    clock = FakeClock()
    async with emulator_factory(dequeue_rate=0.01, clock=clock) as emu:
        await post(http, emu, sms())  # the next message waits 100 s in the queue
        expiration = (datetime.now(UTC) + timedelta(seconds=30)).isoformat()
        assert (await post(http, emu, sms(to=[TO2], expiration=expiration)))[0] == 202
        _, body, _ = await list_messages(http, emu, destinationTn=TO2)
        assert body["messages"][0]["messageStatus"] == "QUEUED"
        clock.now += 100
        _, body, _ = await list_messages(http, emu, destinationTn=TO2)
        assert body["messages"][0]["messageStatus"] == "FAILED"
        assert body["messages"][0]["errorCode"] == 4360
        assert emu.accepted[1].expired and not emu.accepted[0].expired


def test_parse_query_needs_a_filter_and_ignores_unknown_parameters() -> None:
    assert len(parse_query({"product": "P2P", "unknownParam": "1"}).predicates) == 1
    with pytest.raises(ListQueryError):
        parse_query({"unknownParam": "1"})


# --- media ---------------------------------------------------------------------------------------


async def test_media_upload_download_overwrite_delete(emulator: Emulator, http: Http) -> None:
    media_id = "14762070468292kw2fuqty55yp2b2/0/bw.png"  # the spec's example: an id with slashes
    url = f"{emulator.url}/users/{ACCOUNT_ID}/media/{media_id}"
    headers = {"Authorization": BASIC, "Content-Type": "image/png", "Cache-Control": "no-cache"}
    async with http.put(url, data=b"\x89PNG one", headers=headers) as resp:
        assert resp.status == 204
    status, data, resp = await get(http, url)
    assert status == 200 and data == b"\x89PNG one"
    assert resp.headers["Content-Type"] == "image/png" and resp.headers["Cache-Control"] == "no-cache"
    async with http.put(url, data=b"two", headers={"Authorization": BASIC, "Content-Type": "text/plain"}) as resp:
        assert resp.status == 204
    status, data, resp = await get(http, url)
    assert data == b"two" and resp.headers["Content-Type"].startswith("text/plain")
    async with http.delete(url, headers={"Authorization": BASIC}) as resp:
        assert resp.status == 204
    status, err, _ = await get(http, url)
    assert status == 404
    assert err == {
        "type": "object-not-found",
        "description": "Media '14762070468292kw2fuqty55yp2b2/0/bw.png' not found",
    }
    assert (await get(http, url, auth=None))[0] == 401


async def test_media_list_pages_with_continuation_token(emulator: Emulator, http: Http) -> None:
    emulator.config.media_page_size = 2
    names = [f"dir/{i}.txt" for i in range(5)]
    for name in names:
        async with http.put(
            f"{emulator.url}/users/{ACCOUNT_ID}/media/{name}", data=name.encode(), headers={"Authorization": BASIC}
        ) as resp:
            assert resp.status == 204
    listed: list[dict[str, Any]] = []
    headers: dict[str, str] = {}
    pages = 0
    while True:
        status, items, resp = await get(http, f"{emulator.url}/users/{ACCOUNT_ID}/media", headers=headers)
        pages += 1
        assert status == 200
        listed += items
        token = resp.headers.get("Continuation-Token")
        if token is None:
            break
        headers = {"Continuation-Token": token}
    assert pages == 3
    assert [m["mediaName"] for m in listed] == names
    assert all(m["contentLength"] == len(m["mediaName"]) for m in listed)
    status, data, _ = await get(http, listed[3]["content"])  # the content URL downloads the file
    assert status == 200 and data == b"dir/3.txt"


# --- faults ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("knob", "status", "kind"), [("p_500", 500, "500"), ("p_503", 503, "503"), ("p_502_html", 502, "502_html")]
)
async def test_error_faults_are_not_accepted(emulator: Emulator, http: Http, knob: str, status: int, kind: str) -> None:
    setattr(emulator.config, knob, 1.0)
    got, body, resp = await post(http, emulator, sms())
    assert got == status
    if kind == "502_html":
        assert resp.content_type == "text/html"
        assert body.startswith(b"<html>") and b"502 Bad Gateway" in body
    else:
        assert set(body) == {"type", "description"}
    assert emulator.accepted == [] and emulator.stats.accepted == 0
    assert emulator.stats.faults == {kind: 1}
    assert emulator.stats.by_status[status] == 1


async def test_drop_before_gives_no_response_and_records_nothing(emulator: Emulator, http: Http) -> None:
    emulator.config.p_drop_before = 1.0
    with pytest.raises(DROPPED):
        await post(http, emulator, sms(tag="lost"))
    assert emulator.accepted == []
    assert emulator.stats.faults == {"drop_before": 1}
    assert sum(emulator.stats.by_status.values()) == 0
    emulator.config.p_drop_before = 0.0
    assert (await post(http, emulator, sms()))[0] == 202  # the client reconnects and carries on


async def test_drop_after_gives_no_response_but_the_message_is_accepted(emulator: Emulator, http: Http) -> None:
    emulator.config.p_drop_after = 1.0
    with pytest.raises(DROPPED):
        await post(http, emulator, sms(tag="ghost"))
    assert emulator.acceptance_counts() == {"ghost": 1}
    assert emulator.stats.faults == {"drop_after": 1} and emulator.stats.accepted == 1


async def test_a_dropped_connection_is_really_closed_without_a_status_line(emulator: Emulator) -> None:
    """Below aiohttp's client: the socket gets EOF (or a reset) and not a single byte."""
    emulator.config.p_drop_before = 1.0
    reader, writer = await asyncio.open_connection(emulator.host, emulator.port)
    body = msgspec.json.encode(sms())
    writer.write(
        f"POST /api/v2/users/{ACCOUNT_ID}/messages HTTP/1.1\r\nHost: x\r\nAuthorization: {BASIC}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    try:
        data = await asyncio.wait_for(reader.read(), 5)
    except ConnectionResetError:
        data = b""
    assert data == b""
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


async def test_slow_answers_outlast_the_client_timeout_but_are_accepted(emulator: Emulator, http: Http) -> None:
    emulator.config.p_slow = 1.0
    emulator.config.slow_seconds = 30.0
    with pytest.raises(asyncio.TimeoutError):
        await post(http, emulator, sms(tag="slow"), timeout=aiohttp.ClientTimeout(total=0.2))
    assert emulator.acceptance_counts() == {"slow": 1}
    assert emulator.stats.faults == {"slow": 1}
    emulator.config.slow_seconds = 0.05
    status, _, _ = await post(http, emulator, sms(tag="late"))
    assert status == 202  # a slow answer does come, eventually


async def test_stop_does_not_wait_for_slow_answers(emulator_factory: EmulatorFactory, http: Http) -> None:
    loop = asyncio.get_running_loop()
    async with emulator_factory(p_slow=1.0, slow_seconds=60.0) as emu:
        task = asyncio.create_task(post(http, emu, sms()))
        while emu.stats.faults["slow"] == 0:
            await asyncio.sleep(0.005)
        started = loop.time()
    assert loop.time() - started < 2.0
    with pytest.raises(DROPPED):
        await task


async def test_latency_delays_every_create_answer(emulator_factory: EmulatorFactory, http: Http) -> None:
    loop = asyncio.get_running_loop()
    async with emulator_factory(latency=0.1, jitter=0.05) as emu:
        for body in (sms(), {"bad": 1}):
            started = loop.time()
            await post(http, emu, body)
            assert loop.time() - started >= 0.099  # the loop may run a timer a hair early


async def outcomes(emu: Emulator, http: Http, n: int) -> list[str]:
    result = []
    for i in range(n):
        try:
            status, msg, _ = await post(http, emu, sms(tag=str(i)), timeout=aiohttp.ClientTimeout(total=2))
            result.append(f"{status}:{msg['id'][13:]}" if status == 202 else str(status))
        except DROPPED:
            result.append("dropped")
    return result


async def test_a_seed_reproduces_faults_and_ids(emulator_factory: EmulatorFactory, http: Http) -> None:
    knobs = {"p_500": 0.15, "p_503": 0.1, "p_502_html": 0.1, "p_drop_before": 0.1, "p_drop_after": 0.1}
    runs = []
    for seed in (7, 7, 8):
        async with emulator_factory(seed=seed, **knobs) as emu:
            runs.append(await outcomes(emu, http, 40))
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]
    assert {"500", "503", "502", "dropped"} <= set(runs[0])
    assert any(o.startswith("202:") for o in runs[0])


# --- ground truth --------------------------------------------------------------------------------


async def test_acceptance_counts_reveal_duplicates(emulator: Emulator, http: Http) -> None:
    for tag in ("a", "b", "a"):
        await post(http, emulator, sms(tag=tag, text=f"text {tag}"))
    assert emulator.acceptance_counts() == {"a": 2, "b": 1}
    assert emulator.acceptance_counts("text") == {"text a": 2, "text b": 1}
    assert emulator.acceptance_counts("from") == {FROM: 3}
    assert emulator.acceptance_counts("to") == {(TO,): 3}
    assert all(isinstance(m, AcceptedMessage) for m in emulator.accepted)


async def test_record_false_keeps_only_counters(emulator_factory: EmulatorFactory, http: Http) -> None:
    async with emulator_factory(record=False) as emu:
        for _ in range(5):
            assert (await post(http, emu, sms(to=[TO, TO2])))[0] == 202
        assert emu.accepted == []
        assert emu.stats.accepted == 5 and emu.stats.segments == 10 and emu.stats.by_status[202] == 5
        emu.reset()
        assert emu.stats.accepted == 0 and emu.stats.by_status == {}


async def test_stats_count_requests_by_status(emulator: Emulator, http: Http) -> None:
    await post(http, emulator, sms())
    await post(http, emulator, sms(), auth=None)
    await list_messages(http, emulator, sourceTn=FROM)
    assert emulator.stats.requests == 3 and emulator.stats.creates == 2
    assert emulator.stats.by_status == {202: 1, 401: 1, 200: 1}
    report = emulator.stats.as_dict()
    assert report["by_status"] == {202: 1, 401: 1, 200: 1} and type(report["by_status"]) is dict
    assert report["requests"] == 3 and report["creates"] == 2 and report["max_creates_in_flight"] == 1
    # Every counter is reported, the live in-flight gauge aside.
    assert set(report) == {f.name for f in fields(emulator.stats)} - {"creates_in_flight"}


# --- status callbacks -----------------------------------------------------------------------------


async def test_sms_callbacks_sent_then_delivered_with_bandwidths_headers(
    emulator_factory: EmulatorFactory, callback_receiver: CallbackReceiver, http: Http
) -> None:
    async with emulator_factory(
        callback_url=callback_receiver.url, callback_username="hook", callback_password="secret"
    ) as emu:
        _, msg, _ = await post(http, emu, sms(tag="cb"))
        sent, delivered = await callback_receiver.collect(2)
    for d in (sent, delivered):
        assert d.headers["Content-Type"] == "application/json; charset=utf-8"
        assert d.headers["User-Agent"] == "BandwidthAPI/v2"
        assert d.headers["Authorization"] == "Basic " + base64.b64encode(b"hook:secret").decode()
        assert isinstance(msgspec.json.decode(d.body), list)
        [event] = d.events
        assert event.message.id == msg["id"] and event.message.text == ""
        assert event.message.tag == "cb" and event.to == TO
        assert event.message.to == [TO] and event.message.direction == "out"
    assert [d.events[0].type for d in (sent, delivered)] == ["message-sent", "message-delivered"]
    assert delivered.events[0].description == "Message delivered to handset."
    assert delivered.events[0].carrier_name is not None and delivered.events[0].error_code is None
    assert emu.stats.callbacks_sent == 2


async def test_group_mms_callbacks_one_final_event_per_recipient(
    emulator_factory: EmulatorFactory, callback_receiver: CallbackReceiver, http: Http
) -> None:
    async with emulator_factory(callback_url=callback_receiver.url) as emu:
        await post(http, emu, sms(to=[TO, TO2], media=[LOGO]))
        deliveries = await callback_receiver.collect(4)
        await emu.drain_callbacks()
    events = [e for d in deliveries for e in d.events]
    assert [e.type for e in events] == ["message-sending", "message-sent", "message-delivered", "message-delivered"]
    assert [e.to for e in events[2:]] == [TO, TO2]
    assert all(e.message.to == [TO, TO2] and e.message.media == [LOGO] for e in events)
    assert "Authorization" not in deliveries[0].headers
    assert callback_receiver.queue.empty()


async def test_failed_deliveries_carry_an_error_code(
    emulator_factory: EmulatorFactory, callback_receiver: CallbackReceiver, http: Http
) -> None:
    async with emulator_factory(callback_url=callback_receiver.url, p_delivered=0.0, failure_codes=(4770,)) as emu:
        await post(http, emu, sms())
        _, failed = await callback_receiver.collect(2)
        _, body, _ = await list_messages(http, emu, sourceTn=FROM)
    [event] = failed.events
    assert event.type == "message-failed" and event.error_code == 4770 and event.description
    assert body["messages"][0]["messageStatus"] == "FAILED" and body["messages"][0]["errorCode"] == 4770


async def test_expired_message_gets_only_a_4360_failure(
    emulator_factory: EmulatorFactory, callback_receiver: CallbackReceiver, http: Http
) -> None:
    async with emulator_factory(callback_url=callback_receiver.url, dequeue_rate=10.0) as emu:
        await post(http, emu, sms(text="x" * 1530))  # 10 segments: the next message waits 1 s
        # Still in the future when the create arrives (validated), past when it leaves the queue.
        expiration = (datetime.now(UTC) + timedelta(seconds=0.5)).isoformat()
        assert (await post(http, emu, sms(to=[TO2], expiration=expiration)))[0] == 202
        received = await callback_receiver.collect(3)
    expired = [e for d in received for e in d.events if e.to == TO2]
    assert [(e.type, e.error_code) for e in expired] == [("message-failed", 4360)]


def test_timeline_and_status_agree() -> None:
    msg = AcceptedMessage(
        id="1",
        account_id="a",
        application_id="app",
        from_=FROM,
        to=[TO, TO2],
        media=[LOGO],
        segment_count=1,
        time="t",
        received_at=0.0,
        dequeue_at=5.0,
        step=1.0,
        error_codes=[0, 4720],
    )
    events = timeline(msg)
    assert [(e.offset, e.type, e.recipient) for e in events] == [
        (0.0, "message-sending", None),
        (1.0, SENT, None),
        (2.0, "message-delivered", 0),
        (2.0, FAILED, 1),
    ]
    assert status_at(msg, 1, 4.9) == ("QUEUED", 0)
    assert status_at(msg, 1, 5.0) == ("SENDING", 0)
    assert status_at(msg, 1, 6.0) == ("SENT", 0)
    assert status_at(msg, 0, 7.0) == ("DELIVERED", 0)
    assert status_at(msg, 1, 7.0) == ("FAILED", 4720)


async def test_callbacks_are_redelivered_after_a_receiver_error(emulator_factory: EmulatorFactory, http: Http) -> None:
    async with (
        CallbackReceiver(statuses=[500]) as receiver,
        emulator_factory(callback_url=receiver.url, callback_backoff=0.01) as emu,
    ):
        await post(http, emu, sms())
        refused, retried, delivered = await receiver.collect(3)
        await emu.drain_callbacks()
    assert (refused.status, retried.status) == (500, 204)
    assert refused.body == retried.body and retried.events[0].type == "message-sent"
    assert delivered.events[0].type == "message-delivered"
    assert emu.stats.callbacks_redelivered == 1 and emu.stats.callbacks_sent == 2 and emu.stats.callbacks_failed == 0


async def test_callbacks_are_given_up_after_max_attempts(emulator_factory: EmulatorFactory, http: Http) -> None:
    async with (
        CallbackReceiver(default_status=503) as receiver,
        emulator_factory(callback_url=receiver.url, callback_backoff=0.001, callback_max_attempts=3) as emu,
    ):
        await post(http, emu, sms())
        await emu.drain_callbacks()
    assert len(receiver.deliveries) == 6  # two events, three attempts each
    assert emu.stats.callbacks_failed == 2 and emu.stats.callbacks_redelivered == 4 and emu.stats.callbacks_sent == 0


async def test_unreachable_callback_url_counts_as_failed(emulator_factory: EmulatorFactory, http: Http) -> None:
    # A port that was just free: connection refused, retried, then given up.
    async with CallbackReceiver() as receiver:
        url = receiver.url
    async with emulator_factory(callback_url=url, callback_backoff=0.001, callback_max_attempts=2) as emu:
        await post(http, emu, sms())
        await emu.drain_callbacks()
    assert emu.stats.callbacks_failed == 2 and emu.stats.callbacks_redelivered == 2


async def test_duplicate_callbacks(
    emulator_factory: EmulatorFactory, callback_receiver: CallbackReceiver, http: Http
) -> None:
    async with emulator_factory(callback_url=callback_receiver.url, p_duplicate_callback=1.0) as emu:
        await post(http, emu, sms())
        deliveries = await callback_receiver.collect(4)
        await emu.drain_callbacks()
    assert [d.events[0].type for d in deliveries] == ["message-sent"] * 2 + ["message-delivered"] * 2
    assert deliveries[0].body == deliveries[1].body
    assert emu.stats.callbacks_duplicated == 2 and emu.stats.callbacks_sent == 4


async def test_stopping_cancels_pending_callbacks(
    emulator_factory: EmulatorFactory, callback_receiver: CallbackReceiver, http: Http
) -> None:
    async with emulator_factory(callback_url=callback_receiver.url, callback_delay=60.0) as emu:
        await post(http, emu, sms())
        await callback_receiver.next()  # message-sent; delivered is 60 s away
        assert emu._callbacks.pending == 1
    assert emu._callbacks.pending == 0
    assert callback_receiver.queue.empty()


# --- config, CLI and embedding ---------------------------------------------------------------------


def test_every_knob_has_a_flag_with_help() -> None:
    parser = build_parser()
    flags = {opt: action for action in parser._actions for opt in action.option_strings}
    for f in knob_fields():
        action = flags["--" + f.name.replace("_", "-")]
        assert action.help, f.name
    args = parser.parse_args(
        ["--dequeue-rate", "5", "--failure-codes", "4720,5600", "--list-rate-limit", "3500/300", "--no-record"]
    )
    config = config_from_args(args)
    assert config.dequeue_rate == 5.0 and config.failure_codes == (4720, 5600)
    assert config.list_rate_limit == (3500, 300.0) and config.record is False


def test_config_rejects_impossible_settings() -> None:
    with pytest.raises(ValueError, match="add up"):
        EmulatorConfig(p_500=0.6, p_drop_after=0.6)
    with pytest.raises(ValueError, match="probability"):
        EmulatorConfig(p_delivered=1.5)
    base = EmulatorConfig(username="a", latency=0.5)
    emu = Emulator(base, latency=0.0)  # keywords override a config
    assert emu.config.latency == 0.0 and emu.config.username == "a" and base.latency == 0.5


async def test_the_app_can_be_embedded(http: Http) -> None:
    emu = Emulator(username="u", password="p")
    runner = web.AppRunner(emu.app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        emu.port = runner.addresses[0][1]
        assert (await post(http, emu, sms()))[0] == 202
    finally:
        await runner.cleanup()


async def test_standalone_process_serves_until_sigterm(http: Http) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bwasync.emulator",
        "--port",
        "0",
        "--username",
        "u",
        "--password",
        "p",
        "--account-id",
        ACCOUNT_ID,
        "--dequeue-rate",
        "100",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        match = re.fullmatch(r"bwasync emulator listening on (http://127\.0\.0\.1:\d+/api/v2)\n", line)
        assert match, line
        url = match.group(1)
        async with http.post(
            f"{url}/users/{ACCOUNT_ID}/messages", json=sms(), headers={"Authorization": BASIC}
        ) as resp:
            assert resp.status == 202
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = await asyncio.wait_for(proc.communicate(), 20)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, stderr.decode()
    assert stdout == b""  # exactly one line in all
