"""Rendering: rich for people (panels, tables, colour), plain JSON for programs.

Results go to standard output; notes, progress and errors go to standard error, so that
``bwasync send --json ... | jq`` only ever sees JSON. Every value that came from outside
(message text, error descriptions) is rendered as :class:`rich.text.Text`, never as markup.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import click
import msgspec
from rich import box
from rich.console import Console, Group, RenderableType
from rich.json import JSON
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from .._exceptions import APIConnectionError, APIError, APIStatusError, BwasyncError, ValidationError
from .._models import FieldError, Message, StatusCallback
from ._constants import PIPE_WIDTH, WIDE_TABLE

__all__ = [
    "EVENT_STYLES",
    "callbacks_table",
    "dumps",
    "echo_json",
    "err_console",
    "error_document",
    "field_errors_table",
    "message_panel",
    "note",
    "out_console",
    "print_accepted",
    "print_error",
    "to_wire",
]

#: Colour of each status-callback type.
EVENT_STYLES = {
    "message-sending": "cyan",
    "message-sent": "blue",
    "message-delivered": "green",
    "message-failed": "bold red",
    "message-read": "magenta",
}
#: The 202 fields shown first in a message panel, in Bandwidth's order of interest.
_PANEL_FIELDS = ("id", "segmentCount", "from", "to", "media", "text", "tag", "priority", "time")


def _console(*, stderr: bool) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    width = None
    if "COLUMNS" not in os.environ and not stream.isatty():
        width = PIPE_WIDTH
    return Console(stderr=stderr, highlight=False, width=width)


def out_console() -> Console:
    """Standard output. Made per call, so click's test runner (which swaps streams) captures it."""
    return _console(stderr=False)


def err_console() -> Console:
    """Standard error: notes, progress and errors."""
    return _console(stderr=True)


def note(text: str) -> None:
    """A dim note on standard error (what the command is doing, not its result)."""
    err_console().print(Text(text, style="dim"))


def to_wire(obj: Any) -> Any:
    """``obj`` (a Struct, or lists/dicts of them) as builtins with wire names, unset fields left out.

    A decoded answer cannot tell a field Bandwidth sent as ``null`` from one it left out, so both
    are left out rather than shown as ``null``.
    """
    return _drop_none(msgspec.to_builtins(obj))


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


def dumps(obj: Any) -> str:
    """Pretty JSON (two-space indent, UTF-8 kept as is) of builtins or Structs, wire names."""
    return msgspec.json.format(msgspec.json.encode(to_wire(obj)), indent=2).decode()


def echo_json(obj: Any) -> None:
    """Print ``obj`` as JSON on standard output, uncoloured (for ``--json``)."""
    click.echo(dumps(obj))


# --- Messages ------------------------------------------------------------------------------------


def _cell(value: Any) -> Text:
    if isinstance(value, list):
        return Text("\n".join(str(v) for v in value))
    return Text(str(value))


def message_panel(message: Message, *, title: str, subtitle: str | None = None) -> Panel:
    """A 202 answer as a panel of its wire fields (``id``, ``segmentCount``, ``to``...)."""
    wire: dict[str, Any] = to_wire(message)
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    for name in (*_PANEL_FIELDS, *(k for k in wire if k not in _PANEL_FIELDS)):
        if name in wire and wire[name] != []:
            grid.add_row(name, _cell(wire[name]))
    return Panel(
        grid,
        title=Text(title, style="bold"),
        title_align="left",
        subtitle=Text(subtitle) if subtitle else None,
        subtitle_align="right",
        border_style="green",
        expand=False,
    )


def print_accepted(message: Message, *, elapsed: float) -> None:
    """``send``'s human output: the status line, then the 202 body as highlighted JSON."""
    console = out_console()
    count = message.segment_count
    header = Text.assemble(
        ("202 Accepted", "bold green"),
        f"  {count} segment{'s' if count != 1 else ''}, " if count is not None else "  ",
        f"{len(message.to)} recipient{'s' if len(message.to) != 1 else ''}, {elapsed * 1000:.0f} ms",
    )
    console.print(header)
    console.print(JSON(dumps(message)))


# --- Errors --------------------------------------------------------------------------------------


def field_errors_table(errors: Sequence[FieldError]) -> Table:
    """Bandwidth-style field errors: which field, and what is wrong with it."""
    table = Table(show_header=True, header_style="bold", box=None, padding=(0, 2, 0, 2))
    table.add_column("field", style="yellow", no_wrap=True)
    table.add_column("problem", overflow="fold")
    for error in errors:
        table.add_row(Text(error.field_name), Text(error.description))
    return table


