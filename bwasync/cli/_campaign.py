"""``bwasync campaign``: send a file of personalised messages, resumably; watch it; report on it.

Three commands, all over one journal file (SQLite, next to the input by default):

* ``campaign run FILE`` — load, reconcile, send, track delivery
  (:class:`~bwasync.campaign.CampaignRunner`), with a live progress bar; ``--dry-run`` only
  validates and renders.
* ``campaign status JOURNAL`` — counts and progress, read-only (safe while a run is going).
* ``campaign report JOURNAL`` — the outcome, and per-row CSV/JSON exports.

Exit status of ``run``: 0 every row reached a final state; 1 a fatal problem (credentials
refused, the journal or Bandwidth's list unreachable...); 2 invalid usage or input, or the journal
is in use or belongs to another campaign (nothing sent); 3 paused by ``--max-error-rate``;
130 interrupted (Ctrl-C); 143 terminated (SIGTERM). Every non-zero stop is resumable by
rerunning the same command.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import secrets
import signal
import sys
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import click
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress import BarColumn, Progress, TaskID, TextColumn
from rich.table import Table
from rich.text import Text

from .._constants import DEFAULT_CONCURRENCY, DEFAULT_MAX_ATTEMPTS
from .._exceptions import BwasyncError
from .._retry import RetryPolicy
from ..campaign import (
    DEFAULT_MAX_ERROR_RATE,
    DEFAULT_SETTLE,
    CallbackReceiver,
    CampaignError,
    CampaignOptions,
    CampaignRunner,
    DryRunReport,
    InputFileError,
    JournalError,
    JournalLockedError,
    JournalMismatchError,
    Phase,
    Report,
    RowRecord,
    RunOutcome,
    RunProgress,
    StopReason,
    Template,
    TemplateError,
    build_report,
    dry_run,
    export_rows_csv,
    export_rows_json,
    load_opt_out,
    read_status,
)
from ..campaign._journal import Journal
from ._loop import run
from ._options import Connection, ConnectionOptions, Session, connection_options
from ._output import err_console, note, out_console

__all__ = [
    "EXIT_FATAL",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_PAUSED",
    "EXIT_TERMINATED",
    "EXIT_USAGE",
    "ProgressMode",
    "RunSettings",
    "campaign",
    "progress_mode",
    "run_campaign",
    "run_tuned",
]

EXIT_OK: Final = 0
EXIT_FATAL: Final = 1
EXIT_USAGE: Final = 2
EXIT_PAUSED: Final = 3
EXIT_INTERRUPTED: Final = 130  # 128 + SIGINT, as shells report it
EXIT_TERMINATED: Final = 143  # 128 + SIGTERM

_EXIT_FOR: Final = {
    StopReason.INTERRUPTED: EXIT_INTERRUPTED,
    StopReason.TERMINATED: EXIT_TERMINATED,
    StopReason.ERROR_RATE: EXIT_PAUSED,
    StopReason.FATAL: EXIT_FATAL,
}

#: Seconds to wait for delivery receipts after sending, when ``--callbacks`` is given and
#: ``--wait-delivery`` is not: most carriers confirm within seconds; the rest can be read later
#: with ``campaign status`` only if a receiver is still up, so this is a trade-off, not a promise.
DEFAULT_WAIT_DELIVERY: Final = 30.0
#: Seconds between progress lines when the output is not a terminal (logs, CI).
PROGRESS_LOG_INTERVAL: Final = 5.0
#: Seconds between progress bar updates (rich redraws on its own thread in between).
PROGRESS_BAR_INTERVAL: Final = 0.25
#: Seconds of history behind the rates shown (msg/s, seg/s) and the ETA.
RATE_WINDOW: Final = 10.0
#: Invalid rows listed at the end of a run (all of them are in ``campaign report --csv``).
SHOWN_INVALID: Final = 10
#: Python's default GC thresholds (700, 10, 10) trigger a collection every few hundred
#: allocations; a campaign allocates a few objects per message, all short-lived and acyclic.
#: An application may raise them (the library never does): fewer collections, same memory.
GC_THRESHOLDS: Final = (50_000, 20, 100)


class _Group(click.Group):
    """Lists commands in the order they were added (run, status, report)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)


@click.group(
    "campaign",
    cls=_Group,
    short_help="Send a file of personalised messages, resumably, with a journal of every outcome.",
)
def campaign() -> None:
    """Send large campaigns from a CSV or JSONL file, resumably, with a journal of every outcome.

    Each row is one message (a 'to' column, optional 'from' and 'media', any other column a
    template variable). Every row's fate is kept in a SQLite journal, written before each send
    and after each answer, so a run can be killed at any moment and rerun: no row is lost, none
    is sent twice.
    """


