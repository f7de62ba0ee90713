"""The emulator's STOP replies (``p_stop_reply``), end to end: bwasync's client sends through the
emulator, whose callbacks reach the inbound handler on a real aiohttp server, which writes the
opt-out file the campaign reads."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest
from aiohttp import web

from bwasync import MessageRequest, MessagingClient
from bwasync.campaign import load_opt_out
from bwasync.compliance import FileOptOutStore, InboundHandler, MemoryOptOutStore
from bwasync.emulator import EmulatorConfig

from .conftest import ACCOUNT_ID, PASSWORD, USERNAME, CallbackReceiver, EmulatorFactory
from .test_emulator_fidelity import assert_matches_schema, assert_value, spec_schema

APP_ID = "93de2206-9669-4e07-948d-329f4b722ee2"
FROM = "+15553332222"


class InboundServer:
    """An aiohttp app on 127.0.0.1 whose only route is the library's inbound handler."""

    def __init__(self, handler: InboundHandler) -> None:
        self.handler = handler
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> InboundServer:
        app = web.Application()
        app.router.add_post("/bandwidth", self.handler.handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/bandwidth"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def receiver(tmp_path: Path) -> AsyncIterator[InboundServer]:
    store = FileOptOutStore(tmp_path / "stop.txt")
    async with InboundServer(InboundHandler(store, username="hook", password="secret")) as server:
        yield server


async def test_every_delivered_recipient_replies_stop_into_the_opt_out_file(
    emulator_factory: EmulatorFactory, receiver: InboundServer, tmp_path: Path
) -> None:
    recipients = ["+19195550101", "+19195550102", "+19195550103"]
    async with (
        emulator_factory(
            callback_url=receiver.url, callback_username="hook", callback_password="secret", p_stop_reply=1.0
        ) as emu,
        MessagingClient(ACCOUNT_ID, username=USERNAME, password=PASSWORD, base_url=emu.url) as client,
    ):
        await client.create_message(to=recipients[:2], from_=FROM, text="Group hello", application_id=APP_ID)
        await client.create_message(to=recipients[2], from_=FROM, text="Hello", application_id=APP_ID)
        await emu.drain_callbacks()

    assert load_opt_out(tmp_path / "stop.txt") == set(recipients)
    stats = receiver.handler.stats
    assert stats.opted_out == 3 and stats.rejected == 0
    # The status callbacks (sent + a delivered per recipient) share the URL and are ignored.
    assert stats.ignored == 2 + 3
    assert emu.stats.stop_replies_sent == 3


async def test_the_reply_is_the_specs_inbound_callback_from_the_handset(
    emulator_factory: EmulatorFactory, callback_receiver: CallbackReceiver
) -> None:
    async with (
        emulator_factory(callback_url=callback_receiver.url, p_stop_reply=1.0) as emu,
        MessagingClient(ACCOUNT_ID, username=USERNAME, password=PASSWORD, base_url=emu.url) as client,
    ):
        sent = await client.create_message(to="+19195550101", from_=FROM, text="Hi", application_id=APP_ID)
        deliveries = await callback_receiver.collect(3)
        await emu.drain_callbacks()
    [reply] = deliveries[2].events
    assert reply.type == "message-received"
    assert reply.to == FROM and reply.description == "Incoming message received"
    assert reply.message.from_ == "+19195550101" and reply.message.to == [FROM]
    assert reply.message.text == "STOP" and reply.message.direction == "in"
    assert reply.message.id != sent.id and reply.carrier_name

    [body] = msgspec.json.decode(deliveries[2].body)
    schema = spec_schema("inboundCallback")
    assert set(body) <= set(schema.properties) and schema.required <= set(body)
    assert body["type"] in spec_schema("inboundCallbackTypeEnum").enum
    for key in set(body) - {"message", "type"}:
        assert_value(key, body[key], schema.properties[key])
    # inboundCallbackMessage is statusCallbackMessage plus multi-channel fields an SMS has not.
    assert_matches_schema("message", body["message"], spec_schema("statusCallbackMessage"))


async def stop_replies(emulator_factory: EmulatorFactory, seed: int) -> tuple[int, int]:
    """STOP replies the emulator sent for 24 messages, and the numbers the handler opted out."""
    store = MemoryOptOutStore()
    async with (
        InboundServer(InboundHandler(store)) as server,
        emulator_factory(callback_url=server.url, p_stop_reply=0.5, seed=seed) as emu,
        MessagingClient(ACCOUNT_ID, username=USERNAME, password=PASSWORD, base_url=emu.url) as client,
    ):
        requests = [
            MessageRequest(to=f"+1919555{i:04d}", from_=FROM, text="Hi", application_id=APP_ID) for i in range(24)
        ]
        async with client.send_many(requests) as results:
            async for _ in results:
                pass
        await emu.drain_callbacks()
        return emu.stats.stop_replies_sent, len(store)


async def test_the_share_of_replies_follows_the_knob_and_the_seed(emulator_factory: EmulatorFactory) -> None:
    first, opted_out = await stop_replies(emulator_factory, seed=7)
    again, _ = await stop_replies(emulator_factory, seed=7)
    assert first == again  # one seeded draw per delivered recipient: the same count every run
    assert 3 < first < 21
    assert opted_out == first


def test_the_knob_is_a_probability() -> None:
    with pytest.raises(ValueError, match="p_stop_reply"):
        EmulatorConfig(p_stop_reply=1.5)
    assert EmulatorConfig().p_stop_reply == 0.0