def _fate(exc: BwasyncError) -> Text:
    if exc.may_have_been_sent:
        return Text.assemble(
            ("The message MAY have been sent: ", "bold yellow"),
            "the request left but no answer came back. Check its status callbacks (or list "
            "messages) before sending it again, or it may arrive twice.",
        )
    if isinstance(exc, ValidationError):
        return Text.assemble(("Nothing was sent: ", "bold"), "the request was checked before leaving this machine.")
    if isinstance(exc, APIStatusError):
        return Text.assemble(
            ("The message was NOT sent: ", "bold"),
            "Bandwidth answered with an error, so it neither sent nor billed it.",
        )
    return Text.assemble(("The message was NOT sent: ", "bold"), "the request never left this machine.")


def print_error(exc: BwasyncError) -> None:
    """A failed send, in full, on standard error."""
    console = err_console()
    parts: list[Any] = []
    if isinstance(exc, ValidationError):
        n = len(exc.field_errors)
        parts.append(Text(f"Invalid message: {n} field error{'s' if n != 1 else ''}", style="bold red"))
        parts.append(field_errors_table(exc.field_errors))
    elif isinstance(exc, APIStatusError):
        title = f"HTTP {exc.status_code}"
        if exc.type:
            title += f" {exc.type}"
        parts.append(Text(title, style="bold red"))
        details = Table.grid(padding=(0, 2))
        details.add_column(style="bold")
        details.add_column(overflow="fold")
        details.add_row("status", str(exc.status_code))
        details.add_row("type", Text(exc.type or "(none: not a Bandwidth error body)"))
        details.add_row("description", Text(exc.description or "(none)"))
        details.add_row("attempts", str(exc.attempts))
        parts.append(Panel(details, border_style="red", expand=False))
        if exc.field_errors:
            parts.append(Text("fieldErrors:", style="bold"))
            parts.append(field_errors_table(exc.field_errors))
    else:
        kind = type(exc).__name__
        parts.append(Text.assemble((f"{kind}: ", "bold red"), str(exc)))
        if isinstance(exc, APIError):
            parts.append(Text(f"attempts: {exc.attempts}", style="dim"))
    parts.append(_fate(exc))
    console.print(Group(*parts))


def error_document(exc: BwasyncError) -> dict[str, Any]:
    """A failed send as JSON (for ``--json``): what went wrong and whether it may have gone out."""
    doc: dict[str, Any] = {"kind": type(exc).__name__, "message": str(exc)}
    if isinstance(exc, ValidationError):
        doc["fieldErrors"] = exc.field_errors
    if isinstance(exc, APIStatusError):
        doc.update(statusCode=exc.status_code, type=exc.type, description=exc.description)
        doc["fieldErrors"] = exc.field_errors
    if isinstance(exc, APIConnectionError):
        doc["requestSent"] = exc.request_sent
    if isinstance(exc, APIError):
        doc["attempts"] = exc.attempts
    doc["mayHaveBeenSent"] = exc.may_have_been_sent
    return {"error": doc}


# --- Status callbacks ----------------------------------------------------------------------------


def _clock(moment: datetime) -> str:
    return moment.strftime("%H:%M:%S.%f")[:-3]


def callbacks_table(
    events: Sequence[StatusCallback], *, labels: dict[str, str] | None = None, width: int = PIPE_WIDTH
) -> Group:
    """Status callbacks as given: time, type, message id, recipient, error code and description.

    ``labels`` maps a message id to a short name shown in a first column (``"1"`` for the
    first message printed above the table). Below ``WIDE_TABLE`` columns the table is made to
    fit 80: types lose their ``message-`` prefix and error descriptions move to a legend under
    the table, so that ids and numbers are never cut.
    """
    labels = labels or {}
    compact = width < WIDE_TABLE
    table = Table(
        title="Status callbacks",
        title_justify="left",
        title_style="bold",
        header_style="bold",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        collapse_padding=True,
    )
    if labels:
        table.add_column("#", justify="right", no_wrap=True, style="dim")
    table.add_column("time (UTC)", no_wrap=True)
    table.add_column("type", no_wrap=True)
    table.add_column("message id", no_wrap=True)
    table.add_column("to", no_wrap=True)
    table.add_column("error", overflow="fold", no_wrap=compact)
    legend: dict[int, str] = {}
    for event in events:
        error = Text("")
        if event.error_code:
            error = Text(str(event.error_code), style="bold red")
            if compact:
                legend.setdefault(event.error_code, event.description)
            else:
                error.append(f" {event.description}", style="")
        kind = event.type.removeprefix("message-") if compact else event.type
        row: list[RenderableType] = [
            _clock(event.time),
            Text(kind, style=EVENT_STYLES.get(event.type, "")),
            Text(event.message.id),
            Text(event.to),
            error,
        ]
        if labels:
            row.insert(0, labels.get(event.message.id, ""))
        table.add_row(*row)
    notes = [Text.assemble(("  " + str(code), "bold red"), f" {text}") for code, text in sorted(legend.items())]
    return Group(table, *notes)