# --- campaign run ----------------------------------------------------------------------------------


def _parse_host_port(value: str | None) -> tuple[str, int] | None:
    if value is None:
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise click.BadParameter(f"{value!r} is not HOST:PORT (e.g. 0.0.0.0:8080, or 127.0.0.1:0 for any free port)")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


def _read_template(template: str | None, template_file: str | None) -> str | None:
    if template is not None and template_file is not None:
        raise click.UsageError("give --template or --template-file, not both")
    if template_file is None:
        return template
    try:
        with open(template_file, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise click.BadParameter(f"cannot read {template_file}: {exc}", param_hint="--template-file") from None
    # An editor's final newline is not part of the message.
    return text[:-1] if text.endswith("\n") else text


class ProgressMode:
    """How ``run`` shows progress."""

    BAR = "bar"
    LOG = "log"
    OFF = "off"


@dataclass(frozen=True, slots=True, kw_only=True)
class RunSettings:
    """What ``run_campaign`` needs besides the campaign options (shared with ``demo campaign``)."""

    journal_path: str
    callbacks: tuple[str, int] | None = None
    callback_username: str | None = None
    callback_password: str | None = None
    wait_delivery: float = 0.0
    progress: str = ProgressMode.BAR
    #: Knobs for the in-process emulator (``--emulator``), e.g. latency, faults.
    emulator_knobs: Mapping[str, Any] | None = None
    #: Called with the open session (client, and emulator if any) before sending.
    on_session: Callable[[Session], object] | None = None


_RUN_EPILOG = """\b
Examples:
  # Try it locally: a dry run, then a real run against an in-process emulator
  bwasync campaign run list.csv --template "Hi {first_name}, your code is {code}" --dry-run --rate 20
  bwasync campaign run list.csv --template "Hi {first_name}, your code is {code}" --emulator

\b
  # For real, at the account's 20 segments/s, tracking delivery on port 8080
  export BW_ACCOUNT_ID=... BW_USERNAME=... BW_PASSWORD=... BW_APPLICATION_ID=... BW_NUMBER=+15553332222
  bwasync campaign run list.csv --template-file message.txt --key-column id --rate 20 \\
      --opt-out stop.txt --callbacks 0.0.0.0:8080 --callback-username bw --callback-password ...

\b
  # Killed, interrupted or paused? Rerun the very same command: it resumes.
  # Rows whose fate is unknown are 'ambiguous'; after checking, resend them knowingly:
  bwasync campaign run list.csv --template-file message.txt --key-column id --retry-ambiguous

\b
  # Meanwhile, from another terminal; afterwards, per-row outcomes
  bwasync campaign status list.csv.journal
  bwasync campaign report list.csv.journal --csv outcomes.csv

\b
Exit status: 0 every row reached a final state (accepted, failed, invalid, skipped or
ambiguous); 1 a fatal problem (e.g. credentials refused); 2 invalid usage or input, or the
journal is in use (nothing sent); 3 paused by --max-error-rate; 130 Ctrl-C; 143 SIGTERM.
Every non-zero stop is resumable: rerun the same command."""


@campaign.command(
    "run",
    short_help="Send every row of a CSV/JSONL file once (resumable; --dry-run to check first).",
    epilog=_RUN_EPILOG,
)
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--template",
    metavar="TEXT",
    help="Message text with {column} fields, e.g. 'Hi {first_name}'. Rows with a 'text' column use their own.",
)
@click.option(
    "--template-file",
    type=click.Path(exists=True, dir_okay=False),
    help="Read the template from this UTF-8 file (a final newline is dropped).",
)
@click.option(
    "--rate",
    type=click.FloatRange(0, min_open=True),
    metavar="SEG/S",
    help="Send at most this many segments per second: your account's limit. Slows down further on 429. "
    "[default: unthrottled until the first 429]",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1),
    default=DEFAULT_CONCURRENCY,
    show_default=True,
    help="Requests in flight at once (also the most rows a crash can leave to reconcile).",
)
@click.option(
    "--journal",
    "journal_path",
    type=click.Path(dir_okay=False),
    help="The journal (SQLite) recording every row's fate; rerun with the same one to resume. [default: FILE.journal]",
)
@click.option("--key-column", metavar="NAME", help="Column whose value keys each row (unique). [default: line number]")
@click.option(
    "--format", "fmt", type=click.Choice(["csv", "jsonl"]), help="Input format. [default: from the extension]"
)
@click.option(
    "--campaign-id",
    metavar="ID",
    help="Campaign id for a new journal (tags are '<id>:<row key>'). [default: random]",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Validate and render every row, show encodings, segments and the time it would take; send nothing.",
)
@click.option(
    "--retry-ambiguous",
    is_flag=True,
    help="Look the ambiguous rows up once more, then resend those not found (their recipients may get two).",
)
@click.option(
    "--retry-failed", is_flag=True, help="Resend rows that failed before (certainly not sent, e.g. during an outage)."
)
@click.option(
    "--max-error-rate",
    type=click.FloatRange(0, 1),
    default=DEFAULT_MAX_ERROR_RATE,
    show_default=True,
    metavar="FRACTION",
    help="Pause (exit 3, resumable) when more than this fraction of the last 200 sends failed or were "
    "ambiguous (judged after 50). 1 never pauses.",
)
@click.option(
    "--max-attempts",
    type=click.IntRange(1),
    default=DEFAULT_MAX_ATTEMPTS,
    show_default=True,
    help="Attempts per message on 429, 5xx and connection failures (never on an ambiguous one).",
)
@click.option(
    "--opt-out",
    "opt_out_path",
    type=click.Path(exists=True, dir_okay=False),
    help="File of numbers never to message, one per line ('#' comments). Also applied to pending rows on resume.",
)
@click.option(
    "--callbacks",
    metavar="HOST:PORT",
    help="Receive Bandwidth's status callbacks here and record deliveries (point your application's "
    "callback URL at it). With --emulator, the emulator posts to it.",
)
@click.option(
    "--callback-username",
    envvar="BW_CALLBACK_USERNAME",
    show_envvar=True,
    help="Basic auth username the callbacks must carry.",
)
@click.option(
    "--callback-password",
    envvar="BW_CALLBACK_PASSWORD",
    show_envvar=True,
    metavar="SECRET",
    help="Basic auth password the callbacks must carry.",
)
@click.option(
    "--wait-delivery",
    type=click.FloatRange(0),
    metavar="SECONDS",
    help=f"After sending, wait up to this long for every delivery receipt. [default: {DEFAULT_WAIT_DELIVERY:g} "
    "with --callbacks]",
)
@click.option(
    "--settle",
    type=click.FloatRange(0),
    default=DEFAULT_SETTLE,
    show_default=True,
    metavar="SECONDS",
    help="On resume, rows a dead run left in flight are looked up in Bandwidth's message list only once "
    "this old (a request the dead run wrote may still be processed meanwhile).",
)
@click.option("--no-progress", is_flag=True, help="No progress bar nor periodic progress lines.")
@connection_options
def run_command(
    connection: ConnectionOptions,
    file: str,
    template: str | None,
    template_file: str | None,
    rate: float | None,
    concurrency: int,
    journal_path: str | None,
    key_column: str | None,
    fmt: str | None,
    campaign_id: str | None,
    dry_run: bool,
    retry_ambiguous: bool,
    retry_failed: bool,
    max_error_rate: float,
    max_attempts: int,
    opt_out_path: str | None,
    callbacks: str | None,
    callback_username: str | None,
    callback_password: str | None,
    wait_delivery: float | None,
    settle: float,
    no_progress: bool,
) -> None:
    """Send one message per row of FILE (CSV with a header, or JSON Lines), each exactly once.

    Rows are rendered from --template ({column} fields), checked against every Bandwidth rule
    (an invalid row is reported with its line number and the campaign goes on), paced to
    --rate segments per second, and tagged '<campaign id>:<row key>'. The journal records each
    row before its request leaves and after the answer, so the run can be stopped at any moment
    (Ctrl-C finishes what is in flight; a second Ctrl-C, a crash or kill -9 also lose nothing)
    and resumed by running the same command again. On resume, rows a dead run left in flight are
    looked up in Bandwidth's message list; those not found become 'ambiguous' and are not resent
    unless --retry-ambiguous.
    """
    ctx = click.get_current_context()
    source = _read_template(template, template_file)
    if source is not None:
        try:
            Template(source)
        except TemplateError as exc:
            raise click.BadParameter(str(exc), param_hint="--template") from None
    try:
        opt_out = load_opt_out(opt_out_path) if opt_out_path else frozenset()
    except InputFileError as exc:
        raise click.BadParameter(str(exc), param_hint="--opt-out") from None
    format_: Any = fmt
    if dry_run:
        ctx.exit(
            _dry_run(
                connection,
                file,
                template=source,
                key_column=key_column,
                fmt=format_,
                campaign_id=campaign_id,
                opt_out=opt_out,
                rate=rate,
            )
        )
    endpoint = _parse_host_port(callbacks)
    if (callback_username is None) != (callback_password is None):
        raise click.UsageError("give both --callback-username and --callback-password, or neither")
    settings = connection.resolve(need_from=False)
    if settings.application_id is None:  # resolve() insists on it; keeps mypy informed
        raise click.UsageError("Missing --application-id (or set BW_APPLICATION_ID)")
    try:
        options = CampaignOptions(
            input_path=file,
            application_id=settings.application_id,
            template=source,
            default_from=settings.from_,
            key_column=key_column,
            fmt=format_,
            campaign_id=campaign_id,
            concurrency=concurrency,
            rate=rate,
            retry=RetryPolicy(max_attempts=max_attempts),
            retry_ambiguous=retry_ambiguous,
            retry_failed=retry_failed,
            max_error_rate=None if max_error_rate >= 1 else max_error_rate,
            opt_out=opt_out,
            settle=settle,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if settings.from_ is None:
        note("No --from (BW_NUMBER) given: every row needs a 'from' column.")
    run_settings = RunSettings(
        journal_path=journal_path or file + ".journal",
        callbacks=endpoint,
        callback_username=callback_username,
        callback_password=callback_password,
        wait_delivery=wait_delivery if wait_delivery is not None else (DEFAULT_WAIT_DELIVERY if endpoint else 0.0),
        progress=progress_mode(no_progress),
    )
    ctx.exit(run_tuned(run_campaign(settings, options, run_settings)))


def run_tuned(main: Coroutine[Any, Any, int]) -> int:
    """Run ``main`` on uvloop (when installed) with the GC tuned for a campaign, then restore it.

    An application may tune the collector (the library never does): see :data:`GC_THRESHOLDS`.
    """
    previous = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        return run(main)
    finally:
        gc.set_threshold(*previous)


def progress_mode(disabled: bool) -> str:
    """A bar on a terminal, periodic lines otherwise (logs, CI, pipes), nothing if ``disabled``."""
    if disabled:
        return ProgressMode.OFF
    if sys.stdout.isatty() and err_console().is_terminal:
        return ProgressMode.BAR
    return ProgressMode.LOG


# --- The run, shared with ``demo campaign`` ----------------------------------------------------------


def _duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "-:--:--"
    whole = max(0, round(seconds))
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


class _Rates:
    """Messages and segments per second over the last ``RATE_WINDOW`` seconds."""

    def __init__(self) -> None:
        self._samples: collections.deque[tuple[float, int, int]] = collections.deque()

    def update(self, sent: int, segments: int) -> tuple[float, float]:
        now = time.monotonic()
        samples = self._samples
        samples.append((now, sent, segments))
        while len(samples) > 2 and now - samples[0][0] > RATE_WINDOW:
            samples.popleft()
        t0, s0, g0 = samples[0]
        elapsed = now - t0
        if elapsed <= 0:
            return 0.0, 0.0
        return (sent - s0) / elapsed, (segments - g0) / elapsed


def _error_text(p: RunProgress) -> str:
    by = p.by_status
    return (
        f"failed {by.get('failed', 0):,} · ambiguous {by.get('ambiguous', 0):,} · "
        f"invalid {by.get('invalid', 0):,} · skipped {by.get('skipped', 0):,}"
    )


_LABELS: Final = {
    Phase.OPENING: "opening",
    Phase.LOADING: "loading",
    Phase.SETTLING: "settling",
    Phase.RECONCILING: "checking",
    Phase.SENDING: "sending",
    Phase.DELIVERY: "receipts",
    Phase.DONE: "done",
}


class _Line:
    """A line of text under the bar (the error counts), updated in place."""

    def __init__(self) -> None:
        self.text = Text("")

    def __rich__(self) -> Text:
        return self.text


class _Display:
    """The progress bar (a terminal), periodic lines (anything else), or nothing; and notes.

    The bar fits 80 columns: phase, bar, rows done of total, msg/s and seg/s, ETA; the error
    counts go on a second line.
    """

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.console: Console = err_console()
        self._bar: Progress | None = None
        self._live: Live | None = None
        self._errors = _Line()
        self._task: TaskID | None = None
        self._rates = _Rates()
        # Periodic lines start one interval in: a short run prints only the final line.
        self._last_log = time.monotonic()

    def note(self, text: str) -> None:
        self.console.print(Text(text, style="dim"))

    @contextlib.asynccontextmanager
    async def showing(self, progress: RunProgress) -> Any:
        if self.mode == ProgressMode.OFF:
            yield
            return
        if self.mode == ProgressMode.BAR:
            self._bar = Progress(
                TextColumn("[bold]{task.description:<8}"),
                BarColumn(bar_width=16),
                TextColumn("{task.fields[count]}"),
                TextColumn("{task.fields[speed]}"),
                TextColumn("{task.fields[eta]}"),
                console=self.console,
            )
            self._task = self._bar.add_task("opening", total=None, count="", speed="", eta="")
            self._live = Live(Group(self._bar, self._errors), console=self.console, refresh_per_second=8)
            self._live.start()
        interval = PROGRESS_BAR_INTERVAL if self._bar is not None else 1.0
        refresher = asyncio.ensure_future(self._refresh(progress, interval))
        try:
            yield
        finally:
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher
            self.update(progress, final=True)
            if self._live is not None:
                self._live.stop()

    async def _refresh(self, progress: RunProgress, interval: float) -> None:
        while True:
            self.update(progress)
            await asyncio.sleep(interval)

    def update(self, p: RunProgress, *, final: bool = False) -> None:
        sent_rate, seg_rate = self._rates.update(p.sent, p.segments)
        eta = speed = ""
        if p.phase is Phase.LOADING:
            done, total = p.load_bytes, p.load_size or None
            count = f"{p.loaded_rows:,} rows read"
        elif p.phase is Phase.DELIVERY:
            done = p.delivered + p.delivery_failed
            total = p.by_status.get("accepted", 0)
            count = f"{done:,}/{total:,}"
            speed = f"{p.delivered:,} delivered, {p.delivery_failed:,} failed"
        else:
            done, total = p.done, p.total or None
            count = f"{done:,}/{total or 0:,}"
            if p.phase is Phase.SENDING:
                speed = f"{sent_rate:,.0f} msg/s {seg_rate:,.0f} seg/s"
                if sent_rate > 0:
                    eta = f"ETA {_duration(((total or 0) - done) / sent_rate)}"
        errors = _error_text(p)
        if self._bar is not None and self._task is not None:
            label = _LABELS.get(p.phase, str(p.phase))
            self._bar.update(
                self._task, description=label, completed=done, total=total, count=count, speed=speed, eta=eta
            )
            self._errors.text = Text(" " * 9 + errors, style="dim")
            return
        now = time.monotonic()
        if not final and now - self._last_log < PROGRESS_LOG_INTERVAL:
            return
        self._last_log = now
        if p.phase is Phase.LOADING:
            line = f"loading: {p.loaded_rows:,} rows read"
        elif p.phase is Phase.DELIVERY:
            line = f"delivery receipts: {done:,}/{total:,} ({speed})"
        elif p.phase in (Phase.SETTLING, Phase.RECONCILING, Phase.OPENING) and not final:
            return
        else:
            share = f" ({done / total:.0%})" if total else ""
            line = f"{done:,}/{total or 0:,} rows done{share}" + (f", {speed}" if speed else "")
            line += (f", {eta}" if eta else "") + f"; {errors}"
        self.console.print(Text(line), highlight=False, soft_wrap=True)


async def run_campaign(connection: Connection, options: CampaignOptions, settings: RunSettings) -> int:
    """Run a campaign as ``campaign run`` does; return the exit status. (Also ``demo campaign``.)"""
    display = _Display(settings.progress)
    runner = CampaignRunner(settings.journal_path, options, on_note=display.note)
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    signals: list[signal.Signals] = []

    def on_signal(sig: signal.Signals) -> None:
        if runner.stopping:
            display.note("Cancelling now: rows on the wire stay in flight and are reconciled on resume.")
            if main_task is not None:
                main_task.cancel()
            return
        reason = StopReason.INTERRUPTED if sig == signal.SIGINT else StopReason.TERMINATED
        runner.request_stop(reason, "stopped by Ctrl-C" if sig == signal.SIGINT else "stopped by SIGTERM")
        display.note("Stopping: no new rows; finishing the requests in flight (Ctrl-C again to cancel at once).")

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, on_signal, sig)
            signals.append(sig)
    outcome: RunOutcome | None = None
    cancelled = False
    try:
        async with contextlib.AsyncExitStack() as stack:
            try:
                await stack.enter_async_context(runner)
            except JournalLockedError as exc:
                _error(f"{exc}. Is another run of this campaign going? ('bwasync campaign status' reads it.)")
                return EXIT_USAGE
            except JournalError as exc:
                _error(str(exc))
                return EXIT_USAGE
            try:
                async with display.showing(runner.progress):
                    outcome = await _run(runner, connection, options, settings, stack, display)
            except asyncio.CancelledError:
                cancelled = True
            except (JournalMismatchError, InputFileError, TemplateError) as exc:
                _error(str(exc))
                return EXIT_USAGE
            except (CampaignError, BwasyncError) as exc:
                _error(str(exc))
                return EXIT_FATAL
            report = await build_report(runner.journal)
            invalid = await runner.rows_with_status("invalid", SHOWN_INVALID)
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
    _print_summary(report, invalid, outcome)
    if cancelled or outcome is None:
        _verdict(False, "Cancelled: rows that were on the wire stay in flight and are reconciled on resume.")
        return EXIT_INTERRUPTED
    if outcome.stop_reason is not None:
        why = (outcome.message or str(outcome.stop_reason)).rstrip(".")
        resumable = "Resumable: rerun the same command to continue (nothing was lost or sent twice)."
        if outcome.stop_reason is StopReason.ERROR_RATE:
            failed = outcome.counts["failed"]
            _verdict(
                False,
                f"Paused: {why}. Check the errors above; then rerun the same command to resume"
                + (
                    f" (add --retry-failed to resend the {failed:,} rows that failed: they were not sent)."
                    if failed
                    else "."
                ),
            )
        else:
            _verdict(False, f"{why[:1].upper()}{why[1:]}. {resumable}")
        return _EXIT_FOR[outcome.stop_reason]
    ambiguous = outcome.counts["ambiguous"]
    done = f"Done: all {outcome.counts.total:,} rows reached a final state ({outcome.sent:,} sent by this run)."
    if ambiguous:
        done += (
            f" {ambiguous:,} are ambiguous (may or may not have been sent): check them "
            "('campaign report --csv'), then rerun with --retry-ambiguous to resend them knowingly."
        )
    _verdict(True, done)
    return EXIT_OK


