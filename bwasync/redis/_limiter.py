"""RedisLimiter: one account's rate limit shared by every process that sends for it.

The buckets and the adaptive state live in Redis and change only inside Lua scripts
(``_scripts``), so every limiter with the same namespace and account sees one budget. To keep
Redis off the per-message path, the account bucket hands out *leases*: a worker takes a few
segments at once (``lease_size``) and spends them locally, without a round trip, for at most
``LEASE_TTL`` seconds. Per-sender limits are checked in Redis on every acquisition (their rates
are a few per second), in the same round trip as any lease.

When Redis cannot be reached the limiter either raises :class:`RedisUnavailableError`
(``on_error="raise"``) or falls back to an in-process :class:`~bwasync.AdaptiveLimiter` at the
lowest known account rate divided by the number of limiters last seen live, tries Redis again
every ``RECONNECT_INTERVAL`` seconds, and rejoins the shared budget when it answers.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import secrets
import socket
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Literal

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from .._constants import CUT_CARRY_BURSTS, DEFAULT_BURST_SECONDS
from .._exceptions import ConfigurationError, RedisUnavailableError
from .._ratelimit import AdaptiveLimiter, _check_burst, _check_rate, _default_burst, _loop_time, _per_second
from . import _scripts
from ._constants import (
    CAS_ATTEMPTS,
    DEFAULT_NAMESPACE,
    DEMAND_WINDOW,
    LEASE_SECONDS,
    LEASE_TTL,
    LIVE_TTL,
    RECONNECT_INTERVAL,
    REDIS_TIMEOUT,
    SHARED_SYNC_INTERVAL,
)
from ._control import Events, apply, dump, load
from ._policy import fallback_rate, lease_size, redact_url

__all__ = ["RedisLimiter", "RedisUnavailableError"]

_log = logging.getLogger("bwasync.redis")

#: Errors that mean "Redis did not do it": unreachable, timed out, refused the command.
_REDIS_ERRORS = (RedisError, OSError)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class _SenderGate:
    """Serialises one number's acquisitions in this process (only the head polls Redis)."""

    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class RedisLimiter:
    """A :class:`~bwasync.RateLimiter` whose budget is shared through Redis.

    ::

        limiter = RedisLimiter("redis://127.0.0.1:6379/0", account_id=ACCOUNT, rate=200)
        async with MessagingClient(ACCOUNT, ..., limiter=limiter) as client:
            ...
        await limiter.aclose()

    Every limiter with the same ``namespace`` and ``account_id``, in any process on any machine,
    shares the account bucket (``rate`` segments/s, ``burst`` at once), the per-sender buckets
    and the adaptive state: a 429 seen by one worker slows every worker, and recovery is shared.
    All of them should be built with the same ``rate`` and ``burst``; the last one to start sets
    them for everyone (the adaptive rate is kept, only capped).

    ``redis`` is a URL (the limiter then owns the connection and closes it in :meth:`aclose`) or
    a ``redis.asyncio.Redis``. ``on_error="fallback"`` keeps sending at a conservative local rate
    while Redis is unreachable; ``on_error="raise"`` makes acquisitions raise
    :class:`RedisUnavailableError` instead.
    """

    def __init__(
        self,
        redis: str | aioredis.Redis,
        *,
        account_id: str,
        rate: float | None = None,
        burst: float | None = None,
        per_sender_rate: float | None = None,
        per_sender_burst: float | None = None,
        namespace: str = DEFAULT_NAMESPACE,
        on_error: Literal["fallback", "raise"] = "fallback",
    ) -> None:
        if not account_id:
            raise ConfigurationError("account_id is required")
        if on_error not in ("fallback", "raise"):
            raise ConfigurationError(f'on_error must be "fallback" or "raise", got {on_error!r}')
        self._ceiling: float | None = None
        self._burst_s = DEFAULT_BURST_SECONDS
        if rate is not None:
            self._ceiling = _check_rate("rate", rate)
            full = _default_burst(self._ceiling) if burst is None else _check_burst("burst", burst)
            self._burst_s = full / self._ceiling
        elif burst is not None:
            raise ConfigurationError("burst needs a rate")
        self._ps_rate: float | None = None
        self._ps_burst = 0.0
        if per_sender_rate is not None:
            self._ps_rate = _check_rate("per_sender_rate", per_sender_rate)
            self._ps_burst = (
                _default_burst(self._ps_rate)
                if per_sender_burst is None
                else _check_burst("per_sender_burst", per_sender_burst)
            )
        elif per_sender_burst is not None:
            raise ConfigurationError("per_sender_burst needs a per_sender_rate")
        self._on_error = on_error
        self._secret: str | None = None
        if isinstance(redis, str):
            self._where = redact_url(redis)
            try:
                self._redis = aioredis.Redis.from_url(
                    redis, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT
                )
            except ValueError:
                raise ConfigurationError(f"not a Redis URL: {self._where}") from None
            self._owns = True
        else:
            self._redis = redis
            self._owns = False
            kwargs = redis.connection_pool.connection_kwargs
            location = kwargs.get("path") or f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"
            self._where = f"redis://{location}/{kwargs.get('db', 0)}"
        kwargs = self._redis.connection_pool.connection_kwargs
        self._secret = kwargs.get("password") or None
        self.account_id = account_id
        self.namespace = namespace
        prefix = f"{namespace}:{{{account_id}}}"
        self._state_key = f"{prefix}:state"
        self._live_key = f"{prefix}:live"
        self._sender_prefix = f"{prefix}:sender:"
        self._id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._acquire_script = self._redis.register_script(_scripts.ACQUIRE)
        self._give_back_script = self._redis.register_script(_scripts.GIVE_BACK)
        self._read_script = self._redis.register_script(_scripts.READ)
        self._cas_script = self._redis.register_script(_scripts.CAS)
        self._configure_script = self._redis.register_script(_scripts.CONFIGURE)
        #: Seconds of Redis's clock for the scripts; None reads Redis's own ``TIME`` (tests only).
        self._server_clock: Callable[[], float] | None = None

        self._loop: asyncio.AbstractEventLoop | None = None
        self._configured = False
        # Last seen in Redis: the account rate (None = unthrottled), live limiters, state version.
        self._rate: float | None = self._ceiling
        self._live = 1
        # The lease: segments this process may still send without asking Redis, until the
        # loop time ``_lease_expires``. ``_lease_epoch`` moves on every 429, so a lease granted
        # by a request that was in flight at that moment is not spent.
        self._lease = 0.0
        self._lease_expires = -math.inf
        self._lease_epoch = 0
        # A lease smaller than asked for means the bucket is drained: ask again only once the rest
        # could have accrued (loop time), rather than polling Redis once per round trip.
        self._refill_at = -math.inf
        self._refill: asyncio.Lock | None = None
        self._queued = 0.0
        self._senders: dict[str, _SenderGate] = {}
        # Demand: segments acquired since ``_demand_since``, and the rate measured before it.
        self._demand_count = 0.0
        self._demand_since = -math.inf
        self._demand_rate = 0.0
        # What this worker saw since it last synced the shared controller (see ``_control``).
        self._events = Events()
        self._next_sync = -math.inf
        self._sync_task: asyncio.Task[None] | None = None
        # Fallback while Redis is unreachable.
        self._fallback: AdaptiveLimiter | None = None
        self._next_probe = -math.inf
        self._probe_task: asyncio.Task[None] | None = None

    # --- the RateLimiter protocol -------------------------------------------------------------

    @property
    def rate(self) -> float | None:
        """The account rate in force (segments/s): the shared one, or the local fallback's."""
        fallback = self._fallback
        return fallback.rate if fallback is not None else self._rate

    @property
    def live(self) -> int:
        """Limiters of this namespace and account seen live in Redis at the last contact."""
        return self._live

    @property
    def in_fallback(self) -> bool:
        """Whether Redis is unreachable and the local fallback rate applies."""
        return self._fallback is not None

    async def acquire(self, cost: float, *, sender: str) -> None:
        """Wait until ``cost`` segments may be sent from ``sender``."""
        if cost < 0:
            raise ValueError(f"cost must be >= 0, got {cost!r}")
        if self._fallback is None and self._ps_rate is None:
            loop = self._loop
            if loop is not None:
                now = loop.time()
                refill = self._refill
                if self._lease >= cost and now < self._lease_expires and (refill is None or not refill.locked()):
                    self._lease -= cost
                    self._demand_count += cost
                    self._events.sent += cost
                    return
        await self._acquire_slow(cost, sender)

    def release(self, cost: float, *, sender: str) -> None:
        """Give back an acquisition that never left: back into the lease (per-sender is not undone)."""
        fallback = self._fallback
        if fallback is not None:
            fallback.release(cost, sender=sender)
            return
        self._events.unsent += cost
        if self._now() < self._lease_expires:
            self._lease += cost

    def report_success(self, cost: float, *, sender: str) -> None:
        """Counted; the shared controller hears of it at the next sync (every ``SHARED_SYNC_INTERVAL``)."""
        fallback = self._fallback
        if fallback is not None:
            fallback.report_success(cost, sender=sender)
            return
        events = self._events
        events.accepted += cost
        events.answers += 1
        if self._now() >= self._next_sync:
            self._start_sync()

    def report_rate_limited(self, *, sender: str, retry_after: float | None, allowed_rate: float | None = None) -> None:
        """Drop this worker's lease now, and tell the shared controller at once.

        ``retry_after`` does not pause the account (it delays only the retry of the request that
        carried it); ``allowed_rate`` is the account rate the server stated, when it did.
        """
        fallback = self._fallback
        if fallback is not None:
            fallback.report_rate_limited(sender=sender, retry_after=retry_after, allowed_rate=allowed_rate)
            return
        self._lease = 0.0
        self._lease_epoch += 1
        events = self._events
        events.limited += 1
        if allowed_rate is not None and allowed_rate > 0 and math.isfinite(allowed_rate):
            events.allowed_rate = allowed_rate
        self._start_sync()

    # --- lifecycle ----------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Finish pending rate updates, give back the unspent lease, leave the live set, and close
        the Redis connection if this limiter opened it."""
        if self._probe_task is not None:
            self._probe_task.cancel()
            await asyncio.gather(self._probe_task, return_exceptions=True)
        await self._flush()
        if self._fallback is None and self._configured:
            lease, self._lease = self._lease, 0.0
            try:
                await self._give_back_script(
                    keys=[self._state_key, self._live_key], args=[self._now_arg(), repr(lease), self._id]
                )
            except _REDIS_ERRORS:
                _log.debug("could not give back the lease to %s; it expires by itself", self._where)
        if self._owns:
            await self._redis.aclose()

    async def __aenter__(self) -> RedisLimiter:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        mode = " fallback" if self._fallback is not None else ""
        return (
            f"<{type(self).__name__} redis={self._where} namespace={self.namespace!r} account={self.account_id!r}"
            f" rate={_per_second(self.rate, 'unthrottled')} ceiling={_per_second(self._ceiling, 'none')}"
            f" per_sender_rate={self._ps_rate} live={self._live}"
            f" lease={self._lease:g}{mode}>"
        )

    # --- acquisition --------------------------------------------------------------------------

    def _now(self) -> float:
        loop = self._loop
        return loop.time() if loop is not None else _loop_time()

    def _now_arg(self) -> str:
        clock = self._server_clock
        return "" if clock is None else repr(clock())

    async def _acquire_slow(self, cost: float, sender: str) -> None:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        while True:
            fallback = self._fallback
            if fallback is not None:
                self._maybe_probe()
                await fallback.acquire(cost, sender=sender)
                return
            try:
                if self._ps_rate is None:
                    done = await self._acquire_account(cost)
                else:
                    done = await self._acquire_with_sender(cost, sender)
            except _REDIS_ERRORS as exc:
                if self._fallback is None:
                    self._unreachable(exc)
                continue
            if done:
                return

    def _want(self, cost: float, now: float) -> float:
        """The next lease's size, from this worker's demand (see ``lease_size``)."""
        elapsed = now - self._demand_since
        if elapsed >= DEMAND_WINDOW:
            self._demand_rate = self._demand_count / elapsed if elapsed < 2 * DEMAND_WINDOW else 0.0
            self._demand_count = 0.0
            self._demand_since = now
            elapsed = 0.0
        # Early in a window, the window so far (at least one lease period long) is the best guess.
        demand = max(self._demand_rate, self._demand_count / max(elapsed, LEASE_SECONDS))
        burst = None if self._rate is None else max(1.0, self._rate * self._burst_s)
        return lease_size(demand, self._queued, cost, self._rate, burst, self._live)

    async def _acquire_account(self, cost: float) -> bool:
        """Take ``cost`` from the lease, refilled from Redis when short, in FIFO order.

        False when the fallback took over while this acquisition queued: it goes there instead
        of asking an unreachable Redis once more (each ask may take the whole socket timeout).
        """
        loop = self._loop
        assert loop is not None
        refill = self._refill
        if refill is None:
            refill = self._refill = asyncio.Lock()
        self._queued += cost
        try:
            await refill.acquire()
        finally:
            self._queued -= cost
        try:
            while True:
                if self._fallback is not None:
                    return False
                now = loop.time()
                if self._lease >= cost and now < self._lease_expires:
                    self._lease -= cost
                    self._demand_count += cost
                    self._events.sent += cost
                    return True
                if now < self._refill_at:
                    await asyncio.sleep(self._refill_at - now)
                    continue
                want = self._want(cost, now)
                back, self._lease = self._lease, 0.0
                epoch = self._lease_epoch
                granted, wait = await self._call(cost, want, back, None, covered=False)
                if wait <= 0.0:
                    rate = self._rate
                    if rate is not None and granted < want:
                        self._refill_at = loop.time() + (want - granted) / rate
                    self._grant(granted - cost, epoch)
                    self._demand_count += cost
                    self._events.sent += cost
                    return True
                await asyncio.sleep(wait)
        finally:
            refill.release()

    async def _acquire_with_sender(self, cost: float, sender: str) -> bool:
        """Check ``sender``'s bucket in Redis (and the account's unless the lease covers the
        cost), one round trip per try; False when the fallback took over meanwhile."""
        loop = self._loop
        assert loop is not None
        gate = self._senders.get(sender)
        if gate is None:
            gate = self._senders[sender] = _SenderGate()
        gate.users += 1
        try:
            async with gate.lock:
                while True:
                    if self._fallback is not None:
                        return False
                    now = loop.time()
                    covered = self._lease >= cost and now < self._lease_expires
                    back = 0.0
                    if covered:
                        self._lease -= cost
                        want = cost
                    else:
                        want = self._want(cost, now)
                        back, self._lease = self._lease, 0.0
                    epoch = self._lease_epoch
                    try:
                        granted, wait = await self._call(cost, want, back, sender, covered=covered)
                    except BaseException:
                        if covered:
                            self._lease += cost
                        raise
                    if wait <= 0.0:
                        if not covered:
                            self._grant(granted - cost, epoch)
                        self._demand_count += cost
                        self._events.sent += cost
                        return True
                    if covered:
                        self._lease += cost
                    await asyncio.sleep(wait)
        finally:
            gate.users -= 1
            if gate.users == 0:
                del self._senders[sender]

    def _grant(self, spare: float, epoch: int) -> None:
        """Add a fresh lease's spare segments, unless a 429 arrived while it was asked for."""
        if epoch != self._lease_epoch:
            return
        self._lease += spare
        self._lease_expires = self._now() + LEASE_TTL

    async def _call(
        self, cost: float, want: float, back: float, sender: str | None, *, covered: bool
    ) -> tuple[float, float]:
        """One ACQUIRE round trip: (segments granted, seconds to wait before asking again)."""
        if not self._configured:
            await self._configure()
        keys = [self._state_key, self._live_key]
        if sender is not None:
            keys.append(self._sender_prefix + sender)
        reply: Sequence[Any] = await self._acquire_script(
            keys=keys,
            args=[
                self._now_arg(),
                self._id,
                repr(float(cost)),
                repr(float(want)),
                "1" if covered else "0",
                repr(LIVE_TTL),
                repr(self._ps_rate or 0.0),
                repr(self._ps_burst),
                repr(back),
                repr(self._ceiling or 0.0),
                repr(self._burst_s),
            ],
        )
        rate = float(reply[2])
        self._rate = rate if rate > 0 else None
        self._live = max(1, int(reply[3]))
        return float(reply[0]), float(reply[1])

    async def _configure(self) -> None:
        await self._configure_script(
            keys=[self._state_key],
            args=[self._now_arg(), repr(self._ceiling or 0.0), repr(self._burst_s)],
        )
        self._configured = True

    # --- Redis unreachable --------------------------------------------------------------------

    def _describe(self, exc: BaseException) -> str:
        text = f"{type(exc).__name__}: {exc}"
        if self._secret:
            text = text.replace(self._secret, "***")
        return text

    def _unreachable(self, exc: BaseException) -> None:
        """Raise (``on_error="raise"``) or switch to the local fallback, warning once per outage."""
        if self._on_error == "raise":
            raise RedisUnavailableError(
                f"Redis at {self._where} is unreachable ({self._describe(exc)}); the message was not sent"
            ) from None
        live = self._live
        rate = fallback_rate([self._ceiling, self._rate], live)
        ps_rate = fallback_rate([self._ps_rate], live)
        self._fallback = AdaptiveLimiter(
            rate=rate,
            burst=None if rate is None else max(1.0, rate * self._burst_s),
            per_sender_rate=ps_rate,
            per_sender_burst=None if ps_rate is None else max(1.0, self._ps_burst / live),
        )
        self._lease = 0.0
        self._configured = False
        self._next_probe = self._now() + RECONNECT_INTERVAL
        shown = "unthrottled until a 429" if rate is None else f"{rate:g} segments/s"
        _log.warning(
            "Redis at %s is unreachable (%s): sending at a local %s (1/%d of the shared budget) until it returns",
            self._where,
            self._describe(exc),
            shown,
            live,
        )

    def _maybe_probe(self) -> None:
        now = self._now()
        if now < self._next_probe or (self._probe_task is not None and not self._probe_task.done()):
            return
        self._next_probe = now + RECONNECT_INTERVAL
        self._probe_task = asyncio.get_running_loop().create_task(self._probe())

    async def _probe(self) -> None:
        """Try Redis once; on success, rejoin the shared budget."""
        try:
            await self._configure()
        except _REDIS_ERRORS as exc:
            _log.debug("Redis at %s still unreachable: %s", self._where, self._describe(exc))
            return
        self._fallback = None
        _log.warning("Redis at %s is back: sending on the shared budget again", self._where)

    # --- the shared controller ----------------------------------------------------------------

    def _start_sync(self) -> None:
        task = self._sync_task
        if task is None or task.done():
            self._sync_task = asyncio.get_running_loop().create_task(self._run_sync())

    async def _flush(self) -> None:
        """Sync every event counted so far, and wait for it (closing; tests)."""
        while True:
            if self._sync_task is not None:
                await asyncio.gather(self._sync_task, return_exceptions=True)
            if not self._events or self._fallback is not None:
                return
            self._start_sync()  # each sync takes every event counted: this ends

    async def _run_sync(self) -> None:
        """Replay this worker's events on the shared controller; again at once if 429s came meanwhile."""
        while True:
            events, self._events = self._events, Events()
            if not events:
                return
            self._next_sync = self._now() + SHARED_SYNC_INTERVAL
            try:
                await self._update(events)
            except _REDIS_ERRORS as exc:
                if self._fallback is None and self._on_error == "fallback":
                    self._unreachable(exc)
                fallback = self._fallback
                if fallback is not None:
                    for _ in range(events.limited):
                        fallback.report_rate_limited(sender="", retry_after=None, allowed_rate=events.allowed_rate)
                return
            if not self._events.limited:
                return  # successes since then wait for the next interval

    async def _update(self, events: Events) -> None:
        for _ in range(CAS_ATTEMPTS):
            reply: Sequence[Any] = await self._read_script(keys=[self._state_key], args=[self._now_arg()])
            now = float(reply[0])
            flat = reply[1]
            fields = {_text(flat[i]): flat[i + 1] for i in range(0, len(flat), 2)}
            ceiling = float(fields.get("ceiling", 0)) or None
            control = load(fields.get("ctl"), ceiling)
            before = control.rate
            apply(control, events, now)
            after = control.rate
            cut = after is not None and (before is None or after < before)
            written = await self._cas_script(
                keys=[self._state_key],
                args=[
                    self._now_arg(),
                    _text(fields.get("ver", "0")),
                    repr(after or 0.0),
                    dump(control),
                    "1" if cut else "0",
                    repr(CUT_CARRY_BURSTS if control.carry else 1.0),
                ],
            )
            if int(written):
                self._rate = after
                if after != before:
                    _log.debug("shared rate %s -> %s segments/s", before, after)
                return
        _log.debug("shared controller busy: %d events of this worker dropped", events.answers + events.limited)
