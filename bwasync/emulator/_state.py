"""The emulator's in-memory state, as small classes that take the clock as an argument.

Nothing here does I/O or reads a clock itself, so the queue model, token expiry and rate limit
are tested by passing times in. ``now`` is always the emulator's monotonic clock (the event
loop's ``time()`` unless a test injects another); wall-clock strings are made separately.
"""

from __future__ import annotations

import base64
import collections
import math
import random
import secrets
import time
from dataclasses import dataclass, field, fields
from typing import Any

import msgspec

from .._models import RecipientsMixin
from .._segments import total_segments

__all__ = [
    "AcceptedMessage",
    "AccountQueue",
    "EmulatorStats",
    "IdFactory",
    "TokenStore",
    "WindowLimiter",
    "decode_token",
    "encode_token",
    "iso_ms",
    "iso_us",
    "queue_full_description",
]


class AcceptedMessage(msgspec.Struct, RecipientsMixin, kw_only=True, gc=False):
    """Ground truth for one accepted message: what was sent and what the emulator decided.

    ``to`` is always a list; ``time`` is the ``time`` of the 202 body. ``received_at`` and
    ``dequeue_at`` are on the emulator's monotonic clock: the message leaves the account queue
    (and its lifecycle starts) at ``dequeue_at``. ``error_codes`` holds, per recipient, the
    code its delivery fails with, 0 for delivered; ``None`` means all delivered.
    """

    id: str
    account_id: str
    application_id: str
    from_: str
    to: list[str]
    text: str | None = None
    media: list[str] | None = None
    tag: str | None = None
    priority: str | None = None
    expiration: str | None = None
    segment_count: int
    time: str
    received_at: float
    dequeue_at: float
    #: Seconds between lifecycle events, captured at acceptance so a later knob change cannot
    #: make the list endpoint and the callbacks disagree about this message.
    step: float = 0.0
    expired: bool = False
    error_codes: list[int] | None = None

    @property
    def cost(self) -> int:
        """What the message costs in the account queue: segments × recipients."""
        return total_segments(self.segment_count, len(self.to))

    def error_code(self, index: int) -> int:
        """The failure code of recipient ``index``, 0 when it is delivered."""
        return self.error_codes[index] if self.error_codes is not None else 0


@dataclass(slots=True)
class EmulatorStats:
    """Counters, cheap enough to bump on the hot path. ``as_dict()`` for reports."""

    #: Every HTTP request the emulator handled.
    requests: int = 0
    #: Create requests (``POST .../messages``).
    creates: int = 0
    #: Create requests being handled right now, and the most there ever were at once (what a
    #: client's in-flight cap looks like from the server).
    creates_in_flight: int = 0
    max_creates_in_flight: int = 0
    #: Messages accepted: answered 202, or dropped/slowed after acceptance.
    accepted: int = 0
    #: Segments × recipients accepted (what the account queue counts).
    segments: int = 0
    #: Responses sent, by status code (a dropped connection is in ``faults`` instead).
    by_status: collections.Counter[int] = field(default_factory=collections.Counter)
    #: Injected faults by kind: ``drop_before``, ``drop_after``, ``slow``, ``500``, ``503``, ``502_html``.
    faults: collections.Counter[str] = field(default_factory=collections.Counter)
    tokens_issued: int = 0
    #: Callback POSTs the receiver answered 2xx (duplicates included).
    callbacks_sent: int = 0
    #: Events given up on after ``callback_max_attempts``.
    callbacks_failed: int = 0
    #: Extra attempts after a non-2xx answer or a connection error.
    callbacks_redelivered: int = 0
    #: Events deliberately delivered a second time.
    callbacks_duplicated: int = 0
    #: STOP replies (``message-received`` callbacks) the receiver answered 2xx (``p_stop_reply``).
    stop_replies_sent: int = 0

    def as_dict(self) -> dict[str, Any]:
        """Every counter as plain values, but the live ``creates_in_flight`` (zero once idle)."""
        return {
            f.name: dict(value) if isinstance(value := getattr(self, f.name), collections.Counter) else value
            for f in fields(self)
            if f.name != "creates_in_flight"
        }


class AccountQueue:
    """Bandwidth's per-account message queue as a leaky bucket, counted in segments.

    The bucket drains at ``rate`` segments/s and holds ``rate × queue_seconds``. A message
    costs segments × recipients; one that would overflow the bucket is refused (429) and
    leaves it unchanged. Invariant: ``0 <= level <= capacity`` after every call.
    """

    __slots__ = ("_last", "level")

    def __init__(self) -> None:
        self.level = 0.0
        self._last: float | None = None

    def drain(self, now: float, rate: float) -> None:
        """Dequeue at ``rate`` up to ``now`` (called with the old rate before the rate changes)."""
        if self._last is not None:
            self.level = max(0.0, self.level - (now - self._last) * rate)
        self._last = now

    def admit(self, cost: int, now: float, rate: float, queue_seconds: float) -> float | None:
        """Seconds until this message is dequeued, or None if the queue is full."""
        self.drain(now, rate)
        before = self.level
        if before + cost > rate * queue_seconds + 1e-9:
            return None
        self.level = before + cost
        return before / rate

    def __repr__(self) -> str:
        return f"<AccountQueue level={self.level:.1f}>"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def queue_full_description(rate: float, queue_seconds: float) -> str:
    """Bandwidth's 429 wording, with the account's figures."""
    per_minute = rate * 60
    capacity = rate * queue_seconds
    minutes = queue_seconds / 60
    return (
        "The SMS queue for your account is full and cannot accept more messages right now. "
        f"Your allowed rate is {_number(per_minute)} messages per minute. "
        f"The capacity of this queue is {_number(capacity)} messages ({_number(minutes)} minutes). "
        "Reduce your message sending rate, or contact support to increase your allowed rate."
    )


