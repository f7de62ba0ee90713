"""The campaign runner: a file of recipients, sent once each, safe to kill at any moment.

:class:`CampaignRunner` drives one run over a :class:`~bwasync.campaign.Journal`::

    open ─▶ load ─▶ reconcile ─▶ requeue (asked) ─▶ send ─▶ wait for delivery (asked)

* **Load** streams the input file into the journal in batches; every row becomes ``pending``,
  ``invalid`` (line number and field errors) or ``skipped`` (opted out). Resumable: a rerun
  re-reads the file from the start (so duplicate keys are still caught) and adds only rows past
  the journal's ``loaded_through``.
* **Reconcile** looks up every row a previous run left ``in_flight`` in Bandwidth's message list
  before anything is sent (see :mod:`._reconcile` for the rule and the settle window): found ones
  become ``accepted``, the rest ``ambiguous``, never silently resent.
* **Send** streams the ``pending`` rows through :meth:`~bwasync.MessagingClient.send_many`. Its
  ``before_send`` hook commits the row's ``in_flight`` mark right before the request leaves, so
  after a crash the rows left ``in_flight`` are at most the requests that were really
  unanswered. Results are recorded without waiting (group-committed with the next marks).

Invariant (what ``kill -9`` leaves): at every commit, rows ``in_flight`` ≤ ``concurrency``. The
hook admits a new mark only while fewer than ``concurrency`` marked rows have no result queued
yet, and the journal applies its queue in order, so no prefix of it — which is all a crash can
leave — holds more marks than results plus ``concurrency``.

Stopping (:meth:`CampaignRunner.request_stop`, what Ctrl-C and SIGTERM call): no new row is
taken, requests on the wire finish and are recorded, rows taken but not sent go back to
``pending``, the journal is flushed. Cancelling the task running :meth:`run` instead stops at
once: rows whose request was on the wire stay ``in_flight`` and are reconciled on resume.

Safety stops: the error-rate guard looks at the last :data:`ERROR_RATE_WINDOW` send results
(accepted = fine; failed or ambiguous = error; invalid and opted-out rows never get there) and,
once at least :data:`ERROR_RATE_MIN_SAMPLE` are in, stops in order when the error share is above
``max_error_rate`` (:attr:`StopReason.ERROR_RATE`: the campaign is paused, a rerun resumes it).
A 401 stops the run at once (every row would get it) and leaves its row ``pending``.

Usage::

    options = CampaignOptions(input_path="list.csv", template="Hi {first_name}",
                              application_id=APP, default_from="+15553332222", rate=50)
    async with CampaignRunner("list.csv.journal", options) as runner, MessagingClient(...) as client:
        await runner.load()
        outcome = await runner.run(client)
        print(outcome.complete, outcome.counts.by_status)
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import itertools
import os
import time
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Final, NamedTuple

from .._client import MessagingClient, check_count
from .._constants import DEFAULT_CONCURRENCY, DEFAULT_TIMEOUT
from .._exceptions import APIStatusError, AuthenticationError, SendCancelledError, StopRequestedError, ValidationError
from .._fanout import Outcome, SendResult, SendStream
from .._models import MessageRequest
from .._ratelimit import _check_rate
from .._retry import RetryPolicy
from .._segments import message_cost, total_segments
from .._validation import Priority
from ..compliance import InboundReply, QuietHours, ReplyKind
from ..compliance._constants import QUIET_SEARCH_HORIZON
from ..compliance._numbers import numbers_checkable
from ._constants import (
    DEFAULT_MAX_ERROR_RATE,
    DEFAULT_SETTLE,
    DELIVERY_POLL_INTERVAL,
    ERROR_RATE_MIN_SAMPLE,
    ERROR_RATE_WINDOW,
    LOAD_BATCH,
    LOAD_TURN_ROWS,
    LOAD_WRITES_AHEAD,
    LOAD_YIELD_ROWS,
    PAGE_SIZE,
    RECONCILE_AMBIGUOUS_MAX,
    RECONCILE_BATCH,
)
from ._exceptions import JournalError, JournalMismatchError, JournalStateError, ReconcileError
from ._inputs import Format, Template, format_field_errors, prepare_row, read_rows
from ._journal import Journal
from ._reconcile import (
    CLOCK_MARGIN,
    ReconcileSummary,
    last_write_time,
    reconcile_rows,
    settle_deadline,
)
from ._records import CampaignInfo, Counts, NewRow, PendingRow, RowRecord
from ._report import first_rows
from ._rowstate import FINAL_STATUSES, Event, RowStatus, count_final, next_state
from ._store import CampaignStore

__all__ = [
    "DEFAULT_MAX_ERROR_RATE",
    "DEFAULT_SETTLE",
    "ERROR_RATE_MIN_SAMPLE",
    "ERROR_RATE_WINDOW",
    "FINAL_STATUSES",
    "CampaignOptions",
    "CampaignRunner",
    "ErrorWindow",
    "NoteKind",
    "Phase",
    "RunNote",
    "RunOutcome",
    "RunProgress",
    "StopReason",
    "consume",
    "load_campaign",
    "result_event",
]


# The states, events and outcome read once per row below, as module constants: on Python 3.11
# ``EnumType`` defines ``__getattr__``, so a member read off its class takes the slow attribute
# path (~300 ns here, a few per row on the send path).
_PENDING: Final = RowStatus.PENDING
_IN_FLIGHT: Final = RowStatus.IN_FLIGHT
_ACCEPTED: Final = RowStatus.ACCEPTED
_SKIPPED: Final = RowStatus.SKIPPED
_MARKED: Final = Event.MARKED
_TO_ACCEPTED: Final = Event.ACCEPTED
_TO_NOT_SENT: Final = Event.NOT_SENT
_SENT: Final = Outcome.ACCEPTED


class Phase(enum.StrEnum):
    """What the runner is doing (for progress displays)."""

    OPENING = "opening"
    LOADING = "loading"
    SETTLING = "settling"
    RECONCILING = "reconciling"
    SENDING = "sending"
    #: Only rows held by quiet hours are left: waiting for the window to open.
    HELD = "held by quiet hours"
    DELIVERY = "waiting for delivery"
    DONE = "done"


class StopReason(enum.StrEnum):
    """Why a run stopped before every row reached a final status."""

    #: Ctrl-C (SIGINT).
    INTERRUPTED = "interrupted"
    #: SIGTERM.
    TERMINATED = "terminated"
    #: ``max_error_rate`` was exceeded: the campaign is paused.
    ERROR_RATE = "error_rate"
    #: Something no row can get past: credentials refused, the journal failed, the message
    #: list (needed to reconcile) unreachable.
    FATAL = "fatal"


class NoteKind(enum.StrEnum):
    """What a :class:`RunNote` reports."""

    #: The load resumes after ``line``.
    LOAD_RESUMED = "load_resumed"
    #: Waiting ``seconds`` (the settle window) before looking up ``rows`` rows in ``status``.
    SETTLING = "settling"
    #: Looking up ``rows`` rows in ``status`` in Bandwidth's message list.
    RECONCILING = "reconciling"
    #: Of ``rows`` rows in ``status``, ``accepted`` were found; the rest were not.
    RECONCILED = "reconciled"
    #: ``rows`` ambiguous rows, over ``limit``: resent without a look-up first.
    TOO_MANY_TO_LOOK_UP = "too_many_to_look_up"
    #: ``rows`` rows in ``status`` (``ambiguous`` or ``failed``) are sent again, as asked.
    REQUEUED = "requeued"
    #: ``rows`` pending rows were skipped: a recipient is on the opt-out list.
    OPTED_OUT = "opted_out"
    #: Only rows held by quiet hours are left: ``rows`` of them, the first may go in ``seconds``.
    HELD = "held"


class RunNote(NamedTuple):
    """Something a person running the campaign should know, as data: a front end words it."""

    kind: NoteKind
    rows: int = 0
    status: str | None = None
    seconds: float | None = None
    line: int | None = None
    accepted: int = 0
    limit: int | None = None


def result_event(outcome: Outcome, error: BaseException | None) -> Event | None:
    """What a send result does to its row (see :mod:`._rowstate`); None: it stays in flight.

    Pure: the runner's own refusals (a stop, a row already final, the journal failing) are
    decided before this is asked.
    """
    if outcome is _SENT:
        return _TO_ACCEPTED
    if isinstance(error, SendCancelledError):
        # Cancelled on the wire: left in flight, for the next run to reconcile.
        return None if error.may_have_been_sent else Event.NOT_SENT
    if outcome is Outcome.AMBIGUOUS:
        return Event.AMBIGUOUS
    if isinstance(error, AuthenticationError):
        # Every row would get the same answer: the row stays sendable (the run stops).
        return Event.NOT_SENT
    return Event.FAILED


@dataclass(frozen=True, slots=True, kw_only=True)
class CampaignOptions:
    """What to send and how. Only ``input_path``, ``application_id`` are required."""

    input_path: str
    application_id: str
    #: The message template (``{column}`` fields); rows with a ``text`` column may do without.
    template: str | None = None
    #: The sender for rows without a ``from`` column.
    default_from: str | None = None
    #: The column that keys rows (else the line number).
    key_column: str | None = None
    #: ``csv`` or ``jsonl``; by default from the file's extension.
    fmt: Format | None = None
    #: The campaign id for a new journal (random when None); must match on resume if given.
    campaign_id: str | None = None
    priority: Priority | str | None = None
    expiration: datetime | str | None = None
    concurrency: int = DEFAULT_CONCURRENCY
    #: Segments per second for this run (None: the client's limiter).
    rate: float | None = None
    #: The retry policy (None: the client's). Ambiguous failures are never retried by default.
    retry: RetryPolicy | None = None
    #: Reconcile, then resend, the rows that are ``ambiguous`` (they may be delivered twice).
    retry_ambiguous: bool = False
    #: Resend the rows that are ``failed`` (certainly not sent: safe, but they may fail again).
    retry_failed: bool = False
    #: Pause when more than this fraction of recent sends failed (None: never).
    max_error_rate: float | None = DEFAULT_MAX_ERROR_RATE
    #: Numbers that must never be messaged (normalised, see ``load_opt_out``).
    opt_out: frozenset[str] = frozenset()
    #: Seconds a dead run's in-flight row must age before it is looked up (see :mod:`._reconcile`).
    settle: float = DEFAULT_SETTLE
    #: Rows with a recipient that cannot be a valid number are ``invalid`` (needs the
    #: ``compliance`` extra; see :func:`bwasync.compliance.check_number`).
    strict_numbers: bool = False
    #: Send a row only outside this window in every zone of every recipient; other rows are
    #: held (pending) until it opens (needs the ``compliance`` extra).
    quiet_hours: QuietHours | None = None
    #: A column naming each row's recipient time zone (IANA, ``America/Chicago``) for quiet
    #: hours, instead of the zones of the numbers; an unknown name makes the row invalid.
    timezone_column: str | None = None

    def __post_init__(self) -> None:
        # The checks send_many and the limiter make, here before anything is loaded.
        check_count("concurrency", self.concurrency, 1)
        if self.rate is not None:
            _check_rate("rate", self.rate)
        if self.max_error_rate is not None and not 0.0 <= self.max_error_rate <= 1.0:
            raise ValueError("max_error_rate must be a fraction between 0 and 1")
        if self.settle < 0:
            raise ValueError("settle must not be negative")

    def journal_settings(self) -> dict[str, Any]:
        """What the journal records, and a resume must not change (keys and rendered requests)."""
        return {
            "application_id": self.application_id,
            "from": self.default_from,
            "key_column": self.key_column,
            "priority": None if self.priority is None else str(self.priority),
            "expiration": None if self.expiration is None else str(self.expiration),
            # Both decide what the load pass stores for a row (invalid or flagged; its time zone).
            "strict_numbers": self.strict_numbers,
            "timezone_column": self.timezone_column,
        }


class ErrorWindow:
    """The failure rate over the last ``size`` results, once at least ``min_sample`` are in.

    >>> w = ErrorWindow(size=4, min_sample=2)
    >>> w.add(False); w.add(True); w.rate
    0.5
    """

    __slots__ = ("_errors", "_results", "min_sample", "size")

    def __init__(self, size: int = ERROR_RATE_WINDOW, min_sample: int = ERROR_RATE_MIN_SAMPLE) -> None:
        if size < 1 or not 1 <= min_sample <= size:
            raise ValueError("need size >= 1 and 1 <= min_sample <= size")
        self.size = size
        self.min_sample = min_sample
        self._results: collections.deque[bool] = collections.deque(maxlen=size)
        self._errors = 0

    def add(self, failed: bool) -> None:
        if len(self._results) == self.size and self._results[0]:
            self._errors -= 1
        self._results.append(failed)
        if failed:
            self._errors += 1

    @property
    def count(self) -> int:
        return len(self._results)

    @property
    def rate(self) -> float | None:
        """Failures / results, or None below ``min_sample`` results."""
        n = len(self._results)
        return None if n < self.min_sample else self._errors / n

    def exceeded(self, threshold: float) -> bool:
        rate = self.rate
        return rate is not None and rate > threshold

    def __repr__(self) -> str:
        return f"<ErrorWindow {self._errors}/{len(self._results)} of {self.size}>"


@dataclass(slots=True)
class RunProgress:
    """Live counters for a progress display (written by the runner, read anywhere)."""

    phase: Phase = Phase.OPENING
    #: Rows in the journal.
    total: int = 0
    #: Rows by journal status, kept current during the send pass.
    by_status: dict[str, int] = field(default_factory=dict)
    #: Rows accepted by this run, and their segments.
    sent: int = 0
    segments: int = 0
    #: ``time.monotonic()`` when this run's send pass started.
    started: float | None = None
    #: Load pass: bytes read of the input file, its size, rows read.
    load_bytes: int = 0
    load_size: int = 0
    loaded_rows: int = 0
    #: Rows with a final delivery receipt (delivered or failed), during the delivery wait.
    delivered: int = 0
    delivery_failed: int = 0

    @property
    def done(self) -> int:
        """Rows in a final status."""
        return count_final(self.by_status)

    @property
    def errors(self) -> int:
        """Rows failed or ambiguous (invalid rows are counted apart)."""
        return self.by_status.get("failed", 0) + self.by_status.get("ambiguous", 0)

    def apply(self, current: str, event: Event, rows: int = 1) -> None:
        """Count ``rows`` rows in ``current`` moving as ``event`` says (see :mod:`._rowstate`)."""
        new = next_state(current, event)
        if new is None or new == current:
            return
        by = self.by_status
        by[current] = by.get(current, 0) - rows
        by[new] = by.get(new, 0) + rows


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """How a run ended."""

    #: Every row is in a final status (accepted, failed, ambiguous, invalid, skipped).
    complete: bool
    #: Why the run stopped early (None: it ran to the end).
    stop_reason: StopReason | None
    #: The stop's explanation, for people.
    message: str | None
    #: The journal's counts at the end.
    counts: Counts
    #: Rows accepted by this run.
    sent: int
    #: What reconciliation found (None: nothing to reconcile).
    reconciled: ReconcileSummary | None = None
    #: Rows requeued at the start (``retry_ambiguous``/``retry_failed``).
    requeued: int = 0
    #: Pending rows newly skipped by the opt-out list on this run.
    opted_out: int = 0


Note = Callable[[RunNote], None]


class CampaignRunner:
    """One run of a campaign over the journal at ``journal_path`` (see the module docstring).

    ``on_note`` receives :class:`RunNote` s about what the runner is doing and why (a wait, a
    reconciliation), for a front end to word; ``on_result`` every send's :class:`SendResult`
    as it ends, before it is recorded (e.g. ``ClientMetrics.observe``); ``progress`` holds live
    counters.
    """

    def __init__(
        self,
        journal_path: str | os.PathLike[str],
        options: CampaignOptions,
        *,
        on_note: Note | None = None,
        on_result: Callable[[SendResult], object] | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ):
        self.journal_path = os.fspath(journal_path)
        self.options = options
        #: Wall-clock epoch seconds, for quiet hours; ``sleep(seconds)`` waits for held rows
        #: (default: a sleep that a stop request ends). Both replaceable, e.g. by a test's clock.
        self._clock = clock
        self._sleep = sleep or self._pause
        #: Rows found in quiet hours during the current send pass: (key, not before).
        self._holds: list[tuple[str, float]] = []
        self.progress = RunProgress()
        self._on_note = on_note
        self._observe = on_result
        self._journal: Journal | None = None
        self._info: CampaignInfo | None = None
        self._resumed = False
        #: When a previous run last wrote the journal (read before this run opened it).
        self._last_write: float | None = None
        self._stop_reason: StopReason | None = None
        self._stop_message: str | None = None
        self._stopped: asyncio.Event | None = None
        self._window = ErrorWindow()
        # Send-pass state: index -> key for inputs pulled and not yet reported (bounded by the
        # fan-out's workers plus its result queue), and the marked ones among them.
        self._keys: dict[int, str] = {}
        self._marked: set[int] = set()
        #: The send pass's results, while it runs (a stop stops it at once).
        self._consuming = Consuming()
        self._unresolved = 0
        self._room: asyncio.Event | None = None

    def __repr__(self) -> str:
        return f"<CampaignRunner {self.journal_path!r} {self.progress.phase} stop={self._stop_reason}>"

    # -- Lifecycle --------------------------------------------------------------------------

    async def __aenter__(self) -> CampaignRunner:
        self._last_write = last_write_time(self.journal_path)
        self._stopped = asyncio.Event()
        self._room = asyncio.Event()
        self._journal = await Journal.open(self.journal_path)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._journal is not None:
            await self._journal.close()

    @property
    def journal(self) -> Journal:
        if self._journal is None:
            raise RuntimeError("the runner is not open: use 'async with CampaignRunner(...)'")
        return self._journal

    @property
    def info(self) -> CampaignInfo:
        if self._info is None:
            raise RuntimeError("load() has not run")
        return self._info

    @property
    def resumed(self) -> bool:
        """Whether the journal already held this campaign when the run started."""
        return self._resumed

    @property
    def stop_reason(self) -> StopReason | None:
        return self._stop_reason

    @property
    def stopping(self) -> bool:
        return self._stop_reason is not None

    def request_stop(self, reason: StopReason, message: str | None = None) -> None:
        """Stop in order: take no new row, finish what is on the wire. The first reason wins."""
        if self._stop_reason is not None:
            return
        self._stop_reason = reason
        self._stop_message = message
        if self._stopped is not None:
            self._stopped.set()
        if self._room is not None:
            self._room.set()  # hooks waiting for room re-check and refuse
        self._consuming.stop()

    async def _wait_for_release(self) -> bool:
        """Only held rows are left (quiet hours): wait until the first may go; False if none is held."""
        now = self._clock()
        rows, first = await self.journal.next_release(now)
        if not rows or first is None:
            return False
        self.progress.phase = Phase.HELD
        self._note(NoteKind.HELD, rows=rows, seconds=first - now)
        await self._sleep(first - now)
        self.progress.phase = Phase.SENDING
        return True

    async def receive_reply(self, reply: InboundReply) -> None:
        """Record a STOP/START reply received during the run (a ``ReplyProcessor``'s ``on_reply``).

        A STOP skips the number's pending rows at once, before they are sent (rows already on
        the wire are not undone); a START is recorded (the opt-out store re-subscribes the
        number for later campaigns) but does not bring back rows already skipped.
        """
        if reply.kind is ReplyKind.OTHER:
            return
        skipped = await self.journal.record_reply(
            reply.message_id, reply.number, reply.kind.value, changed=reply.changed, event_time=reply.time
        )
        if skipped:
            self.progress.apply(RowStatus.PENDING, Event.OPT_OUT, skipped)

    def _note(self, kind: NoteKind, **values: Any) -> None:
        if self._on_note is not None:
            self._on_note(RunNote(kind, **values))

    async def _pause(self, seconds: float) -> None:
        """Sleep, but return as soon as a stop is requested."""
        assert self._stopped is not None
        if seconds > 0 and not self._stopped.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), seconds)

    # -- Load pass --------------------------------------------------------------------------

    async def load(self) -> CampaignInfo:
        """Create or resume the campaign and load the rows not yet in the journal.

        Raises :class:`~bwasync.campaign.InputFileError` (the file is unusable),
        :class:`~bwasync.campaign.TemplateError`, or :class:`~bwasync.campaign.JournalMismatchError`
        (the journal holds another campaign, or one loaded with other settings).
        Returns early, incomplete, if a stop is requested (the next run continues the load).
        """
        info, self._resumed = await load_campaign(
            self.journal,
            self.options,
            where=self.journal_path,
            progress=self.progress,
            note=self._note,
            stopping=lambda: self.stopping,
            on_info=self._set_info,
        )
        return info

    def _set_info(self, info: CampaignInfo) -> None:
        self._info = info

    # -- The run ------------------------------------------------------------------------------

    async def run(self, client: MessagingClient) -> RunOutcome:
        """Reconcile, requeue what was asked, send every pending row; return how it ended.

        Call after :meth:`load`. Stops early (in order) on :meth:`request_stop`, on exceeding
        ``max_error_rate``, or when Bandwidth refuses the credentials.
        """
        journal = self.journal
        opts = self.options
        if self._info is None:
            raise RuntimeError("load() must run before run()")
        reconciled: ReconcileSummary | None = None
        requeued = opted_out = 0
        if not self.stopping:
            reconciled = await self._reconcile(client, "in_flight")
        if not self.stopping and opts.retry_ambiguous:
            ambiguous = (await journal.counts())["ambiguous"]
            if ambiguous > RECONCILE_AMBIGUOUS_MAX:
                self._note(NoteKind.TOO_MANY_TO_LOOK_UP, rows=ambiguous, limit=RECONCILE_AMBIGUOUS_MAX)
            elif ambiguous:
                reconciled = _merge(reconciled, await self._reconcile(client, "ambiguous"))
            if not self.stopping:
                n = await journal.requeue("ambiguous")
                requeued += n
                if n:
                    self._note(NoteKind.REQUEUED, rows=n, status=RowStatus.AMBIGUOUS)
        if not self.stopping and opts.retry_failed:
            n = await journal.requeue("failed")
            requeued += n
            if n:
                self._note(NoteKind.REQUEUED, rows=n, status=RowStatus.FAILED)
        if not self.stopping and opts.opt_out and (self._resumed or requeued):
            opted_out = await journal.apply_opt_out(opts.opt_out)
            if opted_out:
                self._note(NoteKind.OPTED_OUT, rows=opted_out)
        counts = await journal.counts()
        self.progress.by_status = dict(counts.by_status)
        self.progress.total = counts.total
        if not self.stopping and counts["pending"]:
            self.progress.phase = Phase.SENDING
            self.progress.started = time.monotonic()
            await journal.begin_sending()
            while not self.stopping:
                taken = await self._send_pass(client)
                await journal.flush()
                held, self._holds = self._holds, []
                await journal.hold(held)
                if self.stopping:
                    break
                # Nothing went and nothing newly held: done, unless rows wait for quiet hours to end.
                if taken == 0 and not held and (opts.quiet_hours is None or not await self._wait_for_release()):
                    break
                counts = await journal.counts()
                if not counts["pending"]:
                    break
        await journal.flush()
        counts = await journal.counts()
        self.progress.by_status = dict(counts.by_status)
        complete = counts["pending"] == 0 and counts["in_flight"] == 0 and self._info.load_complete
        if not complete and self._stop_reason is None:
            # Not stopped, yet rows are left (e.g. the load was cut short): say so, do not hide it.
            self._stop_reason = StopReason.FATAL
            left = counts["pending"] + counts["in_flight"]
            self._stop_message = f"{left} rows are not in a final state"
        return RunOutcome(
            complete=complete,
            stop_reason=self._stop_reason,
            message=self._stop_message,
            counts=counts,
            sent=self.progress.sent,
            reconciled=reconciled,
            requeued=requeued,
            opted_out=opted_out,
        )

    # -- Reconciliation ---------------------------------------------------------------------

    async def _reconcile(self, client: MessagingClient, status: str) -> ReconcileSummary | None:
        """Look up every row with ``status`` (``in_flight`` or ``ambiguous``) in Bandwidth's list.

        One keyset-paged pass over those rows, a page at a time: a page is recorded before the
        next is read, so memory stays bounded whatever their number.
        """
        summary: ReconcileSummary | None = None
        await self.journal.flush()
        chunk: list[RowRecord] = []
        async for row in self.journal.rows_with_status(status, batch=RECONCILE_BATCH):
            chunk.append(row)
            if len(chunk) >= RECONCILE_BATCH:
                summary = _merge(summary, await self._reconcile_chunk(client, status, chunk))
                chunk = []
                if self.stopping:
                    break
        if chunk and not self.stopping:
            summary = _merge(summary, await self._reconcile_chunk(client, status, chunk))
        return summary

    async def _reconcile_chunk(
        self, client: MessagingClient, status: str, rows: list[RowRecord]
    ) -> ReconcileSummary | None:
        journal = self.journal
        opts = self.options
        retry = opts.retry or client.retry
        # A row's last attempt leaves at most the retry deadline after its mark, and is
        # answered (or given up) within the request timeout.
        horizon = retry.deadline + DEFAULT_TIMEOUT + CLOCK_MARGIN
        if status == RowStatus.IN_FLIGHT:
            subject = f"{len(rows)} rows that were in flight when a previous run stopped"
            label = "in flight when a run stopped"
        else:
            subject = f"{len(rows)} ambiguous rows"
            label = "ambiguous"
        wait = settle_deadline(rows, self._last_write, opts.settle) - time.time()
        if wait > 0:
            self.progress.phase = Phase.SETTLING
            self._note(NoteKind.SETTLING, rows=len(rows), status=status, seconds=wait)
            await self._pause(wait)
            if self.stopping:
                return None
        self.progress.phase = Phase.RECONCILING
        self._note(NoteKind.RECONCILING, rows=len(rows), status=status)
        try:
            found, reasons, queries = await reconcile_rows(client, self.journal, rows, horizon=horizon, now=time.time())
        except ReconcileError as exc:
            self.request_stop(StopReason.FATAL, f"cannot check the {subject}: {exc}. Nothing was sent")
            return None
        accepted = 0
        for row in rows:
            mid = found.get(row.key)
            if mid is not None:
                accepted += 1
                journal.record_result(row.key, status="accepted", message_id=mid)
            else:
                why = reasons.get(row.key, "no matching message in Bandwidth's list")
                journal.record_result(
                    row.key, status="ambiguous", error=f"{label}; {why}: it may or may not have been sent"
                )
        await journal.flush()
        unproven = len(rows) - accepted
        self._note(NoteKind.RECONCILED, rows=len(rows), status=status, accepted=accepted)
        return ReconcileSummary(rows=len(rows), accepted=accepted, ambiguous=unproven, queries=queries)

    # -- Send pass ----------------------------------------------------------------------------

    def _requests(self, counter: itertools.count[int], pages: _PendingPages) -> Generator[MessageRequest, None, None]:
        """Pending rows as requests, in line order; a row that no longer validates fails here.

        A plain iterator over prefetched pages (``send_many`` pulls it without a coroutine per
        row): it ends early if the next page is not fetched yet when this one runs out, which
        a page's worth of sends makes rare; the next pass then goes on from there.
        """
        journal = self.journal
        progress = self.progress
        keys = self._keys
        quiet = self.options.quiet_hours
        page: list[PendingRow] | None = pages.first
        while page:
            for row in page:
                if self.stopping:
                    return
                try:
                    request = row.message_request()
                except ValidationError as exc:
                    # E.g. its expiration passed since it was loaded: certainly not sent.
                    journal.record_result(row.key, status="failed", error=format_field_errors(exc.field_errors))
                    progress.apply(RowStatus.PENDING, Event.FAILED)
                    continue
                if quiet is not None and not self._may_go(quiet, row, request):
                    continue
                keys[next(counter)] = row.key
                yield request
            page = pages.ready()

    def _may_go(self, quiet: QuietHours, row: PendingRow, request: MessageRequest) -> bool:
        """Whether quiet hours let ``request`` go now; if not, the row is held until they do."""
        now = self._clock()
        at = datetime.fromtimestamp(now, UTC)
        check = quiet.check((row.zone,), at) if row.zone else quiet.check_numbers(request.to, at)
        if check.allowed:
            return True
        # Never allowed within the search horizon (zones too far apart, or none known): held
        # for the horizon, then checked again.
        until = check.next_allowed.timestamp() if check.next_allowed else now + QUIET_SEARCH_HORIZON.total_seconds()
        self._holds.append((row.key, until))
        return False

    async def _before_send(self, index: int, request: MessageRequest) -> None:
        """Commit the row's ``in_flight`` mark; runs right before its first attempt leaves."""
        if self._stop_reason is not None:
            raise StopRequestedError("the run is stopping")
        assert self._room is not None and self._journal is not None
        key = self._keys[index]
        # Keep marked-but-unrecorded rows within `concurrency` (the module's invariant).
        while self._unresolved >= self.options.concurrency:
            self._room.clear()
            await self._room.wait()
            if self.stopping:
                raise StopRequestedError("the run is stopping")
        self._unresolved += 1
        self._marked.add(index)
        try:
            await self._journal.mark_in_flight(key)
        except JournalStateError:
            self._release(index)
            raise
        self.progress.apply(_PENDING, _MARKED)

    def _release(self, index: int) -> bool:
        """Forget a marked input; True if it was marked."""
        if index not in self._marked:
            return False
        self._marked.discard(index)
        self._unresolved -= 1
        assert self._room is not None
        self._room.set()
        return True

    async def _send_pass(self, client: MessagingClient) -> int:
        """One pass over the pending rows; returns how many were taken."""
        opts = self.options
        counter = itertools.count()
        self._keys.clear()
        quiet = opts.quiet_hours is not None
        pages = _PendingPages(self.journal, self._clock() if quiet else None)
        await pages.start()
        requests = self._requests(counter, pages)
        stream = client.send_many(
            requests,
            concurrency=opts.concurrency,
            rate=opts.rate,
            retry=opts.retry,
            before_send=self._before_send,
        )
        try:
            await self._consuming.run(stream, self._on_result, lambda: self.stopping)
        finally:
            requests.close()
            pages.close()
        return next(counter)

    def _on_result(self, result: SendResult) -> None:
        """Record one send's result in the journal (without waiting) and in the counters."""
        if self._observe is not None:
            self._observe(result)
        key = self._keys.pop(result.index, None)
        if key is None:
            return
        marked = self._release(result.index)
        progress = self.progress
        journal = self.journal
        error = result.error
        current = _IN_FLIGHT if marked else _PENDING
        try:
            if isinstance(error, JournalStateError):
                # The row became final meanwhile (a callback proved it sent): nothing to record.
                # A row skipped by a STOP reply was counted when the reply was applied.
                if error.status is not None and error.status != _SKIPPED:
                    progress.by_status[error.status] = progress.by_status.get(error.status, 0) + 1
                    progress.by_status[current] = progress.by_status.get(current, 0) - 1
                return
            if isinstance(error, JournalError):
                self.request_stop(StopReason.FATAL, f"the journal failed: {error}")
                return
            event = _TO_NOT_SENT if isinstance(error, StopRequestedError) else result_event(result.outcome, error)
            if event is None:
                return  # may be on the wire: stays in flight, for the next run to reconcile
            if event is _TO_ACCEPTED:
                message = result.message
                assert message is not None
                cost = (
                    total_segments(message.segment_count, len(message.to))
                    if message.segment_count is not None
                    else (message_cost(result.request) if result.request is not None else None)
                )
                journal.record_result(
                    key,
                    status=_ACCEPTED,
                    message_id=message.id,
                    attempts=result.attempts,
                    latency=result.latency,
                    segments=cost,
                )
                progress.sent += 1
                progress.segments += cost or 0
            elif event is _TO_NOT_SENT:
                # Never left: back to pending (only a marked row needs writing back).
                if marked:
                    err = str(error) if isinstance(error, AuthenticationError) else None
                    journal.record_result(key, status=_PENDING, error=err, attempts=result.attempts)
                if isinstance(error, AuthenticationError):
                    self.request_stop(StopReason.FATAL, f"Bandwidth refused the credentials ({error}); check them")
            else:
                code = error.status_code if isinstance(error, APIStatusError) else None
                journal.record_result(
                    key,
                    status=RowStatus.AMBIGUOUS if event is Event.AMBIGUOUS else RowStatus.FAILED,
                    error=str(error),
                    error_code=None if event is Event.AMBIGUOUS else code,
                    attempts=result.attempts,
                    latency=result.latency,
                )
            progress.apply(current, event)
            if event is not _TO_NOT_SENT:
                self._window.add(event is not _TO_ACCEPTED)
        except JournalError as exc:
            self.request_stop(StopReason.FATAL, f"the journal failed: {exc}")
            return
        limit = self.options.max_error_rate
        if limit is not None and self._window.exceeded(limit):
            rate = self._window.rate or 0.0
            self.request_stop(
                StopReason.ERROR_RATE,
                f"{rate:.0%} of the last {self._window.count} sends failed or were ambiguous, "
                f"over the limit of {limit:g}",
            )

    # -- Delivery -----------------------------------------------------------------------------

    async def wait_for_delivery(self, seconds: float, *, activity: Callable[[], int] | None = None) -> int:
        """Wait up to ``seconds`` until every accepted row has a final delivery receipt.

        ``activity()`` (e.g. the callback receiver's count of recorded events) lets the wait
        skip looking at the journal when nothing new arrived. Returns how many accepted rows
        are still awaiting a receipt (0: all in). Returns early on :meth:`request_stop`.
        """
        journal = self.journal
        progress = self.progress
        progress.phase = Phase.DELIVERY
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        seen: int | None = None
        awaiting = -1
        while True:
            marker = activity() if activity is not None else None
            if marker is None or marker != seen or awaiting < 0:
                seen = marker
                await journal.flush()
                counts = await journal.counts()
                progress.by_status = dict(counts.by_status)
                progress.delivered = counts.by_delivery.get("delivered", 0)
                progress.delivery_failed = counts.by_delivery.get("failed", 0)
                awaiting = max(0, counts["accepted"] - progress.delivered - progress.delivery_failed)
                if awaiting == 0:
                    break
            left = deadline - loop.time()
            if left <= 0 or self.stopping:
                break
            await self._pause(min(DELIVERY_POLL_INTERVAL, left))
        progress.phase = Phase.DONE
        return awaiting

    async def rows_with_status(self, status: str, limit: int) -> list[RowRecord]:
        """The first ``limit`` rows with ``status``, in line order (e.g. invalid rows to show)."""
        return await first_rows(self.journal, status, limit)


