"""Everything ``bwasync campaign`` prints about a campaign: reports, dry runs, status, notes.

The campaign package hands over data (a :class:`~bwasync.campaign.Report`, a
:class:`~bwasync.campaign.RunNote`, an exception's fields); the words, and the option names
they mention, are chosen here and only here.
"""

from __future__ import annotations

import dataclasses
import json
import time
from datetime import UTC, datetime
from typing import Final

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from ...campaign import (
    DryRunInvalid,
    DryRunReport,
    JournalMismatchError,
    JournalStatus,
    NoteKind,
    Report,
    ReportSource,
    RowRecord,
    RowStatus,
    RunNote,
    RunOutcome,
    build_report,
)
from ...campaign._preflight import Problem, ProblemKind
from ...campaign._report import first_rows
from .._output import err_console, out_console

#: Invalid rows listed at the end of a run (all of them are in ``campaign report --csv``).
SHOWN_INVALID: Final = 10


async def read_summary(source: ReportSource) -> tuple[Report, list[RowRecord]]:
    """What :func:`print_summary` shows of a journal or a shared campaign: its report and its
    first invalid rows."""
    return await build_report(source), await first_rows(source, "invalid", SHOWN_INVALID)


def duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "-:--:--"
    whole = max(0, round(seconds))
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def print_error(text: str) -> None:
    err_console().print(Text.assemble(("Error: ", "bold red"), text))


def print_verdict(ok: bool, text: str) -> None:
    out_console().print(Text.assemble(("✓ " if ok else "✗ ", "bold green" if ok else "bold red"), text))


def pct(n: int, total: int) -> str:
    """``n`` of ``total`` to one decimal; a share that is neither none nor all never reads as
    0.0% or 100.0% (4 invalid rows of 10,000 read "<0.1%", not "0.0%")."""
    if not total:
        return ""
    share = n / total
    if 0 < share < 0.0005:
        return "<0.1%"
    if 0.9995 <= share < 1:
        return ">99.9%"
    return f"{share:.1%}"


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:,.0f} ms"


def report_table(report: Report) -> Table:
    """The report as label / value lines (fits 80 columns)."""
    table = Table(
        title=f"Campaign {report.campaign_id or '?'}" + (f"  ({report.input_path})" if report.input_path else ""),
        title_justify="left",
        title_style="bold",
        show_header=False,
        box=None,
        padding=(0, 2),
    )
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    total = report.total

    def count(n: int, of: int) -> Text:
        return Text.assemble(f"{n:,}", (f"  {pct(n, of)}" if n and of else "", "dim"))

    for label, n, style in (
        ("accepted", report.accepted, "green"),
        ("failed", report.failed, "red"),
        ("ambiguous", report.ambiguous, "yellow"),
        ("invalid", report.invalid, "red"),
        ("skipped (opt-out)", report.skipped, ""),
        ("in flight", report.in_flight, "yellow"),
        ("pending", report.pending, ""),
    ):
        if n or label in ("accepted", "failed", "ambiguous", "invalid"):
            table.add_row(Text(label, style=style), count(n, total))
    table.add_row("rows", f"{total:,}")
    table.add_row("segments sent", f"{report.segments:,}")
    if report.delivered or report.delivery_failed:
        table.add_row(Text("delivered", style="green"), count(report.delivered, report.accepted))
        table.add_row(Text("undelivered", style="red"), count(report.delivery_failed, report.accepted))
        table.add_row("awaiting receipt", f"{report.awaiting_delivery:,}")
    if report.send_failures_by_code:
        codes = ", ".join(f"HTTP {c}: {n:,}" for c, n in report.send_failures_by_code.items())
        table.add_row("not sent, by status", Text(codes))
    if report.delivery_failures_by_code:
        codes = ", ".join(f"{c}: {n:,}" for c, n in report.delivery_failures_by_code.items())
        table.add_row("undelivered, by code", Text(codes))
    if report.opt_outs_received or report.opt_ins_received:
        table.add_row(
            "replies received",
            f"{report.opt_outs_received:,} opt-outs (STOP), {report.opt_ins_received:,} opt-ins (START)",
        )
    if report.numbers_flagged:
        table.add_row(
            Text("numbers flagged", style="yellow"),
            f"{report.numbers_flagged:,}  (cannot be valid numbers; sent anyway, --strict-numbers makes them invalid)",
        )
        for f in report.flagged_numbers:
            table.add_row("", Text(f"line {f.line}  {f.key}  {f.number}: {f.reason}"))
    if report.unmatched_receipts:
        table.add_row(
            Text("unmatched receipts", style="yellow"),
            f"{report.unmatched_receipts:,}  (for rows that had no accepted message; not deliveries)",
        )
    if report.throughput is not None and report.duration is not None:
        table.add_row(
            "throughput",
            f"{report.throughput:,.1f} msg/s, {report.segments_per_second or 0:,.1f} seg/s "
            f"over {duration(report.duration)} of sending",
        )
        if report.duration < BURST_NOTE_BELOW:
            table.add_row("", Text(BURST_NOTE, style="dim"))
    if report.latency_p50 is not None:
        table.add_row(
            "latency",
            f"p50 {ms(report.latency_p50)}, p90 {ms(report.latency_p90)}, p99 {ms(report.latency_p99)}, "
            f"max {ms(report.latency_max)}",
        )
    return table


