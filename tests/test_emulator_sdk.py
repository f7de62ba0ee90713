"""Bandwidth's own Python SDK (``bandwidth-sdk``) against the emulator, exactly as against Bandwidth.

The SDK is generated from the same OpenAPI document, so if its models parse our answers (202
``Message``, 400 ``CreateMessageRequestError``, ``MessagesList``), the emulator speaks the
spec's shapes. The SDK is synchronous (urllib3): it runs in a worker thread while the
emulator serves on this test's event loop.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import TypeVar

import pytest
from bandwidth import ApiClient, Configuration
from bandwidth.api.messages_api import MessagesApi
from bandwidth.exceptions import ApiException, BadRequestException, UnauthorizedException
from bandwidth.models.create_message_request_error import CreateMessageRequestError
from bandwidth.models.list_message_item import ListMessageItem
from bandwidth.models.message import Message
from bandwidth.models.message_request import MessageRequest
from bandwidth.models.messages_list import MessagesList

from bwasync.emulator import Emulator

from .conftest import ACCOUNT_ID, PASSWORD, USERNAME, EmulatorFactory

APP_ID = "93de2206-9669-4e07-948d-329f4b722ee2"
FROM = "+15553332222"
TO = "+15554443333"
TO2 = "+15552223333"
LOGO = "https://dev.bandwidth.com/images/bandwidth-logo.png"

T = TypeVar("T")


async def with_sdk(emu: Emulator, call: Callable[[MessagesApi], T], *, password: str = PASSWORD) -> T:
    """Run ``call`` with a fresh SDK client in a worker thread; the emulator keeps serving here."""

    def run() -> T:
        config = Configuration(host=emu.url, username=USERNAME, password=password, ignore_operation_servers=True)
        with ApiClient(config) as client:
            return call(MessagesApi(client))

    return await asyncio.to_thread(run)


def create(request: MessageRequest) -> Callable[[MessagesApi], Message]:
    return lambda api: api.create_message(ACCOUNT_ID, request)


async def test_sdk_sends_and_gets_its_message_model(emulator: Emulator) -> None:
    request = MessageRequest(application_id=APP_ID, to=[TO, TO2], var_from=FROM, text="Hello", media=[LOGO], tag="sdk")
    message = await with_sdk(emulator, lambda api: api.create_message(ACCOUNT_ID, request))
    assert isinstance(message, Message)
    [record] = emulator.accepted
    assert message.id == record.id
    assert message.segment_count == 1 and message.to == [TO, TO2] and message.var_from == FROM
    assert message.owner == FROM and message.application_id == APP_ID and message.tag == "sdk"
    assert message.direction is not None and message.direction.value == "out"
    assert message.time is not None and message.time.tzinfo is not None


async def test_sdk_sees_the_400_with_every_field_error(emulator: Emulator) -> None:
    # The SDK checks types and lengths but not E.164, so the request reaches the emulator.
    request = MessageRequest(application_id=APP_ID, to=["12"], var_from="+1invalid", text="Hi")
    with pytest.raises(BadRequestException) as caught:
        await with_sdk(emulator, lambda api: api.create_message(ACCOUNT_ID, request))
    exc = caught.value
    assert exc.status == 400
    body = json.loads(exc.body or "")
    assert body["type"] == "request-validation"
    assert {e["fieldName"] for e in body["fieldErrors"]} == {"from", "to"}
    assert isinstance(exc.data, CreateMessageRequestError)
    assert exc.data.field_errors is not None and len(exc.data.field_errors) == 2
    assert emulator.accepted == []


async def test_sdk_sees_401_for_wrong_credentials(emulator: Emulator) -> None:
    request = MessageRequest(application_id=APP_ID, to=[TO], var_from=FROM, text="Hi")
    with pytest.raises(UnauthorizedException):
        await with_sdk(emulator, lambda api: api.create_message(ACCOUNT_ID, request), password="wrong")


async def test_sdk_gets_a_generic_api_exception_on_a_full_queue(emulator_factory: EmulatorFactory) -> None:
    async with emulator_factory(dequeue_rate=0.001, queue_seconds=1000) as emu:  # a queue of one segment
        request = MessageRequest(application_id=APP_ID, to=[TO], var_from=FROM, text="Hi")
        await with_sdk(emu, lambda api: api.create_message(ACCOUNT_ID, request))
        with pytest.raises(ApiException) as caught:
            await with_sdk(emu, lambda api: api.create_message(ACCOUNT_ID, request))
        assert caught.value.status == 429
        assert "max-message-queue-size-exceeded" in (caught.value.body or "")


async def test_sdk_lists_messages(emulator_factory: EmulatorFactory) -> None:
    async with emulator_factory(p_delivered=0.0, failure_codes=(4720,)) as emu:
        for text in ("one", "two"):
            await with_sdk(emu, create(MessageRequest(application_id=APP_ID, to=[TO], var_from=FROM, text=text)))
        listed = await with_sdk(emu, lambda api: api.list_messages(ACCOUNT_ID, source_tn=FROM, limit=1))
        assert isinstance(listed, MessagesList)
        assert listed.total_count == 2
        assert listed.page_info is not None and listed.page_info.next_page_token is not None
        [item] = listed.messages or []
        assert isinstance(item, ListMessageItem)
        assert item.source_tn == FROM and item.destination_tn == TO and item.segment_count == 1
        assert item.message_status is not None and item.message_status.value == "FAILED"
        assert item.error_code == 4720 and item.receive_time is not None
        token = listed.page_info.next_page_token
        rest = await with_sdk(emu, lambda api: api.list_messages(ACCOUNT_ID, source_tn=FROM, limit=1, page_token=token))
        assert rest.messages is not None and len(rest.messages) == 1
        assert rest.page_info is not None and rest.page_info.next_page_token is None
        ids = {item.message_id, rest.messages[0].message_id}
        assert ids == {m.id for m in emu.accepted}
