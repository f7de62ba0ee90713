"""The list-messages endpoint as pure functions: parse the query, filter, sort, page.

One list item per recipient, as Bandwidth's message search returns them, without text
(Bandwidth does not store it). Supported filters: ``messageId``, ``sourceTn``,
``destinationTn`` (a comma list of up to 10 numbers, or one partial of 5+ characters matched
as a substring), ``messageStatus``, ``messageDirection``, ``messageType``, ``errorCode``,
``fromDateTime``/``toDateTime`` (inclusive, on ``receiveTime``), ``carrierName``
(case-insensitive), ``campaignId``, ``product``, ``location``, ``callingNumberCountryA3``/
``calledNumberCountryA3``, the inclusive ranges ``fromSegmentCount``/``toSegmentCount`` and
``fromMessageSize``/``toMessageSize``, the minimums ``fromBwLatency``/``fromCarrierLatency``,
and ``bwQueued`` (still in Bandwidth's queue) / ``carrierQueued`` (sent, no receipt yet).

Every item carries every ``listMessageItem`` field of the spec, in its order; a nullable field
that does not apply is ``null`` (``campaignId`` without a campaign, latencies not known yet).
How each is filled is in :func:`list_items`.
Paging: ``pageToken`` + ``limit`` (default 100; ``offset + limit <= 10000``), ``sort`` as
``field:asc|desc`` (default ``receiveTime:desc``), ``limitTotalCount`` caps ``totalCount``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .._segments import segments
from ._config import EmulatorConfig
from ._countries import country_a3, is_toll_free
from ._lifecycle import carrier_for, status_at
from ._state import AcceptedMessage, decode_token, iso_ms

__all__ = ["ListQuery", "ListQueryError", "Page", "list_items", "message_size", "page", "parse_query", "product_of"]

#: The most results a search reaches (limit + offset).
MAX_RESULTS = 10_000
DEFAULT_LIMIT = 100
MAX_TN_LIST = 10
MIN_PARTIAL_TN = 5

_STATUSES = frozenset({"RECEIVED", "QUEUED", "SENDING", "SENT", "FAILED", "DELIVERED", "ACCEPTED", "UNDELIVERED"})
_DIRECTIONS = frozenset({"INBOUND", "OUTBOUND"})
_TYPES = frozenset({"sms", "mms", "rcs"})
_PRODUCTS = frozenset(
    {
        "LOCAL_A2P",
        "P2P",
        "SHORT_CODE_REACH",
        "TOLL_FREE",
        "HOSTED_SHORT_CODE",
        "ALPHA_NUMERIC",
        "RBM_MEDIA",
        "RBM_RICH",
        "RBM_CONVERSATIONAL",
    }
)
#: Bytes of the concatenation header (UDH) each part of a multi-segment SMS carries.
UDH_BYTES = 6
_SORTABLE = frozenset(
    {
        "messageId",
        "accountId",
        "sourceTn",
        "destinationTn",
        "messageStatus",
        "messageDirection",
        "messageType",
        "segmentCount",
        "errorCode",
        "receiveTime",
        "carrierName",
        "messageLength",
        "attachmentCount",
        "recipientCount",
        "campaignId",
        "campaignClass",
        "messageSize",
        "bwLatency",
        "carrierLatency",
        "callingNumberCountryA3",
        "calledNumberCountryA3",
        "product",
        "location",
    }
)

Item = dict[str, Any]
Predicate = Callable[[Item], bool]


class ListQueryError(ValueError):
    """The query cannot be run; the message is the 400 body's ``description``."""


#: Item fields read straight from the record: filters on them run before the rest is computed.
_RECORD_FIELDS = frozenset(
    {
        "messageId",
        "accountId",
        "sourceTn",
        "destinationTn",
        "messageDirection",
        "messageType",
        "segmentCount",
        "receiveTime",
        "messageLength",
        "attachmentCount",
        "recipientCount",
    }
)


@dataclass(slots=True)
class ListQuery:
    #: Filters on record fields (:data:`_RECORD_FIELDS`), checked first, and on the others.
    early: list[Predicate] = field(default_factory=list)
    late: list[Predicate] = field(default_factory=list)
    sort_field: str = "receiveTime"
    descending: bool = True
    offset: int = 0
    limit: int = DEFAULT_LIMIT
    limit_total_count: bool = False

    @property
    def predicates(self) -> list[Predicate]:
        return self.early + self.late