async def _run(
    runner: CampaignRunner,
    connection: Connection,
    options: CampaignOptions,
    settings: RunSettings,
    stack: contextlib.AsyncExitStack,
    display: _Display,
) -> RunOutcome:
    info = await runner.load()
    verb = "Resuming" if runner.resumed else "Starting"
    display.note(
        f"{verb} campaign {info.campaign_id}: {runner.progress.total:,} rows from {options.input_path}, "
        f"journal {settings.journal_path}."
    )
    knobs = dict(settings.emulator_knobs or {})
    receiver: CallbackReceiver | None = None
    if settings.callbacks is not None:
        user, password = settings.callback_username, settings.callback_password
        if connection.emulator and user is None and password is None:
            user, password = "bwasync", secrets.token_urlsafe(16)
        host, port = settings.callbacks
        receiver = await stack.enter_async_context(
            CallbackReceiver(host, port, journal=runner.journal, username=user, password=password)
        )
        auth = "Basic auth" if user is not None else "NO authentication: anyone who can reach it can post events"
        display.note(f"Receiving status callbacks on {receiver.url} ({auth}).")
        local = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        knobs.update(
            callback_url=f"http://{local}:{receiver.port}/", callback_username=user, callback_password=password
        )
    async with connection.connect(
        emulator_knobs=knobs, announce=display.note, concurrency=options.concurrency, retry=options.retry
    ) as session:
        if settings.on_session is not None:
            settings.on_session(session)
        outcome = await runner.run(session.client)
        if receiver is not None and outcome.complete and settings.wait_delivery > 0 and not runner.stopping:
            stats = receiver.stats
            awaiting = await runner.wait_for_delivery(settings.wait_delivery, activity=lambda: stats.recorded)
            if awaiting:
                display.note(
                    f"{awaiting:,} accepted rows have no delivery receipt yet after {settings.wait_delivery:g} s "
                    "(Bandwidth keeps retrying callbacks; they are recorded whenever a receiver runs)."
                )
    return outcome


