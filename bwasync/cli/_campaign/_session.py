"""One run of a campaign in a terminal: signals, the progress display, the receiver, the verdict.

Shared by ``campaign run`` and ``demo campaign``. Exit status: 0 every row reached a final
state; 1 a fatal problem (credentials refused, the journal or Bandwidth's list unreachable...);
2 invalid usage or input, or the journal is in use or belongs to another campaign (nothing
sent); 3 paused by the error-rate guard; 4 more than half of a new campaign's rows invalid
(nothing sent, no journal kept); 130 interrupted (Ctrl-C); 143 terminated (SIGTERM). Every
stop but 2 and 4 is resumable by rerunning the same command.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import secrets
import signal
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from ..._exceptions import BwasyncError
from ...campaign import (
    CallbackReceiver,
    CampaignError,
    CampaignOptions,
    CampaignRunner,
    InputFileError,
    JournalError,
    JournalLockedError,
    JournalMismatchError,
    RowRecord,
    RunOutcome,
    StopReason,
    TemplateError,
)
from ...campaign._preflight import mostly_invalid
from ...campaign._receiver import campaign_event_handler
from ...compliance import FileOptOutStore, MemoryOptOutStore, ReplyProcessor
from .._loop import on_signals, run
from .._options import Connection, Session, bind_error
from ._display import Display, ProgressMode
from ._render import (
    SHOWN_INVALID,
    print_error,
    print_mostly_invalid,
    print_summary,
    print_verdict,
    read_summary,
    word_mismatch,
    word_no_rows,
    word_note,
)

if TYPE_CHECKING:
    from ...metrics import ClientMetrics

#: Seconds to wait for delivery receipts after sending, when ``--callbacks`` is given and
#: ``--wait-delivery`` is not: most carriers confirm within seconds; the rest can be read later
#: with ``campaign status`` only if a receiver is still up, so this is a trade-off, not a promise.
DEFAULT_WAIT_DELIVERY: Final = 30.0
#: Python's default GC thresholds (700, 10, 10) trigger a collection every few hundred
#: allocations; a campaign allocates a few objects per message, all short-lived and acyclic.
#: An application may raise them (the library never does): fewer collections, same memory.
GC_THRESHOLDS: Final = (50_000, 20, 100)


EXIT_OK: Final = 0
EXIT_FATAL: Final = 1
EXIT_USAGE: Final = 2
EXIT_PAUSED: Final = 3
#: More than half of the rows are invalid (the rest were sent, or would be): probably a wrong
#: file, template or option rather than a few bad rows. ``--allow-invalid`` accepts it (exit 0).
EXIT_MOSTLY_INVALID: Final = 4
EXIT_INTERRUPTED: Final = 130  # 128 + SIGINT, as shells report it
EXIT_TERMINATED: Final = 143  # 128 + SIGTERM

_EXIT_FOR: Final = {
    StopReason.INTERRUPTED: EXIT_INTERRUPTED,
    StopReason.TERMINATED: EXIT_TERMINATED,
    StopReason.ERROR_RATE: EXIT_PAUSED,
    StopReason.FATAL: EXIT_FATAL,
}


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
    #: Send even when more than half of the rows of a new campaign are invalid.
    allow_invalid: bool = False
    #: The ``--opt-out`` file: STOP/START replies received on the callback URL update it.
    opt_out_path: str | None = None
    #: ``--metrics``: fed every send and request of the run (see ``cli._metrics``).
    metrics: ClientMetrics | None = None


class _MostlyInvalid(Exception):
    """A new campaign's rows are mostly invalid: stop before sending (see ``EXIT_MOSTLY_INVALID``)."""

    def __init__(self, invalid: int, total: int, shown: list[RowRecord]) -> None:
        super().__init__(f"{invalid} of {total} rows are invalid")
        self.invalid = invalid
        self.total = total
        self.shown = shown


