"""msgspec Structs for everything messaging, with wire names exactly as in Bandwidth's spec.

Python names are snake case (``application_id``, ``from_``, ``segment_count``); on the wire
they are Bandwidth's camel case (``applicationId``, ``from``, ``segmentCount``).

Requests are validated on every path: :class:`MessageRequest` runs all of Bandwidth's rules in
``__post_init__``, which msgspec calls for keyword construction, ``msgspec.convert`` and JSON
decoding alike (a Struct's ``__init__`` would otherwise check neither types nor constraints).
Responses are decoded strictly on types and tolerantly of fields Bandwidth may add.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, TypedDict

import msgspec
from msgspec.structs import force_setattr

from ._exceptions import ValidationError
from ._validation import (
    WIRE_NAMES,
    FieldError,
    Priority,
    check_json_depth,
    check_message,
    decode_json,
    describe,
    is_plain_sms,
    is_plain_tag,
    safe_str,
)

__all__ = [
    "CreateMessageRequestErrorBody",
    "FieldError",
    "InboundCallback",
    "ListFilters",
    "ListMessageItem",
    "Media",
    "Message",
    "MessageFields",
    "MessageRequest",
    "MessagesList",
    "MessagingRequestErrorBody",
    "PageInfo",
    "Priority",
    "RecipientsMixin",
    "StatusCallback",
    "StatusCallbackMessage",
    "coerce_request",
    "decode_callbacks",
    "decode_inbound_callbacks",
    "decode_message",
    "encode_request",
]

_PY_NAMES = {wire: py for py, wire in WIRE_NAMES.items()}
_PY_NAMES.update({py: py for py in WIRE_NAMES})


class MessageFields(TypedDict, total=False):
    """The fields of a :class:`MessageRequest` as keywords (``client.create_message(**fields)``).

    A type checker flags a misspelt or mistyped field; the values are validated at run time as
    for :class:`MessageRequest` (``to``, ``from_`` and ``application_id`` are required there).
    """

    to: str | Sequence[str]
    from_: str
    application_id: str
    text: str | None
    media: Sequence[str] | None
    tag: str | None
    priority: Priority | Literal["default", "high"] | None
    expiration: datetime | str | None


class ListFilters(TypedDict, total=False):
    """``list_messages`` filters: Bandwidth's query parameters in snake case.

    ``callingNumberCountryA3`` and ``calledNumberCountryA3`` are ``calling_number_country_a3``
    and ``called_number_country_a3``; dates take a ``datetime`` or Bandwidth's string form.
    """

    message_id: str
    source_tn: str
    destination_tn: str
    message_status: str
    message_direction: str
    carrier_name: str
    message_type: str
    error_code: int
    from_date_time: datetime | str
    to_date_time: datetime | str
    campaign_id: str
    from_bw_latency: int
    bw_queued: bool
    product: str
    location: str
    carrier_queued: bool
    from_carrier_latency: int
    calling_number_country_a3: str
    called_number_country_a3: str
    from_segment_count: int
    to_segment_count: int
    from_message_size: int
    to_message_size: int
    sort: str
    limit: int
    limit_total_count: bool


class RecipientsMixin:
    """``recipients`` and ``is_mms`` for any Struct with ``to`` and ``media`` fields (a request to
    send, the emulator's record of an accepted one). No slots and no fields of its own."""

    __slots__ = ()

    if TYPE_CHECKING:

        @property
        def to(self) -> list[str]: ...

        @property
        def media(self) -> list[str] | None: ...

    @property
    def recipients(self) -> int:
        """How many recipients: more than one makes a group message."""
        return len(self.to)

    @property
    def is_mms(self) -> bool:
        """Media makes a message an MMS, whatever the number of recipients."""
        return bool(self.media)


class MessageRequest(
    msgspec.Struct, RecipientsMixin, rename="camel", kw_only=True, frozen=True, omit_defaults=True, gc=False
):
    """A message to send: SMS, MMS, group SMS or group MMS. Validated on construction.

    >>> req = MessageRequest(to="+15552223333", from_="+15553332222",
    ...                      application_id="93de2206-9669-4e07-948d-329f4b722ee2", text="Hi")
    >>> req.to
    ['+15552223333']

    ``to`` takes one number or a list and is always a list afterwards (and on the wire).
    ``priority`` takes :class:`Priority` or ``"default"``/``"high"``; ``expiration`` an aware
    ``datetime`` or an RFC 3339 string. Any broken rule raises :class:`~bwasync.ValidationError`
    listing every field error at once.
    """

    if TYPE_CHECKING:
        application_id: str
        to: list[str]
        from_: str
        text: str | None = None
        media: list[str] | None = None
        tag: str | None = None
        priority: Priority | None = None
        expiration: datetime | None = None
    else:
        # What msgspec sees: any value, none required, so that ``msgspec.convert`` and typed JSON
        # decoding hand every value, whatever its type or content, to ``__post_init__``, whose
        # rules answer ValidationError and normalise each field to the exact type above. (msgspec's
        # own checks would raise its own ValidationError for a wrong type or a missing field, and
        # UnicodeEncodeError for a lone surrogate in a datetime or enum string.)
        application_id: Any = None
        to: Any = None
        from_: Any = None
        text: Any = None
        media: Any = None
        tag: Any = None
        priority: Any = None
        expiration: Any = None

    def __post_init__(self) -> None:
        to = self.to
        one = to[0] if type(to) is list and len(to) == 1 else to
        if (
            self.media is None
            and self.priority is None
            and self.expiration is None
            and ((tag := self.tag) is None or is_plain_tag(tag))  # no call for the usual untagged message
            and is_plain_sms(self.application_id, one, self.from_, self.text)
        ):
            # The common SMS, valid: no call into the full checks; only a lone number to list.
            if one is to:
                force_setattr(self, "to", [one])
            return
        errors, to_list, priority, expiration = check_message(
            application_id=self.application_id,
            to=self.to,
            from_=self.from_,
            text=self.text,
            media=self.media,
            tag=self.tag,
            priority=self.priority,
            expiration=self.expiration,
        )
        if errors:
            raise ValidationError(errors)
        if to_list is not self.to:
            force_setattr(self, "to", to_list)
        if priority is not self.priority:
            force_setattr(self, "priority", priority)
        if expiration is not self.expiration:
            force_setattr(self, "expiration", expiration)
        if isinstance(self.media, tuple):
            force_setattr(self, "media", list(self.media))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MessageRequest:
        """Build from a dict with wire names (``from``) or Python names (``from_``).

        An unknown key is an error rather than silently dropped: it is usually a typo that
        would lose part of the message.
        """
        kwargs: dict[str, Any] = {}
        unknown: list[FieldError] = []
        for key, value in data.items():
            name = _PY_NAMES.get(key)
            if name is None:
                label = safe_str(key) if isinstance(key, str) else describe(key)
                unknown.append(FieldError(label, f"unknown field {label!r}"))
            else:
                kwargs[name] = value
        if unknown:
            raise ValidationError(unknown)
        return cls(**kwargs)  # a missing required field is one of the rules' errors

    @classmethod
    def from_json(cls, data: bytes | str) -> MessageRequest:
        """Decode a JSON request body (wire names), with every rule checked."""
        obj, error = decode_json(data, _json_any)
        if error is not None:
            raise ValidationError([error])
        if not isinstance(obj, dict):
            raise ValidationError([FieldError("body", "the request body must be a JSON object")])
        return cls.from_dict(obj)


def coerce_request(obj: MessageRequest | Mapping[str, Any]) -> MessageRequest:
    """A :class:`MessageRequest` as is, or one built (and validated) from a dict."""
    if isinstance(obj, MessageRequest):
        return obj
    if isinstance(obj, Mapping):
        return MessageRequest.from_dict(obj)
    raise ValidationError([FieldError("body", f"expected a MessageRequest or a dict, not {type(obj).__name__}")])


class _MessageCore(msgspec.Struct, rename="camel", kw_only=True, gc=False):
    """The leading fields that a send's answer and a status callback's message share.

    Subclasses repeat ``rename``/``kw_only`` (a subclass without ``kw_only`` would reorder the
    fields) and state ``gc`` themselves; the fields below come first on the wire in both.
    """

    id: str
    owner: str | None = None
    application_id: str | None = None
    time: datetime | None = None
    segment_count: int | None = None
    direction: str | None = None
    to: list[str] = []
    from_: str | None = None


class Message(_MessageCore, rename="camel", kw_only=True, gc=False):
    """A message as Bandwidth answers a send (202): its ``id``, ``segmentCount``..."""

    media: list[str] | None = None
    text: str | None = None
    tag: str | None = None
    priority: str | None = None
    expiration: datetime | None = None


class MessagingRequestErrorBody(msgspec.Struct, kw_only=True):
    """Bandwidth's error body: ``{"type": ..., "description": ...}`` (the spec's ``MessagingRequestError``)."""

    type: str
    description: str


class CreateMessageRequestErrorBody(msgspec.Struct, rename="camel", kw_only=True):
    """Bandwidth's 400 body for a create, with every field error (the spec's ``CreateMessageRequestError``)."""

    type: str
    description: str
    field_errors: list[FieldError] = []


class StatusCallbackMessage(_MessageCore, rename="camel", kw_only=True, gc=True):
    """The message inside a status callback. Bandwidth does not store text: it comes as ``""``.

    Only ``id`` is required here although the spec requires more: a webhook receiver that
    rejected a whole batch for one missing field would make Bandwidth retry it for 24 hours.
    """

    text: str | None = None
    tag: str | None = None
    media: list[str] | None = None
    priority: str | None = None
    channel: str | None = None


class StatusCallback(msgspec.Struct, rename="camel", kw_only=True):
    """One status event (``message-sending``/``-sent``/``-delivered``/``-failed``/``-read``)."""

    time: datetime
    type: str
    to: str
    description: str
    message: StatusCallbackMessage
    event_time: datetime | None = None
    error_code: int | None = None
    carrier_name: str | None = None


class InboundCallback(msgspec.Struct, rename="camel", kw_only=True):
    """One inbound event: ``message-received`` is a message a handset sent to your number.

    The spec's ``inboundCallback``: ``to`` is your Bandwidth number that received it,
    ``message.from_`` the sender, ``message.text`` what they wrote (inbound text is kept, unlike
    an outbound message's), ``message.id`` Bandwidth's id of the inbound message. The other
    types (``requested-location-response``, ``suggestion-response``) are RBM-only. Status events
    have the same shape, so one decoder reads whatever arrives at a shared callback URL.
    """

    time: datetime
    type: str
    to: str
    description: str
    message: StatusCallbackMessage
    carrier_name: str | None = None


class PageInfo(msgspec.Struct, rename="camel", kw_only=True):
    prev_page: str | None = None
    next_page: str | None = None
    prev_page_token: str | None = None
    next_page_token: str | None = None


class ListMessageItem(msgspec.Struct, rename="camel", kw_only=True):
    """One message in a list-messages result (Bandwidth keeps no text)."""

    message_id: str
    account_id: str | None = None
    source_tn: str | None = None
    destination_tn: str | None = None
    message_status: str | None = None
    message_direction: str | None = None
    message_type: str | None = None
    segment_count: int | None = None
    error_code: int | None = None
    receive_time: datetime | None = None
    carrier_name: str | None = None
    message_size: int | None = None
    message_length: int | None = None
    attachment_count: int | None = None
    recipient_count: int | None = None
    campaign_class: str | None = None
    campaign_id: str | None = None
    bw_latency: int | None = None
    carrier_latency: int | None = None
    calling_number_country_a3: str | None = None
    called_number_country_a3: str | None = None
    product: str | None = None
    location: str | None = None


class MessagesList(msgspec.Struct, rename="camel", kw_only=True):
    total_count: int | None = None
    page_info: PageInfo | None = None
    messages: list[ListMessageItem] = []


class Media(msgspec.Struct, rename="camel", kw_only=True):
    """One uploaded media file, as the media list describes it."""

    media_name: str
    content: str | None = None
    content_length: int | None = None


# One encoder/decoder per type, created once and reused (creating them costs more than using them).
_encoder = msgspec.json.Encoder()
_json_any = msgspec.json.Decoder()
_message_decoder = msgspec.json.Decoder(Message)
_callbacks_decoder = msgspec.json.Decoder(list[StatusCallback])
_inbound_decoder = msgspec.json.Decoder(list[InboundCallback] | InboundCallback)
messages_list_decoder = msgspec.json.Decoder(MessagesList)
media_list_decoder = msgspec.json.Decoder(list[Media])


#: ``encode_request(request) -> bytes``: the JSON body for a create (omitting unset fields). The
#: encoder's own method, not a wrapper: it runs once per message.
encode_request: Callable[[MessageRequest], bytes] = _encoder.encode

#: ``decode_message(data) -> Message``: decode a 202 body. The typed decoder's own method.
decode_message: Callable[[bytes], Message] = _message_decoder.decode


def decode_callbacks(data: bytes) -> list[StatusCallback]:
    """Decode a status-callback POST body: a JSON array of events."""
    check_json_depth(data)
    return _callbacks_decoder.decode(data)


def decode_inbound_callbacks(data: bytes) -> list[InboundCallback]:
    """Decode an inbound-callback POST body: a JSON array of events, as Bandwidth sends them,
    or one event object, as the spec's request body shows it."""
    check_json_depth(data)
    decoded = _inbound_decoder.decode(data)
    return decoded if isinstance(decoded, list) else [decoded]


def encode(obj: Any) -> bytes:
    """Encode any Struct (or builtin) to JSON with the shared encoder."""
    return _encoder.encode(obj)
