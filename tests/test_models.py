"""Models: wire names, validation of every rule on every construction path, tolerant decoding."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import msgspec
import pytest

from bwasync import FieldError, Message, MessageRequest, Priority, StatusCallback, ValidationError
from bwasync._models import (
    CreateMessageRequestErrorBody,
    MessagesList,
    coerce_request,
    decode_callbacks,
    decode_message,
    encode_request,
)
from bwasync._validation import validate_wire

APP = "93de2206-9669-4e07-948d-329f4b722ee2"
TO = "+15552223333"
FROM = "+15553332222"


def make(**overrides: object) -> MessageRequest:
    fields: dict[str, object] = {"to": TO, "from_": FROM, "application_id": APP, "text": "Hello"}
    fields.update(overrides)
    return MessageRequest(**fields)  # type: ignore[arg-type]


def errors_of(**overrides: object) -> list[FieldError]:
    with pytest.raises(ValidationError) as info:
        make(**overrides)
    return info.value.field_errors


def fields_of(**overrides: object) -> set[str]:
    return {e.field_name for e in errors_of(**overrides)}


# --- wire shape ------------------------------------------------------------------------------


def test_wire_names_and_to_always_an_array() -> None:
    req = make(tag="t", priority="high", media=["https://example.com/a.png"])
    wire = msgspec.json.decode(encode_request(req))
    assert wire == {
        "applicationId": APP,
        "to": [TO],
        "from": FROM,
        "text": "Hello",
        "media": ["https://example.com/a.png"],
        "tag": "t",
        "priority": "high",
    }
    assert req.to == [TO]
    assert req.priority is Priority.HIGH


def test_unset_fields_are_omitted() -> None:
    assert set(msgspec.json.decode(encode_request(make()))) == {"applicationId", "to", "from", "text"}


def test_expiration_encodes_rfc3339_and_accepts_a_string() -> None:
    req = make(expiration="2099-03-14T01:59:26-05:00")
    assert req.expiration == datetime(2099, 3, 14, 6, 59, 26, tzinfo=UTC)
    assert b'"expiration":"2099-03-14T01:59:26-05:00"' in encode_request(req)


def test_request_is_frozen() -> None:
    req = make()
    with pytest.raises(AttributeError):
        req.text = "x" * 5000  # type: ignore[misc]


# --- every path validates --------------------------------------------------------------------

BAD_WIRE = {"to": ["12"], "from": "+1invalid", "applicationId": APP, "text": "x"}


def test_keyword_construction_validates() -> None:
    assert fields_of(to="12", from_="+1invalid") == {"to", "from"}


def test_dict_with_wire_names_validates() -> None:
    with pytest.raises(ValidationError) as info:
        MessageRequest.from_dict(BAD_WIRE)
    assert {e.field_name for e in info.value.field_errors} == {"to", "from"}


def test_dict_with_python_names_builds() -> None:
    req = MessageRequest.from_dict({"to": TO, "from_": FROM, "application_id": APP, "text": "x"})
    assert req.from_ == FROM


def test_dict_unknown_key_is_an_error_not_silently_dropped() -> None:
    with pytest.raises(ValidationError) as info:
        MessageRequest.from_dict({"to": TO, "from": FROM, "applicationId": APP, "txt": "typo"})
    assert info.value.field_errors == [FieldError("txt", "unknown field 'txt'")]


def test_dict_missing_required_fields_lists_them_all() -> None:
    with pytest.raises(ValidationError) as info:
        MessageRequest.from_dict({"text": "hi"})
    assert {e.field_name for e in info.value.field_errors} >= {"to", "from", "applicationId"}


def test_json_validates() -> None:
    with pytest.raises(ValidationError) as info:
        MessageRequest.from_json(msgspec.json.encode(BAD_WIRE))
    assert {e.field_name for e in info.value.field_errors} == {"to", "from"}


def test_json_accepts_to_as_a_string() -> None:
    req = MessageRequest.from_json(b'{"to": "+15552223333", "from": "+15553332222", "applicationId": "a", "text": "x"}')
    assert req.to == [TO]


def test_invalid_json_is_a_validation_error() -> None:
    with pytest.raises(ValidationError) as info:
        MessageRequest.from_json(b"{not json")
    assert info.value.field_errors[0].field_name == "body"
    with pytest.raises(ValidationError):
        MessageRequest.from_json(b"[1, 2]")


def test_msgspec_decode_and_convert_run_the_rules_too() -> None:
    with pytest.raises(ValidationError):
        msgspec.json.decode(msgspec.json.encode(BAD_WIRE), type=MessageRequest)
    with pytest.raises(ValidationError):
        msgspec.convert(BAD_WIRE, MessageRequest)


def test_coerce_request() -> None:
    req = make()
    assert coerce_request(req) is req
    assert coerce_request({"to": TO, "from": FROM, "applicationId": APP, "text": "x"}).text == "x"
    with pytest.raises(ValidationError):
        coerce_request(42)  # type: ignore[arg-type]


def test_all_errors_reported_at_once() -> None:
    errs = errors_of(
        to=["12", TO, TO],
        from_="+1invalid",
        application_id="",
        text="x" * 2049,
        media=["ftp://x"] * 11,
        tag="t" * 1025,
        priority="urgent",
        expiration=datetime(2000, 1, 1, tzinfo=UTC),
    )
    assert {e.field_name for e in errs} == {
        "to",
        "from",
        "applicationId",
        "text",
        "media",
        "tag",
        "priority",
        "expiration",
    }
    assert len(errs) >= 10  # two to-errors, eleven media errors and one count error...
    assert all(e.description for e in errs)


def test_validation_error_message_names_fields() -> None:
    with pytest.raises(ValidationError) as info:
        make(from_="+1invalid")
    assert "from: '+1invalid' must be replaced with a valid E164 formatted telephone number" in str(info.value)
    assert info.value.may_have_been_sent is False


# --- from ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["+12", "+123456789012345", "+15553332222", "+442071838750", "A", "ABCDEFGHIJK", "My Shop", "a-b+c_d&e1", "1a"],
)
def test_from_valid(value: str) -> None:
    assert make(from_=value).from_ == value


@pytest.mark.parametrize(
    "value",
    [
        "+1",  # one digit
        "+1234567890123456",  # 16 digits
        "+05553332222",  # leading zero
        "+1invalid",
        "+1 555 333 2222",
        "+１５５５",  # full-width digits
        "ABCDEFGHIJKL",  # 12 chars
        "12345",  # no letter
        "Shop!",  # bad char
        "",
        None,
        15553332222,
    ],
)
def test_from_invalid(value: object) -> None:
    assert "from" in fields_of(from_=value)


# --- to --------------------------------------------------------------------------------------


def test_to_boundaries() -> None:
    ten = [f"+1555000{i:04d}" for i in range(10)]
    assert len(make(to=ten).to) == 10
    assert "to" in fields_of(to=[*ten, "+15559999999"])
    assert "to" in fields_of(to=[])
    assert "to" in fields_of(to=None)
    assert "to" in fields_of(to=[TO, TO])
    assert "to" in fields_of(to=[TO, 5])
    assert "to" in fields_of(to="ABC")
    assert make(to=(TO, "+15554443333")).to == [TO, "+15554443333"]


@pytest.mark.parametrize(
    ("to", "says"),
    [
        (None, "to is required: an E.164 number or a list of 1 to 10 of them"),
        (15552223333, "to must be an E.164 number or a list of 1 to 10 of them, not int"),
        ({TO}, "to must be an E.164 number or a list of 1 to 10 of them, not set"),
    ],
)
def test_a_missing_to_and_a_to_of_the_wrong_type_are_told_apart(to: object, says: str) -> None:
    with pytest.raises(ValidationError) as info:
        MessageRequest.from_dict({"to": to, "from": "+15553332222", "applicationId": "app", "text": "x"})
    assert [str(e) for e in info.value.field_errors] == [f"to: {says}"]


# --- text / media ----------------------------------------------------------------------------


def test_text_boundaries() -> None:
    assert make(text="x" * 2048).text == "x" * 2048
    assert "text" in fields_of(text="x" * 2049)
    assert "text" in fields_of(text=42)


def test_needs_text_or_media() -> None:
    assert fields_of(text=None) == {"text"}
    assert fields_of(text="") == {"text"}
    assert fields_of(text=None, media=[]) == {"text"}
    assert make(text=None, media=["https://example.com/a.png"]).text is None


def test_media_boundaries() -> None:
    ten = [f"https://example.com/{i}.png" for i in range(10)]
    assert make(media=ten).media == ten
    assert "media" in fields_of(media=[*ten, "https://example.com/x.png"])
    long_ok = "https://example.com/" + "a" * (4096 - 20)
    assert len(long_ok) == 4096
    assert make(media=[long_ok]).media == [long_ok]
    assert "media" in fields_of(media=[long_ok + "a"])
    for bad in (["ftp://example.com/a"], ["example.com/a.png"], ["https://"], [42], "https://example.com/a.png"):
        assert "media" in fields_of(media=bad), bad
    assert make(media=("http://example.com/a.png",)).media == ["http://example.com/a.png"]


# --- tag / priority / expiration / applicationId --------------------------------------------


def test_tag_boundaries() -> None:
    assert make(tag="t" * 1024).tag == "t" * 1024
    assert "tag" in fields_of(tag="t" * 1025)
    assert "tag" in fields_of(tag=5)


def test_priority() -> None:
    assert make(priority="default").priority is Priority.DEFAULT
    assert make(priority=Priority.HIGH).priority is Priority.HIGH
    for bad in ("HIGH", "low", 1, ["high"]):
        assert "priority" in fields_of(priority=bad), bad


def test_expiration_must_be_aware_and_future() -> None:
    future = datetime.now(UTC) + timedelta(hours=1)
    assert make(expiration=future).expiration == future
    assert make(expiration=future.astimezone(timezone(timedelta(hours=-5)))).expiration == future
    assert "expiration" in fields_of(expiration=datetime.now(UTC) - timedelta(seconds=1))
    assert "expiration" in fields_of(expiration=datetime.now() + timedelta(hours=1))  # naive
    assert "expiration" in fields_of(expiration="2099-01-01T00:00:00")  # no offset
    assert "expiration" in fields_of(expiration="tomorrow")
    assert "expiration" in fields_of(expiration=1234567890)


def test_application_id_required_non_empty() -> None:
    assert "applicationId" in fields_of(application_id="")
    assert "applicationId" in fields_of(application_id="   ")
    assert "applicationId" in fields_of(application_id=None)


def test_validate_wire_checks_a_raw_body() -> None:
    assert validate_wire({"to": [TO], "from": FROM, "applicationId": APP, "text": "x", "extra": 1}) == []
    assert {e.field_name for e in validate_wire(BAD_WIRE)} == {"to", "from"}
    assert validate_wire([1])[0].field_name == "body"


# --- responses -------------------------------------------------------------------------------

MESSAGE_202 = (
    b'{"id":"1589228074636lm4k2je7j7jklbn2","owner":"+15553332222","applicationId":"93de2206",'
    b'"time":"2024-12-02T20:15:57.278Z","segmentCount":2,"direction":"out","to":["+15552223333"],'
    b'"from":"+15553332222","text":"Hello","tag":"t","priority":"default","newFieldBandwidthAdded":{"x":1}}'
)


def test_decode_message_tolerates_unknown_fields() -> None:
    msg = decode_message(MESSAGE_202)
    assert isinstance(msg, Message)
    assert msg.id == "1589228074636lm4k2je7j7jklbn2"
    assert msg.segment_count == 2
    assert msg.from_ == "+15553332222"
    assert msg.time == datetime(2024, 12, 2, 20, 15, 57, 278000, tzinfo=UTC)


def test_decode_message_is_strict_on_types() -> None:
    with pytest.raises(msgspec.ValidationError):
        decode_message(MESSAGE_202.replace(b'"segmentCount":2', b'"segmentCount":"2"'))
    with pytest.raises(msgspec.ValidationError):
        decode_message(b'{"owner": "+1"}')  # no id


def test_decode_error_bodies_and_lists() -> None:
    err = msgspec.json.decode(
        b'{"type":"request-validation","description":"bad","fieldErrors":[{"fieldName":"from","description":"x"}]}',
        type=CreateMessageRequestErrorBody,
    )
    assert err.field_errors == [FieldError("from", "x")]
    page = msgspec.json.decode(
        b'{"totalCount":1,"pageInfo":{"nextPageToken":"abc"},"messages":[{"messageId":"m1","sourceTn":"+1",'
        b'"segmentCount":1,"receiveTime":"2020-04-07T14:03:07.000Z","calledNumberCountryA3":"USA"}]}',
        type=MessagesList,
    )
    assert page.page_info is not None and page.page_info.next_page_token == "abc"
    assert page.messages[0].called_number_country_a3 == "USA"


def test_field_error_reads_as_field_and_description() -> None:
    error = FieldError("to", "'12' must be replaced with a valid E164 formatted telephone number")
    assert str(error) == f"{error}" == "to: '12' must be replaced with a valid E164 formatted telephone number"
    assert repr(error).startswith("FieldError(")
    with pytest.raises(ValidationError) as info:
        MessageRequest(to="12", from_="+15553332222", application_id="a", text="hi")
    assert str(info.value) == f"invalid message request: {info.value.field_errors[0]}"


def test_decode_status_callbacks() -> None:
    body = (
        b'[{"type":"message-failed","time":"2024-12-02T20:15:57.278Z","description":"rejected","to":"+15552223333",'
        b'"errorCode":4720,"message":{"id":"m1","owner":"+15553332222","applicationId":"a",'
        b'"time":"2024-12-02T20:15:57.278Z","segmentCount":1,"direction":"out","to":["+15552223333","+15554443333"],'
        b'"from":"+15553332222","text":"","tag":"c:1"}}]'
    )
    [event] = decode_callbacks(body)
    assert isinstance(event, StatusCallback)
    assert event.error_code == 4720
    assert event.message.to == ["+15552223333", "+15554443333"]
    assert event.message.text == ""
