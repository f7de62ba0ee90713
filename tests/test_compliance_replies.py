"""STOP / START replies: the keyword rule, the opt-out stores, and the inbound handler served by a
real aiohttp server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bwasync import InboundCallback
from bwasync._models import decode_callbacks, decode_inbound_callbacks
from bwasync.campaign import InputFileError, load_opt_out
from bwasync.compliance import (
    FileOptOutStore,
    InboundHandler,
    InboundReply,
    MemoryOptOutStore,
    OptOutStore,
    ReplyKind,
    ReplyOutcome,
    ReplyProcessor,
    classify_reply,
    make_inbound_handler,
)

OUR_NUMBER = "+15553332222"
HANDSET = "+19195550101"
AUTH = "Basic " + base64.b64encode(b"bw:s3cret").decode()


# --- the keyword rule -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["STOP", "stop", " Stop ", "STOP\n", "\tstopall", "Unsubscribe", "CANCEL", "end", "quit", "Stop!", "stop."]
)
def test_opt_out_keywords_whole_message_any_case(text: str) -> None:
    assert classify_reply(text) is ReplyKind.OPT_OUT


@pytest.mark.parametrize("text", ["START", " start ", "Unstop", "START!"])
def test_re_subscribe_keywords(text: str) -> None:
    assert classify_reply(text) is ReplyKind.OPT_IN


@pytest.mark.parametrize(
    "text",
    [None, "", "   ", "stop it", "please stop", "STOP STOP", "Can't stop smiling!", "S T O P", "stop?", "ſtop", "HELP"],
)
def test_anything_else_is_not_a_keyword(text: str | None) -> None:
    assert classify_reply(text) is ReplyKind.OTHER


# --- stores ---------------------------------------------------------------------------------------


async def test_memory_store_normalises_and_reports_changes() -> None:
    store = MemoryOptOutStore(["(919) 555-0101"])
    assert isinstance(store, OptOutStore)
    assert HANDSET in store and len(store) == 1
    assert not await store.opt_out("+1 919 555 0101")
    assert await store.opt_in("9195550101")
    assert HANDSET not in store and not await store.opt_in(HANDSET)
    with pytest.raises(ValueError, match="not a phone number"):
        await store.opt_out("SHORTCODE")


async def test_file_store_is_the_campaigns_opt_out_file_and_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "stop.txt"
    path.write_text("# do not contact\n(919) 555-0100  # asked by phone\n+44 20 7946 0958")  # no final newline
    store = FileOptOutStore(path)
    assert store.numbers() == {"+19195550100", "+442079460958"}

    assert await store.opt_out(HANDSET, note="STOP 2026-12-02T03:04:05Z")
    assert not await store.opt_out(HANDSET)  # already there: the file is not touched
    assert path.read_text().splitlines() == [
        "# do not contact",
        "(919) 555-0100  # asked by phone",
        "+44 20 7946 0958",
        f"{HANDSET}  # STOP 2026-12-02T03:04:05Z",
    ]
    # The campaign reads it exactly as the store wrote it, and a new store (a restart) too.
    assert load_opt_out(path) == {"+19195550100", "+442079460958", HANDSET}
    assert FileOptOutStore(path).numbers() == load_opt_out(path)

    # START removes every line of that number, however it was written, and keeps the rest.
    assert await store.opt_in("+19195550100")
    assert path.read_text().splitlines() == [
        "# do not contact",
        "+44 20 7946 0958",
        f"{HANDSET}  # STOP 2026-12-02T03:04:05Z",
    ]
    assert FileOptOutStore(path).numbers() == {"+442079460958", HANDSET}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stop.txt"]  # no temporary file left


async def test_file_store_creates_a_missing_file_and_refuses_an_unreadable_one(tmp_path: Path) -> None:
    store = FileOptOutStore(tmp_path / "new.txt")
    assert len(store) == 0 and not (tmp_path / "new.txt").exists()
    await store.opt_out(HANDSET)
    assert (tmp_path / "new.txt").read_text() == f"{HANDSET}\n"

    bad = tmp_path / "bad.txt"
    bad.write_text("+19195550100\nnot a number\n")
    with pytest.raises(InputFileError, match="line 2"):
        FileOptOutStore(bad)


async def test_a_failed_write_leaves_the_file_store_unchanged(tmp_path: Path) -> None:
    store = FileOptOutStore(tmp_path / "no-such-directory" / "stop.txt")
    with pytest.raises(OSError):
        await store.opt_out(HANDSET)
    assert HANDSET not in store  # so the handler's 503 and Bandwidth's retry apply it later


# --- the inbound handler, on a real server ---------------------------------------------------------


def inbound(
    text: str | None,
    *,
    message_id: str = "in-1",
    sender: str = HANDSET,
    time: str = "2026-12-02T03:00:00.000Z",
    kind: str = "message-received",
) -> dict[str, Any]:
    """An inbound callback event shaped like the spec's example."""
    message: dict[str, Any] = {
        "id": message_id,
        "owner": OUR_NUMBER,
        "applicationId": "93de2206-9669-4e07-948d-329f4b722ee2",
        "time": time,
        "segmentCount": 1,
        "direction": "in",
        "to": [OUR_NUMBER],
        "from": sender,
    }
    if text is not None:
        message["text"] = text
    return {
        "time": time,
        "type": kind,
        "to": OUR_NUMBER,
        "description": "Incoming message received",
        "message": message,
    }


