"""Property-based tests: arbitrary input never escapes as anything but the documented outcome.

* Arbitrary dicts, keywords, JSON, bytes and strings into :class:`MessageRequest`, by every way
  one is built: a request that encodes and decodes back to itself, or :class:`ValidationError`.
* Arbitrary text into :func:`segments`, against an independent counter built here from the
  GSM 03.38 code tables and the UTF-16 encoding.
* Arbitrary bytes and JSON into the emulator's create, list and token endpoints: never a 5xx.
* Arbitrary inputs (valid, invalid, garbage, refused, faulted) into ``send_many``: exactly one
  result per input, indexes ``0..n-1``.

``make test`` runs a few dozen examples of each; ``make fuzz`` 10,000 (see tests/conftest.py).
"""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote_from_bytes

import msgspec
import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from bwasync import MessageRequest, MessagingClient, Outcome, RetryPolicy, ValidationError
from bwasync._models import encode_request
from bwasync._segments import segments
from bwasync._validation import encodable, is_e164, is_plain_sms
from bwasync.emulator import Emulator
from tests._hostile import ExplodingMapping, http_request, raw_http
from tests.conftest import ACCOUNT_ID

pytestmark = pytest.mark.fuzz

# --- strategies -----------------------------------------------------------------------------------

#: Any code point, lone surrogates included (hypothesis leaves them out by default).
any_text = st.text(st.characters(exclude_categories=()), max_size=30)
json_leaf = st.none() | st.booleans() | st.integers() | st.floats() | any_text
json_like = st.recursive(
    json_leaf, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4), max_leaves=12
)
NUMBERS = ["+15552223333", "+15554443333", "+1555222333", "+05552223333", "15552223333", "+1555222333\ud800", "+١٥٥٥"]
URLS = ["https://example.com/a.png", "http://[::1", "http://[abc]/x.png", "http://ex\uff03ample.com/x.png", "ftp://x/y"]
PLAUSIBLE: dict[str, st.SearchStrategy[Any]] = {
    "to": st.sampled_from(NUMBERS) | st.lists(st.sampled_from(NUMBERS), max_size=12),
    "from": st.sampled_from([*NUMBERS, "Shop", "Shop\udcff", "TooLongSenderId", "12345"]),
    "applicationId": st.sampled_from(["app", "", "  ", "a\ud800"]),
    "text": st.sampled_from(["hi", "", "é👋", "x" * 2049]) | any_text,
    "media": st.lists(st.sampled_from(URLS) | any_text, max_size=12),
    "tag": any_text | st.just("t" * 1025),
    "priority": st.sampled_from(["default", "high", "HIGH", "\udcff"]),
    "expiration": st.sampled_from(["2099-01-01T00:00:00Z", "2000-01-01T00:00:00Z", "2099-01-01T00:00:00", "soon"]),
}
PY_NAMES = {"from": "from_", "applicationId": "application_id"}


def field_value(wire: str) -> st.SearchStrategy[Any]:
    return PLAUSIBLE[wire] | json_like


#: Request-shaped dicts (wire names, some Python names) and dicts of anything.
request_dicts = st.fixed_dictionaries(
    {}, optional={(PY_NAMES.get(k, k) if i % 3 == 0 else k): field_value(k) for i, k in enumerate(PLAUSIBLE)}
) | st.dictionaries(any_text, json_like, max_size=5)


def check_built_or_rejected(build: Any) -> None:
    """``build()`` gives a request that encodes and decodes back to itself, or ValidationError."""
    try:
        request = build()
    except ValidationError as exc:
        assert exc.field_errors
        msgspec.json.encode(exc.field_errors)  # the errors can go on the wire (an emulator's 400)
        return
    assert MessageRequest.from_json(encode_request(request)) == request


# --- MessageRequest ---------------------------------------------------------------------------------


@given(request_dicts)
def test_any_dict_is_a_request_or_a_validation_error(data: dict[str, Any]) -> None:
    check_built_or_rejected(lambda: MessageRequest.from_dict(data))


