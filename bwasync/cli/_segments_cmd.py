"""``bwasync segments``: what a text costs, as Bandwidth counts it (encoding, segments, units)."""

from __future__ import annotations

import sys
import unicodedata
from typing import Any

import click
from rich.console import Group
from rich.table import Table
from rich.text import Text

from .._segments import (
    GSM7_BASIC,
    GSM7_EXTENSION,
    GSM7_MULTI,
    GSM7_SINGLE,
    UCS2_MULTI,
    UCS2_SINGLE,
    SegmentInfo,
    segments,
)
from ._output import echo_json, out_console

__all__ = ["analyse", "segments_command"]


def _describe(ch: str, index: int) -> dict[str, Any]:
    code = ord(ch)
    return {
        "character": ch,
        "position": index + 1,
        "codepoint": f"U+{code:04X}",
        "name": unicodedata.name(ch, "unnamed character"),
    }


def analyse(text: str, media: list[str] | None = None) -> dict[str, Any]:
    """Everything ``segments`` reports about ``text``, as JSON-ready builtins.

    ``ucs2Trigger`` is the first character that is not GSM-7 (1-based ``position``): the one
    that switches the whole text to UCS-2. ``extensionCharacters`` counts GSM-7 characters that
    take two septets.
    """
    info: SegmentInfo = segments(text, media)
    gsm = info.encoding == "GSM-7"
    result: dict[str, Any] = {
        "encoding": info.encoding,
        "segments": info.segments,
        "units": info.units,
        "unit": "septet" if gsm else "UCS-2 code unit",
        "characters": len(text),
        "mms": bool(media),
        "singleSegmentCapacity": GSM7_SINGLE if gsm else UCS2_SINGLE,
        "splitSegmentCapacity": GSM7_MULTI if gsm else UCS2_MULTI,
    }
    trigger = next((i for i, ch in enumerate(text) if ch not in GSM7_BASIC and ch not in GSM7_EXTENSION), None)
    if trigger is not None:
        result["ucs2Trigger"] = _describe(text[trigger], trigger)
    if gsm:
        result["extensionCharacters"] = sum(ch in GSM7_EXTENSION for ch in text)
    else:
        result["astralCharacters"] = sum(ord(ch) > 0xFFFF for ch in text)
    return result


def _notes(report: dict[str, Any]) -> list[Text]:
    notes: list[Text] = []
    unit = "septets" if report["encoding"] == "GSM-7" else "units"
    single, split = report["singleSegmentCapacity"], report["splitSegmentCapacity"]
    if report["mms"]:
        notes.append(Text("Has media: sent as MMS, which Bandwidth always reports as 1 segment."))
    elif report["segments"] == 1:
        notes.append(Text(f"{single - report['units']} more {unit} fit in this one segment (of {single})."))
    else:
        notes.append(
            Text(f"Over {single} {unit}: split into segments of {split} (each carries a concatenation header).")
        )
    trigger = report.get("ucs2Trigger")
    if trigger is not None:
        notes.append(
            Text.assemble(
                ("UCS-2 because of ", ""),
                (repr(trigger["character"]), "bold yellow"),
                f" ({trigger['codepoint']} {trigger['name']}) at position {trigger['position']}: "
                f"it is not in the GSM-7 alphabet, so the whole text goes as UCS-2 ({UCS2_SINGLE} per "
                f"segment instead of {GSM7_SINGLE}).",
            )
        )
    for key, noun, unit in _DOUBLE_WIDTH:
        if report.get(key):
            notes.append(_double_width_note(report[key], noun, unit))
    return notes


# Characters that count twice: the report's key, the noun ({s} marks its plural) and what they take two of.
_DOUBLE_WIDTH = (
    ("extensionCharacters", "GSM-7 extension character{s} (^ {{ }} [ ] ~ | € \\)", "septets"),
    ("astralCharacters", "character{s} outside the Basic Multilingual Plane (most emoji)", "units"),
)


def _double_width_note(n: int, noun: str, unit: str) -> Text:
    """'3 <noun>s take two <unit> each.' (or '1 <noun> takes two <unit>.')."""
    many = n != 1
    return Text(
        f"{n} {noun.format(s='s' if many else '')} take{'' if many else 's'} two {unit}{' each' if many else ''}."
    )


@click.command("segments", short_help="Count the SMS segments a text costs (GSM-7 or UCS-2).")
@click.argument("text")
@click.option("--media", multiple=True, metavar="URL", help="Media URL (repeatable): makes it an MMS, 1 segment.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON only.")
def segments_command(text: str, media: tuple[str, ...], as_json: bool) -> None:
    """Show how Bandwidth encodes TEXT and how many segments it bills ('-' reads standard input).

    Rate limits and prices count segments, not messages. GSM-7 texts hold 160 septets in one
    segment and 153 per segment when split; one character outside GSM-7 switches the whole text
    to UCS-2 (70 in one, 67 per segment when split), and this command names that character.
    """
    if text == "-":
        text = sys.stdin.read().rstrip("\n")
    report = analyse(text, list(media) or None)
    if as_json:
        echo_json(report)
        return
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("encoding", Text(report["encoding"], style="green" if report["encoding"] == "GSM-7" else "yellow"))
    grid.add_row("segments", Text(str(report["segments"]), style="bold"))
    grid.add_row("units", f"{report['units']} {report['unit']}{'s' if report['units'] != 1 else ''}")
    grid.add_row("characters", str(report["characters"]))
    out_console().print(Group(grid, *_notes(report)))