def print_summary(report: Report, invalid: list[RowRecord], outcome: RunOutcome | None) -> None:
    console = out_console()
    parts: list[RenderableType] = [report_table(report)]
    if outcome is not None and outcome.reconciled is not None:
        r = outcome.reconciled
        parts.append(
            Text(
                f"Reconciled {r.rows:,} rows left in flight or ambiguous: {r.accepted:,} found accepted by Bandwidth, "
                f"{r.ambiguous:,} not found (ambiguous).",
                style="dim",
            )
        )
    if invalid:
        parts.append(invalid_table(invalid, report.invalid))
    for line in report_hints(report):
        parts.append(Text("! " + line, style="yellow"))
    console.print(Group(*parts))


_PREVIEW: Final = 60


def _preview(text: str | None) -> Text:
    if text is None:
        return Text("")
    flat = text.replace("\n", "⏎")
    return Text(flat if len(flat) <= _PREVIEW else flat[: _PREVIEW - 1] + "…")


def _to_cell(to: tuple[str, ...]) -> str:
    return to[0] + (f" +{len(to) - 1}" if len(to) > 1 else "")


def _problem_rows(title: str, total: int, rows: list[DryRunInvalid], style: str) -> Table:
    """The first rows with a problem (line, key, what is wrong)."""
    table = Table(
        title=title + (f" (first {len(rows)} shown)" if total > len(rows) else ""),
        title_justify="left",
        title_style=f"bold {style}",
        header_style="bold",
        box=None,
        padding=(0, 1),
    )
    table.add_column("line", justify="right", no_wrap=True)
    table.add_column("key", no_wrap=True)
    table.add_column("problem", overflow="fold")
    for bad in rows:
        table.add_row(str(bad.line), Text(bad.key), Text(bad.error))
    return table


