"""A worker of a shared campaign: takes rows from Redis, sends them, records every fate there.

:class:`CampaignWorker` is the fleet's counterpart of the single-machine send pass, built from
the same pieces: the transition table (every change goes through :func:`SharedCampaign.record`
with an :class:`~bwasync.campaign.Event`), :func:`~bwasync.campaign._runner.result_event` (what a
send result does to its row), the error-rate window, and the message-list reconciliation::

    read (XREADGROUP) ─▶ mark in flight (Lua, owner checked) ─▶ send ─▶ record (Lua) + XACK
    a dead worker's entries, idle ≥ claim_idle ─▶ XAUTOCLAIM ─▶ pending: sent
                                                             in flight: reconciled (found →
                                                             accepted, else ambiguous)

Guarantees (the journal's, for the fleet):

* A row is marked ``in_flight`` in Redis, atomically and only by the consumer holding its queue
  entry, before its request leaves. A row has at most one entry (it is requeued only by the
  consumer holding the old one), and a worker that takes over an entry whose row is in flight
  looks it up in Bandwidth's message list instead of sending it: a marked row is never sent
  again by the fleet, and never resent silently.
* A live worker keeps the entries it holds fresh (``TOUCH`` every ``claim_idle / 3``), so only
  a dead (or cut-off) worker's entries go idle and are taken over.
* If Redis fails under a worker, the worker stops taking rows and keeps what it knows and could
  not record (202s, failures, rows whose mark failed and so never left); once Redis answers, it
  records them (:meth:`CampaignWorker.replay`). What it never learnt (a request on the wire
  when it died) is reconciled like a crash's leftovers.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Final

from redis.exceptions import RedisError, ResponseError

from .._client import MessagingClient, check_count
from .._constants import DEFAULT_CONCURRENCY, DEFAULT_TIMEOUT
from .._exceptions import (
    APIStatusError,
    AuthenticationError,
    RedisUnavailableError,
    StopRequestedError,
    ValidationError,
)
from .._fanout import SendResult
from .._models import MessageRequest
from .._retry import RetryPolicy
from .._segments import message_cost, total_segments
from ..campaign._constants import DEFAULT_MAX_ERROR_RATE, DEFAULT_SETTLE
from ..campaign._exceptions import ReconcileError
from ..campaign._inputs import format_field_errors
from ..campaign._reconcile import CLOCK_MARGIN, ReconcileSummary, reconcile_rows, settle_deadline
from ..campaign._records import PendingRow
from ..campaign._rowstate import Event, RowStatus
from ..campaign._runner import (
    Consuming,
    ErrorWindow,
    NoteKind,
    Phase,
    RunNote,
    RunProgress,
    StopReason,
    result_event,
)
from ._campaign import Entry, SharedCampaign
from ._constants import CLAIM_POLL, DEFAULT_CLAIM_IDLE

__all__ = ["CampaignWorker", "WorkerOptions", "WorkerOutcome"]

#: Errors that mean Redis did not answer (the worker stops taking rows).
_REDIS_ERRORS = (RedisError, OSError)


#: Why a worker stops when the campaign's record vanished from Redis (it restarted empty, or the
#: keys were deleted): what was sent is not known there any more, so nothing more is sent (and
#: ``campaign run`` refuses to load the file again as new).
_GONE: Final = (
    "the campaign's record is gone from Redis (Redis restarted empty, or its keys were deleted): nothing more is sent"
)


class _Refused(Exception):
    """The row may not be sent: its entry moved to another worker, or its state forbids it."""

    def __init__(self, state: str) -> None:
        super().__init__(f"not sent: the row is {state}")
        self.state = state


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerOptions:
    """How one worker sends (the campaign record's run options, plus this worker's own)."""

    concurrency: int = DEFAULT_CONCURRENCY
    retry: RetryPolicy | None = None
    max_error_rate: float | None = DEFAULT_MAX_ERROR_RATE
    #: Seconds a dead worker's in-flight row must age before it is looked up.
    settle: float = DEFAULT_SETTLE
    #: Seconds an entry must be idle before another worker takes it over.
    claim_idle: float = DEFAULT_CLAIM_IDLE

    def __post_init__(self) -> None:
        check_count("concurrency", self.concurrency, 1)  # send_many's check, before anything is claimed
        if self.claim_idle <= 0:
            raise ValueError("claim_idle must be positive")

    @classmethod
    def from_record(cls, run: dict[str, Any], **overrides: Any) -> WorkerOptions:
        """The options a campaign record's ``run`` section gives (``overrides`` win when not None)."""
        values: dict[str, Any] = {
            "concurrency": run.get("concurrency", DEFAULT_CONCURRENCY),
            "max_error_rate": run.get("max_error_rate", DEFAULT_MAX_ERROR_RATE),
            "settle": run.get("settle", DEFAULT_SETTLE),
            "claim_idle": run.get("claim_idle", DEFAULT_CLAIM_IDLE),
        }
        if run.get("max_attempts"):
            values["retry"] = RetryPolicy(max_attempts=int(run["max_attempts"]))
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