@given(st.fixed_dictionaries({PY_NAMES.get(k, k): field_value(k) for k in PLAUSIBLE}))
def test_any_keywords_are_a_request_or_a_validation_error(kwargs: dict[str, Any]) -> None:
    check_built_or_rejected(lambda: MessageRequest(**kwargs))


@given(st.binary(max_size=200) | request_dicts.map(lambda d: json.dumps(d, ensure_ascii=True).encode()))
def test_any_bytes_are_a_request_or_a_validation_error(data: bytes) -> None:
    check_built_or_rejected(lambda: MessageRequest.from_json(data))


@given(any_text | json_like.map(lambda v: json.dumps(v, ensure_ascii=False)))
def test_any_json_text_is_a_request_or_a_validation_error(data: str) -> None:
    check_built_or_rejected(lambda: MessageRequest.from_json(data))


@given(st.integers(0, 5000), st.sampled_from([b"[]", b"{}"]))
def test_json_nested_to_any_depth_is_a_request_or_a_validation_error(depth: int, brackets: bytes) -> None:
    opened, closed = brackets[:1], brackets[1:]
    inner = opened + b'"k":' if opened == b"{" else opened
    data = b'{"to":["+15552223333"],"from":"+15553332222","applicationId":"a","text":"t","x":'
    data += inner * depth + b"1" + closed * depth + b"}"
    check_built_or_rejected(lambda: MessageRequest.from_json(data))


@given(request_dicts)
def test_msgspec_convert_is_a_request_or_a_validation_error(data: dict[str, Any]) -> None:
    # The one thing no bwasync code sees: msgspec matches keys to fields itself, and raises
    # UnicodeEncodeError for a key with a lone surrogate before any value reaches the rules.
    assume(all(encodable(key) for key in data))
    check_built_or_rejected(lambda: msgspec.convert(data, MessageRequest))


@given(st.binary(max_size=100) | request_dicts.map(lambda d: json.dumps(d).encode()))
def test_typed_json_decoding_is_a_request_or_a_validation_error(data: bytes) -> None:
    # Not JSON at all: msgspec's own decoder says so (DecodeError) before any field is read.
    with contextlib.suppress(msgspec.DecodeError):
        check_built_or_rejected(lambda: msgspec.json.decode(data, type=MessageRequest))


# --- segments() against an independent counter ----------------------------------------------------

#: GSM 03.38 default alphabet, code points 0x00-0x7F in rows of 16; "\x1b" marks the escape code.
GSM_BASIC_ROWS = [
    "@£$¥èéùìòÇ\nØø\rÅå",
    "Δ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ",
    " !\"#¤%&'()*+,-./",
    "0123456789:;<=>?",
    "¡ABCDEFGHIJKLMNO",
    "PQRSTUVWXYZÄÖÑÜ§",
    "¿abcdefghijklmno",
    "pqrstuvwxyzäöñüà",
]
#: GSM 03.38 extension table: character -> code after the escape.
GSM_EXTENSION = {"\f": 0x0A, "^": 0x14, "{": 0x28, "}": 0x29, "\\": 0x2F, "[": 0x3C, "~": 0x3D, "]": 0x3E, "|": 0x40}
GSM_EXTENSION["€"] = 0x65
GSM_BASIC = {ch: code for code, ch in enumerate("".join(GSM_BASIC_ROWS)) if ch != "\x1b"}
ESCAPE = 0x1B


def reference_segments(text: str) -> tuple[str, int, int]:
    """(encoding, segments, units) by encoding the text for real and cutting it up."""
    septets: list[int] = []
    for ch in text:
        if ch in GSM_BASIC:
            septets.append(GSM_BASIC[ch])
        elif ch in GSM_EXTENSION:
            septets += [ESCAPE, GSM_EXTENSION[ch]]
        else:
            break
    else:
        return "GSM-7", cut(septets, 160, 153, lambda units, i: units[i] == ESCAPE), len(septets)
    raw = text.encode("utf-16-be")
    units = [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]
    return "UCS-2", cut(units, 70, 67, lambda units, i: 0xD800 <= units[i] <= 0xDBFF), len(units)


