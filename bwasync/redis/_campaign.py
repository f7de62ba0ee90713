"""A campaign's rows and their fate kept in Redis, for workers on any number of machines.

:class:`SharedCampaign` is the Redis counterpart of the SQLite journal: the campaign record, one
entry per row, the queue of sendable rows and the counts. Every change of a row's state is a Lua
script (:mod:`._campaign_scripts`) given the sources and target of an event of the one transition
table (:mod:`bwasync.campaign._rowstate`), so the rules live in one place.

Layout, for campaign ``C`` under namespace ``ns`` (``{C}`` keeps a campaign's keys in one
cluster slot)::

    ns:campaigns                  set   every campaign id (workers discover campaigns here)
    ns:campaign:{C}:info          hash  the record: input, template, settings, run options,
                                        account id, base URL, loaded_through, load_complete;
                                        never a credential
    ns:campaign:{C}:status        hash  row key -> state (pending, in_flight, accepted...)
    ns:campaign:{C}:rows          hash  row key -> the loaded row (JSON: line, recipients,
                                        sender, rendered request, segments, error)
    ns:campaign:{C}:lines         hash  row key -> input line (loading is idempotent by it)
    ns:campaign:{C}:marked        hash  row key -> when its send was marked (Unix time)
    ns:campaign:{C}:results       hash  row key -> result (JSON: message id, error, code,
                                        attempts, latency, finished_at)
    ns:campaign:{C}:counts        hash  state -> rows; _total; _segments (accepted)
    ns:campaign:{C}:ids           hash  message id -> row key (reconciliation)
    ns:campaign:{C}:queue         stream of sendable row keys, consumer group "senders"
    ns:campaign:{C}:flagged       list  numbers flagged at load (JSON)

A row's entry stays in the consumer group's pending list from the moment a worker reads it until
its result is recorded; a worker that dies leaves it there, and another takes it over with
``XAUTOCLAIM`` once it has been idle for ``claim_idle`` seconds (live workers keep theirs fresh).
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import time
from collections.abc import AsyncIterator, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

import msgspec
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, RedisError, ResponseError

from ..campaign._exceptions import JournalError, JournalMismatchError
from ..campaign._records import CampaignInfo, Counts, LatencyStats, NewRow, RowRecord, fingerprint_input, nearest_rank
from ..campaign._rowstate import TRANSITIONS, Event, RowStatus, count_final, sources
from ..campaign._status import JournalStatus, status_of
from ..campaign._store import CampaignStore
from . import _campaign_scripts as scripts
from ._constants import DEFAULT_NAMESPACE, REDIS_TIMEOUT
from ._policy import redact_url

__all__ = [
    "GROUP",
    "CampaignKeys",
    "Entry",
    "SharedCampaign",
    "SharedCampaignError",
    "campaign_ids",
    "campaign_keys",
    "connect",
    "event_args",
    "latency_stats",
]

#: The consumer group every worker of every campaign reads through.
GROUP: Final = "senders"

#: Rows read from Redis per round trip when scanning (the state hash, loaded rows).
_PAGE: Final = 1000
#: Rows moved by one script call: bounded, so a big requeue does not block Redis for long.
_MOVE_BATCH: Final = 500

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()


class SharedCampaignError(Exception):
    """Redis cannot be used for the campaign (unreachable, no such campaign, another campaign).

    The message never holds the Redis password (locations are redacted).
    """


@functools.cache
def event_args(event: Event) -> tuple[str, list[str]]:
    """The target and the source states of ``event``, from the one transition table.

    Every event of the table has one target whatever the source (checked here), which is what
    lets a script apply it knowing only the row's current state.
    """
    targets = {TRANSITIONS[(s, event)] for s in sources(event)}
    if len(targets) != 1:
        raise ValueError(f"{event} has no single target state")
    return str(targets.pop()), sorted(str(s) for s in sources(event))


def connect(url: str) -> aioredis.Redis:
    """A client for ``url`` with bounded timeouts (a hung Redis must not hang a worker).

    redis-py never sends a command again by itself, whatever the URL's options say (its
    ``retry_on_timeout=yes`` would): a command whose reply was lost may have been applied, and
    sent again it finds its own work done (a mark answers that the row is in flight, and the
    worker would settle the row's entry: the row stranded in flight, never reconciled). A
    failure reaches the worker, whose outage handling records what it knows once Redis answers.
    """
    try:
        return aioredis.Redis.from_url(
            url,
            socket_timeout=REDIS_TIMEOUT * 5,
            socket_connect_timeout=REDIS_TIMEOUT,
            retry=Retry(NoBackoff(), 0),
        )
    except ValueError:
        raise SharedCampaignError(f"not a Redis URL: {redact_url(url)}") from None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def campaign_ids(redis: aioredis.Redis, namespace: str = DEFAULT_NAMESPACE) -> list[str]:
    """Every campaign id in Redis, oldest first (by creation time)."""
    ids = [_text(v) for v in await redis.smembers(f"{namespace}:campaigns")]
    created: list[tuple[float, str]] = []
    for cid in ids:
        at = await redis.hget(campaign_keys(cid, namespace).info, "created_at")
        created.append((float(_text(at)) if at is not None else 0.0, cid))
    return [cid for _, cid in sorted(created)]


class CampaignKeys(NamedTuple):
    """The Redis keys of one campaign (see the module docstring); ``campaign_keys`` makes them."""

    registry: str
    info: str
    status: str
    rows: str
    lines: str
    marked: str
    results: str
    counts: str
    ids: str
    queue: str
    flagged: str

    def all(self) -> list[str]:
        """The campaign's own keys (not the registry)."""
        return list(self[1:])


def campaign_keys(campaign_id: str, namespace: str = DEFAULT_NAMESPACE) -> CampaignKeys:
    """The keys of campaign ``campaign_id`` under ``namespace``."""
    prefix = f"{namespace}:campaign:{{{campaign_id}}}"
    return CampaignKeys(f"{namespace}:campaigns", *(f"{prefix}:{name}" for name in CampaignKeys._fields[1:]))


class _Batcher:
    """Script calls made while a batch is on its way go together in the next one (one pipeline,
    one round trip): marks and results of many rows at once cost about what one costs.

    Each call still gets its own reply (or error); a pipeline that fails fails every call in it.
    """

    __slots__ = ("_queue", "_redis", "_task")

    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis
        self._queue: list[tuple[AsyncScript, list[str], list[Any], asyncio.Future[Any]]] = []
        self._task: asyncio.Task[None] | None = None

    async def call(self, script: AsyncScript, *, keys: list[str], args: list[Any]) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((script, keys, args, future))
        if self._task is None:
            self._task = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                try:
                    replies = await self._run(batch)
                    if any(isinstance(r, NoScriptError) for r in replies):
                        # A new (or restarted) Redis: load the scripts once; none of those ran.
                        for script in {id(b[0]): b[0] for b in batch}.values():
                            script.sha = await self._redis.script_load(script.script)
                        replies = await self._run(batch)
                except BaseException as exc:
                    for *_, future in batch:
                        if not future.done():
                            future.set_exception(exc if isinstance(exc, Exception) else RedisError(repr(exc)))
                    if not isinstance(exc, Exception):
                        raise
                    continue
                for (*_, future), reply in zip(batch, replies, strict=True):
                    if future.done():
                        continue
                    if isinstance(reply, Exception):
                        future.set_exception(reply)
                    else:
                        future.set_result(reply)
        finally:
            self._task = None

    async def _run(self, batch: list[tuple[AsyncScript, list[str], list[Any], asyncio.Future[Any]]]) -> list[Any]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for script, keys, args, _ in batch:
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies


@dataclass(frozen=True, slots=True)
class Entry:
    """A row's entry in the queue, as a worker reads it."""

    entry_id: str
    key: str
    #: The consumer that read it (and holds it, unless another took it over since).
    consumer: str


class SharedCampaign(CampaignStore):
    """One campaign in Redis: its record, rows and queue (see the module docstring).

    Also a report source: :func:`bwasync.campaign.build_report` reads it like a journal.
    """

    def __init__(
        self, redis: aioredis.Redis, campaign_id: str, *, namespace: str = DEFAULT_NAMESPACE, where: str = "redis"
    ) -> None:
        self.redis = redis
        #: The Redis location, redacted, for messages.
        self.where = where
        self.campaign_id = campaign_id
        self.keys = campaign_keys(campaign_id, namespace)
        self._add = redis.register_script(scripts.ADD)
        self._mark = redis.register_script(scripts.for_event(scripts.MARK, *event_args(Event.MARKED)))
        self._results = {
            event: redis.register_script(scripts.for_event(scripts.RESULT, *event_args(event)))
            for event in (Event.ACCEPTED, Event.FAILED, Event.AMBIGUOUS, Event.NOT_SENT)
        }
        self._touch = redis.register_script(scripts.TOUCH)
        self._moves = {
            event: redis.register_script(scripts.for_event(scripts.MOVE, *event_args(event)))
            for event in (Event.REQUEUE, Event.OPT_OUT)
        }
        self._batch = _Batcher(redis)

    def __repr__(self) -> str:
        return f"<SharedCampaign {self.campaign_id}>"

    # -- The record ---------------------------------------------------------------------------

    async def exists(self) -> bool:
        return bool(await self.redis.exists(self.keys.info))

    async def _init_campaign(
        self, path: str, template: str | None, settings_json: str, campaign_id: str | None
    ) -> CampaignInfo:
        """``campaign_id``, if given, must be this campaign's."""
        if campaign_id is not None and campaign_id != self.campaign_id:
            raise JournalMismatchError(self.where, ["campaign id"])
        fp, absolute = await asyncio.to_thread(lambda: (fingerprint_input(path), os.path.abspath(path)))
        keys = self.keys
        fields: dict[Any, Any] = {
            "input_path": absolute,
            "input_size": fp.size,
            "input_hash": fp.digest,
            "template": "" if template is None else template,
            "has_template": "1" if template is not None else "0",
            "settings": settings_json,
            "created_at": time.time(),
            "loaded_through": 0,
            "load_complete": "0",
        }
        # One creator wins (a second loader of the same campaign finds the record).
        if await self.redis.hsetnx(keys.info, "campaign_id", self.campaign_id):
            await self.redis.hset(keys.info, mapping=fields)
        await self.ensure_group()
        await self.redis.sadd(keys.registry, self.campaign_id)
        info = await self.campaign_info()
        if info is None:
            raise JournalError(f"{self.where}: the campaign record is incomplete")
        problems = info.resume_mismatches(fp, template)
        if problems:
            raise JournalMismatchError(self.where, problems)
        return info

    async def set_run(self, run: Mapping[str, Any], *, account_id: str, base_url: str | None) -> None:
        """Record how workers send (``run``: concurrency, rate...), for which account, where.

        Replaced on every run of the loader; never a credential. Clears a pause.
        """
        fields: dict[Any, Any] = {"run": json.dumps(dict(run), sort_keys=True), "account_id": account_id}
        if base_url is not None:
            fields["base_url"] = base_url
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.keys.info, mapping=fields)
            pipe.hdel(self.keys.info, "paused", *(() if base_url is not None else ("base_url",)))
            await pipe.execute()

    async def ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(self.keys.queue, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _info(self) -> dict[str, str]:
        raw = await self.redis.hgetall(self.keys.info)
        return {_text(k): _text(v) for k, v in raw.items()}

    async def campaign_info(self) -> CampaignInfo | None:
        info = await self._info()
        if "campaign_id" not in info or "created_at" not in info:
            return None
        return CampaignInfo(
            campaign_id=info["campaign_id"],
            input_path=info.get("input_path", ""),
            input_size=int(info.get("input_size", 0)),
            input_hash=info.get("input_hash", ""),
            template=info.get("template") if info.get("has_template") == "1" else None,
            settings=json.loads(info.get("settings", "{}")),
            created_at=float(info["created_at"]),
            loaded_through=int(info.get("loaded_through", 0)),
            load_complete=info.get("load_complete") == "1",
        )

    async def run_options(self) -> tuple[dict[str, Any], str | None, str | None]:
        """(the run options workers follow, the account id, the base URL) from the record."""
        info = await self._info()
        if "campaign_id" not in info:
            raise SharedCampaignError(f"no campaign {self.campaign_id!r} in Redis")
        return json.loads(info.get("run", "{}")), info.get("account_id"), info.get("base_url")

    async def hold(self) -> None:
        """Keep every worker from sending (a new campaign whose load is not checked yet)."""
        await self.redis.hset(self.keys.info, "held", "1")

    async def release(self) -> None:
        await self.redis.hdel(self.keys.info, "held")

    async def gate(self) -> tuple[bool, bool, str | None]:
        """(the campaign exists, it is held, why it is paused or None), in one round trip."""
        cid, held, paused = await self.redis.hmget(self.keys.info, ["campaign_id", "held", "paused"])
        return cid is not None, held is not None, None if paused is None else _text(paused)

    async def pause(self, reason: str) -> None:
        """Stop every worker of the campaign (the error-rate guard); the next ``run`` clears it."""
        await self.redis.hset(self.keys.info, "paused", reason)

    async def paused(self) -> str | None:
        value = await self.redis.hget(self.keys.info, "paused")
        return None if value is None else _text(value)

    # -- Load -------------------------------------------------------------------------------

    async def add_rows(self, rows: Iterable[NewRow], *, loaded_through: int | None = None) -> int:
        """Add a batch of rows (idempotent by key and line); return how many were new."""
        args: list[Any] = [loaded_through or 0]
        for r in rows:
            body = {
                "line": r.line,
                "recipients": list(r.recipients),
                "sender": r.sender,
                "request": r.request,
                "segments": r.segments,
                "error": r.error,
                "zone": r.zone,
            }
            flags = [[r.line, r.key, n, why] for n, why in r.flagged]
            args += [r.key, r.line, str(r.status), _encoder.encode(body), _encoder.encode(flags) if flags else b""]
        k = self.keys
        return int(await self._add(keys=[k.status, k.rows, k.lines, k.counts, k.queue, k.flagged, k.info], args=args))

    async def set_loaded_through(self, line: int, *, complete: bool = False) -> None:
        """Record how far the load got (never backwards), and whether it read the whole file."""
        info = self.keys.info
        current = await self.redis.hget(info, "loaded_through")
        fields: dict[Any, Any] = {}
        if current is None or line > int(current):
            fields["loaded_through"] = line
        if complete:
            fields["load_complete"] = "1"
        if fields:
            await self.redis.hset(info, mapping=fields)

    # -- Sending ----------------------------------------------------------------------------

    async def read_new(self, consumer: str, count: int, block_ms: int | None) -> list[Entry]:
        """Up to ``count`` entries no consumer has read yet (waiting up to ``block_ms``)."""
        reply: Any = await self.redis.xreadgroup(GROUP, consumer, {self.keys.queue: ">"}, count=count, block=block_ms)
        return [
            Entry(_text(eid), _text(fields[b"k"]), consumer) for _, entries in reply or () for eid, fields in entries
        ]

    async def claim_idle(self, consumer: str, min_idle_ms: int, count: int) -> list[Entry]:
        """Take over up to ``count`` entries idle for ``min_idle_ms`` (their consumer is gone)."""
        entries: list[Entry] = []
        start = "0-0"
        while len(entries) < count:
            reply = await self.redis.xautoclaim(
                self.keys.queue, GROUP, consumer, min_idle_ms, start_id=start, count=count - len(entries)
            )
            start = _text(reply[0])
            entries += [Entry(_text(eid), _text(fields[b"k"]), consumer) for eid, fields in reply[1] if fields]
            if start == "0-0":
                break
        return entries

    async def touch(self, consumer: str, entry_ids: Sequence[str]) -> int:
        """Reset the idle time of the entries ``consumer`` still holds; return how many it holds."""
        if not entry_ids:
            return 0
        return int(await self._touch(keys=[self.keys.queue], args=[GROUP, consumer, *entry_ids]))

    async def mark(self, key: str, entry_id: str, consumer: str) -> str:
        """Mark a row in flight (``'ok'``), unless its entry moved to another consumer (``'lost'``)
        or the table refuses (the row's state is returned)."""
        k = self.keys
        reply = await self._batch.call(
            self._mark,
            keys=[k.status, k.counts, k.marked, k.queue, k.info],
            args=[key, entry_id, GROUP, consumer, repr(time.time())],
        )
        return _text(reply)

    async def record(
        self,
        entry: Entry,
        event: Event,
        *,
        result: Mapping[str, Any] | None = None,
        message_id: str | None = None,
        segments: int = 0,
    ) -> str:
        """Apply ``event`` to the entry's row with its result, and settle the entry; ``'ok'``, or the
        row's state when the table refuses (the entry is settled anyway: the row's fate was decided
        elsewhere). A row back to ``pending`` (``NOT_SENT``) joins the queue again, only if the
        entry's consumer still holds it (``'lost'`` otherwise: whoever took it over decides), so
        a row never has two entries."""
        k = self.keys
        body = b"" if result is None else _encoder.encode({**result, "finished_at": time.time()})
        reply = await self._batch.call(
            self._results[event],
            keys=[k.status, k.counts, k.results, k.ids, k.queue, k.info],
            args=[
                entry.key,
                entry.entry_id,
                GROUP,
                body,
                message_id or "",
                segments,
                repr(time.time()),
                entry.consumer,
            ],
        )
        return _text(reply)

    async def requeue(self, status: str) -> int:
        """Send every row in ``status`` (``failed``) again, as the user asked; how many."""
        return await self._move(Event.REQUEUE, status, await self._keys_with_status(status, _PAGE))

    async def apply_opt_out(self, numbers: Collection[str]) -> int:
        """Mark ``skipped`` (``opted out``) every pending row with a recipient in ``numbers``;
        how many (as :meth:`Journal.apply_opt_out`, for a resume with a newer opt-out list).

        Safe while workers send: a row is moved only if still pending, and a row skipped after a
        worker read it is refused its ``in_flight`` mark (the table has no way out of skipped).
        """
        blocked = frozenset(numbers)
        if not blocked:
            return 0
        keys = await self._keys_with_status(RowStatus.PENDING, _PAGE)
        hits: list[str] = []
        for i in range(0, len(keys), _PAGE):
            chunk = keys[i : i + _PAGE]
            for key, row in zip(chunk, await self.loaded_rows(chunk), strict=True):
                if row is not None and not blocked.isdisjoint(row.get("recipients") or ()):
                    hits.append(key)
        return await self._move(Event.OPT_OUT, RowStatus.PENDING, hits, {"error": "opted out"})

    async def _move(
        self, event: Event, status: str, keys: Sequence[str], result: Mapping[str, Any] | None = None
    ) -> int:
        """Apply ``event`` to the rows of ``keys`` still in ``status`` (batches of one script each)."""
        body = b"" if result is None else _encoder.encode({**result, "finished_at": time.time()})
        k = self.keys
        moved = 0
        for i in range(0, len(keys), _MOVE_BATCH):
            args: list[Any] = [status, body, *keys[i : i + _MOVE_BATCH]]
            moved += int(await self._moves[event](keys=[k.status, k.counts, k.queue, k.results], args=args))
        return moved

    async def settle(self, entry_id: str) -> None:
        """Drop an entry whose row needs nothing more (already final)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(self.keys.queue, GROUP, entry_id)
            pipe.xdel(self.keys.queue, entry_id)
            await pipe.execute()

    async def states(self, keys: Sequence[str]) -> list[str | None]:
        if not keys:
            return []
        return [None if v is None else _text(v) for v in await self.redis.hmget(self.keys.status, list(keys))]

    async def loaded_rows(self, keys: Sequence[str]) -> list[dict[str, Any] | None]:
        """The loaded rows of ``keys`` (JSON bodies decoded), None for an unknown key."""
        if not keys:
            return []
        return [None if v is None else _decoder.decode(v) for v in await self.redis.hmget(self.keys.rows, list(keys))]

    async def row_records(self, keys: Sequence[str]) -> list[RowRecord]:
        """Everything known of ``keys`` (unknown keys left out)."""
        if not keys:
            return []
        k = self.keys
        async with self.redis.pipeline(transaction=False) as pipe:
            for name in (k.status, k.rows, k.results, k.marked):
                pipe.hmget(name, list(keys))
            states, rows, results, marks = await pipe.execute()
        records = []
        for key, state, row, result, mark in zip(keys, states, rows, results, marks, strict=True):
            if state is None or row is None:
                continue
            records.append(_record(key, _text(state), _decoder.decode(row), result, mark))
        return records

    # -- What a report and a reconciliation read ------------------------------------------------

    async def flush(self) -> None:
        """Nothing is buffered: every change is in Redis when its call returns."""

    async def claimed_message_ids(self, ids: Collection[str]) -> dict[str, str]:
        wanted = sorted(ids)
        if not wanted:
            return {}
        keys = await self.redis.hmget(self.keys.ids, wanted)
        return {mid: _text(key) for mid, key in zip(wanted, keys, strict=True) if key is not None}

    async def counts(self) -> Counts:
        raw = {_text(k): int(v) for k, v in (await self.redis.hgetall(self.keys.counts)).items()}
        by_status = {str(s): max(0, raw.get(str(s), 0)) for s in RowStatus}
        by_delivery = {"sent": 0, "delivered": 0, "failed": 0}
        return Counts(sum(by_status.values()), by_status, by_delivery, raw.get("_segments", 0))

    async def total_rows(self) -> int:
        return (await self.counts()).total

    async def complete(self) -> bool:
        """Whether the whole file is loaded and every row is in a final state."""
        info = await self.campaign_info()
        counts = await self.counts()
        return info is not None and info.load_complete and count_final(counts.by_status) == counts.total

    async def iter_all(self, batch: int = 1000) -> AsyncIterator[RowRecord]:
        """Every row, in line order (read page by page; the ordering holds the keys in memory)."""
        lines: list[tuple[int, str]] = []
        async for key, line in self.redis.hscan_iter(self.keys.lines, count=batch):
            lines.append((int(line), _text(key)))
        lines.sort()
        for i in range(0, len(lines), batch):
            for record in await self.row_records([key for _, key in lines[i : i + batch]]):
                yield record

    async def _keys_with_status(self, status: str, batch: int) -> list[str]:
        """The keys of the rows in ``status``, in line order (the state hash is scanned, not the rows)."""
        keys = [_text(k) async for k, v in self.redis.hscan_iter(self.keys.status, count=batch) if _text(v) == status]
        lines: list[tuple[int, str]] = []
        for i in range(0, len(keys), batch):
            chunk = keys[i : i + batch]
            lines += [
                (int(n or 0), k) for k, n in zip(chunk, await self.redis.hmget(self.keys.lines, chunk), strict=True)
            ]
        return [key for _, key in sorted(lines)]

    async def rows_with_status(self, status: str, batch: int = 1000) -> AsyncIterator[RowRecord]:
        """Rows in ``status``, in line order."""
        keys = await self._keys_with_status(status, batch)
        for i in range(0, len(keys), batch):
            for record in await self.row_records(keys[i : i + batch]):
                yield record

    async def failed_by_error_code(self) -> dict[int | None, int]:
        failed: dict[int | None, int] = {}
        async for row in self.rows_with_status(RowStatus.FAILED):
            failed[row.error_code] = failed.get(row.error_code, 0) + 1
        return failed

    async def delivery_failed_by_error_code(self) -> dict[int | None, int]:
        return {}  # no status callbacks are received for a shared campaign (yet)

    async def latency_stats(self, percentiles: Sequence[float] = (50, 90, 99)) -> LatencyStats:
        """Of accepted rows: one pass over their results (never the loaded rows)."""
        keys = await self._keys_with_status(RowStatus.ACCEPTED, 1000)
        values: list[float] = []
        for i in range(0, len(keys), 1000):
            for raw in await self.redis.hmget(self.keys.results, keys[i : i + 1000]):
                latency = None if raw is None else _decoder.decode(raw).get("latency")
                if latency is not None:
                    values.append(float(latency))
        values.sort()
        return latency_stats(values, percentiles)

    async def time_span(self) -> tuple[float | None, float | None]:
        info = await self._info()
        start, end = info.get("started_at"), info.get("finished_at")
        return (float(start) if start else None, float(end) if end else None)

    async def sending_seconds(self) -> float | None:
        return None

    async def flagged_numbers(self, limit: int) -> tuple[int, list[tuple[int, str, str, str]]]:
        flagged = sorted(
            (int(line), key, number, reason)
            for raw in await self.redis.lrange(self.keys.flagged, 0, -1)
            for line, key, number, reason in _decoder.decode(raw)
        )
        return len(flagged), flagged[: max(0, limit)]

    async def status(self, where: str) -> JournalStatus:
        """A snapshot for ``campaign status`` (``where`` names the Redis location, redacted)."""
        info = await self.campaign_info()
        if info is None:
            raise SharedCampaignError(f"no campaign {self.campaign_id!r} at {where}")
        counts = await self.counts()
        started, finished = await self.time_span()
        last = max((t for t in (started, finished) if t is not None), default=None)
        return status_of(f"{where} campaign {self.campaign_id}", info, counts, updated_at=last, last_activity=last)


def latency_stats(values: Sequence[float], percentiles: Sequence[float]) -> LatencyStats:
    """Nearest-rank percentiles, max and mean of sorted ``values`` (the journal's rule)."""
    n = len(values)
    if not n:
        return LatencyStats(0, {}, None, None)
    result = {float(p): values[nearest_rank(p, n) - 1] for p in percentiles}
    return LatencyStats(n, result, values[-1], sum(values) / n)


def _record(key: str, state: str, row: dict[str, Any], result: bytes | None, mark: bytes | None) -> RowRecord:
    res: dict[str, Any] = _decoder.decode(result) if result is not None else {}
    recipients = row.get("recipients") or []
    return RowRecord(
        key=key,
        line=int(row.get("line", 0)),
        status=state,
        recipients=tuple(recipients) if isinstance(recipients, list) else (),
        sender=row.get("sender"),
        request=row.get("request"),
        segments=int(row.get("segments") or 0),
        message_id=res.get("message_id"),
        error=res.get("error") or row.get("error"),
        error_code=res.get("error_code"),
        attempts=int(res.get("attempts") or 0),
        latency=res.get("latency"),
        in_flight_at=float(mark) if mark is not None else None,
        finished_at=res.get("finished_at"),
        delivery_status=None,
        delivery_error_code=None,
        delivered_at=None,
    )