async def consume(stream: SendStream, on_result: Callable[[SendResult], None], stopping: Callable[[], bool]) -> None:
    """Hand every result of ``stream`` to ``on_result`` until it ends, or in order once ``stopping()``.

    Results the stream produced but nobody read (a stop, a cancellation) are handed over too,
    so every input that was taken gets its one result.
    """
    try:
        try:
            async with stream:
                async for result in stream:
                    on_result(result)
                    if stopping():
                        break
        except asyncio.CancelledError:
            # Cancelled during the orderly close (a second Ctrl-C): cancel what it waited for.
            if not stream.done:
                await stream.__aexit__(asyncio.CancelledError, None, None)
            raise
    finally:
        for result in stream.unconsumed:
            on_result(result)
        stream.unconsumed.clear()


class Consuming:
    """:func:`consume` for an owner that may be told to stop from anywhere (a signal, an error
    rate, a lost Redis): :meth:`stop` stops the stream being consumed at once, so that rows
    waiting for the limiter go back now rather than at their turn."""

    __slots__ = ("_stream",)

    def __init__(self) -> None:
        self._stream: SendStream | None = None

    async def run(
        self, stream: SendStream, on_result: Callable[[SendResult], None], stopping: Callable[[], bool]
    ) -> None:
        self._stream = stream
        try:
            await consume(stream, on_result, stopping)
        finally:
            self._stream = None

    def stop(self) -> None:
        if self._stream is not None:
            self._stream.stop()


