"""Mapping one answer (or one failure) to one exception: aioresponses territory."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import aiohttp
import pytest

from bwasync import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    BwasyncError,
    FieldError,
    MessagingClient,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    RetryPolicy,
    ServerError,
    UnexpectedResponseError,
    UnsupportedMediaTypeError,
    ValidationError,
)
from bwasync._transport import parse_retry_after
from tests._aioresponses_compat import mocked as aioresponses

BASE = "https://bw.example/api/v2"
URL = re.compile(r"^https://bw\.example/api/v2/users/9900000/messages$")
SEND = {"to": "+15552223333", "from_": "+15553332222", "application_id": "app", "text": "hi"}


@pytest.fixture
async def client() -> AsyncIterator[MessagingClient]:
    async with MessagingClient(
        "9900000", username="user", password="s3cret", base_url=BASE, retry=RetryPolicy(max_attempts=1)
    ) as c:
        yield c


@pytest.mark.parametrize(
    ("status", "body", "cls", "type_"),
    [
        (400, {"type": "request-validation", "description": "bad"}, BadRequestError, "request-validation"),
        (401, {"type": "unauthorized", "description": "Authentication Failed"}, AuthenticationError, "unauthorized"),
        (403, {"type": "forbidden", "description": "Access Denied"}, PermissionDeniedError, "forbidden"),
        (404, {"type": "object-not-found", "description": "nope"}, NotFoundError, "object-not-found"),
        (405, {"type": "method-not-allowed", "description": "no"}, APIStatusError, "method-not-allowed"),
        (
            415,
            {"type": "unsupported-content-type", "description": "Content type 'text/plain' not supported."},
            UnsupportedMediaTypeError,
            "unsupported-content-type",
        ),
        (429, {"type": "max-message-queue-size-exceeded", "description": "full"}, RateLimitError, None),
        (500, {"type": "internal-server-error", "description": "oops"}, ServerError, "internal-server-error"),
        (503, {"type": "service-unavailable", "description": "later"}, ServerError, "service-unavailable"),
    ],
)
async def test_status_maps_to_its_exception(
    client: MessagingClient, status: int, body: dict[str, str], cls: type[APIStatusError], type_: str | None
) -> None:
    with aioresponses() as mock:
        mock.post(URL, status=status, payload=body)
        with pytest.raises(cls) as info:
            await client.create_message(**SEND)
    err = info.value
    assert type(err) is cls
    assert err.status_code == status
    assert err.type == (type_ or body["type"])
    assert err.description == body["description"]
    assert err.may_have_been_sent is False
    assert err.attempts == 1


async def test_400_carries_every_field_error(client: MessagingClient) -> None:
    body = {
        "type": "request-validation",
        "description": "Your request could not be accepted.",
        "fieldErrors": [
            {"fieldName": "from", "description": "'+1invalid' must be replaced with a valid E164 formatted number"},
            {"fieldName": "to", "description": "bad to"},
        ],
    }
    with aioresponses() as mock:
        mock.post(URL, status=400, payload=body)
        with pytest.raises(BadRequestError) as info:
            await client.create_message(**SEND)
    assert info.value.field_errors == [FieldError(f["fieldName"], f["description"]) for f in body["fieldErrors"]]
    assert "from:" in str(info.value)


async def test_html_502_from_a_load_balancer_is_a_server_error(client: MessagingClient) -> None:
    html = "<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>"
    with aioresponses() as mock:
        mock.post(URL, status=502, body=html, content_type="text/html")
        with pytest.raises(ServerError) as info:
            await client.create_message(**SEND)
    assert info.value.status_code == 502
    assert info.value.description == "502 Bad Gateway"
    assert info.value.type is None
    assert info.value.body.startswith(b"<html>")
    assert info.value.may_have_been_sent is False


async def test_empty_and_garbage_error_bodies(client: MessagingClient) -> None:
    with aioresponses() as mock:
        mock.post(URL, status=504, body=b"")
        mock.post(URL, status=500, body=b"\xff\xfe not json")
        with pytest.raises(ServerError) as first:
            await client.create_message(**SEND)
        with pytest.raises(ServerError) as second:
            await client.create_message(**SEND)
    assert first.value.description is None
    assert second.value.status_code == 500


async def test_spring_style_404_body(client: MessagingClient) -> None:
    body = {"timestamp": "2024-01-01T00:00:00Z", "status": 404, "error": "Not Found", "message": "No message available"}
    with aioresponses() as mock:
        mock.post(URL, status=404, payload=body)
        with pytest.raises(NotFoundError) as info:
            await client.create_message(**SEND)
    assert info.value.type == "Not Found"
    assert info.value.description == "No message available"


async def test_429_retry_after_and_headers(client: MessagingClient) -> None:
    with aioresponses() as mock:
        mock.post(
            URL, status=429, payload={"type": "rate_limit_exceeded", "description": "x"}, headers={"Retry-After": "7"}
        )
        with pytest.raises(RateLimitError) as info:
            await client.create_message(**SEND)
    assert info.value.retry_after == 7.0
    assert info.value.headers["Retry-After"] == "7"


async def test_429_without_retry_after(client: MessagingClient) -> None:
    with aioresponses() as mock:
        mock.post(URL, status=429, payload={"type": "max-message-queue-size-exceeded", "description": "full"})
        with pytest.raises(RateLimitError) as info:
            await client.create_message(**SEND)
    assert info.value.retry_after is None


def test_parse_retry_after() -> None:
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0


@pytest.mark.parametrize(
    ("failure", "cls", "sent"),
    [
        (
            aiohttp.ClientConnectorError(
                aiohttp.client_reqrep.ConnectionKey("h", 1, False, True, None, None, None), OSError(111, "refused")
            ),
            APIConnectionError,
            False,
        ),
        (aiohttp.ConnectionTimeoutError("connect timed out"), APITimeoutError, False),
        (aiohttp.ServerDisconnectedError(), APIConnectionError, True),
        (aiohttp.ClientOSError(104, "Connection reset by peer"), APIConnectionError, True),
        (aiohttp.SocketTimeoutError("read timed out"), APITimeoutError, True),
        (TimeoutError(), APITimeoutError, True),
        (aiohttp.ClientPayloadError("truncated"), APIConnectionError, True),
    ],
)
async def test_connection_failures_say_whether_the_request_left(
    client: MessagingClient, failure: Exception, cls: type[APIConnectionError], sent: bool
) -> None:
    with aioresponses() as mock:
        mock.post(URL, exception=failure)
        with pytest.raises(cls) as info:
            await client.create_message(**SEND)
    assert type(info.value) is cls
    assert info.value.request_sent is sent
    assert info.value.may_have_been_sent is sent
    assert info.value.__cause__ is failure


async def test_accepted_but_unreadable_body_may_have_been_sent(client: MessagingClient) -> None:
    with aioresponses() as mock:
        mock.post(URL, status=202, body=b"<html>ok</html>")
        with pytest.raises(UnexpectedResponseError) as info:
            await client.create_message(**SEND)
    assert info.value.may_have_been_sent is True


async def test_invalid_request_raises_before_any_request(client: MessagingClient) -> None:
    with aioresponses() as mock:  # no route registered: any request would fail loudly
        with pytest.raises(ValidationError) as info:
            await client.create_message(to="12", from_="+15553332222", application_id="app", text="hi")
        assert not mock.requests
    assert info.value.may_have_been_sent is False


def test_exception_tree() -> None:
    assert issubclass(ValidationError, BwasyncError)
    for cls in (BadRequestError, AuthenticationError, PermissionDeniedError, NotFoundError, UnsupportedMediaTypeError):
        assert issubclass(cls, APIStatusError)
    assert issubclass(RateLimitError, APIStatusError)
    assert issubclass(APITimeoutError, APIConnectionError)
    import bwasync._exceptions as module

    assert module.__doc__ is not None and "APITimeoutError" in module.__doc__


async def test_credentials_never_in_repr_or_errors(client: MessagingClient) -> None:
    assert "s3cret" not in repr(client)
    assert "user" in repr(client)
    with aioresponses() as mock:
        mock.post(URL, status=401, payload={"type": "unauthorized", "description": "Authentication Failed"})
        with pytest.raises(AuthenticationError) as info:
            await client.create_message(**SEND)
    text = str(info.value) + repr(info.value) + repr(info.value.headers)
    assert "s3cret" not in text
    assert "dXNlcjpzM2NyZXQ" not in text  # base64 of user:s3cret
