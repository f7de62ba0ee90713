"""The web-service examples (``examples/``) run against the emulator: a send, the error
mapping (422 with the field errors, 503/502 with ``may_have_been_sent``) and the status
callbacks, through aiohttp's test server and through FastAPI with httpx."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
from aiohttp.test_utils import TestClient, TestServer

from bwasync import MessagingClient, RetryPolicy
from bwasync.emulator import Emulator
from examples import aiohttp_app, fastapi_app
from examples._service import Settings

from .conftest import ACCOUNT_ID, PASSWORD, USERNAME, CallbackReceiver, EmulatorFactory

SENDER = "+15553332222"
RECIPIENT = "+15552223333"
CALLBACK_AUTH = {"callback_username": "bw", "callback_password": "cb-secret"}
# One retry, no backoff: the 503 case below stays fast.
SETTINGS = Settings(
    application_id="93de2206-9669-4e07-948d-329f4b722ee2",
    from_number=SENDER,
    retry=RetryPolicy(max_attempts=2, initial_delay=0.0, max_delay=0.0),
    **CALLBACK_AUTH,
)


def client_for(emu: Emulator) -> Callable[[], MessagingClient]:
    return lambda: MessagingClient(ACCOUNT_ID, username=USERNAME, password=PASSWORD, base_url=emu.url)


async def check_sends_and_maps_errors(emu: Emulator, post: Callable[[dict[str, Any]], Any]) -> str:
    """The behaviour both examples share; ``post(json)`` returns (status, body). The message id sent."""
    status, sent = await post({"to": RECIPIENT, "text": "Hello"})
    assert status == 202 and sent["segments"] == 1
    assert [m.to for m in emu.accepted] == [[RECIPIENT]]

    status, body = await post({"to": "12", "text": ""})
    assert status == 422
    assert {e["field"] for e in body["field_errors"]} == {"to", "text"}
    assert "E164" in body["field_errors"][0]["description"]

    emu.config.p_503 = 1.0  # Bandwidth failing: retried, still failing, certainly not sent
    status, body = await post({"to": RECIPIENT, "text": "Hello"})
    assert (status, body["may_have_been_sent"]) == (503, False)
    assert body["error"].startswith("HTTP 503")
    emu.config.p_503 = 0.0

    emu.config.p_drop_after = 1.0  # accepted, answer lost: the caller must not resend blindly
    status, body = await post({"to": RECIPIENT, "text": "Hello"})
    assert (status, body["may_have_been_sent"]) == (502, True)
    emu.config.p_drop_after = 0.0

    emu.config.allowed_senders = ["+15550000000"]  # 403: refused for good, not sent
    status, body = await post({"to": RECIPIENT, "text": "Hello"})
    assert (status, body["may_have_been_sent"]) == (502, False)
    emu.config.allowed_senders = None
    assert sent["id"] in {m.id for m in emu.accepted}
    return str(sent["id"])


async def test_aiohttp_example(emulator_factory: EmulatorFactory) -> None:
    async with emulator_factory(**CALLBACK_AUTH) as emu:
        app = aiohttp_app.create_app(SETTINGS, client_for(emu))
        async with TestServer(app, host="127.0.0.1") as server, TestClient(server) as http:
            emu.config.callback_url = str(server.make_url("/bandwidth/callbacks"))

            async def post(json: dict[str, Any]) -> tuple[int, Any]:
                resp = await http.post("/messages", json=json)
                return resp.status, await resp.json()

            message_id = await check_sends_and_maps_errors(emu, post)
            await emu.drain_callbacks()
            resp = await http.get(f"/messages/{message_id}")
            assert resp.status == 200
            events = (await resp.json())["events"]
            assert [e["type"] for e in events] == ["message-sent", "message-delivered"]

            # Without Bandwidth's credentials the callback is refused.
            resp = await http.post("/bandwidth/callbacks", data=b"[]")
            assert resp.status == 401
            assert (await http.post("/messages", data=b"not json")).status == 400
            session = app[aiohttp_app.CLIENT]._transport.session
        # One client for the app's lifetime: cleanup_ctx closed its connections with the app.
        assert session.closed


@asynccontextmanager
async def serve_fastapi(emu: Emulator) -> AsyncIterator[httpx.AsyncClient]:
    app = fastapi_app.create_app(SETTINGS, client_for(emu))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://example.test") as http,
    ):
        yield http


async def test_fastapi_example(emulator_factory: EmulatorFactory, callback_receiver: CallbackReceiver) -> None:
    async with emulator_factory(callback_url=callback_receiver.url, **CALLBACK_AUTH) as emu, serve_fastapi(emu) as http:

        async def post(json: dict[str, Any]) -> tuple[int, Any]:
            resp = await http.post("/messages", json=json)
            return resp.status_code, resp.json()

        message_id = await check_sends_and_maps_errors(emu, post)
        # The emulator's real callback POSTs (body and Basic auth), replayed into the app.
        for delivery in await callback_receiver.collect(2):
            auth = delivery.headers["Authorization"]
            resp = await http.post("/bandwidth/callbacks", content=delivery.body, headers={"Authorization": auth})
            assert resp.status_code == 200
            # Bandwidth delivers at least once: a redelivery is answered 200 and not recorded again.
            resp = await http.post("/bandwidth/callbacks", content=delivery.body, headers={"Authorization": auth})
            assert resp.status_code == 200
        resp = await http.get(f"/messages/{message_id}")
        assert [e["type"] for e in resp.json()["events"]] == ["message-sent", "message-delivered"]

        resp = await http.post("/bandwidth/callbacks", content=b"[]")
        assert resp.status_code == 401 and "Basic" in resp.headers["www-authenticate"]
        big = b"[" + b" " * (2 * 1024 * 1024) + b"]"
        resp = await http.post("/bandwidth/callbacks", content=big, headers={"Authorization": auth})
        assert resp.status_code == 413