def cut(units: list[int], single: int, per_segment: int, opens_pair: Any) -> int:
    """Segments of at most ``per_segment`` units, a pair's first unit never ending a segment."""
    if len(units) <= single:
        return 1
    count, i = 0, 0
    while i < len(units):
        end = min(i + per_segment, len(units))
        if end < len(units) and opens_pair(units, end - 1):
            end -= 1  # the pair starts the next segment
        count, i = count + 1, end
    return count


GSM_CHARS = "".join(GSM_BASIC) + "".join(GSM_EXTENSION)
segment_texts = (
    st.text(st.sampled_from(GSM_CHARS), max_size=480)
    | st.text(st.sampled_from(GSM_CHARS + "é€😀中👋"), max_size=220)
    | st.text(max_size=220)
)


@given(segment_texts)
def test_segments_match_an_independent_table_driven_counter(text: str) -> None:
    info = segments(text or None)
    assert (info.encoding, info.segments, info.units) == reference_segments(text)
    assert segments(text, ["https://e.com/a.png"]).segments == 1  # MMS: one segment


def e164_by_the_rule(value: str) -> bool:
    """E.164 as the rule reads (what ``is_e164`` did in Python before it became one regex)."""
    n = len(value)
    return 3 <= n <= 16 and value[0] == "+" and value[1] != "0" and value.isascii() and value[1:].isdigit()


#: Strings near E.164: a ``+``, digits (ASCII and not), a newline, at the lengths around the limits.
near_e164 = st.text(st.sampled_from("+0123456789\n \u0661\u00b2a"), max_size=18) | st.from_regex(r"\+[0-9]{0,17}")


@given(near_e164 | any_text)
@example("+1" + "2" * 14)  # 15 digits: the longest number
@example("+1" + "2" * 15)
@example("+12")
@example("+1")
@example("+02")
@example("+12\n")
@example("+\u0661\u0662")
def test_is_e164_is_exactly_the_rule(value: str) -> None:
    assert is_e164(value) == e164_by_the_rule(value)
    # The request fast path tests the same thing: a number it takes is one the rule takes.
    assert is_plain_sms("93de2206-9669-4e07-948d-329f4b722ee2", value, "+15553332222", "hi") == e164_by_the_rule(value)


def test_reference_counter_knows_the_boundaries() -> None:
    assert reference_segments("a" * 160) == ("GSM-7", 1, 160)
    assert reference_segments("a" * 161) == ("GSM-7", 2, 161)
    assert reference_segments("a" * 152 + "€" + "a" * 152) == ("GSM-7", 3, 306)  # the escape pair moves on
    assert reference_segments("😀" * 35) == ("UCS-2", 1, 70)
    assert reference_segments("a" * 66 + "😀" + "a" * 66) == ("UCS-2", 3, 134)  # so does a surrogate pair


# --- the emulator never answers 5xx ------------------------------------------------------------------

CREATE = f"/api/v2/users/{ACCOUNT_ID}/messages"
TOKEN = "/api/v1/oauth2/token"
BASIC = b"Authorization: Basic " + base64.b64encode(b"u:p")
#: Header values: anything but the bytes that end a header line.
header_bytes = st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
content_types = st.sampled_from(
    [
        b"application/json",
        b"application/json; charset=utf-8",
        b"application/x-www-form-urlencoded",
        b"multipart/form-data",
        b"multipart/form-data; boundary=x",
        b"text/plain; charset=\xff",
    ]
) | header_bytes.map(lambda b: b"application/" + b)
authorizations = st.sampled_from([BASIC[len(b"Authorization: ") :], b"Basic ", b"Bearer x", b"Basic \xc3\xa9"]) | (
    header_bytes.map(lambda b: b"Basic " + b)
)
bodies = (
    st.binary(max_size=300)
    | json_like.map(lambda v: json.dumps(v).encode())
    | request_dicts.map(lambda d: json.dumps(d, ensure_ascii=True).encode())
)


