"""The command line of campaigns shared through Redis: ``campaign run/status/report --redis``
and ``bwasync worker``. Imported only when one of them runs (it needs the ``redis`` extra).

``campaign run FILE --redis URL --workers N`` loads the file into Redis (the same load pass as
a journal's, resumable and idempotent) and starts N ``bwasync worker --campaign ID`` processes
on this machine, passing them the credentials in their environment (never on a command line,
never in Redis). ``bwasync worker`` on any machine joins the same way. Status and report read
the same summary a journal gives and print it with the same renderers.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import click
import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from .._client import MessagingClient
from .._exceptions import BwasyncError
from .._fanout import SendResult
from ..campaign import (
    CampaignOptions,
    InputFileError,
    JournalError,
    JournalMismatchError,
    NoteKind,
    RunNote,
    RunOutcome,
    StopReason,
    TemplateError,
)
from ..campaign._preflight import mostly_invalid
from ..campaign._records import CampaignInfo
from ..campaign._report import first_rows
from ..campaign._rowstate import RowStatus
from ..campaign._runner import RunProgress, load_campaign
from ..emulator import Emulator
from ..redis import RedisLimiter
from ..redis._campaign import SharedCampaign, SharedCampaignError, campaign_ids, connect
from ..redis._constants import REDIS_OUTAGE, REDIS_RETRY_INTERVAL
from ..redis._loads import forget_load, loaded_at, loads_path, record_load
from ..redis._policy import redact_url
from ..redis._worker import CampaignWorker, WorkerOptions
from ._campaign._commands import read_report, show_report, show_status
from ._campaign._render import (
    SHOWN_INVALID,
    print_error,
    print_mostly_invalid,
    print_summary,
    print_warning,
    read_summary,
    word_no_rows,
    word_note,
)
from ._campaign._session import (
    EXIT_FATAL,
    EXIT_INTERRUPTED,
    EXIT_MOSTLY_INVALID,
    EXIT_OK,
    EXIT_PAUSED,
    EXIT_TERMINATED,
    EXIT_USAGE,
    exit_for,
    verdict,
)
from ._loop import on_signals
from ._metrics import worker_endpoint
from ._options import Connection, ConnectionOptions
from ._output import note
from ._worker import REDIS_ENV

if TYPE_CHECKING:
    from ..metrics import ClientMetrics

__all__ = ["SharedRun", "report_shared", "run_shared", "status_shared", "work", "work_shared"]

#: Which exit status of a local worker names the run's stop, most telling first.
_STOPS: Final = (
    (EXIT_PAUSED, StopReason.ERROR_RATE),
    (EXIT_FATAL, StopReason.FATAL),
    (EXIT_USAGE, StopReason.FATAL),
    (EXIT_TERMINATED, StopReason.TERMINATED),
    (EXIT_INTERRUPTED, StopReason.INTERRUPTED),
)


def client_for(url: str) -> aioredis.Redis:
    """A Redis client for ``url``, or a usage error (a malformed URL; the password never shown)."""
    try:
        return connect(url)
    except SharedCampaignError as exc:
        raise click.UsageError(str(exc)) from None


def where_of(redis: aioredis.Redis) -> str:
    """The Redis location for messages, without its password."""
    kwargs = redis.connection_pool.connection_kwargs
    return redact_url(f"redis://{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}")


def _why(exc: BaseException, redis: aioredis.Redis) -> str:
    text = (str(exc) or type(exc).__name__).rstrip(".")
    secret = redis.connection_pool.connection_kwargs.get("password")
    return text.replace(secret, "***") if secret else text


async def _answers(redis: aioredis.Redis) -> BaseException | None:
    """None if Redis answers a PING, else what went wrong."""
    try:
        await redis.ping()
    except (RedisError, OSError) as exc:
        return exc
    return None


async def _back(redis: aioredis.Redis, stopping: Callable[[], bool] = lambda: False) -> bool:
    """Wait until Redis answers again (an outage, a restart), up to ``REDIS_OUTAGE`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + REDIS_OUTAGE
    # Idle connections opened before the outage are dead even once Redis is back: drop them.
    await redis.connection_pool.disconnect(inuse_connections=False)
    while await _answers(redis) is not None:
        if loop.time() > deadline or stopping():
            return False
        await asyncio.sleep(REDIS_RETRY_INTERVAL)
    return True


async def _reach(redis: aioredis.Redis) -> bool:
    """PING Redis; False (and why, said) when it does not answer."""
    problem = await _answers(redis)
    if problem is not None:
        print_error(f"cannot reach Redis at {where_of(redis)}: {_why(problem, redis)}. Nothing was sent.")
        return False
    return True


async def _with_redis(url: str, body: Callable[[aioredis.Redis], Awaitable[int]], hint: str = "") -> int:
    """Run a command's ``body`` with a client for ``url``, once Redis answers; its exit status.

    Redis not answering at first: exit 1 before anything is done. Failing later: said (never
    with the password), exit 1, ``hint`` added.
    """
    redis = client_for(url)
    try:
        if not await _reach(redis):
            return EXIT_FATAL
        return await body(redis)
    except (RedisError, OSError) as exc:
        print_error(f"Redis failed: {_why(exc, redis)}.{hint}")
        return EXIT_FATAL
    finally:
        await redis.aclose()


async def _durable(redis: aioredis.Redis) -> bool:
    """Whether Redis writes every acknowledged write to disk (AOF, ``appendfsync always``); True
    when it does not let us read its configuration (a managed Redis: we cannot tell)."""
    try:
        config = {_text(k): _text(v) for k, v in (await redis.config_get("append*")).items()}
    except ResponseError:
        return True
    return config.get("appendonly") == "yes" and config.get("appendfsync") == "always"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def default_campaign_id(input_path: str) -> str:
    """The id of the campaign of an input file, when none is given: the same for every rerun of
    the same command (so it resumes), from the file's absolute path."""
    return hashlib.sha256(os.path.abspath(input_path).encode()).hexdigest()[:16]


# --- bwasync worker --------------------------------------------------------------------------------


async def work_shared(
    url: str,
    connection: ConnectionOptions,
    only: str | None,
    overrides: dict[str, Any],
    metrics: ClientMetrics | None = None,
) -> int:
    """``bwasync worker``: join every campaign not complete (or ``only``); the exit status.

    ``metrics`` (``--metrics``) is fed every send and request of every campaign joined."""

    async def join_all(redis: aioredis.Redis) -> int:
        ids = await campaign_ids(redis)
        if only is not None:
            if only not in ids:
                print_error(f"no campaign {only!r} in Redis at {where_of(redis)}")
                return EXIT_USAGE
            ids = [only]
        joined = 0
        for cid in ids:
            campaign = SharedCampaign(redis, cid, where=where_of(redis))
            if await campaign.complete():
                continue
            joined += 1
            status = await _join(campaign, connection, overrides, metrics)
            if status != EXIT_OK:
                return status
        if not joined:
            note(f"Nothing to do: no campaign in Redis at {where_of(redis)} has rows left to send.")
        return EXIT_OK

    return await _with_redis(url, join_all)


async def _join(
    campaign: SharedCampaign, connection: ConnectionOptions, overrides: dict[str, Any], metrics: ClientMetrics | None
) -> int:
    """Send one campaign's rows until it is complete (riding out Redis outages); the exit status."""
    try:
        run, account, base_url = await campaign.run_options()
    except SharedCampaignError as exc:
        print_error(str(exc))
        return EXIT_USAGE
    if connection.account_id and account and connection.account_id != account:
        print_error(f"campaign {campaign.campaign_id} belongs to another account than --account-id: not joined")
        return EXIT_USAGE
    try:
        resolved = dataclasses.replace(
            connection, account_id=connection.account_id or account, base_url=connection.base_url or base_url
        ).resolve(need_from=False, need_application=False)
        options = WorkerOptions.from_record(run, **overrides)
    except click.UsageError as exc:
        print_error(exc.format_message())
        return EXIT_USAGE
    except ValueError as exc:
        print_error(str(exc))
        return EXIT_USAGE
    limiter = RedisLimiter(campaign.redis, account_id=resolved.account_id, rate=run.get("rate"))
    try:
        async with (
            limiter,
            MessagingClient(
                resolved.account_id, limiter=limiter, concurrency=options.concurrency, **resolved.client_kwargs()
            ) as client,
        ):
            note(f"Joining campaign {campaign.campaign_id} ({options.concurrency} in flight).")
            if metrics is not None:
                metrics.instrument(client)
            observe = None if metrics is None else metrics.observe
            return await work(campaign, client, options, on_note=lambda n: note(word_note(n)), on_result=observe)
    except BwasyncError as exc:
        print_error(str(exc))
        return EXIT_FATAL


async def work(
    campaign: SharedCampaign,
    client: MessagingClient,
    options: WorkerOptions,
    *,
    on_note: Callable[[RunNote], None],
    on_result: Callable[[SendResult], object] | None = None,
) -> int:
    """Run workers on ``campaign`` until it is complete or stops, riding out Redis outages."""
    main_task = asyncio.current_task()
    current: list[CampaignWorker] = []
    stop: list[StopReason] = []

    def on_signal(sig: signal.Signals) -> None:
        if stop:
            note("Cancelling now: rows on the wire stay in flight and are reconciled later.")
            if main_task is not None:
                main_task.cancel()
            return
        stop.append(StopReason.INTERRUPTED if sig == signal.SIGINT else StopReason.TERMINATED)
        for w in current:
            w.request_stop(stop[0], "stopped by a signal")
        note("Stopping: no new rows; finishing the requests in flight (again to cancel at once).")

    with on_signals(on_signal):
        try:
            unrecorded: tuple[Any, ...] = ()
            while True:
                worker = CampaignWorker(campaign, options, on_note=on_note, on_result=on_result)
                current[:] = [worker]
                if stop:
                    worker.request_stop(stop[0], "stopped by a signal")
                try:
                    await worker.replay(unrecorded)
                except (RedisError, OSError):
                    pass  # down again: the next run of the loop replays them
                else:
                    unrecorded = ()
                outcome = await worker.run(client)
                unrecorded += outcome.unrecorded
                if outcome.complete:
                    note(f"Campaign {campaign.campaign_id} is complete ({outcome.sent:,} sent by this worker).")
                    return EXIT_OK
                if not outcome.redis_failed or stop:
                    print_error(f"stopped: {outcome.message or outcome.stop_reason}")
                    return exit_for(outcome.stop_reason or StopReason.FATAL)
                note(f"{outcome.message}; trying Redis again for up to {REDIS_OUTAGE:g} s.")
                if not await _back(campaign.redis, lambda: bool(stop)):
                    print_error("Redis did not come back: stopping. The rows this worker held are taken over later.")
                    return EXIT_FATAL
        except asyncio.CancelledError:
            return EXIT_INTERRUPTED


# --- campaign run --redis --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class SharedRun:
    """What ``campaign run --redis`` needs besides the campaign options."""

    redis_url: str
    #: Local worker processes to start (0: load only; workers elsewhere send).
    workers: int
    claim_idle: float | None = None
    allow_invalid: bool = False
    #: Load a campaign Redis lost as new, knowing its rows are all sent again.
    reload_lost: bool = False
    #: Run although Redis does not write every change to disk before answering.
    allow_non_durable: bool = False
    #: ``--metrics HOST:PORT``: local worker ``i`` serves its own metrics on ``PORT + i`` (port 0:
    #: each picks a free one and prints it); checked before anything is loaded.
    metrics: tuple[str, int] | None = None
    #: The in-process emulator's knobs (``--emulator``): it serves the local workers.
    emulator_knobs: dict[str, Any] = dataclasses.field(default_factory=dict)


async def run_shared(connection: Connection, options: CampaignOptions, settings: SharedRun) -> int:
    """``campaign run FILE --redis URL``: load into Redis, send with local workers; the exit status."""

    async def load_and_send(redis: aioredis.Redis) -> int:
        async with contextlib.AsyncExitStack() as stack:
            base_url = connection.base_url
            if connection.emulator:
                emulator = await stack.enter_async_context(Emulator(**connection.emulator_knobs()))
                base_url = emulator.url
                note(f"Using an in-process Bandwidth emulator at {emulator.url}; nothing leaves this machine.")
            return await _load_and_send(redis, connection, options, settings, base_url)

    return await _with_redis(settings.redis_url, load_and_send, " Rerun the same command to resume.")


async def _load_and_send(
    redis: aioredis.Redis, connection: Connection, options: CampaignOptions, settings: SharedRun, base_url: str | None
) -> int:
    """Load the file into Redis while the local workers start; let them send once the load is
    checked; report. A new campaign is *held* until then: no worker sends a row of it."""
    cid = options.campaign_id or default_campaign_id(options.input_path)
    where = where_of(redis)
    campaign = SharedCampaign(redis, cid, where=where)
    run = {
        "concurrency": options.concurrency,
        "rate": options.rate,
        "max_attempts": options.retry.max_attempts if options.retry is not None else None,
        "max_error_rate": options.max_error_rate,
        "settle": options.settle,
        "claim_idle": settings.claim_idle,
    }
    if not await _durable(redis):
        risk = (
            f"Redis at {where} does not run with 'appendonly yes' and 'appendfsync always': if it crashes, it "
            "may forget which rows were sent, and they would be sent again"
        )
        if not settings.allow_non_durable:
            print_error(
                f"{risk}. Configure it so (see the README on durability), or rerun with --allow-non-durable-redis "
                "to accept that risk. Nothing was sent."
            )
            return EXIT_USAGE
        print_warning(f"{risk} (--allow-non-durable-redis).")
    new = await campaign.campaign_info() is None
    recorded = False
    if new:
        go, recorded = _guard_new(options.input_path, where, cid, reload_lost=settings.reload_lost)
        if not go:
            return EXIT_USAGE
    else:
        _remember_load(options.input_path, where, cid)
    # Nothing is sent until a new campaign's load is checked, or a resume's opt-out list applied.
    if (new and not settings.allow_invalid) or (not new and options.opt_out):
        await campaign.hold()
    before = (await campaign.counts())["accepted"]
    workers = _LocalWorkers(settings, connection, cid, base_url)
    try:

        def started(info: CampaignInfo) -> None:
            # The record exists and matches this command: workers may start (and import) while the
            # rows load; they send only once the campaign is released.
            workers.start({k: v for k, v in run.items() if v is not None}, campaign)

        try:
            info, resumed = await load_campaign(
                campaign,
                dataclasses.replace(options, campaign_id=cid),
                where=f"campaign {cid} in Redis at {where}",
                progress=RunProgress(),
                note=lambda kind, **values: note(word_note(RunNote(kind, **values))),
                stopping=lambda: False,
                on_info=started,
            )
        except JournalMismatchError as exc:
            if not new:
                await campaign.release()  # a resume refused: the campaign goes on as it was
            what = ", ".join(exc.differences)
            print_error(
                f"{exc.path} was started with a different {what}, so this run cannot resume it. To resume, rerun "
                "with the options it was started with; to start a new campaign, give another --campaign-id."
            )
            return EXIT_USAGE
        except (InputFileError, TemplateError, JournalError) as exc:
            await workers.stop()
            if not new:
                await campaign.release()
            print_error(str(exc))
            return EXIT_USAGE
        counts = await campaign.counts()
        empty = not counts.total
        if new and (empty or (not settings.allow_invalid and mostly_invalid(counts["invalid"], counts.total))):
            # A new campaign that must not start: leave nothing behind, a rerun starts afresh.
            # The local workers stop first: one starting up writes to the campaign's keys.
            shown = [] if empty else await first_rows(campaign, "invalid", SHOWN_INVALID)
            await workers.stop()
            await redis.delete(*campaign.keys.all())
            await redis.srem(campaign.keys.registry, cid)
            if recorded:
                _forget_load(options.input_path, where, cid)
            if empty:
                print_error(f"{word_no_rows(options.input_path)} Nothing was sent; nothing was kept in Redis.")
                return EXIT_USAGE
            print_mostly_invalid(shown, counts["invalid"], counts.total, "nothing was kept in Redis")
            return EXIT_MOSTLY_INVALID
        requeued = 0
        if options.retry_failed:
            requeued = await campaign.requeue(RowStatus.FAILED)
            if requeued:
                note(word_note(RunNote(NoteKind.REQUEUED, rows=requeued, status=RowStatus.FAILED)))
        if options.opt_out and (resumed or requeued):
            # A newer opt-out list (as for a journal): pending rows to those numbers are skipped.
            skipped = await campaign.apply_opt_out(options.opt_out)
            if skipped:
                note(word_note(RunNote(NoteKind.OPTED_OUT, rows=skipped)))
        await campaign.release()
        verb = "Resuming" if resumed else "Starting"
        note(
            f"{verb} campaign {info.campaign_id}: {counts.total:,} rows from {options.input_path}, in Redis at {where}."
        )
        if settings.workers == 0:
            note(f"Loaded. Send with: bwasync worker --redis URL --campaign {cid} (on any machine).")
            return EXIT_OK
        note(
            f"Sending with {settings.workers} local workers; other machines join with "
            f"'bwasync worker --campaign {cid}'; 'bwasync campaign status --redis URL {cid}' shows progress."
        )
        codes = await workers.wait()
        if not await _back(redis):
            print_error(
                f"Redis at {where} does not answer: 'bwasync campaign report --redis URL {cid}' reads it later."
            )
            return EXIT_FATAL
        if not await campaign.exists():
            print_error(
                f"campaign {cid} is gone from Redis at {where} (Redis restarted empty, or its keys were deleted): "
                f"rows may have been sent and nothing more was. {_LOST_ADVICE.format(cid=cid)}"
            )
            return EXIT_FATAL
        report, invalid = await read_summary(campaign)
        complete = await campaign.complete()
        stop = None if complete else next((reason for code, reason in _STOPS if code in codes), StopReason.FATAL)
        message = None
        if stop is StopReason.ERROR_RATE:
            message = await campaign.paused()
        elif stop is not None:
            left = report.pending + report.in_flight
            message = f"the workers stopped with {left:,} rows not in a final state"
        final = await campaign.counts()
        outcome = RunOutcome(
            complete=complete, stop_reason=stop, message=message, counts=final, sent=final["accepted"] - before
        )
        print_summary(report, invalid, outcome)
        return verdict(outcome, shared=True)
    finally:
        await workers.close()


#: What to do about a campaign Redis lost (its rows may have been sent).
_LOST_ADVICE: Final = (
    "Every message sent carries the tag '{cid}:<row key>': find the rows already sent in Bandwidth's message "
    "list (or a 'campaign report --csv' export) and send the others as a new campaign (a file of those rows, "
    "or another --campaign-id); or rerun with --reload-lost to load the file again as new, knowing that every "
    "row is sent again, those already sent included."
)


def _guard_new(input_path: str, where: str, cid: str, *, reload_lost: bool) -> tuple[bool, bool]:
    """For a campaign Redis has no record of: (go on, the load was recorded now).

    Refused (said) when this input file records loading the campaign into this Redis before
    (Redis lost it: rows may have been sent) unless ``reload_lost``, or when the load cannot be
    recorded. Else the load is recorded, on disk, before the campaign exists in Redis.
    """
    try:
        when = loaded_at(input_path, where, cid)
        if when is None:
            record_load(input_path, where, cid)
            return True, True
    except OSError as exc:
        print_error(f"cannot record this load in {loads_path(input_path)}: {exc.strerror or exc}. Nothing was sent.")
        return False, False
    first = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(when))
    if reload_lost:
        print_warning(
            f"--reload-lost: campaign {cid} was loaded into Redis at {where} on {first} and Redis lost it; "
            "loading it again as new: every row is sent again, those already sent included."
        )
        return True, False
    print_error(
        f"campaign {cid} was loaded from this file into Redis at {where} on {first} (recorded in "
        f"{loads_path(input_path)}), but Redis has no record of it now: Redis lost the campaign's state (it "
        "restarted without persistence, or its keys were deleted), and rows may already have been sent. Nothing "
        f"was loaded or sent. {_LOST_ADVICE.format(cid=cid)}"
    )
    return False, False


def _remember_load(input_path: str, where: str, cid: str) -> None:
    """Record the load of a campaign Redis holds, if not recorded yet (loaded before this record
    existed, or from another copy of the file): so that a rerun here notices if Redis loses it."""
    try:
        if loaded_at(input_path, where, cid) is None:
            record_load(input_path, where, cid)
    except OSError as exc:
        print_warning(
            f"cannot record this load in {loads_path(input_path)}: {exc.strerror or exc}; if Redis loses the "
            "campaign, a rerun here cannot tell it was loaded."
        )


def _forget_load(input_path: str, where: str, cid: str) -> None:
    """Drop the record of a load that left nothing in Redis (a corrected file may load as new)."""
    try:
        forget_load(input_path, where, cid)
    except OSError as exc:
        print_warning(f"cannot update {loads_path(input_path)}: {exc.strerror or exc}; remove it before rerunning.")


class _LocalWorkers:
    """``settings.workers`` ``bwasync worker`` processes on one campaign, on this machine.

    Credentials reach them in their environment only. A signal to this process is passed on
    to them once (they stop in order); they run in their own session, so a terminal's Ctrl-C
    reaches them only through here.
    """

    def __init__(self, settings: SharedRun, connection: Connection, cid: str, base_url: str | None) -> None:
        self.settings = settings
        self.connection = connection
        self.cid = cid
        self.base_url = base_url
        self._starting: asyncio.Task[list[asyncio.subprocess.Process]] | None = None

    def start(self, run: dict[str, Any], campaign: SharedCampaign) -> None:
        """Record the run options, then start the processes (once; in the background)."""
        if self._starting is None:
            self._starting = asyncio.ensure_future(self._start(run, campaign))

    def _env(self) -> dict[str, str]:
        connection = self.connection
        env = dict(os.environ)
        env[REDIS_ENV] = self.settings.redis_url
        env["BW_ACCOUNT_ID"] = connection.account_id
        for name, var in (
            ("username", "BW_USERNAME"),
            ("password", "BW_PASSWORD"),
            ("client_id", "BW_CLIENT_ID"),
            ("client_secret", "BW_CLIENT_SECRET"),
            ("token_url", "BW_TOKEN_URL"),
        ):
            value = getattr(connection, name)
            env.pop(var, None)
            if value is not None:
                env[var] = value
        env.pop("BW_MESSAGING_URL", None)
        if self.base_url is not None:
            env["BW_MESSAGING_URL"] = self.base_url
        return env

    async def _start(self, run: dict[str, Any], campaign: SharedCampaign) -> list[asyncio.subprocess.Process]:
        await campaign.set_run(run, account_id=self.connection.account_id, base_url=self.base_url)
        args = [sys.executable, "-m", "bwasync.cli", "worker", "--campaign", self.cid]
        if self.settings.claim_idle is not None:
            args += ["--claim-idle", repr(self.settings.claim_idle)]
        env = self._env()
        metrics = self.settings.metrics
        return [
            await asyncio.create_subprocess_exec(
                *args,
                *([] if metrics is None else ["--metrics", worker_endpoint(metrics, i)]),
                env=env,
                start_new_session=True,
            )
            for i in range(self.settings.workers)
        ]

    async def wait(self) -> list[int]:
        """Their exit statuses, once every one has exited."""
        if self._starting is None:
            return []
        processes = await self._starting

        def on_signal(sig: signal.Signals) -> None:
            for p in processes:
                if p.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        p.send_signal(sig)

        with on_signals(on_signal):
            return [await p.wait() for p in processes]

    async def stop(self) -> None:
        """Stop them (the campaign is not to be sent after all) and wait for them."""
        if self._starting is None:
            return
        for p in await self._starting:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
        await self.wait()

    async def close(self) -> None:
        """However the command ends: the start is over (the run options are in Redis, as
        outside workers need them even when no local one runs), and no worker is left running
        that an error or a cancellation took this command away from (a held campaign's workers
        would otherwise wait for it forever)."""
        if self._starting is None:
            return
        if any(p.returncode is None for p in await self._starting):
            await self.stop()


# --- campaign status / report --redis -------------------------------------------------------------


async def _existing(redis: aioredis.Redis, cid: str) -> SharedCampaign | None:
    """The campaign ``cid``, or None (and that it does not exist, said)."""
    campaign = SharedCampaign(redis, cid, where=where_of(redis))
    if not await campaign.exists():
        print_error(f"no campaign {cid!r} in Redis at {where_of(redis)}")
        return None
    return campaign


async def status_shared(url: str, cid: str, fmt: str) -> int:
    """``campaign status --redis URL ID``: the same snapshot as a journal's; the exit status."""

    async def status(redis: aioredis.Redis) -> int:
        campaign = await _existing(redis, cid)
        if campaign is None:
            return EXIT_USAGE
        return show_status(await campaign.status(where_of(redis)), fmt)

    return await _with_redis(url, status)


async def report_shared(url: str, cid: str, fmt: str, csv_path: str | None, json_path: str | None) -> int:
    """``campaign report --redis URL ID``: the same report as a journal's; the exit status."""

    async def report(redis: aioredis.Redis) -> int:
        campaign = await _existing(redis, cid)
        if campaign is None:
            return EXIT_USAGE
        show_report(*await read_report(campaign, csv_path, json_path), fmt)
        return EXIT_OK

    return await _with_redis(url, report)