#: The settings a resume must not change, as a front end names them.
_SETTING_NAMES: Final = {
    "application_id": "application id",
    "from": "sender",
    "key_column": "key column",
    "priority": "priority",
    "expiration": "expiration",
    "strict_numbers": "strict number checks",
    "timezone_column": "time zone column",
}


async def load_campaign(
    store: CampaignStore,
    options: CampaignOptions,
    *,
    where: str,
    progress: RunProgress,
    note: Callable[..., None],
    stopping: Callable[[], bool],
    on_info: Callable[[CampaignInfo], None] | None = None,
) -> tuple[CampaignInfo, bool]:
    """Create or resume the campaign in ``store`` and load the rows not yet there; (record, resumed).

    The load pass of :meth:`CampaignRunner.load`, for any store: the input is read as a stream,
    in batches; a rerun re-reads the file from the start (so duplicate keys are still caught) and
    adds only rows past the store's ``loaded_through`` (adding is idempotent by key and line).
    ``where`` names the store in a :class:`JournalMismatchError`. Returns early, incomplete, once
    ``stopping()``.
    """
    opts = options
    progress.phase = Phase.LOADING
    template = Template(opts.template) if opts.template is not None else None
    # The store reports duplicate keys (even across a resume), so the reader need not remember
    # every key: memory stays flat whatever the file's size.
    with read_rows(opts.input_path, fmt=opts.fmt, key_column=opts.key_column, track_duplicates=False) as reader:
        existing = await store.campaign_info()
        info = await store.init_campaign(
            input_path=opts.input_path,
            template=opts.template,
            settings=opts.journal_settings(),
            campaign_id=opts.campaign_id,
        )
        ours = opts.journal_settings()
        problems = [
            _SETTING_NAMES.get(name, name)
            for name, value in ours.items()
            if name in info.settings and info.settings.get(name) != value
        ]
        if problems:
            raise JournalMismatchError(where, problems)
        if on_info is not None:
            on_info(info)
        progress.load_size = info.input_size
        if not info.load_complete:
            if info.loaded_through:
                note(NoteKind.LOAD_RESUMED, line=info.loaded_through)
            if await _load_rows(store, opts, reader, info, template, progress, stopping):
                info = await store.campaign_info() or info
                if on_info is not None:
                    on_info(info)
    progress.total = await store.total_rows()
    return info, existing is not None