@dataclass(frozen=True, slots=True)
class WorkerOutcome:
    """How a worker's run ended."""

    #: Every row of the campaign is in a final state.
    complete: bool
    stop_reason: StopReason | None
    message: str | None
    #: Rows this worker had accepted.
    sent: int
    #: What this worker's reconciliations found.
    reconciled: ReconcileSummary
    #: Redis failed under the worker (it may retry once Redis answers again).
    redis_failed: bool = False
    #: What Redis failed to take meanwhile, known here: send results (a 202's message id, a
    #: failure, a row certainly not sent because its mark failed) and rows read but never sent.
    #: :meth:`CampaignWorker.replay` records them once Redis answers again.
    unrecorded: tuple[tuple[Entry, PendingRow, SendResult | None], ...] = ()


class CampaignWorker:
    """Sends a shared campaign's rows until every row is final, or a stop (see the module docstring).

    ::

        worker = CampaignWorker(SharedCampaign(redis, campaign_id), WorkerOptions(concurrency=50))
        async with MessagingClient(ACCOUNT, ..., limiter=RedisLimiter(redis, account_id=ACCOUNT)) as client:
            outcome = await worker.run(client)
    """

    def __init__(
        self,
        campaign: SharedCampaign,
        options: WorkerOptions,
        *,
        on_note: Callable[[RunNote], None] | None = None,
        on_result: Callable[[SendResult], object] | None = None,
        name: str | None = None,
    ) -> None:
        self.campaign = campaign
        #: Called with every send's result (e.g. ``ClientMetrics.observe``).
        self._observe = on_result
        self.options = options
        self.progress = RunProgress()
        self._on_note = on_note
        self._base_name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.consumer = ""
        self._window = ErrorWindow()
        self._stop_reason: StopReason | None = None
        self._stop_message: str | None = None
        self._redis_failed = False
        self._stopped = asyncio.Event()
        #: index -> (entry, row) for rows given to send_many and not yet reported.
        self._taken: dict[int, tuple[Entry, PendingRow]] = {}
        #: Read and not yet given to send_many.
        self._buffer: collections.deque[tuple[Entry, PendingRow]] = collections.deque()
        #: Entries this worker holds and must keep fresh (buffered, sending, reconciling).
        self._held: set[str] = set()
        #: The send run's results, while it runs (a stop stops it at once).
        self._consuming = Consuming()
        self._reconciled = ReconcileSummary()
        #: Results on their way to Redis.
        self._recording: set[asyncio.Future[None]] = set()
        #: What Redis failed to take (see ``WorkerOutcome.unrecorded``).
        self._unrecorded: list[tuple[Entry, PendingRow, SendResult | None]] = []

    def __repr__(self) -> str:
        return f"<CampaignWorker {self.campaign.campaign_id} {self.consumer} stop={self._stop_reason}>"

    @property
    def stopping(self) -> bool:
        return self._stop_reason is not None

    def request_stop(self, reason: StopReason, message: str | None = None) -> None:
        """Stop in order: take no new row, finish what is on the wire. The first reason wins."""
        if self._stop_reason is None:
            self._stop_reason = reason
            self._stop_message = message
            self._stopped.set()
            self._consuming.stop()

    def _redis_down(self, exc: BaseException) -> None:
        if isinstance(exc, ResponseError) and str(exc).startswith("NOGROUP"):
            # The queue went with the campaign's other keys: Redis answers, it lost the campaign.
            self.request_stop(StopReason.FATAL, _GONE)
            return
        self._redis_failed = True
        self.request_stop(StopReason.FATAL, f"Redis failed: {type(exc).__name__}: {exc}")

    def _note(self, kind: NoteKind, **values: Any) -> None:
        if self._on_note is not None:
            self._on_note(RunNote(kind, **values))

    async def _pause(self, seconds: float) -> None:
        if seconds > 0:
            await _set_within(self._stopped, seconds)

    # -- The run ------------------------------------------------------------------------------

    async def run(self, client: MessagingClient) -> WorkerOutcome:
        """Send until the campaign is complete or a stop; never raises for Redis failing."""
        # A fresh consumer name per run: what an earlier run (or a Redis outage) left under the
        # old one goes idle and is taken over like any dead worker's.
        self.consumer = f"{self._base_name}:{secrets.token_hex(3)}"
        self.progress.phase = Phase.SENDING
        self.progress.started = time.monotonic()
        stop_beating = asyncio.Event()
        heartbeat = asyncio.create_task(self._heartbeat(stop_beating))
        try:
            await self.campaign.ensure_group()
            await self._send(client)
        except _REDIS_ERRORS as exc:
            self._redis_down(exc)
        finally:
            # Told to end, cancelled (so that it need not finish a touch first) and waited for: it never
            # outlives the run (which would keep this worker's entries fresh for ever).
            stop_beating.set()
            heartbeat.cancel()
            await asyncio.wait((heartbeat,))
            if not heartbeat.cancelled():
                heartbeat.result()  # what it did not expect is the run's error (never left unretrieved)
        complete = False
        if not self._redis_failed:
            try:
                await self._give_back()
                complete = await self.campaign.complete()
            except _REDIS_ERRORS as exc:
                self._redis_down(exc)
        self._unrecorded += [(entry, row, None) for entry, row in self._buffer]
        self._buffer.clear()
        self.progress.phase = Phase.DONE
        return WorkerOutcome(
            complete=complete,
            stop_reason=None if complete else self._stop_reason,
            message=self._stop_message,
            sent=self.progress.sent,
            reconciled=self._reconciled,
            redis_failed=self._redis_failed,
            unrecorded=tuple(self._unrecorded),
        )

    async def replay(self, unrecorded: tuple[tuple[Entry, PendingRow, SendResult | None], ...]) -> None:
        """Record what an earlier run of this process knew and Redis could not take (see
        :attr:`WorkerOutcome.unrecorded`): exact outcomes instead of a reconciliation. A row whose
        send is known not to have left goes back to the queue, whatever it was judged meanwhile
        (nobody else may send a row that was marked: it was certainly never sent)."""
        for entry, row, result in unrecorded:
            if result is None:
                await self.campaign.record(entry, Event.NOT_SENT)
            else:
                await self._record(entry, row, result)

    async def _give_back(self) -> None:
        """Rows read and never given to the sender go back to the queue for others."""
        while self._buffer:
            entry, _ = self._buffer.popleft()
            await self.campaign.record(entry, Event.NOT_SENT)
            self._held.discard(entry.entry_id)

    async def _heartbeat(self, done: asyncio.Event) -> None:
        """Keep the entries this worker holds fresh, every ``claim_idle / 3``, until ``done`` is set.

        It ends by ``done``, not by its cancellation alone: a cancellation can be lost on its way
        through redis-py (on Python 3.11 it sends every command under ``asyncio.wait_for``, which
        drops a cancellation that lands as the send completes: CPython gh-86296). A heartbeat
        ended by ``cancel()`` alone then touched on for ever, after Redis restarted under it most
        often (every task wakes at once when Redis is back), and its run waited for it: a worker
        that neither sent nor ended, holding rows that nobody else would take over.
        """
        interval = self.options.claim_idle / 3
        while not await _set_within(done, interval):
            held = list(self._held)
            with contextlib.suppress(*_REDIS_ERRORS):
                await self.campaign.touch(self.consumer, held)

    async def _send(self, client: MessagingClient) -> None:
        opts = self.options
        stream = client.send_many(
            self._requests(client), concurrency=opts.concurrency, retry=opts.retry, before_send=self._before_send
        )
        try:
            await self._consuming.run(stream, self._on_result, lambda: self.stopping)
        finally:
            # Every result handed over is recorded (or found unrecordable) before the run ends.
            while self._recording:
                await asyncio.gather(*self._recording, return_exceptions=True)

    async def _requests(self, client: MessagingClient) -> AsyncIterator[MessageRequest]:
        """Sendable rows as requests, read from the queue (and taken over from dead workers)."""
        index = 0
        while not self.stopping:
            if not self._buffer:
                try:
                    more = await self._fill(client)
                except _REDIS_ERRORS as exc:
                    self._redis_down(exc)
                    return
                if not more:
                    return
                continue
            entry, row = self._buffer.popleft()
            try:
                request = row.message_request()
            except ValidationError as exc:
                # E.g. its expiration passed since it was loaded: certainly not sent.
                try:
                    await self.campaign.record(
                        entry,
                        Event.FAILED,
                        result={"error": format_field_errors(exc.field_errors)},
                    )
                except _REDIS_ERRORS as err:
                    self._redis_down(err)
                    return
                self._held.discard(entry.entry_id)
                continue
            self._taken[index] = (entry, row)
            index += 1
            yield request

    async def _fill(self, client: MessagingClient) -> bool:
        """Read the next rows to send into the buffer; False when there is nothing left to do."""
        campaign = self.campaign
        opts = self.options
        while not self.stopping:
            exists, held, paused = await campaign.gate()
            if not exists:
                self.request_stop(StopReason.FATAL, _GONE)
                return False
            if paused is not None:
                self.request_stop(StopReason.ERROR_RATE, paused)
                return False
            if held:
                await self._pause(CLAIM_POLL)  # its load is being checked: nothing may go yet
                continue
            entries = await campaign.claim_idle(self.consumer, int(opts.claim_idle * 1000), opts.concurrency)
            if entries:
                await self._take_over(client, entries)
            else:
                entries = await campaign.read_new(self.consumer, opts.concurrency, int(CLAIM_POLL * 1000))
                await self._take(entries)
            if self._buffer:
                return True
            if not entries and not self._taken and await campaign.complete():
                return False
        return False

    async def _take(self, entries: list[Entry]) -> None:
        """Buffer the entries whose row is pending; settle the others (decided elsewhere)."""
        if not entries:
            return
        keys = [e.key for e in entries]
        rows = await self.campaign.loaded_rows(keys)
        states = await self.campaign.states(keys)
        for entry, row, state in zip(entries, rows, states, strict=True):
            if row is None or state != RowStatus.PENDING or not row.get("request"):
                await self.campaign.settle(entry.entry_id)
                continue
            self._held.add(entry.entry_id)
            self._buffer.append((entry, _pending_row(entry.key, row)))

    async def _take_over(self, client: MessagingClient, entries: list[Entry]) -> None:
        """Entries of a dead worker: pending rows are sent, rows in flight reconciled."""
        states = await self.campaign.states([e.key for e in entries])
        sendable: list[Entry] = []
        in_flight: list[Entry] = []
        for entry, state in zip(entries, states, strict=True):
            if state == RowStatus.IN_FLIGHT:
                in_flight.append(entry)
            else:
                sendable.append(entry)
        await self._take(sendable)
        if in_flight:
            for e in in_flight:
                self._held.add(e.entry_id)
            try:
                await self._reconcile(client, in_flight)
            finally:
                for e in in_flight:
                    self._held.discard(e.entry_id)

    async def _reconcile(self, client: MessagingClient, entries: list[Entry]) -> None:
        """Look a dead worker's in-flight rows up in Bandwidth's list: found → accepted, else
        ambiguous (never resent silently). See :mod:`bwasync.campaign._reconcile`."""
        campaign = self.campaign
        opts = self.options
        by_key = {e.key: e for e in entries}
        rows = await campaign.row_records(list(by_key))
        retry = opts.retry or client.retry
        horizon = retry.deadline + DEFAULT_TIMEOUT + CLOCK_MARGIN
        # The dead worker last touched its entries at least ``claim_idle`` ago.
        wait = settle_deadline(rows, time.time() - opts.claim_idle, opts.settle) - time.time()
        if wait > 0:
            self.progress.phase = Phase.SETTLING
            self._note(NoteKind.SETTLING, rows=len(rows), status=RowStatus.IN_FLIGHT, seconds=wait)
            await self._pause(wait)
            if self.stopping:
                return
        self.progress.phase = Phase.RECONCILING
        self._note(NoteKind.RECONCILING, rows=len(rows), status=RowStatus.IN_FLIGHT)
        try:
            found, reasons, queries = await reconcile_rows(client, campaign, rows, horizon=horizon, now=time.time())
        except ReconcileError as exc:
            self.request_stop(StopReason.FATAL, f"cannot check rows a dead worker left in flight: {exc}")
            return
        accepted = 0
        for row in rows:
            mid = found.get(row.key)
            if mid is not None:
                accepted += 1
                await campaign.record(
                    by_key[row.key],
                    Event.ACCEPTED,
                    result={"message_id": mid, "attempts": row.attempts},
                    message_id=mid,
                    segments=row.segments,
                )
            else:
                why = reasons.get(row.key, "no matching message in Bandwidth's list")
                await campaign.record(
                    by_key[row.key],
                    Event.AMBIGUOUS,
                    result={"error": f"in flight when a worker died; {why}: it may or may not have been sent"},
                )
        self._note(NoteKind.RECONCILED, rows=len(rows), status=RowStatus.IN_FLIGHT, accepted=accepted)
        r = self._reconciled
        r.rows += len(rows)
        r.accepted += accepted
        r.ambiguous += len(rows) - accepted
        r.queries += queries
        self.progress.phase = Phase.SENDING

    async def _before_send(self, index: int, request: MessageRequest) -> None:
        """Mark the row in flight in Redis; runs right before its first attempt leaves."""
        if self.stopping:
            raise StopRequestedError("the worker is stopping")
        entry, _ = self._taken[index]
        try:
            state = await self.campaign.mark(entry.key, entry.entry_id, entry.consumer)
        except _REDIS_ERRORS as exc:
            self._redis_down(exc)
            raise RedisUnavailableError(f"not sent: Redis failed at its mark ({type(exc).__name__})") from exc
        if state != "ok":
            if state == "gone":
                self.request_stop(StopReason.FATAL, _GONE)
            raise _Refused(state)
        self.progress.apply(RowStatus.PENDING, Event.MARKED)

    def _on_result(self, result: SendResult) -> None:
        """Record one send's result in Redis, and settle its entry, without waiting: results go
        to Redis together, a batch per round trip (see ``SharedCampaign``)."""
        taken = self._taken.pop(result.index, None)
        if taken is None:
            return
        if self._observe is not None:
            self._observe(result)
        entry, row = taken
        if isinstance(result.error, RedisUnavailableError) or self._redis_failed:
            # Redis failed (at the mark, or since): kept, to be recorded when it is back.
            self._unrecorded.append((entry, row, result))
            return
        task = asyncio.ensure_future(self._record_safely(entry, row, result))
        self._recording.add(task)
        task.add_done_callback(self._recording.discard)

    async def _record_safely(self, entry: Entry, row: PendingRow, result: SendResult) -> None:
        try:
            await self._record(entry, row, result)
        except _REDIS_ERRORS as exc:
            self._redis_down(exc)
            self._unrecorded.append((entry, row, result))

    async def _record(self, entry: Entry, row: PendingRow, result: SendResult) -> None:
        campaign = self.campaign
        error = result.error
        if isinstance(error, _Refused):
            self._held.discard(entry.entry_id)
            if error.state not in ("lost", "gone"):
                await campaign.settle(entry.entry_id)  # final already: decided elsewhere
            return
        # A stop, or a mark Redis failed to confirm: the request never left.
        not_sent = isinstance(error, (StopRequestedError, RedisUnavailableError))
        event = Event.NOT_SENT if not_sent else result_event(result.outcome, error)
        if event is None:
            # May be on the wire (cancelled): left in flight, taken over and reconciled.
            self._held.discard(entry.entry_id)
            return
        outcome: dict[str, Any] = {"attempts": result.attempts, "latency": result.latency or None}
        message_id: str | None = None
        cost = 0
        if event is Event.ACCEPTED:
            message = result.message
            assert message is not None
            message_id = message.id
            cost = (
                total_segments(message.segment_count, len(message.to))
                if message.segment_count is not None
                else (message_cost(result.request) if result.request is not None else row.segments)
            )
            outcome["message_id"] = message_id
        elif event is Event.NOT_SENT:
            outcome = {"error": str(error)} if isinstance(error, AuthenticationError) else {}
        else:
            outcome["error"] = str(error)
            if event is Event.FAILED and isinstance(error, APIStatusError):
                outcome["error_code"] = error.status_code
        if await campaign.record(entry, event, result=outcome or None, message_id=message_id, segments=cost) == "gone":
            self.request_stop(StopReason.FATAL, _GONE)
        self._held.discard(entry.entry_id)
        self.progress.apply(RowStatus.PENDING if not_sent else RowStatus.IN_FLIGHT, event)
        if event is Event.ACCEPTED:
            self.progress.sent += 1
            self.progress.segments += cost
        if isinstance(error, AuthenticationError):
            self.request_stop(StopReason.FATAL, f"Bandwidth refused the credentials ({error}); check them")
        if event is not Event.NOT_SENT:
            self._window.add(event is not Event.ACCEPTED)
        limit = self.options.max_error_rate
        if limit is not None and self._window.exceeded(limit):
            rate = self._window.rate or 0.0
            why = (
                f"{rate:.0%} of the last {self._window.count} sends failed or were ambiguous, "
                f"over the limit of {limit:g}"
            )
            await campaign.pause(why)
            self.request_stop(StopReason.ERROR_RATE, why)


async def _set_within(event: asyncio.Event, seconds: float) -> bool:
    """Whether ``event`` is set, waiting for it up to ``seconds`` (``asyncio.timeout``, not
    ``wait_for``: a cancellation of the caller is never lost here)."""
    if not event.is_set() and seconds > 0:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await event.wait()
    return event.is_set()


def _pending_row(key: str, row: dict[str, Any]) -> PendingRow:
    recipients = row.get("recipients") or []
    return PendingRow(
        key=key,
        line=int(row.get("line", 0)),
        request=row["request"],
        segments=int(row.get("segments") or 0),
        recipients=tuple(recipients) if isinstance(recipients, list) else (),
        sender=row.get("sender"),
        attempts=0,
        zone=row.get("zone"),
    )