class TokenStore:
    """Bearer tokens issued by the emulator's OAuth2 endpoint, each with its expiry."""

    __slots__ = ("_tokens",)

    def __init__(self) -> None:
        self._tokens: dict[str, float] = {}

    def issue(self, now: float, ttl: float) -> str:
        # Forget expired tokens now and then, so a long run that refreshes often stays small.
        if len(self._tokens) >= 64:
            self._tokens = {t: exp for t, exp in self._tokens.items() if exp > now}
        token = secrets.token_urlsafe(32)
        self._tokens[token] = now + ttl
        return token

    def valid(self, token: str, now: float) -> bool:
        expires = self._tokens.get(token)
        return expires is not None and now < expires

    def __len__(self) -> int:
        return len(self._tokens)


class WindowLimiter:
    """At most ``limit`` requests per fixed window of ``window`` seconds, per key (source IP)."""

    __slots__ = ("_windows",)

    def __init__(self) -> None:
        self._windows: dict[str, tuple[float, int]] = {}

    def hit(self, key: str, now: float, limit: int, window: float) -> int | None:
        """Count a request; None if allowed, else the whole seconds until the window resets."""
        start, count = self._windows.get(key, (now, 0))
        if now - start >= window:
            start, count = now, 0
        if count >= limit:
            return max(1, math.ceil(start + window - now))
        self._windows[key] = (start, count + 1)
        return None


_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"
#: Every two-character base36 string: 8 lookups make the 16-character suffix.
_PAIRS = tuple(a + b for a in _BASE36 for b in _BASE36)


class IdFactory:
    """Bandwidth-style message ids: a 13-digit ms timestamp then 16 lowercase base36 characters.

    One 128-bit draw, cut into eight 16-bit chunks each reduced mod 36²: about 1 µs, and the
    modulo bias (65536 is not a multiple of 1296) stays under 2%, irrelevant for ids.
    """

    __slots__ = ("_bits",)

    def __init__(self, rng: random.Random) -> None:
        self._bits = rng.getrandbits

    def new(self, ms: int) -> str:
        n = self._bits(128)
        p = _PAIRS
        return (
            f"{ms}{p[(n & 0xFFFF) % 1296]}{p[((n >> 16) & 0xFFFF) % 1296]}{p[((n >> 32) & 0xFFFF) % 1296]}"
            f"{p[((n >> 48) & 0xFFFF) % 1296]}{p[((n >> 64) & 0xFFFF) % 1296]}{p[((n >> 80) & 0xFFFF) % 1296]}"
            f"{p[((n >> 96) & 0xFFFF) % 1296]}{p[(n >> 112) % 1296]}"
        )


class _IsoCache:
    """``time.time()`` as ISO 8601 with milliseconds and ``Z``; one strftime per second at most."""

    __slots__ = ("_prefix", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def ms(self, ms: int) -> str:
        second, milli = divmod(ms, 1000)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._prefix}.{milli:03d}Z"


_iso = _IsoCache()


def iso_ms(ms: int | None = None) -> str:
    """A Unix time in ms (default: now) as ``2024-12-02T20:15:57.278Z``."""
    return _iso.ms(time.time_ns() // 1_000_000 if ms is None else ms)


def iso_us() -> str:
    """Now as ``2024-06-25T18:42:36.979456Z`` (callback event times carry microseconds)."""
    ns = time.time_ns()
    second, rest = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)) + f".{rest // 1000:06d}Z"


#: A list offset never exceeds 10,000 (Bandwidth's search cap); a longer token is not ours.
_MAX_TOKEN_DIGITS = 9


def encode_token(offset: int) -> str:
    """An opaque, base64 page token for a list offset."""
    return base64.urlsafe_b64encode(f"o{offset}".encode()).decode().rstrip("=")


def decode_token(token: str) -> int | None:
    """The offset in a page token, or None if it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    digits = raw[1:]
    # ASCII digits only (str.isdigit also takes '²' and '٣'), and few of them: no offset has more.
    if raw[:1] != "o" or not (digits.isascii() and digits.isdigit()) or len(digits) > _MAX_TOKEN_DIGITS:
        return None
    return int(digits)