async def _load_rows(
    store: CampaignStore,
    opts: CampaignOptions,
    reader: Any,
    info: CampaignInfo,
    template: Template | None,
    progress: RunProgress,
    stopping: Callable[[], bool],
) -> bool:
    """Read the file, adding rows past ``loaded_through``; True when the whole file is in."""
    skip_through = info.loaded_through
    # Without --strict-numbers, impossible numbers are only flagged, if libphonenumber is there.
    flag_numbers = not opts.strict_numbers and numbers_checkable()
    batch: list[NewRow] = []
    #: Batches handed to the store and not yet written, oldest first.
    writing: collections.deque[asyncio.Future[int]] = collections.deque()
    give_turn = store.give_turn
    last_line = 0
    try:
        for row in reader:
            last_line = row.line
            progress.loaded_rows += 1
            if row.line <= skip_through:
                continue
            batch.append(
                prepare_row(
                    row,
                    template=template,
                    application_id=opts.application_id,
                    default_from=opts.default_from,
                    campaign_id=info.campaign_id,
                    opt_out=opts.opt_out,
                    strict_numbers=opts.strict_numbers,
                    flag_numbers=flag_numbers,
                    timezone_column=opts.timezone_column,
                    priority=opts.priority,
                    expiration=opts.expiration,
                )
            )
            size = len(batch)
            if size >= LOAD_BATCH:
                # Prepare the next batches while the store writes this one.
                if len(writing) >= LOAD_WRITES_AHEAD:
                    await writing.popleft()
                writing.append(asyncio.ensure_future(store.add_rows(batch, loaded_through=batch[-1].line)))
                batch = []
                progress.load_bytes = reader.bytes_read
                if stopping():
                    while writing:
                        await writing.popleft()
                    return False
            elif size % LOAD_TURN_ROWS == 0:
                give_turn()
                if size % LOAD_YIELD_ROWS == 0:
                    # Let the loop run: the batch being written reaches the store's thread only
                    # when its task gets a turn (and signals and progress displays need turns too).
                    await asyncio.sleep(0)
        while writing:
            await writing.popleft()
    except Exception:
        # Batches already handed over still finish (adding rows is idempotent): none is left
        # running, its error unread, behind the one raised here.
        await asyncio.gather(*writing, return_exceptions=True)
        raise
    if batch:
        await store.add_rows(batch, loaded_through=batch[-1].line)
    await store.set_loaded_through(max(last_line, skip_through), complete=True)
    progress.load_bytes = reader.bytes_read
    return True