def print_dry_run(file: str, report: DryRunReport, rate: float | None) -> None:
    console = out_console()
    console.print(Text(f"Dry run of {file}: nothing was sent and no journal was written.", style="bold"))
    if report.sample:
        table = Table(
            title=f"First {len(report.sample)} messages",
            title_justify="left",
            title_style="bold",
            header_style="bold",
            box=None,
            padding=(0, 1),
        )
        # Every column but the text keeps its width; the text gets what is left of the line.
        for name, justify in (("line", "right"), ("key", "left"), ("to", "left"), ("encoding", "left")):
            table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
        table.add_column("seg", justify="right", no_wrap=True)
        fixed = sum(
            max(len(head), *(len(cell) for cell in cells)) + 2  # a space of padding each side
            for head, cells in (
                ("line", [str(m.line) for m in report.sample]),
                ("key", [m.key for m in report.sample]),
                ("to", [_to_cell(m.to) for m in report.sample]),
                ("encoding", [m.encoding for m in report.sample]),
                ("seg", [str(m.segments) for m in report.sample]),
            )
        )
        table.add_column("text", overflow="ellipsis", no_wrap=True, max_width=max(12, console.width - fixed - 2))
        for m in report.sample:
            table.add_row(str(m.line), Text(m.key), _to_cell(m.to), m.encoding, str(m.segments), _preview(m.text))
        console.print(table)
    if report.invalid_rows:
        console.print(_problem_rows(f"Invalid rows: {report.invalid:,}", report.invalid, report.invalid_rows, "red"))
    if report.impossible_rows:
        title = (
            f"Numbers that cannot be valid (sent anyway; --strict-numbers makes them invalid): {report.impossible:,}"
        )
        console.print(_problem_rows(title, report.impossible, report.impossible_rows, "yellow"))
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row(
        "rows",
        f"{report.rows:,}: {report.sendable:,} to send, {report.invalid:,} invalid, {report.skipped:,} opted out",
    )
    if not report.numbers_checked:
        numbers = "not checked for impossible numbers (pip install 'bwasync[compliance]')"
    elif report.impossible:
        numbers = f"{report.impossible:,} rows to numbers that cannot be valid"
    else:
        numbers = "all can be valid"
    grid.add_row("numbers", numbers)
    if report.held:
        opens = f"the first may go at {report.held_until:%Y-%m-%d %H:%M} UTC" if report.held_until else "none may go"
        grid.add_row("quiet hours", f"{report.held:,} rows would be held now; {opens}")
    grid.add_row("encoding", f"{report.gsm7:,} GSM-7, {report.ucs2:,} UCS-2 (Unicode), {report.mms:,} MMS")
    histogram = ", ".join(
        f"{n:,} × {seg} segment{'s' if seg != 1 else ''}" for seg, n in sorted(report.histogram.items())
    )
    grid.add_row("segments", histogram or "-")
    grid.add_row("total", f"{report.total_segments:,} segments to {report.recipients:,} recipients")
    seconds = report.duration(rate)
    if seconds is not None:
        assert rate is not None
        grid.add_row("time", f"{duration(seconds)} at {rate:g} segments/s (--rate)")
    else:
        grid.add_row("time", "give --rate SEG/S (your account's limit) for an estimate")
    console.print(grid)


def when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    ago = time.time() - epoch
    stamp = datetime.fromtimestamp(epoch).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
    if ago < 0:
        return stamp
    return f"{stamp} ({duration(ago)} ago)"


def word_note(n: RunNote) -> str:
    """A runner's note in words (the CLI's options named where they apply)."""
    if n.status == RowStatus.IN_FLIGHT:
        subject = f"{n.rows:,} rows that were in flight when a previous run stopped"
    else:
        subject = f"{n.rows:,} {n.status or ''} rows".replace("  ", " ")
    kind = n.kind
    if kind is NoteKind.LOAD_RESUMED:
        return f"Resuming the load after line {n.line:,}."
    if kind is NoteKind.SETTLING:
        return (
            f"Waiting {n.seconds or 0:.1f} s (--settle) before checking the {subject}: Bandwidth may still be "
            "processing a request the previous run wrote."
        )
    if kind is NoteKind.RECONCILING:
        return f"Checking Bandwidth's message list for the {subject}."
    if kind is NoteKind.RECONCILED:
        then = "ambiguous, not resent unless --retry-ambiguous" if n.status == RowStatus.IN_FLIGHT else "resending them"
        return (
            f"Of the {subject}, {n.accepted:,} were accepted by Bandwidth (recorded as sent) and "
            f"{n.rows - n.accepted:,} were not found ({then})."
        )
    if kind is NoteKind.TOO_MANY_TO_LOOK_UP:
        return (
            f"{n.rows:,} ambiguous rows: too many to look up one by one first (over {n.limit:,}); "
            "resending them as asked (--retry-ambiguous)."
        )
    if kind is NoteKind.REQUEUED:
        if n.status == RowStatus.AMBIGUOUS:
            return f"Resending {n.rows:,} ambiguous rows (--retry-ambiguous): some recipients may get two."
        return f"Resending {n.rows:,} rows that failed before (--retry-failed)."
    if kind is NoteKind.OPTED_OUT:
        return f"Skipped {n.rows:,} pending rows whose recipients are on the opt-out list (--opt-out)."
    if kind is NoteKind.HELD:
        wait = max(0.0, n.seconds or 0.0)
        opens = datetime.fromtimestamp(time.time() + wait, UTC)
        return (
            f"{n.rows:,} rows are held by quiet hours (--quiet-hours); the next window opens at "
            f"{opens:%Y-%m-%d %H:%M} UTC (in {duration(wait)}). Waiting; Ctrl-C stops, and a rerun resumes them."
        )
    return str(kind)  # pragma: no cover - every kind is worded above


