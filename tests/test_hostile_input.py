"""Hostile input, one reproduction each: every input gets its result, no byte crashes anything.

Validation answers :class:`ValidationError` for every value it cannot accept, on every way a
request is built; the fan-out turns whatever an input or an attempt raises into that input's
result; the emulator answers a malformed request 4xx, never 500; a failed token request means
the message was not sent; the CLI turns an undecodable argument into a usage error.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import msgspec
import pytest
from aiohttp import web
from click.testing import CliRunner

from bwasync import (
    APIConnectionError,
    APITimeoutError,
    MessageRequest,
    MessagingClient,
    Outcome,
    RetryPolicy,
    ValidationError,
)
from bwasync._constants import MAX_TAG_LENGTH
from bwasync._validation import _bounded_string_error
from bwasync.campaign import CallbackHandler, CallbackReceiver
from bwasync.cli import cli
from bwasync.compliance import InboundHandler, MemoryOptOutStore
from bwasync.emulator import Emulator
from tests._aioresponses_compat import mocked as aioresponses
from tests._hostile import ExplodingMapping, http_request, raw_http

ACCOUNT = "9900000"
BASE = {"to": ["+15552223333"], "from": "+15553332222", "applicationId": "app", "text": "hi"}
KWARGS = {"to": "+15552223333", "from_": "+15553332222", "application_id": "app", "text": "hi"}
BAD_URLS = ["http://[::1", "http://[abc]/x.png", "http://ex\uff03ample.com/x.png"]
LONE = "bad \ud800"


def build_every_way(fields: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """``(how, thunk)`` for each way a request is built from wire-named ``fields``."""
    py = {{"from": "from_", "applicationId": "application_id"}.get(k, k): v for k, v in fields.items()}
    yield "keywords", lambda: MessageRequest(**py)
    yield "from_dict", lambda: MessageRequest.from_dict(fields)
    yield "msgspec.convert", lambda: msgspec.convert(fields, MessageRequest)
    try:
        body = json.dumps(fields, ensure_ascii=True)  # a lone surrogate travels as a \ud800 escape
    except ValueError:
        return
    yield "from_json", lambda: MessageRequest.from_json(body.encode())


def assert_rejected(fields: dict[str, Any], field: str) -> None:
    for how, build in build_every_way(fields):
        with pytest.raises(ValidationError) as info:
            build()
        names = [e.field_name for e in info.value.field_errors]
        assert field in names or "body" in names, (how, names)
        msgspec.json.encode(info.value.field_errors)  # the errors themselves can go on the wire
        str(info.value).encode()


# --- 1. URLs urlsplit rejects ------------------------------------------------------------------


@pytest.mark.parametrize("url", BAD_URLS)
def test_a_media_url_urlsplit_rejects_is_a_validation_error_on_every_path(url: str) -> None:
    assert_rejected({**BASE, "media": [url]}, "media")


# --- 2. lone surrogates ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("text", LONE),
        ("tag", LONE),
        ("applicationId", LONE),
        ("media", ["https://example.com/\udcff.png"]),
        ("to", ["+1555222\ud8003"]),
        ("from", "+1555333\ud800"),
        ("from", "Shop\udcff"),
        ("expiration", "2030-01-01T00:00:00Z\ud800"),
    ],
)
def test_a_lone_surrogate_in_any_string_field_is_a_validation_error(field: str, value: Any) -> None:
    assert_rejected({**BASE, field: value}, field)


def test_a_lone_surrogate_in_an_unknown_key_is_reported_encodably() -> None:
    with pytest.raises(ValidationError) as info:
        MessageRequest.from_dict({**BASE, "te\udcffxt": "hi"})
    msgspec.json.encode(info.value.field_errors)


def test_valid_non_ascii_text_still_passes_the_fast_path() -> None:
    assert MessageRequest(**{**KWARGS, "text": "Grüße 👋 中文"}).text == "Grüße 👋 中文"


# --- 3. deep nesting ------------------------------------------------------------------------------


def test_deeply_nested_json_is_a_validation_error_not_a_recursion_error() -> None:
    with pytest.raises(ValidationError) as info:
        MessageRequest.from_json(b"[" * 1000 + b"]" * 1000)
    assert info.value.field_errors[0].field_name == "body"
    deep = json.dumps({**BASE, "x": "X"}).replace('"X"', "[" * 1000 + "]" * 1000)
    with pytest.raises(ValidationError):
        MessageRequest.from_json(deep)


# --- the fan-out never loses an input --------------------------------------------------------------


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(username="u", password="p", account_id=ACCOUNT) as emulator:
        yield emulator


@pytest.fixture
async def client(emu: Emulator) -> AsyncIterator[MessagingClient]:
    async with MessagingClient(
        ACCOUNT, username="u", password="p", base_url=emu.url, retry=RetryPolicy(max_attempts=1)
    ) as c:
        yield c


def dicts(bad: dict[str, Any]) -> list[dict[str, Any]]:
    """Four wire-named dicts, the second with ``bad`` merged in."""
    return [{**BASE, "tag": f"t{i}", **(bad if i == 1 else {})} for i in range(4)]


async def test_send_returns_a_result_for_a_url_urlsplit_rejects(client: MessagingClient, emu: Emulator) -> None:
    result = await client.send({**BASE, "media": [BAD_URLS[0]]})
    assert result.outcome is Outcome.NOT_SENT and isinstance(result.error, ValidationError)
    result = await client.send(**{**KWARGS, "text": LONE})
    assert result.outcome is Outcome.NOT_SENT and isinstance(result.error, ValidationError)
    assert emu.stats.creates == 0


@pytest.mark.parametrize("bad", [{"media": [BAD_URLS[0]]}, {"text": LONE}, {"tag": LONE}])
async def test_send_many_over_four_dicts_gives_four_results(
    client: MessagingClient, emu: Emulator, bad: dict[str, Any]
) -> None:
    results = [r async for r in client.send_many(dicts(bad), concurrency=1)]
    assert sorted(r.index for r in results) == [0, 1, 2, 3]
    by_index = {r.index: r for r in results}
    assert by_index[1].outcome is Outcome.NOT_SENT and isinstance(by_index[1].error, ValidationError)
    assert all(by_index[i].outcome is Outcome.ACCEPTED for i in (0, 2, 3))
    assert sorted(emu.acceptance_counts()) == ["t0", "t2", "t3"]


async def test_send_all_counts_every_input(client: MessagingClient) -> None:
    results, summary = await client.send_all(dicts({"media": [BAD_URLS[1]]}))
    assert [r.index for r in results] == [0, 1, 2, 3]
    assert (summary.total, summary.accepted, summary.not_sent) == (4, 3, 1)


async def test_an_input_that_raises_unexpectedly_is_its_own_result(client: MessagingClient) -> None:
    inputs: list[Any] = [BASE, ExplodingMapping(), 42, None, BASE]
    results, summary = await client.send_all(inputs)
    assert [r.index for r in results] == [0, 1, 2, 3, 4]
    assert [r.outcome for r in results] == [Outcome.ACCEPTED] + [Outcome.NOT_SENT] * 3 + [Outcome.ACCEPTED]
    assert type(results[1].error) is RuntimeError  # the unexpected exception, with its type
    assert isinstance(results[2].error, ValidationError) and isinstance(results[3].error, ValidationError)
    assert summary.total == 5


async def test_an_attempt_that_fails_unexpectedly_on_the_wire_is_ambiguous_and_the_run_goes_on(
    client: MessagingClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    cls = type(client._transport)
    real = cls.create_message

    async def create_message(self: Any, body: bytes, *args: Any, **kwargs: Any) -> Any:
        if b'"t1"' in body:
            raise KeyError("a bug in the middle of sending")
        return await real(self, body, *args, **kwargs)

    monkeypatch.setattr(cls, "create_message", create_message)
    results, summary = await client.send_all(dicts({}), concurrency=1)
    assert [r.outcome for r in results] == [Outcome.ACCEPTED, Outcome.AMBIGUOUS, Outcome.ACCEPTED, Outcome.ACCEPTED]
    assert type(results[1].error) is KeyError and results[1].attempts == 1
    assert summary.total == 4


# --- 4. the emulator answers malformed requests 4xx --------------------------------------------------


BASIC = b"Authorization: Basic " + base64.b64encode(b"u:p")
CREATE = f"/api/v2/users/{ACCOUNT}/messages"
TOKEN = "/api/v1/oauth2/token"


async def test_emulator_create_with_an_unknown_field_nested_1000_deep_is_400(emu: Emulator) -> None:
    body = json.dumps({**BASE, "x": "X"}).replace('"X"', "[" * 1000 + "]" * 1000).encode()
    status, answer = await raw_http(
        emu.port, http_request("POST", CREATE, [BASIC, b"Content-Type: application/json"], body)
    )
    assert status == 400
    assert json.loads(answer)["fieldErrors"][0]["fieldName"] == "body"


@pytest.mark.parametrize(
    ("target", "headers", "body", "status"),
    [
        (CREATE, [BASIC, b"Content-Type: application/\xff\xfejson"], json.dumps(BASE).encode(), 415),
        (CREATE, [b"Authorization: Basic \xc3\xa9\xff", b"Content-Type: application/json"], b"{}", 401),
        (TOKEN, [b"Authorization: Basic \xc3\xa9", b"Content-Type: application/x-www-form-urlencoded"], b"", 401),
        (TOKEN, [BASIC, b"Content-Type: multipart/form-data"], b"grant_type=client_credentials", 400),
    ],
    ids=["content-type-not-utf8", "basic-not-ascii", "token-basic-not-ascii", "token-multipart-no-boundary"],
)
async def test_emulator_malformed_headers_are_4xx(
    emu: Emulator, target: str, headers: list[bytes], body: bytes, status: int
) -> None:
    got, answer = await raw_http(emu.port, http_request("POST", target, headers, body))
    assert got == status
    parsed = json.loads(answer)
    assert ("error" in parsed) if target == TOKEN else ("type" in parsed and "description" in parsed)


@pytest.mark.parametrize("token", ["o٣", "o²", "o" + "9" * 5000], ids=["arabic-digit", "superscript", "5000-digits"])
async def test_emulator_page_token_that_is_not_an_ascii_offset_is_400(emu: Emulator, token: str) -> None:
    encoded = base64.urlsafe_b64encode(token.encode()).decode()
    target = f"{CREATE}?sourceTn=%2B15553332222&pageToken={encoded}"
    status, answer = await raw_http(emu.port, http_request("GET", target, [BASIC]))
    assert status == 400
    assert json.loads(answer)["type"] == "request-validation"


async def test_emulator_last_resort_turns_an_unforeseen_failure_into_a_logged_400(
    emu: Emulator, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def unforeseen(*args: Any) -> Any:
        raise ValueError("a request no handler check foresaw")

    monkeypatch.setattr("bwasync.emulator._server.parse_query", unforeseen)
    with caplog.at_level(logging.WARNING, logger="bwasync.emulator"):
        status, answer = await raw_http(emu.port, http_request("GET", f"{CREATE}?sourceTn=x", [BASIC]))
    assert status == 400
    assert json.loads(answer) == {
        "type": "request-validation",
        "description": "the request could not be read (ValueError)",
    }
    assert any(r.exc_info and "GET" in r.getMessage() for r in caplog.records)


# --- 5. a failed token request means the message was not sent ---------------------------------------

TOKEN_URL = "https://auth.example/api/v1/oauth2/token"
MESSAGES = re.compile(r"^https://bw\.example/api/v2/users/9900000/messages$")
ACCEPTED = {"id": "m-1", "time": "2030-01-01T00:00:00.000Z", "segmentCount": 1, "to": ["+15552223333"]}


def oauth_client(retry: RetryPolicy) -> MessagingClient:
    return MessagingClient(
        ACCOUNT,
        client_id="cid",
        client_secret="csecret",
        token_url=TOKEN_URL,
        base_url="https://bw.example/api/v2",
        retry=retry.with_(initial_delay=0.0, max_delay=0.0),
    )


@pytest.mark.parametrize("failure", [TimeoutError(), ConnectionResetError()], ids=["timeout", "reset"])
async def test_a_token_request_that_fails_is_not_sent(failure: Exception) -> None:
    async with oauth_client(RetryPolicy(max_attempts=1)) as client:
        with aioresponses() as mock:
            mock.post(TOKEN_URL, exception=failure)
            result = await client.send(**KWARGS)
            assert not [k for k in mock.requests if MESSAGES.match(str(k[1]))]  # the create never left
    assert result.outcome is Outcome.NOT_SENT and result.attempts == 1
    assert isinstance(result.error, APIConnectionError) and result.error.request_sent is False
    assert isinstance(result.error, APITimeoutError) is isinstance(failure, TimeoutError)


async def test_a_token_request_that_fails_is_retried_like_any_failure_before_sending() -> None:
    async with oauth_client(RetryPolicy(max_attempts=3)) as client:
        with aioresponses() as mock:
            mock.post(TOKEN_URL, exception=TimeoutError())
            mock.post(TOKEN_URL, payload={"access_token": "tok", "expires_in": 3600})
            mock.post(MESSAGES, status=202, payload=ACCEPTED)
            result = await client.send(**KWARGS)
    assert result.outcome is Outcome.ACCEPTED and result.attempts == 2


# --- 6. the CLI: an undecodable argument is a usage error --------------------------------------------


def test_cli_send_with_undecodable_text_is_a_usage_error_naming_the_option() -> None:
    result = CliRunner().invoke(cli, ["send", "--emulator", "--to", "+15552223333", "--text", "caf\udcff"])
    assert result.exit_code == 2, result.output
    assert "--text" in result.output and "not valid text" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_cli_undecodable_environment_value_is_a_usage_error_naming_the_option() -> None:
    result = CliRunner().invoke(cli, ["send", "--to", "+15552223333", "--text", "hi"], env={"BW_NUMBER": "+1\udcff"})
    assert result.exit_code == 2 and "--from" in result.output


def test_cli_undecodable_argument_of_another_command_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["segments", "caf\udcff"])
    assert result.exit_code == 2 and "TEXT" in result.output


def test_json_nesting_is_judged_the_same_whatever_the_recursion_limit() -> None:
    # msgspec's own guard is the interpreter's recursion limit, which a caller (or a test
    # framework) may have raised: the depth bound must not depend on it.
    import sys

    from bwasync._models import decode_callbacks, decode_inbound_callbacks
    from bwasync._validation import check_json_depth

    deep = b'{"to": "+15552223333", "x": ' + b"[" * 100 + b"]" * 100 + b"}"
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(20_000)
    try:
        with pytest.raises(ValidationError):
            MessageRequest.from_json(deep)
        for decode in (decode_callbacks, decode_inbound_callbacks):
            with pytest.raises(msgspec.DecodeError, match="nested deeper"):
                decode(b"[" + deep + b"]")
    finally:
        sys.setrecursionlimit(old)
    # Brackets inside strings (escaped quotes included) are text, not nesting.
    check_json_depth(b'[{"text": "' + b"[{" * 500 + b'\\"' + b"[" * 500 + b'"}]')


@pytest.mark.parametrize(
    "tag", [None, "", "c:1", "c:" + "k" * 1022, "c:" + "k" * 1023, "Grüße:é", "c:\udcff", 5, b"c:1", ["c"]]
)
def test_a_tagged_plain_sms_takes_the_fast_path_with_the_full_checks_rules(tag: Any) -> None:
    # A campaign tags every message: the fast path takes a tag, and must keep exactly the full
    # checks' rules for it (a string, at most 1024 characters, encodable).
    expected = None if tag is None else _bounded_string_error("tag", tag, MAX_TAG_LENGTH)
    if expected is None:
        assert MessageRequest(**{**KWARGS, "tag": tag}).tag == tag
        return
    with pytest.raises(ValidationError) as info:
        MessageRequest(**{**KWARGS, "tag": tag})
    assert info.value.field_errors == [expected]


# --- a body that cannot be read is the client's mistake: 400, no traceback of ours -----------------

GZIP_LIE = b"Content-Encoding: gzip"  # declared, but the body is plain bytes aiohttp cannot inflate


@pytest.mark.parametrize(
    ("target", "headers", "body"),
    [
        (CREATE, [BASIC, b"Content-Type: application/json", GZIP_LIE], json.dumps(BASE).encode()),
        (TOKEN, [BASIC, b"Content-Type: application/x-www-form-urlencoded", GZIP_LIE], b"grant_type=x"),
        (TOKEN, [BASIC, b"Content-Type: application/x-www-form-urlencoded; charset=nope"], b"grant_type=x"),
        (TOKEN, [BASIC, b"Content-Type: multipart/form-data; boundary=b"], b"--b\r\nnot a header\r\n"),
    ],
    ids=["create-gzip-lie", "token-gzip-lie", "token-unknown-charset", "token-broken-multipart"],
)
async def test_emulator_answers_a_body_it_cannot_read_400_without_a_traceback(
    emu: Emulator, caplog: pytest.LogCaptureFixture, target: str, headers: list[bytes], body: bytes
) -> None:
    with caplog.at_level(logging.WARNING, logger="bwasync.emulator"):
        status, answer = await raw_http(emu.port, http_request("POST", target, headers, body))
    assert status == 400
    parsed = json.loads(answer)
    assert "could not be read" in (parsed["error_description"] if target == TOKEN else parsed["description"])
    ours = [r for r in caplog.records if r.name == "bwasync.emulator"]
    assert ours and not any(r.exc_info for r in ours)  # logged as the client's mistake, not a gap


@pytest.mark.parametrize("kind", ["callbacks", "inbound"])
async def test_a_receiver_answers_a_body_it_cannot_decode_400_not_500(kind: str) -> None:
    handler: CallbackHandler | InboundHandler
    if kind == "callbacks":
        handler = CallbackHandler(lambda event: None, username="u", password="p")
    else:
        handler = InboundHandler(MemoryOptOutStore(), username="u", password="p")
    app = web.Application()
    app.router.add_post("/", handler.handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        headers = [BASIC, b"Content-Type: application/json", GZIP_LIE]
        status, answer = await raw_http(runner.addresses[0][1], http_request("POST", "/", headers, b"[]"))
    finally:
        await runner.cleanup()
    assert status == 400
    assert answer == b"the body could not be read: Can not decode content-encoding: gzip"
    assert handler.stats.rejected == 1 and handler.stats.errors == 0


MALFORMED_HTTP = {
    "negative-content-length": b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: -1\r\n\r\n",
    "bad-chunk-size": b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    "non-ascii-path": "GET /\u00e9 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode(),
}


@pytest.mark.parametrize("server", ["emulator", "callback-receiver"])
@pytest.mark.parametrize("raw", list(MALFORMED_HTTP.values()), ids=list(MALFORMED_HTTP))
async def test_malformed_http_is_one_warning_line_not_an_error_with_a_traceback(
    caplog: pytest.LogCaptureFixture, server: str, raw: bytes
) -> None:
    # aiohttp answers these 400 itself, before any handler, and logs them at ERROR with a
    # traceback: on `bwasync emulator`'s terminal, a traceback for a client's mistake.
    caplog.set_level(logging.DEBUG)
    if server == "emulator":
        async with Emulator() as emu:
            status, _ = await raw_http(emu.port, raw)
    else:
        async with CallbackReceiver(on_event=lambda event: None) as receiver:
            assert receiver.port is not None
            status, _ = await raw_http(receiver.port, raw)
    assert status == 400
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.name.startswith("bwasync.") and ": malformed request, answered 400: " in warning.getMessage()


def test_the_server_log_filter_quiets_only_a_clients_mistakes() -> None:
    from aiohttp.http_exceptions import BadHttpMessage

    from bwasync._webhook import server_logger

    def record(exc: BaseException, msg: str = "Error handling request from %s") -> logging.LogRecord:
        return logging.LogRecord("x", logging.ERROR, __file__, 1, msg, ("127.0.0.1",), (type(exc), exc, None))

    quiet = server_logger("bwasync.test.http").filters[0]
    bad = record(BadHttpMessage("Invalid character in Content-Length:\n\n    b'-1'\n      ^"))
    assert quiet.filter(bad) and (bad.levelname, bad.exc_info) == ("WARNING", None)
    assert bad.getMessage() == (
        "Error handling request from 127.0.0.1: malformed request, answered 400: Invalid character in Content-Length"
    )
    drained = record(web.RequestPayloadError("400, message:\n  Can not decode content-encoding: deflate"))
    assert quiet.filter(drained) and drained.levelname == "WARNING"
    assert drained.getMessage() == "a request's body could not be read: Can not decode content-encoding: deflate"
    ours = record(RuntimeError("a bug in a handler"), "Unhandled exception")
    assert quiet.filter(ours) and ours.levelname == "ERROR" and ours.exc_info is not None  # stays loud
    assert server_logger("bwasync.test.http").filters == [quiet]  # added once