class _NoRows(Exception):
    """A new campaign's file has no row: stop before sending, exit 2 (no run "succeeds" with
    nothing sent)."""


class _CallbacksUnavailable(Exception):
    """``--callbacks HOST:PORT`` cannot be listened on (in use, not an address here): stop before
    sending, exit 2 like a ``--metrics`` port in use."""


def _callbacks_unavailable(host: str, port: int, exc: OSError) -> str:
    return (
        f"--callbacks: cannot listen on {host}:{port}: {exc.strerror or exc}. Nothing was sent; "
        "give a free HOST:PORT (127.0.0.1:0 picks one) and rerun the same command."
    )


def check_callbacks(endpoint: tuple[str, int] | None) -> str | None:
    """Why ``--callbacks HOST:PORT`` cannot be listened on now, or None: checked before the journal
    is opened, so a port in use leaves nothing behind (a port taken in between is caught again
    when the receiver starts). Port 0 (any free one) always can."""
    if endpoint is None or not endpoint[1]:
        return None
    host, port = endpoint
    exc = bind_error(host, port)
    return None if exc is None else _callbacks_unavailable(host, port, exc)


def _remove_journal(path: str) -> None:
    """Delete a journal this run created and sent nothing from (SQLite's side files too)."""
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path + suffix)


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


async def run_campaign(connection: Connection, options: CampaignOptions, settings: RunSettings) -> int:
    """Run a campaign as ``campaign run`` does; return the exit status. (Also ``demo campaign``.)"""
    display = Display(settings.progress)
    metrics = settings.metrics
    runner = CampaignRunner(
        settings.journal_path,
        options,
        on_note=lambda n: display.note(word_note(n)),
        on_result=None if metrics is None else metrics.observe,
    )
    main_task = asyncio.current_task()

    def on_signal(sig: signal.Signals) -> None:
        if runner.stopping:
            display.note("Cancelling now: rows on the wire stay in flight and are reconciled on resume.")
            if main_task is not None:
                main_task.cancel()
            return
        reason = StopReason.INTERRUPTED if sig == signal.SIGINT else StopReason.TERMINATED
        runner.request_stop(reason, "stopped by Ctrl-C" if sig == signal.SIGINT else "stopped by SIGTERM")
        display.note("Stopping: no new rows; finishing the requests in flight (Ctrl-C again to cancel at once).")

    outcome: RunOutcome | None = None
    mostly: _MostlyInvalid | None = None
    empty = False
    cancelled = False
    with on_signals(on_signal):
        async with contextlib.AsyncExitStack() as stack:
            try:
                await stack.enter_async_context(runner)
            except JournalLockedError as exc:
                print_error(f"{exc}. Is another run of this campaign going? ('bwasync campaign status' reads it.)")
                return EXIT_USAGE
            except JournalError as exc:
                print_error(str(exc))
                return EXIT_USAGE
            try:
                async with display.showing(runner.progress):
                    outcome = await _run(runner, connection, options, settings, stack, display)
            except asyncio.CancelledError:
                cancelled = True
            except _MostlyInvalid as exc:
                mostly = exc
            except _NoRows:
                empty = True
            except JournalMismatchError as exc:
                print_error(word_mismatch(exc))
                return EXIT_USAGE
            except (InputFileError, TemplateError, _CallbacksUnavailable) as exc:
                print_error(str(exc))
                return EXIT_USAGE
            except (CampaignError, BwasyncError) as exc:
                print_error(str(exc))
                return EXIT_FATAL
            if mostly is None and not empty:
                report, invalid = await read_summary(runner.journal)
    if empty:
        _remove_journal(settings.journal_path)
        print_error(f"{word_no_rows(options.input_path)} Nothing was sent; no journal was kept.")
        return EXIT_USAGE
    if mostly is not None:
        # Nothing was sent and the journal is new: leave nothing behind, a rerun starts afresh.
        _remove_journal(settings.journal_path)
        print_mostly_invalid(mostly.shown, mostly.invalid, mostly.total, "no journal was kept")
        return EXIT_MOSTLY_INVALID
    print_summary(report, invalid, outcome)
    if cancelled or outcome is None:
        print_verdict(False, "Cancelled: rows that were on the wire stay in flight and are reconciled on resume.")
        return EXIT_INTERRUPTED
    return verdict(outcome)