def _error(text: str) -> None:
    err_console().print(Text.assemble(("Error: ", "bold red"), text))


def _verdict(ok: bool, text: str) -> None:
    out_console().print(Text.assemble(("✓ " if ok else "✗ ", "bold green" if ok else "bold red"), text))


def _pct(n: int, total: int) -> str:
    return f"{n / total:.1%}" if total else ""


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:,.0f} ms"


def _report_table(report: Report) -> Table:
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
        return Text.assemble(f"{n:,}", (f"  {_pct(n, of)}" if n and of else "", "dim"))

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
    if report.throughput is not None and report.duration is not None:
        table.add_row(
            "throughput",
            f"{report.throughput:,.1f} msg/s, {report.segments_per_second or 0:,.1f} seg/s "
            f"over {_duration(report.duration)}",
        )
    if report.latency_p50 is not None:
        table.add_row(
            "latency",
            f"p50 {_ms(report.latency_p50)}, p90 {_ms(report.latency_p90)}, p99 {_ms(report.latency_p99)}, "
            f"max {_ms(report.latency_max)}",
        )
    return table


def _print_summary(report: Report, invalid: list[RowRecord], outcome: RunOutcome | None) -> None:
    console = out_console()
    parts: list[RenderableType] = [_report_table(report)]
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
        table = Table(
            title=f"Invalid rows ({report.invalid:,}; all of them: 'campaign report --csv')",
            title_justify="left",
            title_style="bold",
            box=None,
            padding=(0, 2),
            header_style="bold",
        )
        table.add_column("line", justify="right")
        table.add_column("key")
        table.add_column("problem", overflow="fold")
        for row in invalid:
            table.add_row(str(row.line), Text(row.key), Text(row.error or ""))
        parts.append(table)
    console.print(Group(*parts))