class _PendingPages:
    """Pending rows a page at a time, the next page always being fetched while one is sent."""

    __slots__ = ("_journal", "_next", "_released_at", "first")

    def __init__(self, journal: Journal, released_at: float | None = None) -> None:
        self._journal = journal
        #: With quiet hours: rows held past this time are left out.
        self._released_at = released_at
        self._next: asyncio.Future[list[PendingRow]] | None = None
        self.first: list[PendingRow] = []

    async def start(self) -> None:
        self.first = await self._journal.pending_page(batch=PAGE_SIZE, released_at=self._released_at)
        self._prefetch(self.first)

    def _prefetch(self, page: list[PendingRow]) -> None:
        if len(page) < PAGE_SIZE:
            self._next = None
            return
        after = (page[-1].line, page[-1].key)
        self._next = self._journal.pending_page(after, PAGE_SIZE, released_at=self._released_at)

    def ready(self) -> list[PendingRow] | None:
        """The next page, if fetched already (the one after is then requested); an empty
        list when there is none, None when it is not fetched yet."""
        future = self._next
        if future is None:
            return []
        if not future.done():
            return None
        page = future.result()
        self._prefetch(page)
        return page

    def close(self) -> None:
        """Drop the page being fetched (nobody will read it)."""
        future, self._next = self._next, None
        if future is not None and not future.cancel():
            future.exception()  # retrieved, so a failed fetch is not reported as unhandled


def _merge(a: ReconcileSummary | None, b: ReconcileSummary | None) -> ReconcileSummary | None:
    if a is None:
        return b
    if b is None:
        return a
    return ReconcileSummary(
        rows=a.rows + b.rows,
        accepted=a.accepted + b.accepted,
        ambiguous=a.ambiguous + b.ambiguous,
        queries=a.queries + b.queries,
    )