def exit_for(reason: StopReason) -> int:
    """The exit status of a run stopped for ``reason``."""
    return _EXIT_FOR[reason]


def verdict(outcome: RunOutcome, *, shared: bool = False) -> int:
    """Say how a run ended (after its summary); return its exit status. ``shared``: a campaign
    kept in Redis (``--retry-ambiguous`` is not offered for one yet)."""
    if outcome.stop_reason is not None:
        why = (outcome.message or str(outcome.stop_reason)).rstrip(".")
        resumable = "Resumable: rerun the same command to continue (nothing was lost or sent twice)."
        if outcome.stop_reason is StopReason.ERROR_RATE:
            failed = outcome.counts["failed"]
            print_verdict(
                False,
                f"Paused: {why} (--max-error-rate). Check the errors above; then rerun the same command to resume"
                + (
                    f" (add --retry-failed to resend the {failed:,} rows that failed: they were not sent)."
                    if failed
                    else "."
                ),
            )
        else:
            print_verdict(False, f"{why[:1].upper()}{why[1:]}. {resumable}")
        return _EXIT_FOR[outcome.stop_reason]
    ambiguous = outcome.counts["ambiguous"]
    done = f"Done: all {outcome.counts.total:,} rows reached a final state ({outcome.sent:,} sent by this run)."
    if ambiguous:
        done += (
            f" {ambiguous:,} are ambiguous (may or may not have been sent): check them ('campaign report --csv')"
            + ("; they are not resent." if shared else ", then rerun with --retry-ambiguous to resend them knowingly.")
        )
    print_verdict(True, done)
    return EXIT_OK


async def _run(
    runner: CampaignRunner,
    connection: Connection,
    options: CampaignOptions,
    settings: RunSettings,
    stack: contextlib.AsyncExitStack,
    display: Display,
) -> RunOutcome:
    info = await runner.load()
    if not runner.resumed:
        counts = await runner.journal.counts()
        if not counts.total:
            raise _NoRows
        if not settings.allow_invalid and mostly_invalid(counts["invalid"], counts.total):
            shown = await runner.rows_with_status("invalid", SHOWN_INVALID)
            raise _MostlyInvalid(counts["invalid"], counts.total, shown)
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
        # Replies (STOP, START) arrive on the same URL as status callbacks: they update the
        # opt-out list and skip the number's pending rows before they are sent.
        store = FileOptOutStore(settings.opt_out_path) if settings.opt_out_path else MemoryOptOutStore()
        replies = ReplyProcessor(store, on_reply=runner.receive_reply)
        try:
            receiver = await stack.enter_async_context(
                CallbackReceiver(
                    host,
                    port,
                    on_event=campaign_event_handler(runner.journal, replies.apply),
                    username=user,
                    password=password,
                )
            )
        except OSError as exc:
            raise _CallbacksUnavailable(_callbacks_unavailable(host, port, exc)) from None
        auth = "Basic auth" if user is not None else "NO authentication: anyone who can reach it can post events"
        display.note(f"Receiving status callbacks on {receiver.url} ({auth}).")
        local = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        knobs.update(
            callback_url=f"http://{local}:{receiver.port}/", callback_username=user, callback_password=password
        )
    async with connection.connect(
        emulator_knobs=knobs, announce=display.note, concurrency=options.concurrency, retry=options.retry
    ) as session:
        if settings.metrics is not None:
            settings.metrics.instrument(session.client, rate=options.rate)
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
