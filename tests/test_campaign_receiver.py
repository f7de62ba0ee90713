"""The status-callback receiver: a real aiohttp server on 127.0.0.1, a real client, a real journal."""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bwasync import MessageRequest, StatusCallback
from bwasync._models import decode_callbacks, encode_request
from bwasync.campaign import (
    CallbackHandler,
    CallbackReceiver,
    CampaignOptions,
    CampaignRunner,
    DeliveryOutcome,
    Journal,
    NewRow,
    RowStatus,
    build_report,
    delivery_recorder,
    make_callback_handler,
    render_text,
)

APP = "93de2206-9669-4e07-948d-329f4b722ee2"
SENDER = "+15553332222"


def basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


AUTH = basic("bandwidth", "s3cret")


def event(
    kind: str,
    tag: str | None,
    *,
    to: str = "+15550000002",
    message_id: str = "m-2",
    group: list[str] | None = None,
    error_code: int | None = None,
) -> dict[str, Any]:
    message: dict[str, Any] = {
        "id": message_id,
        "owner": SENDER,
        "applicationId": APP,
        "time": "2026-11-26T12:00:00.000Z",
        "segmentCount": 1,
        "direction": "out",
        "to": group or [to],
        "from": SENDER,
        "text": "",
    }
    if tag is not None:
        message["tag"] = tag
    body: dict[str, Any] = {
        "type": kind,
        "time": "2026-11-26T12:00:01.000Z",
        "description": kind,
        "to": to,
        "message": message,
    }
    if error_code is not None:
        body["errorCode"] = error_code
    return body


async def add_accepted(journal: Journal, line: int, to: list[str]) -> str:
    request = MessageRequest(application_id=APP, to=to, from_=SENDER, text="hi")
    await journal.add_rows(
        [NewRow(str(line), line, RowStatus.PENDING, to, SENDER, encode_request(request).decode(), len(to))]
    )
    await journal.mark_in_flight(str(line))
    journal.record_result(str(line), status="accepted", message_id=f"m-{line}")
    await journal.flush()
    return f"{journal.campaign_id}:{line}"


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[Journal]:
    source = tmp_path / "list.csv"
    source.write_text("to\n+15550000002\n", encoding="utf-8")
    async with Journal(tmp_path / "c.journal") as j:
        await j.init_campaign(input_path=source, template=None)
        yield j


@pytest.fixture
async def receiver(journal: Journal) -> AsyncIterator[CallbackReceiver]:
    async with CallbackReceiver("127.0.0.1", 0, journal=journal, username="bandwidth", password="s3cret") as rx:
        yield rx


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def post(
    client: aiohttp.ClientSession, url: str, events: Any, *, auth: str | None = AUTH
) -> tuple[int, str, aiohttp.ClientResponse]:
    headers = {} if auth is None else {"Authorization": auth}
    async with client.post(url, json=events, headers=headers) as response:
        return response.status, await response.text(), response


# --- Authentication ----------------------------------------------------------------------------------------