async def assert_not_5xx(emulator: Emulator, request: bytes) -> int:
    status, _ = await raw_http(emulator.port, request)
    assert status < 500, status
    return status


@given(bodies)
async def test_emulator_create_with_any_body_is_never_5xx(emulator: Emulator, body: bytes) -> None:
    await assert_not_5xx(emulator, http_request("POST", CREATE, [BASIC, b"Content-Type: application/json"], body))


@given(content_types, authorizations, bodies)
async def test_emulator_create_with_any_headers_is_never_5xx(
    emulator: Emulator, content_type: bytes, authorization: bytes, body: bytes
) -> None:
    headers = [b"Authorization: " + authorization, b"Content-Type: " + content_type]
    await assert_not_5xx(emulator, http_request("POST", CREATE, headers, body))


query_names = st.sampled_from(
    ["sourceTn", "destinationTn", "messageStatus", "limit", "sort", "pageToken", "fromDateTime", "errorCode"]
) | any_text.map(lambda t: t.encode("utf-8", "surrogatepass").decode("latin-1"))
query_values = st.binary(max_size=30) | st.sampled_from(["o٣", "o²", "o" + "9" * 5000, "o12"]).map(
    lambda t: base64.urlsafe_b64encode(t.encode()).rstrip(b"=")
)


@given(st.lists(st.tuples(query_names, query_values), max_size=4))
async def test_emulator_list_with_any_query_is_never_5xx(emulator: Emulator, query: list[tuple[str, bytes]]) -> None:
    pairs = [("sourceTn", b"+15553332222"), *query]
    target = CREATE + "?" + "&".join(f"{quote_from_bytes(k.encode('latin-1'))}={quote_from_bytes(v)}" for k, v in pairs)
    await assert_not_5xx(emulator, http_request("GET", target, [BASIC]))


@given(content_types, authorizations | st.none(), bodies | st.just(b"grant_type=client_credentials"))
async def test_emulator_token_endpoint_with_anything_is_never_5xx(
    emulator: Emulator, content_type: bytes, authorization: bytes | None, body: bytes
) -> None:
    headers = [b"Content-Type: " + content_type]
    if authorization is not None:
        headers.append(b"Authorization: " + authorization)
    await assert_not_5xx(emulator, http_request("POST", TOKEN, headers, body))


# --- send_many: exactly one result per input ------------------------------------------------------------


VALID = {"to": ["+15552223333"], "from": "+15553332222", "applicationId": "app", "text": "hi"}
REFUSED = {**VALID, "from": "+15559990000"}  # not one of the account's numbers: 403
inputs = st.one_of(
    st.just(VALID),
    st.just(MessageRequest.from_dict(VALID)),
    st.just(REFUSED),
    request_dicts,
    json_leaf,
    st.lists(json_leaf, max_size=2),
    st.builds(ExplodingMapping),
    st.builds(object),
)


@given(st.lists(inputs, max_size=8), st.integers(1, 4))
async def test_send_many_gives_exactly_one_result_per_input(
    emulator: Emulator, items: list[Any], concurrency: int
) -> None:
    emulator.reset()
    cfg = emulator.config
    cfg.allowed_senders, cfg.p_500, cfg.p_drop_after = ["+15553332222"], 0.1, 0.1
    async with MessagingClient(
        ACCOUNT_ID,
        username="u",
        password="p",
        base_url=emulator.url,
        retry=RetryPolicy(max_attempts=2, initial_delay=0.0, max_delay=0.0),
    ) as client:
        results = [r async for r in client.send_many(items, concurrency=concurrency)]
    assert sorted(r.index for r in results) == list(range(len(items)))
    for r in results:
        if not isinstance(items[r.index], (Mapping, MessageRequest)):
            assert r.outcome is Outcome.NOT_SENT and isinstance(r.error, ValidationError)
        if r.outcome is not Outcome.ACCEPTED:
            assert r.error is not None
    # A 500 is retried; a connection dropped after acceptance is AMBIGUOUS (and was accepted).
    assert emulator.stats.accepted == sum(r.outcome is not Outcome.NOT_SENT for r in results)