#: How ``campaign run`` sets each thing a resume must keep (see ``JournalMismatchError``).
_SET_BY: Final = {
    "input file": "the input FILE",
    "template": "--template/--template-file",
    "campaign id": "--campaign-id",
    "application id": "--application-id (BW_APPLICATION_ID)",
    "sender": "--from (BW_NUMBER)",
    "key column": "--key-column",
    "priority": "priority",
    "expiration": "expiration",
    "strict number checks": "--strict-numbers",
    "time zone column": "--timezone-column",
}


def word_mismatch(exc: JournalMismatchError) -> str:
    """A refused resume: what differs (as options, never values) and how to start over."""
    what = ", ".join(_SET_BY.get(d, d) for d in exc.differences)
    return (
        f"{exc.path} holds a campaign started with a different {what}, so this run cannot resume it. "
        "To resume, rerun with the options it was started with. To start a new campaign instead, "
        f"give another journal (--journal NEW.journal), or delete {exc.path} (it records which rows "
        "were already sent: those would be sent again)."
    )


def print_warning(text: str) -> None:
    err_console().print(Text.assemble(("Warning: ", "bold yellow"), text))


def word_problem(problem: Problem, file: str) -> str:
    """A preflight problem, and what to do about it."""
    columns = ", ".join(problem.columns) or "none"
    if problem.kind is ProblemKind.UNKNOWN_VARIABLES:
        names = ", ".join("{" + n + "}" for n in problem.names)
        return (
            f"the template uses {names}, which {'is not a column' if len(problem.names) == 1 else 'are not columns'}"
            f" of {file} (columns: {columns}). Fix the template (--template/--template-file) or the file's header."
        )
    if problem.kind is ProblemKind.NOTHING_TO_SEND:
        return (
            f"nothing to send: give the message with --template (or --template-file), or add a 'text' "
            f"(or 'media') column to {file} (columns: {columns})."
        )
    return f"no sender: give --from NUMBER (or set BW_NUMBER), or add a 'from' column to {file} (columns: {columns})."


def word_mostly_invalid(invalid: int, total: int) -> str:
    return (
        f"{invalid:,} of {total:,} rows are invalid (more than half): check the file and the options "
        "(the invalid rows are listed above). Give --allow-invalid to go on anyway."
    )


def word_no_rows(path: str) -> str:
    return f"{path} has no rows (a header alone, or no line at all): nothing to send. Check that it is the right file."


def invalid_table(rows: list[RowRecord], total: int) -> Table:
    """The first invalid rows: line, key, problem."""
    table = Table(
        title=f"Invalid rows ({total:,}; all of them: 'campaign report --csv')",
        title_justify="left",
        title_style="bold",
        box=None,
        padding=(0, 2),
        header_style="bold",
    )
    table.add_column("line", justify="right")
    table.add_column("key")
    table.add_column("problem", overflow="fold")
    for row in rows:
        table.add_row(str(row.line), Text(row.key), Text(row.error or ""))
    return table