async def test_valid_credentials_are_checked_in_constant_time(
    receiver: CallbackReceiver, journal: Journal, client: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    tag = await add_accepted(journal, 2, ["+15550000002"])
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    status, _, _ = await post(client, receiver.url + "bandwidth/callbacks", [event("message-delivered", tag)])
    assert status == 200
    expected = b"Basic " + base64.b64encode(b"bandwidth:s3cret")
    assert compared == [(expected, expected)]  # the whole header, compared by hmac.compare_digest
    row = await journal.get_row("2")
    assert row is not None and row.delivery_status == "delivered"
    assert receiver.stats.recorded == 1 and receiver.stats.requests == 1


@pytest.mark.parametrize("auth", [None, basic("bandwidth", "wrong"), basic("x", "s3cret"), "basic " + AUTH[6:]])
async def test_missing_or_wrong_credentials_get_401(
    receiver: CallbackReceiver, journal: Journal, client: aiohttp.ClientSession, auth: str | None
) -> None:
    tag = await add_accepted(journal, 2, ["+15550000002"])
    status, _, response = await post(client, receiver.url, [event("message-delivered", tag)], auth=auth)
    assert status == 401
    assert response.headers["WWW-Authenticate"].startswith('Basic realm="bwasync"')
    row = await journal.get_row("2")
    assert row is not None and row.delivery_status is None
    assert receiver.stats.rejected == 1 and receiver.stats.received == 0


def test_half_configured_credentials_are_refused() -> None:
    with pytest.raises(ValueError):
        make_callback_handler(lambda e: None, username="only-user")


# --- Malformed and oversized bodies --------------------------------------------------------------------------


async def test_oversized_body_gets_413(journal: Journal, client: aiohttp.ClientSession) -> None:
    async with CallbackReceiver("127.0.0.1", 0, journal=journal, max_body=1024) as rx:
        big = json.dumps([event("message-sent", "x:1")] * 20).encode()
        assert len(big) > 1024
        async with client.post(rx.url, data=big, headers={"Content-Type": "application/json"}) as response:
            assert response.status == 413

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the cap applies while reading
            for _ in range(10):
                yield b" " * 512

        async with client.post(rx.url, data=chunks()) as response:
            assert response.status == 413
        assert rx.stats.rejected == 2


@pytest.mark.parametrize(
    "body",
    [b"{not json", b'{"type": "message-sent"}', b'[{"type": "message-sent"}]', b"", b'[{"to": 5}]'],
)
async def test_malformed_body_gets_400(receiver: CallbackReceiver, client: aiohttp.ClientSession, body: bytes) -> None:
    async with client.post(receiver.url, data=body, headers={"Authorization": AUTH}) as response:
        assert response.status == 400
    assert receiver.stats.rejected == 1


# --- Events ------------------------------------------------------------------------------------------------------


async def test_duplicates_are_ignored(
    receiver: CallbackReceiver, journal: Journal, client: aiohttp.ClientSession
) -> None:
    tag = await add_accepted(journal, 2, ["+15550000002"])
    delivered = event("message-delivered", tag)
    assert (await post(client, receiver.url, [delivered, delivered]))[0] == 200
    assert (await post(client, receiver.url, [delivered]))[0] == 200  # Bandwidth's retry
    stats = receiver.stats
    assert (stats.received, stats.recorded, stats.duplicates) == (3, 1, 2)


async def test_out_of_order_delivered_then_sent(
    receiver: CallbackReceiver, journal: Journal, client: aiohttp.ClientSession
) -> None:
    tag = await add_accepted(journal, 2, ["+15550000002"])
    assert (await post(client, receiver.url, [event("message-delivered", tag)]))[0] == 200
    assert (await post(client, receiver.url, [event("message-sent", tag)]))[0] == 200
    row = await journal.get_row("2")
    assert row is not None and row.delivery_status == "delivered"
    assert receiver.stats.recorded == 1 and receiver.stats.stale == 1


async def test_group_message_per_recipient(
    receiver: CallbackReceiver, journal: Journal, client: aiohttp.ClientSession
) -> None:
    group = ["+15550000011", "+15550000012"]
    tag = await add_accepted(journal, 2, group)
    first = [event("message-sent", tag, to=n, group=group) for n in group]
    first.append(event("message-delivered", tag, to=group[0], group=group))
    assert (await post(client, receiver.url, first))[0] == 200
    row = await journal.get_row("2")
    assert row is not None and row.delivery_status == "sent"
    failed = event("message-failed", tag, to=group[1], group=group, error_code=4720)
    assert (await post(client, receiver.url, [failed]))[0] == 200
    row = await journal.get_row("2")
    assert row is not None and (row.delivery_status, row.delivery_error_code) == ("failed", 4720)
    assert receiver.stats.recorded == 4


async def test_unknown_tags_are_counted(
    receiver: CallbackReceiver, journal: Journal, client: aiohttp.ClientSession
) -> None:
    await add_accepted(journal, 2, ["+15550000002"])
    events = [
        event("message-delivered", None, message_id="m-a"),
        event("message-delivered", "another-campaign:2", message_id="m-b"),
        event("message-delivered", f"{journal.campaign_id}:404", message_id="m-c"),
        event("message-sending", f"{journal.campaign_id}:2"),
    ]
    assert (await post(client, receiver.url, events))[0] == 200
    assert receiver.stats.unknown_tags == 3 and receiver.stats.ignored == 1
    row = await journal.get_row("2")
    assert row is not None and row.delivery_status is None


# --- Inside a user's own aiohttp application ---------------------------------------------------------------------


async def test_handler_in_a_user_app(client: aiohttp.ClientSession) -> None:
    seen: list[StatusCallback] = []
    fail_next = asyncio.Event()
    fail_next.set()

    def on_event(e: StatusCallback) -> None:  # a plain function works too
        if fail_next.is_set():
            fail_next.clear()
            raise RuntimeError("database down")
        seen.append(e)

    handler = CallbackHandler(on_event)
    app = web.Application()
    app.router.add_post("/hooks/bandwidth", handler.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        url = f"http://127.0.0.1:{port}/hooks/bandwidth"
        body = [event("message-delivered", "anything:1")]
        async with client.post(url, json=body) as response:
            assert response.status == 500  # Bandwidth retries...
        async with client.post(url, json=body) as response:
            assert response.status == 200  # ...and the retry is not mistaken for a duplicate
        assert [e.message.tag for e in seen] == ["anything:1"]
        assert handler.stats.errors == 1 and handler.stats.other == 1
    finally:
        await runner.cleanup()


async def test_slow_recording_answers_503(client: aiohttp.ClientSession) -> None:
    never = asyncio.Event()

    async def stuck(e: StatusCallback) -> None:
        await never.wait()

    handler = make_callback_handler(stuck, timeout=0.05)
    app = web.Application()
    app.router.add_post("/", handler)  # the plain function form
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/"
        async with client.post(url, json=[event("message-sent", "t:1")]) as response:
            assert response.status == 503
        assert handler.__self__.stats.errors == 1  # type: ignore[attr-defined]
    finally:
        await runner.cleanup()


async def test_delivery_recorder_without_a_server(journal: Journal) -> None:
    tag = await add_accepted(journal, 2, ["+15550000002"])
    record = delivery_recorder(journal)
    (delivered,) = decode_callbacks(json.dumps([event("message-delivered", tag)]).encode())
    assert await record(delivered) is DeliveryOutcome.CHANGED
    assert await record(delivered) is DeliveryOutcome.DUPLICATE


# --- Receipts that count right, hostile bodies ----------------------------------------------------------


async def test_a_receipt_for_a_row_never_sent_is_unmatched_not_a_delivery(
    tmp_path: Path, client: aiohttp.ClientSession
) -> None:
    source = tmp_path / "list.csv"
    source.write_text("to\n", encoding="utf-8")
    async with Journal(tmp_path / "u.journal") as j:
        await j.init_campaign(input_path=source, template=None, campaign_id="camp")
        tag = await add_accepted(j, 2, ["+15550000002"])
        await j.add_rows(
            [
                NewRow("3", 3, RowStatus.INVALID, ["+15550000003"], SENDER, None, error="to: bad"),
                NewRow("4", 4, RowStatus.SKIPPED, ["+15550000004"], SENDER, None, error="opted out"),
            ]
        )
        async with CallbackReceiver("127.0.0.1", 0, journal=j, username="bandwidth", password="s3cret") as rx:
            bogus = [
                event("message-delivered", "camp:3", to="+15550000003", message_id="m-x"),
                event("message-delivered", "camp:4", to="+15550000004", message_id="m-y"),
            ]
            status, _, _ = await post(client, rx.url, bogus)
            assert status == 200  # authenticated and well formed: acknowledged, so not redelivered for 24 h
            assert rx.stats.unmatched == 2 and rx.stats.recorded == 0
            status, _, _ = await post(client, rx.url, bogus)  # redelivered: counted once
            assert rx.stats.unmatched == 2
            counts = await j.counts()
            assert counts.by_delivery == {"sent": 0, "delivered": 0, "failed": 0}
            assert counts["invalid"] == 1 and counts["skipped"] == 1 and counts.unmatched_receipts == 2
            report = await build_report(j)
            assert (report.accepted, report.delivered, report.awaiting_delivery) == (1, 0, 1)
            assert report.unmatched_receipts == 2
            # ... so waiting for delivery does not end early: the accepted row still awaits its receipt.
            runner = CampaignRunner(tmp_path / "u.journal", CampaignOptions(input_path=str(source), application_id=APP))
            runner._journal = j  # the runner's wait over this open journal
            runner._stopped = asyncio.Event()
            assert await runner.wait_for_delivery(0.0, activity=lambda: rx.stats.recorded) == 1
            status, _, _ = await post(client, rx.url, [event("message-delivered", tag)])
            assert status == 200 and rx.stats.recorded == 1
            assert await runner.wait_for_delivery(0.0, activity=lambda: rx.stats.recorded) == 0
    assert "unmatched receipts  2" in render_text(report)


async def test_a_field_nested_a_thousand_deep_is_a_400(
    receiver: CallbackReceiver, journal: Journal, client: aiohttp.ClientSession
) -> None:
    tag = await add_accepted(journal, 2, ["+15550000002"])
    body = json.dumps([event("message-delivered", tag)]).replace(
        '"description"', '"x": ' + "[" * 1000 + "]" * 1000 + ', "description"'
    )
    headers = {"Authorization": AUTH, "Content-Type": "application/json"}
    async with client.post(receiver.url, data=body, headers=headers) as response:
        assert response.status == 400
    assert receiver.stats.rejected == 1 and receiver.stats.errors == 0


async def test_an_error_code_outside_sqlites_range_is_a_400_and_the_journal_stays_sound(
    receiver: CallbackReceiver, journal: Journal, client: aiohttp.ClientSession
) -> None:
    tag = await add_accepted(journal, 2, ["+15550000002"])
    status, text, _ = await post(client, receiver.url, [event("message-failed", tag, error_code=2**63)])
    assert status == 400 and "errorCode" in text
    # Through the library API, such a code is stored as unknown rather than crashing the journal.
    assert await journal.record_delivery(tag, "message-failed", error_code=2**63, message_id="m-2")
    row = await journal.get_row("2")
    assert row is not None and row.delivery_status == "failed" and row.delivery_error_code is None