# --- dry run ---------------------------------------------------------------------------------------

#: Placeholder application id for a dry run without one: only its presence is validated.
_DRY_APPLICATION = "dry-run-application"
_PREVIEW = 60


def _dry_run(
    connection: ConnectionOptions,
    file: str,
    *,
    template: str | None,
    key_column: str | None,
    fmt: Any,
    campaign_id: str | None,
    opt_out: frozenset[str],
    rate: float | None,
) -> int:
    """Validate and render FILE; nothing is sent and no journal is created (no event loop either)."""
    if connection.emulator:
        resolved = connection.resolve(need_from=False)
        app, sender = resolved.application_id, resolved.from_
    else:
        app, sender = connection.application_id, connection.from_
    if sender is None:
        note("No --from (BW_NUMBER) given: rows without a 'from' column are reported invalid.")
    try:
        report = dry_run(
            file,
            template=Template(template) if template is not None else None,
            application_id=app or _DRY_APPLICATION,
            default_from=sender,
            key_column=key_column,
            fmt=fmt,
            campaign_id=campaign_id,
            opt_out=opt_out,
        )
    except (InputFileError, TemplateError) as exc:
        _error(str(exc))
        return EXIT_USAGE
    _print_dry_run(file, report, rate)
    return EXIT_OK


