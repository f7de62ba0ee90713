"""How many SMS segments a text costs: the unit Bandwidth's rate limits count.

Rules (3GPP TS 23.038 / BANDWIDTH.md):

* A text made only of GSM-7 characters is sent in GSM-7. The basic table costs one septet a
  character; the extension table (``^ { } [ ] ~ | € \\`` and form feed) costs two (an escape
  plus the character).  One segment holds 160 septets; a longer text is split into segments of
  153 (7 septets go to the concatenation header).
* Anything else switches the whole text to UCS-2: one 16-bit unit a character, two for a
  character outside the Basic Multilingual Plane (most emoji, as a surrogate pair). One segment
  holds 70 units; a longer text is split into segments of 67.
* A two-unit character (an escape pair, a surrogate pair) is never split across two segments:
  when it does not fit in what is left of a segment it starts the next one. So a split text can
  take one segment more than ``ceil(units / 153)`` suggests.
* A message with media is an MMS, which Bandwidth reports as one segment.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final, Literal, NamedTuple

if TYPE_CHECKING:
    from ._models import MessageRequest

__all__ = [
    "GSM7_BASIC",
    "GSM7_EXTENSION",
    "SegmentInfo",
    "message_cost",
    "segment_count",
    "segments",
    "total_segments",
]

#: The GSM 03.38 basic character set (one septet each); the escape code 0x1B is not a character.
GSM7_BASIC: Final = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
#: The GSM 03.38 extension table (two septets each: escape + character).
GSM7_EXTENSION: Final = frozenset("^{}[]~|€\\\f")

GSM7_SINGLE: Final = 160
GSM7_MULTI: Final = 153
UCS2_SINGLE: Final = 70
UCS2_MULTI: Final = 67

Encoding = Literal["GSM-7", "UCS-2"]

#: ASCII characters that are not one-septet GSM-7: the extension characters (two septets),
#: backtick and the control characters other than LF and CR (not GSM-7 at all).
_ASCII_SLOW = re.compile(r"[\x00-\x09\x0b\x0c\x0e-\x1f\x7f^{}\[\]\\~|`]")


class SegmentInfo(NamedTuple):
    """The encoding a text is sent in, how many segments it takes, and the units it uses."""

    encoding: Encoding
    #: Segments billed and counted by the rate limits.
    segments: int
    #: Septets (GSM-7) or 16-bit code units (UCS-2) the text uses, before any split.
    units: int


def _pack(widths: list[int], per_segment: int) -> int:
    """Segments needed to pack characters of the given widths without splitting any."""
    count, room = 1, per_segment
    for w in widths:
        if w > room:
            count += 1
            room = per_segment
        room -= w
    return count


def _gsm7_widths(text: str) -> list[int] | None:
    widths = []
    for ch in text:
        if ch in GSM7_BASIC:
            widths.append(1)
        elif ch in GSM7_EXTENSION:
            widths.append(2)
        else:
            return None
    return widths


def segments(text: str | None, media: Sequence[str] | None = None) -> SegmentInfo:
    """Encoding, segment count and units of ``text`` as Bandwidth counts them.

    >>> segments("Hello")
    SegmentInfo(encoding='GSM-7', segments=1, units=5)
    >>> segments("Hi 👋")
    SegmentInfo(encoding='UCS-2', segments=1, units=5)
    >>> segments("a" * 161)
    SegmentInfo(encoding='GSM-7', segments=2, units=161)
    """
    text = text or ""
    mms = bool(media)
    # Fast path: most ASCII is GSM-7 basic, one septet each (see _ASCII_SLOW for the rest).
    if text.isascii() and _ASCII_SLOW.search(text) is None:
        units = len(text)
        if mms or units <= GSM7_SINGLE:
            return SegmentInfo("GSM-7", 1, units)
        return SegmentInfo("GSM-7", -(-units // GSM7_MULTI), units)
    widths = _gsm7_widths(text)
    if widths is not None:
        units = sum(widths)
        if mms or units <= GSM7_SINGLE:
            return SegmentInfo("GSM-7", 1, units)
        return SegmentInfo("GSM-7", _pack(widths, GSM7_MULTI), units)
    widths = [2 if ord(ch) > 0xFFFF else 1 for ch in text]
    units = sum(widths)
    if mms or units <= UCS2_SINGLE:
        return SegmentInfo("UCS-2", 1, units)
    return SegmentInfo("UCS-2", _pack(widths, UCS2_MULTI), units)


def segment_count(text: str | None, media: Sequence[str] | None = None) -> int:
    """Just the number of segments (what rate limits count), as cheaply as possible."""
    if media or not text or len(text) <= 35:
        # 35 characters fit one segment whatever they are: at most 70 septets or UCS-2 units.
        return 1
    n = len(text)
    # 70 ASCII characters fit one segment whatever they are: at most 140 septets in GSM-7 (every
    # one an escape pair), or 70 UCS-2 units (ASCII has no surrogate pairs); no regex needed.
    if n <= GSM7_SINGLE and text.isascii() and (n <= UCS2_SINGLE or _ASCII_SLOW.search(text) is None):
        return 1
    return segments(text).segments


def total_segments(segments_per_copy: int, recipients: int) -> int:
    """Segments a message counts (against rate limits, on the bill) in all: one copy per recipient.

    The one place this formula lives: what the client charges its limiter before a send, what a
    run's summary adds up from Bandwidth's ``segmentCount`` after one, and what a campaign plans.
    """
    return segments_per_copy * (recipients if recipients > 1 else 1)  # max(1, recipients), without a builtin call


def message_cost(request: MessageRequest) -> int:
    """Segments ``request`` counts against rate limits: segments × recipients (MMS: 1 each)."""
    text = request.text
    # segment_count's one-segment cases, tested here first: this runs once per send, and most
    # texts are short (35 characters of anything, or 70 ASCII characters, fit one segment).
    if request.media or not text or ((n := len(text)) <= UCS2_SINGLE and (n <= 35 or text.isascii())):
        return total_segments(1, len(request.to))
    return total_segments(segment_count(text), len(request.to))