@dataclass(slots=True)
class Page:
    total_count: int
    items: list[Item]
    prev_offset: int | None
    next_offset: int | None


def _int(name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ListQueryError(f"{name} must be an integer, not {value!r}") from None


def _bool(name: str, value: str) -> bool:
    lowered = value.lower()
    if lowered not in ("true", "false"):
        raise ListQueryError(f"{name} must be true or false, not {value!r}")
    return lowered == "true"


def _iso_bound(name: str, value: str) -> str:
    """A date-time bound, normalised to the ``receiveTime`` format so strings compare as times."""
    try:
        parsed = datetime.fromisoformat(value.strip().replace(" ", "+"))
    except ValueError:
        raise ListQueryError(f"{name} {value!r} is not an ISO 8601 date-time") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return iso_ms(int(parsed.timestamp() * 1000))


def _tn_predicate(name: str, value: str) -> Predicate:
    # '+' in an unencoded query string arrives as a space; numbers never contain spaces.
    value = value.strip().replace(" ", "+")
    if "," in value:
        numbers = frozenset(v.strip() for v in value.split(",") if v.strip())
        if len(numbers) > MAX_TN_LIST:
            raise ListQueryError(f"{name} accepts at most {MAX_TN_LIST} comma-separated numbers")
        return lambda item: item[name] in numbers
    if len(value) < MIN_PARTIAL_TN:
        raise ListQueryError(f"{name} must be a full number or a partial of at least {MIN_PARTIAL_TN} characters")
    return lambda item: value in item[name]


def _enum_predicate(name: str, value: str, allowed: frozenset[str]) -> Predicate:
    if value not in allowed:
        raise ListQueryError(f"{name} must be one of {', '.join(sorted(allowed))}, not {value!r}")
    return _equals(name, value)


def _equals(name: str, value: object) -> Predicate:
    return lambda item: item[name] == value


def _at_least(name: str, bound: Any) -> Predicate:
    # A null value (a latency not known yet) matches no range.
    return lambda item: item[name] is not None and bool(item[name] >= bound)


def _at_most(name: str, bound: Any) -> Predicate:
    return lambda item: item[name] is not None and bool(item[name] <= bound)


def _status_is(status: str, wanted: bool) -> Predicate:
    return lambda item: (item["messageStatus"] == status) == wanted


def _carrier(value: str) -> Predicate:
    wanted = value.casefold()
    return lambda item: (item.get("carrierName") or "").casefold() == wanted


def _int_bound(field_name: str, bound: Callable[[str, Any], Predicate]) -> Callable[[str, str], Predicate]:
    return lambda name, value: bound(field_name, _int(name, value))


def _same(field_name: str) -> Callable[[str, str], Predicate]:
    return lambda name, value: _equals(field_name, value)


#: Every search filter of the spec: query parameter -> (the item field it reads, predicate maker).
_FILTERS: dict[str, tuple[str, Callable[[str, str], Predicate]]] = {
    "messageId": ("messageId", _same("messageId")),
    "sourceTn": ("sourceTn", _tn_predicate),
    "destinationTn": ("destinationTn", _tn_predicate),
    "messageStatus": ("messageStatus", lambda name, value: _enum_predicate(name, value, _STATUSES)),
    "messageDirection": ("messageDirection", lambda name, value: _enum_predicate(name, value, _DIRECTIONS)),
    "messageType": ("messageType", lambda name, value: _enum_predicate(name, value, _TYPES)),
    "product": ("product", lambda name, value: _enum_predicate(name, value, _PRODUCTS)),
    "errorCode": ("errorCode", _int_bound("errorCode", _equals)),
    "fromDateTime": ("receiveTime", lambda name, value: _at_least("receiveTime", _iso_bound(name, value))),
    "toDateTime": ("receiveTime", lambda name, value: _at_most("receiveTime", _iso_bound(name, value))),
    "carrierName": ("carrierName", lambda name, value: _carrier(value)),
    "campaignId": ("campaignId", _same("campaignId")),
    "location": ("location", _same("location")),
    "callingNumberCountryA3": ("callingNumberCountryA3", lambda name, value: _equals(name, value.strip().upper())),
    "calledNumberCountryA3": ("calledNumberCountryA3", lambda name, value: _equals(name, value.strip().upper())),
    "fromSegmentCount": ("segmentCount", _int_bound("segmentCount", _at_least)),
    "toSegmentCount": ("segmentCount", _int_bound("segmentCount", _at_most)),
    "fromMessageSize": ("messageSize", _int_bound("messageSize", _at_least)),
    "toMessageSize": ("messageSize", _int_bound("messageSize", _at_most)),
    "fromBwLatency": ("bwLatency", _int_bound("bwLatency", _at_least)),
    "fromCarrierLatency": ("carrierLatency", _int_bound("carrierLatency", _at_least)),
    # Still in Bandwidth's queue / handed to the carrier with no receipt yet.
    "bwQueued": ("messageStatus", lambda name, value: _status_is("QUEUED", _bool(name, value))),
    "carrierQueued": ("messageStatus", lambda name, value: _status_is("SENT", _bool(name, value))),
}


def parse_query(query: Mapping[str, str]) -> ListQuery:
    """Turn the query string into predicates and paging; :class:`ListQueryError` if it cannot run."""
    q = ListQuery()
    filters = 0
    for name, value in query.items():
        spec = _FILTERS.get(name)
        if spec is not None:
            filters += 1
            field_name, make = spec
            (q.early if field_name in _RECORD_FIELDS else q.late).append(make(name, value))
        elif name == "sort":
            field_name, _, direction = value.partition(":")
            if field_name not in _SORTABLE:
                raise ListQueryError(f"cannot sort by {field_name!r}; use one of {', '.join(sorted(_SORTABLE))}")
            if direction.lower() not in ("", "asc", "desc"):
                raise ListQueryError(f"sort direction must be asc or desc, not {direction!r}")
            q.sort_field, q.descending = field_name, direction.lower() == "desc"
        elif name == "pageToken":
            offset = decode_token(value)
            if offset is None:
                raise ListQueryError(f"pageToken {value!r} is not valid")
            q.offset = offset
        elif name == "limit":
            q.limit = _int(name, value)
            if q.limit < 1:
                raise ListQueryError("limit must be at least 1")
        elif name == "limitTotalCount":
            q.limit_total_count = _bool(name, value)
        # Any other parameter is ignored, as Bandwidth's (Spring) service ignores unknown ones.
    if not filters:
        raise ListQueryError("At least one query parameter (a search filter) must be provided")
    if q.offset + q.limit > MAX_RESULTS:
        raise ListQueryError(f"The sum of limit and the page offset cannot be more than {MAX_RESULTS}")
    return q


def product_of(sender: str, campaign_id: str | None) -> str:
    """Bandwidth's messaging product for a sender: what its number is, as far as the emulator knows.

    An alphanumeric sender ID is ``ALPHA_NUMERIC``, a NANP toll-free number ``TOLL_FREE``; any
    other number is ``LOCAL_A2P`` when the account has a 10DLC campaign (``campaign_id``), else
    ``P2P``. (Short codes cannot be senders here: ``from`` must be E.164 or alphanumeric.)
    """
    if sender[:1] != "+":
        return "ALPHA_NUMERIC"
    if is_toll_free(sender):
        return "TOLL_FREE"
    return "LOCAL_A2P" if campaign_id is not None else "P2P"


def message_size(msg: AcceptedMessage, media_bytes: Callable[[str], int | None]) -> int:
    """The message's size in bytes, content and headers, from what was sent.

    SMS: the text as the carrier carries it (GSM-7 septets packed 8 to 7 bytes, or 2 bytes a
    UCS-2 unit) plus a 6-byte concatenation header per part when it is split. MMS: the text in
    UTF-8 plus each attachment's size when ``media_bytes`` knows it (a file uploaded to this
    emulator); the emulator fetches no other URL, so those count 0.
    """
    text = msg.text or ""
    if msg.media:
        return len(text.encode()) + sum(media_bytes(url) or 0 for url in msg.media)
    info = segments(text)
    size = (info.units * 7 + 7) // 8 if info.encoding == "GSM-7" else info.units * 2
    return size + (UDH_BYTES * info.segments if info.segments > 1 else 0)


def list_items(
    records: Iterable[AcceptedMessage],
    account_id: str,
    now: float,
    cfg: EmulatorConfig,
    q: ListQuery,
    media_bytes: Callable[[str], int | None] = lambda url: None,
) -> Iterator[Item]:
    """The list items ``q`` matches: one per recipient of each message of ``account_id``, as of ``now``.

    Every ``listMessageItem`` field, in the spec's order. ``errorCode`` is 0 unless the
    recipient FAILED. ``bwLatency`` (seconds, as the spec says) is the time from receipt until
    the message left Bandwidth for the carrier, known once it is SENT; ``carrierLatency`` the time
    from then to the delivery receipt, known once DELIVERED or FAILED; both null before, and for
    a message that expired in the queue (it never left). ``carrierName`` is null for MMS ("not
    currently supported for MMS", says the spec). Countries come from the numbers' calling
    codes; ``product`` from :func:`product_of`; ``campaignId``/``campaignClass`` only for
    ``LOCAL_A2P`` (10DLC campaigns register local numbers); ``location`` from the config.

    Filters on record fields run on a small dict first, so a search among many messages builds
    whole items (and computes sizes, countries, statuses) only for the recipients it keeps.
    """
    carriers = cfg.carrier_names
    campaign_id = cfg.campaign_id
    early, late = q.early, q.late
    for msg in records:
        if msg.account_id != account_id:
            continue
        mms = bool(msg.media)
        n = len(msg.to)
        length = len(msg.text or "")
        attachments = len(msg.media or ())
        kind = "mms" if mms else "sms"
        derived: tuple[str, bool, int, str | None] | None = None
        for i, number in enumerate(msg.to):
            if early:
                record = {
                    "messageId": msg.id,
                    "accountId": msg.account_id,
                    "sourceTn": msg.from_,
                    "destinationTn": number,
                    "messageDirection": "OUTBOUND",
                    "messageType": kind,
                    "segmentCount": msg.segment_count,
                    "receiveTime": msg.time,
                    "messageLength": length,
                    "attachmentCount": attachments,
                    "recipientCount": n,
                }
                if not all(p(record) for p in early):
                    continue
            if derived is None:
                product = product_of(msg.from_, campaign_id)
                derived = (product, product == "LOCAL_A2P", message_size(msg, media_bytes), country_a3(msg.from_))
            product, campaign, size, calling = derived
            status, code = status_at(msg, i, now)
            final = status in ("DELIVERED", "FAILED") and not msg.expired
            left = final or status == "SENT"
            item = {
                "messageId": msg.id,
                "accountId": msg.account_id,
                "sourceTn": msg.from_,
                "destinationTn": number,
                "messageStatus": status,
                "messageDirection": "OUTBOUND",
                "messageType": kind,
                "segmentCount": msg.segment_count,
                "errorCode": code,
                "receiveTime": msg.time,
                "carrierName": None if mms else carrier_for(number, carriers),
                "messageSize": size,
                "messageLength": length,
                "attachmentCount": attachments,
                "recipientCount": n,
                "campaignClass": cfg.campaign_class if campaign else None,
                "campaignId": campaign_id if campaign else None,
                "bwLatency": round(msg.dequeue_at - msg.received_at + (msg.step if mms else 0.0)) if left else None,
                "carrierLatency": round(msg.step) if final else None,
                "callingNumberCountryA3": calling,
                "calledNumberCountryA3": country_a3(number),
                "product": product,
                "location": cfg.location,
            }
            if all(p(item) for p in late):
                yield item


def page(items: Iterable[Item], q: ListQuery) -> Page:
    """Sort the matching items and cut one page. A next page exists only while it stays within 10,000."""
    matched = list(items)
    field_name = q.sort_field

    def key(item: Item) -> tuple[bool, Any]:
        value = item[field_name]
        # Missing values sort after present ones; the flag keeps None from meeting a str.
        return (value is None, value if value is not None else 0)

    # Python's sort is stable, also with reverse=True: equal keys keep acceptance order.
    matched.sort(key=key, reverse=q.descending)
    total = len(matched)
    end = q.offset + q.limit
    next_offset = end if end < total and end + q.limit <= MAX_RESULTS else None
    prev_offset = max(0, q.offset - q.limit) if q.offset > 0 else None
    count = min(total, MAX_RESULTS) if q.limit_total_count else total
    return Page(count, matched[q.offset : end], prev_offset, next_offset)