def _preview(text: str | None) -> Text:
    if text is None:
        return Text("")
    flat = text.replace("\n", "⏎")
    return Text(flat if len(flat) <= _PREVIEW else flat[: _PREVIEW - 1] + "…")


def _to_cell(to: tuple[str, ...]) -> str:
    return to[0] + (f" +{len(to) - 1}" if len(to) > 1 else "")


def _print_dry_run(file: str, report: DryRunReport, rate: float | None) -> None:
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
        table = Table(
            title=f"Invalid rows: {report.invalid:,}" + (" (first 50 shown)" if report.invalid > 50 else ""),
            title_justify="left",
            title_style="bold red",
            header_style="bold",
            box=None,
            padding=(0, 1),
        )
        table.add_column("line", justify="right", no_wrap=True)
        table.add_column("key", no_wrap=True)
        table.add_column("problem", overflow="fold")
        for bad in report.invalid_rows:
            table.add_row(str(bad.line), Text(bad.key), Text(bad.error))
        console.print(table)
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row(
        "rows",
        f"{report.rows:,}: {report.sendable:,} to send, {report.invalid:,} invalid, {report.skipped:,} opted out",
    )
    grid.add_row("encoding", f"{report.gsm7:,} GSM-7, {report.ucs2:,} UCS-2 (Unicode), {report.mms:,} MMS")
    histogram = ", ".join(
        f"{n:,} × {seg} segment{'s' if seg != 1 else ''}" for seg, n in sorted(report.histogram.items())
    )
    grid.add_row("segments", histogram or "-")
    grid.add_row("total", f"{report.total_segments:,} segments to {report.recipients:,} recipients")
    duration = report.duration(rate)
    if duration is not None:
        assert rate is not None
        grid.add_row("time", f"{_duration(duration)} at {rate:g} segments/s (--rate)")
    else:
        grid.add_row("time", "give --rate SEG/S (your account's limit) for an estimate")
    console.print(grid)