Post = Callable[..., Awaitable[tuple[int, str]]]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[web.Application], Awaitable[Post]]]:
    runners: list[web.AppRunner] = []
    session = aiohttp.ClientSession()

    async def start(app: web.Application) -> Post:
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/bandwidth/inbound"

        async def post(body: Any, *, auth: str | None = AUTH, raw: bytes | None = None) -> tuple[int, str]:
            data = raw if raw is not None else json.dumps(body).encode()
            headers = {"Content-Type": "application/json"}
            if auth is not None:
                headers["Authorization"] = auth
            async with session.post(url, data=data, headers=headers) as resp:
                return resp.status, await resp.text()

        return post

    yield start
    await session.close()
    for runner in runners:
        await runner.cleanup()


def app_with(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.Application:
    app = web.Application()
    app.router.add_post("/bandwidth/inbound", handler)
    return app


async def test_stop_then_start_change_the_store_and_are_counted(
    serve: Callable[[web.Application], Awaitable[Post]],
) -> None:
    store = MemoryOptOutStore()
    replies: list[InboundReply] = []
    handler = InboundHandler(store, username="bw", password="s3cret", on_reply=replies.append)
    post = await serve(app_with(handler.handle))

    assert await post([inbound(" Stop ", message_id="in-1")]) == (200, "")
    assert HANDSET in store
    assert await post([inbound("START", message_id="in-2", time="2026-12-02T03:05:00Z")]) == (200, "")
    assert HANDSET not in store
    assert await post([inbound("Thanks, see you Tuesday", message_id="in-3")]) == (200, "")

    assert [(r.kind, r.changed, r.number, r.to, r.message_id) for r in replies] == [
        (ReplyKind.OPT_OUT, True, HANDSET, OUR_NUMBER, "in-1"),
        (ReplyKind.OPT_IN, True, HANDSET, OUR_NUMBER, "in-2"),
        (ReplyKind.OTHER, False, HANDSET, OUR_NUMBER, "in-3"),
    ]
    assert isinstance(replies[0].event, InboundCallback)
    s = handler.stats
    assert (s.requests, s.received, s.opted_out, s.opted_in, s.other, s.rejected) == (3, 3, 1, 1, 1, 0)


async def test_duplicates_are_ignored_and_a_late_stop_does_not_undo_a_later_start(
    serve: Callable[[web.Application], Awaitable[Post]],
) -> None:
    store = MemoryOptOutStore()
    handler = InboundHandler(store)
    post = await serve(app_with(handler.handle))
    stop = inbound("STOP", message_id="in-1", time="2026-12-02T03:00:00Z")
    start = inbound("START", message_id="in-2", time="2026-12-02T03:05:00Z")

    assert (await post([stop, stop]))[0] == 200  # the same message twice in one POST
    assert (await post([stop]))[0] == 200  # and redelivered
    assert (await post([start]))[0] == 200
    # A STOP sent before that START but delivered after it (another id, an older time).
    assert (await post([inbound("stop", message_id="in-0", time="2026-12-02T02:59:00Z")]))[0] == 200
    assert HANDSET not in store
    s = handler.stats
    assert (s.opted_out, s.opted_in, s.duplicates, s.stale, s.received) == (1, 1, 2, 1, 5)


async def test_a_keyword_that_changes_nothing_is_unchanged(serve: Callable[[web.Application], Awaitable[Post]]) -> None:
    store = MemoryOptOutStore([HANDSET])
    handler = InboundHandler(store)
    post = await serve(app_with(handler.handle))
    status, _ = await post([inbound("STOP", message_id="a"), inbound("UNSTOP", message_id="b", sender="+19195550199")])
    assert status == 200
    assert handler.stats.unchanged == 2 and handler.stats.opted_out == 0 and HANDSET in store


async def test_status_callbacks_at_a_shared_url_and_one_object_bodies(
    serve: Callable[[web.Application], Awaitable[Post]],
) -> None:
    store = MemoryOptOutStore()
    handler = InboundHandler(store)
    post = await serve(app_with(handler.handle))
    delivered = inbound(None, message_id="out-1", kind="message-delivered") | {"to": HANDSET}
    assert (await post([delivered]))[0] == 200
    assert (await post(inbound("STOP", message_id="in-9")))[0] == 200  # a single object, as in the spec
    assert handler.stats.ignored == 1 and HANDSET in store


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b"{}",
        b"[1, 2]",
        b'[{"type": "message-received"}]',
        json.dumps([{**inbound("STOP"), "time": "yesterday"}]).encode(),
        json.dumps([{**inbound("STOP"), "message": {"id": 5}}]).encode(),
        b"\xff\xfe",
    ],
)
async def test_malformed_bodies_get_400_never_500(
    serve: Callable[[web.Application], Awaitable[Post]], raw: bytes
) -> None:
    handler = InboundHandler(MemoryOptOutStore())
    post = await serve(app_with(handler.handle))
    status, text = await post(None, raw=raw)
    assert status == 400, text
    assert handler.stats.rejected == 1


