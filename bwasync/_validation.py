"""Bandwidth's rules for a message request, as pure functions.

Every rule in BANDWIDTH.md is checked here, all at once, so that a caller (or the emulator's
400 body) hears about every broken field in one go. Field names in errors are Bandwidth's wire
names (``from``, ``applicationId``...), as in its ``fieldErrors``.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import msgspec

from ._constants import (
    MAX_JSON_DEPTH,
    MAX_MEDIA,
    MAX_MEDIA_URL_LENGTH,
    MAX_RECIPIENTS,
    MAX_SENDER_ID_LENGTH,
    MAX_TAG_LENGTH,
    MAX_TEXT_LENGTH,
)

__all__ = [
    "WIRE_NAMES",
    "FieldError",
    "Priority",
    "check_json_depth",
    "check_message",
    "decode_json",
    "describe",
    "encodable",
    "is_e164",
    "is_plain_sms",
    "is_plain_tag",
    "is_sender_id",
    "parse_rfc3339",
    "safe_str",
    "validate_wire",
]


class Priority(enum.StrEnum):
    """A message's sending priority relative to the account's other messages."""

    DEFAULT = "default"
    HIGH = "high"


class FieldError(msgspec.Struct, rename="camel", frozen=True):
    """One broken rule: which field (Bandwidth's wire name) and why."""

    field_name: str
    description: str

    def __str__(self) -> str:
        return f"{self.field_name}: {self.description}"


#: Python name -> wire name for the request fields.
WIRE_NAMES: dict[str, str] = {
    "application_id": "applicationId",
    "to": "to",
    "from_": "from",
    "text": "text",
    "media": "media",
    "tag": "tag",
    "priority": "priority",
    "expiration": "expiration",
}
_PRIORITIES = {p.value: p for p in Priority}
_SENDER_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 -+_&")


#: ``+`` then 2 to 15 ASCII digits, the first 1-9, as one C call (``[0-9]``, unlike
#: ``str.isdigit``, takes ASCII digits only): ~30 % fewer instructions than the same test
#: written out in Python, and it runs once per message.
_E164 = re.compile(r"\+[1-9][0-9]{1,14}").fullmatch


def is_e164(value: str) -> bool:
    """``+`` then 2 to 15 ASCII digits, the first 1-9."""
    return _E164(value) is not None


def is_sender_id(value: str) -> bool:
    """An alphanumeric sender ID: 1-11 of ``A-Z a-z 0-9``, space, ``- + _ &``, one letter at least.

    A value starting with ``+`` is a phone number, never a sender ID.
    """
    return (
        0 < len(value) <= MAX_SENDER_ID_LENGTH
        and value[0] != "+"
        and _SENDER_ID_CHARS.issuperset(value)
        and any(c.isalpha() for c in value)
    )


# A campaign sends from a handful of numbers and applications: remember the values already found
# valid (bounded), so that the fast path checks them with one set lookup.
_VALID_SENDERS: set[str] = set()
_VALID_APPLICATIONS: set[str] = set()
_MAX_REMEMBERED = 1024


def _remember(value: str, valid: bool, known: set[str]) -> bool:
    if valid:
        if len(known) >= _MAX_REMEMBERED:
            known.clear()
        known.add(value)
    return valid


def _remember_sender(value: str) -> bool:
    """Whether ``value`` is a valid ``from`` (E.164 or sender ID); valid ones are remembered."""
    return _remember(value, is_e164(value) if value[:1] == "+" else is_sender_id(value), _VALID_SENDERS)


def _remember_application(value: str) -> bool:
    """Whether ``value`` is a plainly valid application id (ASCII, not blank); remembered if so.
    Any other id goes through the full checks."""
    return _remember(value, value.isascii() and bool(value.strip()), _VALID_APPLICATIONS)


def parse_rfc3339(value: str) -> datetime | None:
    """Parse an RFC 3339 date-time with an offset; None if it is not one."""
    if not encodable(value):
        return None
    try:
        parsed: datetime = msgspec.convert(value, datetime)
    except msgspec.ValidationError:
        return None
    return parsed if parsed.tzinfo is not None else None


def encodable(value: str) -> bool:
    """Whether ``value`` can go on the wire as UTF-8: no lone surrogate (the only code points
    UTF-8 cannot carry, e.g. from ``surrogateescape``-decoded bytes or a half emoji)."""
    # isascii is O(1) in CPython (the string knows); only other text pays for an encode.
    return value.isascii() or _utf8_ok(value)


def _utf8_ok(value: str) -> bool:
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def safe_str(value: str) -> str:
    """``value`` for an error message that will itself be encoded: lone surrogates escaped."""
    return value if encodable(value) else value.encode("utf-8", "backslashreplace").decode()


def describe(value: object) -> str:
    """A short, printable, encodable ``repr`` of any value, for an error message."""
    try:
        text = repr(value)
    except Exception:  # a hostile object's __repr__: say what it is instead
        text = f"<{type(value).__name__}>"
    text = safe_str(text)
    return text if len(text) <= 40 else text[:37] + "..."


def _unencodable(field: str, where: str) -> FieldError:
    return FieldError(field, f"{where} contains a lone surrogate (an unpaired UTF-16 half): it cannot be encoded")


def _bounded_string_error(field: str, value: Any, limit: int) -> FieldError | None:
    """The first rule a ``text``/``tag`` value breaks: a string, at most ``limit`` characters, encodable."""
    if not isinstance(value, str):
        return FieldError(field, f"{field} must be a string, not {type(value).__name__}")
    if len(value) > limit:
        return FieldError(field, f"{field} is {len(value)} characters; at most {limit} are allowed")
    if not encodable(value):
        return _unencodable(field, field)
    return None


def _not_e164(field: str, value: str) -> FieldError:
    return FieldError(field, f"'{safe_str(value)}' must be replaced with a valid E164 formatted telephone number")


_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_JSON_BRACKET = re.compile(rb"[\[\]{}]")


def check_json_depth(data: bytes | str, limit: int = MAX_JSON_DEPTH) -> None:
    """Raise ``msgspec.DecodeError`` if JSON text nests arrays and objects deeper than ``limit``.

    Checked before decoding, so the answer does not depend on how deep the interpreter's stack
    already is (msgspec's own guard is the recursion limit, which a caller or a test framework
    may have raised). Cheap for ordinary bodies: nesting cannot be deeper than the number of
    ``[`` and ``{``, which is counted in C; only a body with more than ``limit`` of them is scanned.
    """
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return
    depth = 0
    for bracket in _JSON_BRACKET.findall(_JSON_STRING.sub(b"", raw)):
        if bracket in b"[{":
            depth += 1
            if depth > limit:
                raise msgspec.DecodeError(f"JSON nested deeper than {limit} levels")
        else:
            depth -= 1


def decode_json(data: bytes | str, decoder: msgspec.json.Decoder[Any]) -> tuple[Any, FieldError | None]:
    """Decode a JSON request body: ``(value, None)``, or ``(None, why)`` if it is not JSON
    this code can take (malformed, or nested deeper than :data:`MAX_JSON_DEPTH`)."""
    try:
        check_json_depth(data)
        return decoder.decode(data), None
    except msgspec.DecodeError as exc:
        return None, FieldError("body", f"not valid JSON: {exc}")
    except RecursionError:
        return None, FieldError("body", "JSON nested too deeply")
    except UnicodeEncodeError:  # a str body with a lone surrogate
        return None, FieldError("body", "the body contains a lone surrogate: it is not valid UTF-8 text")


def is_plain_tag(tag: Any) -> bool:
    """Whether the fast path may take ``tag`` as it is: None, or a string within the limit that
    encodes as UTF-8 (every rule :func:`check_message` has for a tag). A campaign tags every
    message (``<campaign id>:<row key>``), so a tag must not send it to the full checks.
    """
    return tag is None or (type(tag) is str and len(tag) <= MAX_TAG_LENGTH and (tag.isascii() or _utf8_ok(tag)))


def is_plain_sms(application_id: Any, to: Any, from_: Any, text: Any) -> bool:
    """The fast path's test: one recipient (``to``, a str), a non-empty text within the limit,
    known-good sender and application, every value a plain ``str`` that encodes as UTF-8.

    True means every rule holds for a message with these fields and nothing else set; False
    decides nothing (the full checks in :func:`check_message` then say what is wrong, if
    anything). A :class:`~bwasync.MessageRequest` built with these values, ``to`` a one-item
    list, is already in its normal form.
    """
    return (
        type(to) is str
        and type(text) is str
        and type(from_) is str
        and type(application_id) is str
        and 0 < len(text) <= MAX_TEXT_LENGTH
        and _E164(to) is not None  # is_e164(to), without the Python call
        and (from_ in _VALID_SENDERS or _remember_sender(from_))
        and (application_id in _VALID_APPLICATIONS or _remember_application(application_id))
        and (text.isascii() or _utf8_ok(text))
    )


def check_message(
    *,
    application_id: Any,
    to: Any,
    from_: Any,
    text: Any = None,
    media: Any = None,
    tag: Any = None,
    priority: Any = None,
    expiration: Any = None,
    now: datetime | None = None,
) -> tuple[list[FieldError], list[str], Priority | None, datetime | None]:
    """Check every rule; return ``(errors, to_list, priority, expiration)``, normalised.

    ``to`` may be one number or a list; ``priority`` a :class:`Priority` or its string;
    ``expiration`` an aware datetime or an RFC 3339 string. Types are checked too, since a
    Struct's ``__init__`` does not check them.
    """
    # Fast path for the overwhelmingly common message: one recipient, short text, nothing else.
    # It decides nothing on its own: any doubt falls through to the full checks below.
    one = to[0] if type(to) is list and len(to) == 1 else to
    if (
        media is None
        and priority is None
        and expiration is None
        and is_plain_tag(tag)
        and is_plain_sms(application_id, one, from_, text)
    ):
        return [], to if one is not to else [one], None, None

    errors: list[FieldError] = []
    add = errors.append

    if not isinstance(application_id, str) or not application_id.strip():
        add(FieldError("applicationId", "applicationId is required and must be a non-empty string"))
    elif not encodable(application_id):
        add(_unencodable("applicationId", "applicationId"))

    if not isinstance(from_, str) or not from_:
        add(FieldError("from", "from is required: an E.164 number or an alphanumeric sender ID"))
    elif from_[0] == "+":
        if not is_e164(from_):
            add(_not_e164("from", from_))
    elif not is_sender_id(from_):
        add(
            FieldError(
                "from",
                f"{describe(from_)} is neither an E.164 number nor a valid alphanumeric sender ID "
                f"(at most {MAX_SENDER_ID_LENGTH} of A-Z a-z 0-9, space, - + _ &, with at least one letter)",
            )
        )

    to_list: list[str] = []
    if isinstance(to, str):
        to_list = [to]
    elif isinstance(to, (list, tuple)):
        to_list = list(to)
    elif to is None:
        add(FieldError("to", f"to is required: an E.164 number or a list of 1 to {MAX_RECIPIENTS} of them"))
    else:
        add(
            FieldError(
                "to",
                f"to must be an E.164 number or a list of 1 to {MAX_RECIPIENTS} of them, not {type(to).__name__}",
            )
        )
    if to_list or isinstance(to, (list, tuple)):
        if not to_list:
            add(FieldError("to", "to must name at least one recipient"))
        elif len(to_list) > MAX_RECIPIENTS:
            add(FieldError("to", f"to has {len(to_list)} recipients; at most {MAX_RECIPIENTS} are allowed"))
        seen: set[str] = set()
        for i, number in enumerate(to_list):
            where = "to" if len(to_list) == 1 else f"to[{i}]"
            if not isinstance(number, str):
                add(FieldError("to", f"{where} must be a string, not {type(number).__name__}"))
            elif not is_e164(number):
                add(_not_e164("to", number))
            elif number in seen:
                add(FieldError("to", f"{where} '{number}' is a duplicate; recipients must be distinct"))
            else:
                seen.add(number)

    has_text = False
    if text is not None:
        error = _bounded_string_error("text", text, MAX_TEXT_LENGTH)
        if error is not None:
            add(error)
        else:
            has_text = bool(text)

    has_media = False
    if media is not None:
        if not isinstance(media, (list, tuple)):
            add(FieldError("media", f"media must be a list of URLs, not {type(media).__name__}"))
        else:
            has_media = bool(media)
            if len(media) > MAX_MEDIA:
                add(FieldError("media", f"media has {len(media)} attachments; at most {MAX_MEDIA} are allowed"))
            for i, url in enumerate(media):
                if not isinstance(url, str):
                    add(FieldError("media", f"media[{i}] must be a string URL, not {type(url).__name__}"))
                elif len(url) > MAX_MEDIA_URL_LENGTH:
                    add(
                        FieldError(
                            "media",
                            f"media[{i}] is {len(url)} characters; a URL may have at most {MAX_MEDIA_URL_LENGTH}",
                        )
                    )
                elif not encodable(url):
                    add(_unencodable("media", f"media[{i}]"))
                else:
                    try:
                        parts = urlsplit(url)
                    except ValueError as exc:  # an unclosed IPv6 bracket, a netloc NFKC changes...
                        add(FieldError("media", f"media[{i}] {describe(url)} is not a valid URL: {safe_str(str(exc))}"))
                        continue
                    if parts.scheme not in ("http", "https") or not parts.netloc:
                        add(FieldError("media", f"media[{i}] {describe(url)} is not an http(s) URL"))

    if not has_text and not has_media and not any(e.field_name in ("text", "media") for e in errors):
        add(FieldError("text", "a message needs text, media, or both"))

    if tag is not None:
        error = _bounded_string_error("tag", tag, MAX_TAG_LENGTH)
        if error is not None:
            add(error)

    prio: Priority | None = None
    if priority is not None:
        prio = _PRIORITIES.get(priority) if isinstance(priority, str) else None
        if prio is None:
            add(FieldError("priority", f"priority {describe(priority)} must be 'default' or 'high'"))

    exp: datetime | None = None
    if expiration is not None:
        if isinstance(expiration, datetime):
            exp = expiration
            if exp.tzinfo is None or _utcoffset(exp) is None:
                add(FieldError("expiration", "expiration must be timezone-aware (naive datetimes are ambiguous)"))
                exp = None
        elif isinstance(expiration, str):
            exp = parse_rfc3339(expiration)
            if exp is None:
                add(FieldError("expiration", f"{describe(expiration)} is not an RFC 3339 date-time with an offset"))
        else:
            add(FieldError("expiration", f"expiration must be a datetime, not {type(expiration).__name__}"))
        if exp is not None and exp <= (now or datetime.now(UTC)):
            add(FieldError("expiration", f"expiration {exp.isoformat()} must be in the future"))

    return errors, to_list, prio, exp


def _utcoffset(value: datetime) -> object:
    """``value.utcoffset()``, None when its tzinfo cannot tell (a broken or hostile tzinfo)."""
    try:
        return value.utcoffset()
    except (ValueError, TypeError, OverflowError):
        return None


def validate_wire(body: object, *, now: datetime | None = None) -> list[FieldError]:
    """Check a decoded JSON request body with wire names, as Bandwidth does; unknown keys pass."""
    if not isinstance(body, Mapping):
        return [FieldError("body", "the request body must be a JSON object")]
    errors, *_ = check_message(
        application_id=body.get("applicationId"),
        to=body.get("to"),
        from_=body.get("from"),
        text=body.get("text"),
        media=body.get("media"),
        tag=body.get("tag"),
        priority=body.get("priority"),
        expiration=body.get("expiration"),
        now=now,
    )
    return errors