# --- campaign status ---------------------------------------------------------------------------------


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    ago = time.time() - epoch
    stamp = datetime.fromtimestamp(epoch).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
    if ago < 0:
        return stamp
    return f"{stamp} ({_duration(ago)} ago)"


@campaign.command(
    "status",
    short_help="Progress of a campaign from its journal (safe while it runs).",
    epilog="""\b
Examples:
  bwasync campaign status list.csv.journal
  watch -n 2 bwasync campaign status list.csv.journal

Exit status: 0 the campaign is complete, 1 it is not (yet), 2 not a journal.""",
)
@click.argument("journal", type=click.Path(exists=True, dir_okay=False))
def status_command(journal: str) -> None:
    """Show a campaign's progress: rows by state, delivery receipts, when it last moved.

    Reads the journal read-only, without taking its lock, so it works while 'campaign run' is
    sending (it shows the last committed state) as well as after.
    """
    ctx = click.get_current_context()
    try:
        status = read_status(journal)
    except JournalError as exc:
        _error(str(exc))
        ctx.exit(EXIT_USAGE)
    console = out_console()
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("campaign", status.campaign_id)
    grid.add_row("input", Text(status.input_path))
    grid.add_row("template", Text(status.template or "(rows carry their text)"))
    grid.add_row("created", _when(status.created_at))
    grid.add_row("updated", _when(status.updated_at))
    load = "complete" if status.load_complete else f"in progress (through line {status.loaded_through:,})"
    grid.add_row("load", load)
    total = status.total
    grid.add_row("progress", f"{status.done:,} of {total:,} rows in a final state ({_pct(status.done, total) or '-'})")
    for name in ("pending", "in_flight", "accepted", "failed", "ambiguous", "invalid", "skipped"):
        n = status.by_status.get(name, 0)
        grid.add_row(f"  {name.replace('_', ' ')}", f"{n:,}" + (f"  ({_pct(n, total)})" if n and total else ""))
    grid.add_row("segments sent", f"{status.accepted_segments:,}")
    d = status.by_delivery
    if any(d.values()):
        grid.add_row(
            "delivery",
            f"{d.get('delivered', 0):,} delivered, {d.get('failed', 0):,} failed, {d.get('sent', 0):,} sent to carrier",
        )
    console.print(grid)
    if status.complete:
        console.print(Text("Complete: every row is in a final state.", style="green"))
        ctx.exit(EXIT_OK)
    if status.by_status.get("in_flight"):
        console.print(
            Text(
                "Rows in flight: a run is sending them now, or a run died and the next one will reconcile them.",
                style="yellow",
            )
        )
    console.print(Text("Not complete: rerun the campaign's 'run' command to continue.", style="yellow"))
    ctx.exit(EXIT_FATAL)