async def test_auth_and_size_are_checked_before_anything_is_applied(
    serve: Callable[[web.Application], Awaitable[Post]],
) -> None:
    store = MemoryOptOutStore()
    post = await serve(app_with(make_inbound_handler(store, username="bw", password="s3cret", max_body=2048)))
    for auth in (None, "Basic " + base64.b64encode(b"bw:wrong").decode(), "Bearer x"):
        status, _ = await post([inbound("STOP")], auth=auth)
        assert status == 401
    status, _ = await post([inbound("STOP", message_id=f"in-{i}") for i in range(20)])
    assert status == 413
    assert HANDSET not in store


async def test_a_failing_store_answers_503_and_the_retry_applies_it(
    serve: Callable[[web.Application], Awaitable[Post]],
) -> None:
    class FlakyStore(MemoryOptOutStore):
        failures = 1

        async def opt_out(self, number: str, *, note: str | None = None) -> bool:
            if self.failures:
                self.failures -= 1
                raise OSError("disk full")
            return await super().opt_out(number, note=note)

    store = FlakyStore()
    handler = InboundHandler(store)
    post = await serve(app_with(handler.handle))
    assert (await post([inbound("STOP")]))[0] == 503
    assert HANDSET not in store
    assert (await post([inbound("STOP")]))[0] == 200  # Bandwidth's retry of the same message
    assert HANDSET in store and handler.stats.errors == 1 and handler.stats.opted_out == 1


async def test_a_slow_on_reply_answers_503_before_bandwidths_deadline(
    serve: Callable[[web.Application], Awaitable[Post]],
) -> None:
    never = asyncio.Event()

    async def hang(reply: InboundReply) -> None:
        await never.wait()

    handler = InboundHandler(MemoryOptOutStore(), on_reply=hang, timeout=0.05)
    post = await serve(app_with(handler.handle))
    assert (await post([inbound("hello")]))[0] == 503
    assert handler.stats.errors == 1


async def test_the_file_store_behind_the_handler_writes_the_opt_out_file(
    serve: Callable[[web.Application], Awaitable[Post]], tmp_path: Path
) -> None:
    path = tmp_path / "stop.txt"
    post = await serve(app_with(make_inbound_handler(FileOptOutStore(path))))
    assert (await post([inbound("Stop")]))[0] == 200
    assert load_opt_out(path) == {HANDSET}
    assert path.read_text() == f"{HANDSET}  # STOP 2026-12-02T03:00:00Z\n"


def test_the_specs_examples_decode() -> None:
    sms = {
        "time": "2025-01-06T15:43:35.502180Z",
        "type": "message-received",
        "to": "+12345678902",
        "description": "Incoming message received",
        "message": {
            "id": "14762070468292kw2fuqty55yp2b2",
            "owner": "+12345678902",
            "applicationId": "93de2206-9669-4e07-948d-329f4b722ee2",
            "time": "2025-01-06T15:43:34.000000Z",
            "segmentCount": 1,
            "direction": "in",
            "to": ["+12345678902"],
            "from": "+12345678901",
            "text": "Hey, check out this SMS!",
        },
    }
    [event] = decode_inbound_callbacks(json.dumps(sms).encode())
    assert (event.type, event.to, event.message.from_, event.message.text) == (
        "message-received",
        "+12345678902",
        "+12345678901",
        "Hey, check out this SMS!",
    )


async def test_the_processor_applies_events_a_status_receiver_decoded() -> None:
    # A receiver whose status and inbound callbacks share one URL decodes both as StatusCallback.
    store = MemoryOptOutStore()
    seen: list[InboundReply] = []
    processor = ReplyProcessor(store, on_reply=seen.append)
    body = [inbound("STOP", message_id="in-1"), inbound(None, message_id="out-1", kind="message-delivered")]
    stop, delivered = decode_callbacks(json.dumps(body).encode())
    assert await processor.apply(stop) is ReplyOutcome.OPTED_OUT
    assert await processor.apply(stop) is ReplyOutcome.DUPLICATE
    assert await processor.apply(delivered) is ReplyOutcome.IGNORED
    [odd] = decode_inbound_callbacks(
        json.dumps(inbound("STOP", message_id="in-2", time="0001-01-01T00:00:00+05:00")).encode()
    )
    assert await processor.apply(odd) is ReplyOutcome.IGNORED  # not an OverflowError
    assert HANDSET in store and [r.kind for r in seen] == [ReplyKind.OPT_OUT]
