"""Segment counting: both sides of every limit, for GSM-7 and UCS-2."""

import pytest

from bwasync import segments

EMOJI = "😀"  # outside the BMP: two UCS-2 units


@pytest.mark.parametrize(
    ("text", "encoding", "count", "units"),
    [
        ("", "GSM-7", 1, 0),
        ("a", "GSM-7", 1, 1),
        ("a" * 160, "GSM-7", 1, 160),
        ("a" * 161, "GSM-7", 2, 161),
        ("a" * 306, "GSM-7", 2, 306),
        ("a" * 307, "GSM-7", 3, 307),
        ("a" * 459, "GSM-7", 3, 459),
        ("a" * 460, "GSM-7", 4, 460),
        # extension characters take two septets
        ("{" * 80, "GSM-7", 1, 160),
        ("{" * 80 + "a", "GSM-7", 2, 161),
        ("a" * 159 + "€", "GSM-7", 2, 161),
        ("a" * 158 + "€", "GSM-7", 1, 160),
        ("^{}[]~|€\\\f", "GSM-7", 1, 20),
        # an escape pair is never split: 152 + 2 does not fit in 153, so the pair moves on
        ("a" * 152 + "[" + "a" * 10, "GSM-7", 2, 164),
        ("a" * 152 + "[" + "a" * 152, "GSM-7", 3, 306),
        ("a" * 153 + "a" * 153, "GSM-7", 2, 306),
        # basic-table non-ASCII stays GSM-7
        ("é" * 160, "GSM-7", 1, 160),
        ("Ä@£$¥_" * 10, "GSM-7", 1, 60),
        ("line\nbreak\r", "GSM-7", 1, 11),
        # UCS-2
        ("ж", "UCS-2", 1, 1),
        ("ж" * 70, "UCS-2", 1, 70),
        ("ж" * 71, "UCS-2", 2, 71),
        ("ж" * 134, "UCS-2", 2, 134),
        ("ж" * 135, "UCS-2", 3, 135),
        ("a" * 69 + "ж", "UCS-2", 1, 70),
        ("a" * 160 + "ж", "UCS-2", 3, 161),
        # outside the BMP: two units each, never split
        (EMOJI * 35, "UCS-2", 1, 70),
        (EMOJI * 35 + "a", "UCS-2", 2, 71),
        ("a" * 66 + EMOJI, "UCS-2", 1, 68),
        ("a" * 66 + EMOJI + "a" * 10, "UCS-2", 2, 78),
        ("a" * 66 + EMOJI + "a" * 65, "UCS-2", 2, 133),
        ("a" * 66 + EMOJI + "a" * 66, "UCS-2", 3, 134),  # ceil(134 / 67) would say 2
        # ASCII that is not GSM-7 basic
        ("`", "UCS-2", 1, 1),
        ("tab\there", "UCS-2", 1, 8),
        ("ç", "UCS-2", 1, 1),  # only capital Ç is in the GSM-7 basic table
        ("Ç", "GSM-7", 1, 1),
    ],
)
def test_segments(text: str, encoding: str, count: int, units: int) -> None:
    info = segments(text)
    assert (info.encoding, info.segments, info.units) == (encoding, count, units)


def test_mms_is_one_segment_whatever_the_text() -> None:
    info = segments("a" * 2000, ["https://example.com/a.png"])
    assert info.segments == 1
    assert info.encoding == "GSM-7"
    assert info.units == 2000
    assert segments("ж" * 500, ["https://example.com/a.png"]).segments == 1


def test_empty_media_list_is_not_mms() -> None:
    assert segments("a" * 161, []).segments == 2


def test_none_text_counts_as_empty() -> None:
    assert segments(None, ["https://example.com/a.png"]) == ("GSM-7", 1, 0)


def test_attributes_by_name() -> None:
    info = segments("Hi 👋")
    assert info.encoding == "UCS-2"
    assert info.segments == 1
    assert info.units == 5


@pytest.mark.parametrize(
    "text",
    ["", "a" * 35, "€" * 35, "😀" * 35, "a" * 36, "ж" * 71, "a" * 160, "a" * 161, "{" * 81, "a" * 159 + "`", "😀" * 36],
)
@pytest.mark.parametrize("media", [None, ["https://example.com/a.png"]])
def test_segment_count_agrees_with_segments(text: str, media: list[str] | None) -> None:
    from bwasync._segments import segment_count

    assert segment_count(text, media) == segments(text, media).segments


def test_segment_count_agrees_with_segments_on_every_short_ascii_shape() -> None:
    from bwasync._segments import segment_count

    # The fast paths of segment_count (<= 35 of anything, <= 70 of ASCII, <= 160 of plain GSM-7
    # ASCII) must agree with the full count, escape pairs and non-GSM ASCII (backtick) included.
    for n in (35, 36, 69, 70, 71, 79, 80, 81, 153, 160, 161):
        for fill in ("a", "{", "`", "a{", "\x01"):
            text = (fill * n)[:n]
            assert segment_count(text) == segments(text).segments, (n, fill)