# --- campaign report ---------------------------------------------------------------------------------


@campaign.command(
    "report",
    short_help="A campaign's outcome; --csv/--json export every row's.",
    epilog="""\b
Examples:
  bwasync campaign report list.csv.journal
  bwasync campaign report list.csv.journal --csv outcomes.csv --json outcomes.jsonl

The exports have one record per row, in file order: key, line, status, recipients, message_id,
error, error_code, delivery_status, delivery_error_code, segments, attempts, latency.""",
)
@click.argument("journal", type=click.Path(exists=True, dir_okay=False))
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), help="Write every row's outcome to this CSV file.")
@click.option(
    "--json", "json_path", type=click.Path(dir_okay=False), help="Write every row's outcome to this JSON Lines file."
)
def report_command(journal: str, csv_path: str | None, json_path: str | None) -> None:
    """Summarise a campaign: accepted, delivered, failed (by error code), ambiguous, invalid,
    segments, throughput and latency percentiles; optionally export every row's outcome.

    Needs the journal to itself: while a run is going, use 'campaign status'.
    """
    ctx = click.get_current_context()
    try:
        read_status(journal)  # refuses a file that is not a journal without creating anything
    except JournalError as exc:
        _error(str(exc))
        ctx.exit(EXIT_USAGE)

    async def main() -> tuple[Report, list[RowRecord], list[str]]:
        written: list[str] = []
        async with Journal(journal) as j:
            report = await build_report(j)
            invalid = [row async for row in _first(j, "invalid", SHOWN_INVALID)]
            if csv_path:
                n = await export_rows_csv(j, csv_path)
                written.append(f"{n:,} rows written to {csv_path}")
            if json_path:
                n = await export_rows_json(j, json_path)
                written.append(f"{n:,} rows written to {json_path}")
        return report, invalid, written

    try:
        report, invalid, written = run(main())
    except JournalLockedError:
        _error(f"{journal} is in use by a running campaign; 'bwasync campaign status {journal}' reads it meanwhile.")
        ctx.exit(EXIT_USAGE)
    except (JournalError, OSError) as exc:
        _error(str(exc))
        ctx.exit(EXIT_FATAL)
    _print_summary(report, invalid, None)
    if report.hint:
        for line in report.hint.splitlines():
            out_console().print(Text("! " + line, style="yellow"))
    for line in written:
        note(line)


async def _first(journal: Journal, status: str, limit: int) -> Any:
    count = 0
    async for row in journal.rows_with_status(status, batch=limit):
        yield row
        count += 1
        if count >= limit:
            return


# Registers ``bwasync demo campaign`` (its module builds on run_campaign above).
from . import _campaign_demo  # noqa: E402,F401
