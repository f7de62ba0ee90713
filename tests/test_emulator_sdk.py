"""Bandwidth's own Python SDK (``bandwidth-sdk``) against the emulator, exactly as against Bandwidth.

The SDK is generated from the same OpenAPI document, so if its models parse our answers (202
``Message``, 400 ``CreateMessageRequestError``, ``MessagesList``), the emulator speaks the
spec's shapes. The SDK is synchronous (urllib3): it runs in a worker thread while the
emulator serves on this test's event loop. The last test walks the steps of Bandwidth's own
smoke tests (messages over OAuth2, media over Basic auth) against the emulator.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import pytest
import urllib3

from bwasync.emulator import Emulator

from .conftest import ACCOUNT_ID, PASSWORD, USERNAME, EmulatorFactory

if TYPE_CHECKING:
    from bandwidth import Configuration, Message, MessageRequest, MessagesApi

APP_ID = "93de2206-9669-4e07-948d-329f4b722ee2"
FROM = "+15553332222"
TO = "+15554443333"
TO2 = "+15552223333"
LOGO = "https://dev.bandwidth.com/images/bandwidth-logo.png"

T = TypeVar("T")


async def with_sdk(emu: Emulator, call: Callable[[MessagesApi], T], *, password: str = PASSWORD) -> T:
    """Run ``call`` with a fresh SDK client in a worker thread; the emulator keeps serving here."""
    from ._sdk import ApiClient, Configuration, MessagesApi

    def run() -> T:
        config = Configuration(host=emu.url, username=USERNAME, password=password, ignore_operation_servers=True)
        with ApiClient(config) as client:
            return call(MessagesApi(client))

    return await asyncio.to_thread(run)


def create(request: MessageRequest) -> Callable[[MessagesApi], Message]:
    return lambda api: api.create_message(ACCOUNT_ID, request)


async def test_sdk_sends_and_gets_its_message_model(emulator: Emulator) -> None:
    from ._sdk import Message, MessageRequest

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
    from ._sdk import BadRequestException, CreateMessageRequestError, MessageRequest

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
    from ._sdk import MessageRequest, UnauthorizedException

    request = MessageRequest(application_id=APP_ID, to=[TO], var_from=FROM, text="Hi")
    with pytest.raises(UnauthorizedException):
        await with_sdk(emulator, lambda api: api.create_message(ACCOUNT_ID, request), password="wrong")


async def test_sdk_gets_a_generic_api_exception_on_a_full_queue(emulator_factory: EmulatorFactory) -> None:
    from ._sdk import ApiException, MessageRequest

    async with emulator_factory(dequeue_rate=0.001, queue_seconds=1000) as emu:  # a queue of one segment
        request = MessageRequest(application_id=APP_ID, to=[TO], var_from=FROM, text="Hi")
        await with_sdk(emu, lambda api: api.create_message(ACCOUNT_ID, request))
        with pytest.raises(ApiException) as caught:
            await with_sdk(emu, lambda api: api.create_message(ACCOUNT_ID, request))
        assert caught.value.status == 429
        assert "max-message-queue-size-exceeded" in (caught.value.body or "")


async def test_sdk_lists_messages(emulator_factory: EmulatorFactory) -> None:
    from ._sdk import ListMessageItem, MessageRequest, MessagesList

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


# --- Bandwidth's smoke tests, step by step, against the emulator -----------------------------------
#
# Bandwidth's SDK repository runs two smoke tests against the real API: messages with OAuth2
# (client credentials), media with Basic auth. The test below drives the SDK through the same
# steps and the same assertions, pointed at the emulator: ``host=<emulator>/api/v2`` with
# ``ignore_operation_servers=True``, and the SDK's token request (``urllib3.request`` to
# Bandwidth's token URL, hard-coded in some SDK versions) redirected to the emulator's endpoint.

BANDWIDTH_TOKEN_URL = "https://api.bandwidth.com/api/v1/oauth2/token"
CLIENT_ID = "smoke-client"
CLIENT_SECRET = "smoke-secret"
E164 = re.compile(r"^\+[1-9]\d{1,14}$")


def sdk_config(emu: Emulator, **credentials: str) -> Configuration:
    from ._sdk import Configuration

    return Configuration(host=emu.url, ignore_operation_servers=True, **credentials)


async def test_bandwidth_smoke_steps_pass_against_the_emulator(
    emulator_factory: EmulatorFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with emulator_factory(client_id=CLIENT_ID, client_secret=CLIENT_SECRET) as emu:
        real_request = urllib3.request

        def redirect(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
            return real_request(method, emu.token_url if url == BANDWIDTH_TOKEN_URL else url, *args, **kwargs)

        monkeypatch.setattr(urllib3, "request", redirect)
        await asyncio.to_thread(run_smoke_steps, emu)
        assert emu.stats.tokens_issued == 1  # one OAuth2 token, cached by the SDK across calls
        assert emu.stats.by_status[204] == 4  # two uploads, two deletes


def run_smoke_steps(emu: Emulator) -> None:
    from ._sdk import (
        ApiClient,
        ApiException,
        ListMessageDirectionEnum,
        ListMessageItem,
        Media,
        MediaApi,
        Message,
        MessageRequest,
        MessagesApi,
        MessagesList,
        MessageStatusEnum,
        MessageTypeEnum,
        NotFoundException,
        PriorityEnum,
        UnauthorizedException,
    )

    oauth = ApiClient(sdk_config(emu, client_id=CLIENT_ID, client_secret=CLIENT_SECRET))
    anonymous = ApiClient(sdk_config(emu))
    messages, nobody = MessagesApi(oauth), MessagesApi(anonymous)
    request = MessageRequest(
        application_id=APP_ID,
        to=[TO],
        var_from=FROM,
        text="python integration",
        media=["https://cdn2.thecatapi.com/images/MTY3ODIyMQ.jpg"],
        tag="python integration tag",
        priority=PriorityEnum("default"),
    )
    invalid = MessageRequest(application_id=APP_ID, to=["+invalid"], var_from="+invalid", text="")

    # create (skipped by Bandwidth, run here): 202 and the message echoed
    created = messages.create_message_with_http_info(ACCOUNT_ID, request)
    assert created.status_code == 202
    message = created.data
    assert isinstance(message, Message)
    assert message.application_id == APP_ID and message.to == [TO] and message.var_from == FROM
    assert message.owner == FROM and message.text == request.text and message.media == request.media
    assert message.tag == request.tag and message.priority == PriorityEnum("default")
    assert message.segment_count == 1 and isinstance(message.time, datetime)
    with pytest.raises(ApiException):
        messages.create_message(ACCOUNT_ID, invalid)
    with pytest.raises(UnauthorizedException):
        nobody.create_message(ACCOUNT_ID, invalid)

    # list outbound messages: the item fields the smoke test checks, callingNumberCountryA3 included
    listed = messages.list_messages_with_http_info(ACCOUNT_ID, message_direction=ListMessageDirectionEnum("OUTBOUND"))
    assert listed.status_code == 200
    page = listed.data
    assert isinstance(page, MessagesList) and page.total_count is not None and page.total_count > 0
    assert isinstance(page.messages, list) and isinstance(page.messages[0], ListMessageItem)
    item = page.messages[0]
    assert item.account_id == ACCOUNT_ID and item.message_id == message.id
    assert item.source_tn is not None and E164.match(item.source_tn)
    assert item.destination_tn is not None and E164.match(item.destination_tn)
    assert item.message_direction == ListMessageDirectionEnum("OUTBOUND")
    assert isinstance(item.message_status, MessageStatusEnum) and isinstance(item.message_type, MessageTypeEnum)
    assert item.segment_count is not None and item.segment_count > 0
    assert item.calling_number_country_a3 == "USA"
    assert isinstance(item.receive_time, datetime)
    with pytest.raises(ApiException):
        messages.list_messages(ACCOUNT_ID)  # no filter: 400
    with pytest.raises(UnauthorizedException):
        nobody.list_messages(ACCOUNT_ID)

    # media, with Basic auth: upload twice, list, download, delete twice
    media = MediaApi(ApiClient(sdk_config(emu, username=USERNAME, password=PASSWORD)))
    media_id = f"3.11_Linux_{uuid.uuid4()}_python_cat.jpeg"
    picture = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8
    uploaded = media.upload_media_with_http_info(
        account_id=ACCOUNT_ID, media_id=media_id, body=picture, _content_type="image/jpeg", cache_control="no-cache"
    )
    assert uploaded.status_code == 204
    media.upload_media(
        account_id=ACCOUNT_ID, media_id=media_id, body=picture, _content_type="image/jpeg", cache_control="no-cache"
    )
    assert media.list_media_with_http_info(ACCOUNT_ID).status_code == 200
    files = media.list_media(ACCOUNT_ID)
    assert isinstance(files[0], Media) and files[0].media_name == media_id
    downloaded = media.get_media_with_http_info(ACCOUNT_ID, media_id)
    assert downloaded.status_code == 200 and downloaded.headers is not None
    assert downloaded.headers["Content-Type"] == "image/jpeg"
    assert bytes(media.get_media(ACCOUNT_ID, media_id)) == picture
    deleted = media.delete_media_with_http_info(ACCOUNT_ID, media_id)
    assert deleted.status_code == 204
    media.delete_media(ACCOUNT_ID, media_id)  # again: still 204, so no exception
    with pytest.raises(NotFoundException):
        media.get_media(ACCOUNT_ID, media_id)