def print_invalid_rows(rows: list[RowRecord], total: int) -> None:
    out_console().print(invalid_table(rows, total))


def print_mostly_invalid(shown: list[RowRecord], invalid: int, total: int, kept: str) -> None:
    """A new campaign refused for its invalid rows before anything was sent: the first of them,
    and why; ``kept`` says what was left behind ("no journal was kept")."""
    print_invalid_rows(shown, invalid)
    print_error(f"{word_mostly_invalid(invalid, total)} Nothing was sent; {kept}.")


#: A short run's throughput reads above ``--rate``: the limiter's bucket starts full.
BURST_NOTE: Final = "a run may start with one second's burst, so a short one can show more than --rate"
#: Runs shorter than this (seconds of sending) get :data:`BURST_NOTE` under their throughput.
BURST_NOTE_BELOW: Final = 60.0


def _plural(n: int, one: str, many: str) -> str:
    return f"{n:,} {one if n == 1 else many}"


def report_hints(report: Report) -> list[str]:
    """What to do next, if anything: ambiguous, in-flight or pending rows."""
    hints: list[str] = []
    if report.ambiguous:
        hints.append(
            f"{_plural(report.ambiguous, 'row is', 'rows are')} ambiguous: the request left but no answer came back, "
            "so the message may or may not have been sent. They were not resent; rerun with --retry-ambiguous to "
            "resend them knowingly (their recipients may then get the message twice)."
        )
    if report.in_flight:
        hints.append(
            f"{_plural(report.in_flight, 'row was', 'rows were')} in flight when the run stopped: resume the "
            "campaign (rerun the same command) to reconcile them with Bandwidth."
        )
    if report.pending:
        hints.append(
            f"{_plural(report.pending, 'row is', 'rows are')} still pending: resume the campaign to send them."
        )
    return hints


def status_json(status: JournalStatus) -> str:
    """``campaign status --format json``: the snapshot, plus ``done`` and ``complete``."""
    data = dataclasses.asdict(status)
    data.update(complete=status.complete)
    return json.dumps(data, sort_keys=True)


def print_status(status: JournalStatus) -> None:
    console = out_console()
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("campaign", status.campaign_id)
    grid.add_row("input", Text(status.input_path))
    grid.add_row("template", Text(status.template or "(rows carry their text)"))
    grid.add_row("created", when(status.created_at))
    grid.add_row("updated", when(status.updated_at))
    load = "complete" if status.load_complete else f"in progress (through line {status.loaded_through:,})"
    grid.add_row("load", load)
    total = status.total
    grid.add_row("progress", f"{status.done:,} of {total:,} rows in a final state ({pct(status.done, total) or '-'})")
    for name in ("pending", "in_flight", "accepted", "failed", "ambiguous", "invalid", "skipped"):
        n = status.by_status.get(name, 0)
        grid.add_row(f"  {name.replace('_', ' ')}", f"{n:,}" + (f"  ({pct(n, total)})" if n and total else ""))
    grid.add_row("segments sent", f"{status.accepted_segments:,}")
    d = status.by_delivery
    if any(d.values()):
        grid.add_row(
            "delivery",
            f"{d.get('delivered', 0):,} delivered, {d.get('failed', 0):,} failed, {d.get('sent', 0):,} sent to carrier",
        )
    if status.unmatched_receipts:
        grid.add_row("unmatched", f"{status.unmatched_receipts:,} receipts for rows with no accepted message")
    if status.held:
        grid.add_row(
            "quiet hours",
            f"{status.held:,} pending rows held; the first may go at {when(status.held_until)}",
        )
    console.print(grid)
    if status.complete:
        console.print(Text("Complete: every row is in a final state.", style="green"))
        return
    if status.by_status.get("in_flight"):
        console.print(
            Text(
                "Rows in flight: a run is sending them now, or a run died and the next one will reconcile them.",
                style="yellow",
            )
        )
    console.print(Text("Not complete: rerun the campaign's 'run' command to continue.", style="yellow"))
