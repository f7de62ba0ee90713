"""Status callbacks: POST each lifecycle event to the configured URL, as Bandwidth does.

One task per accepted message walks its :func:`~._lifecycle.timeline`, sleeping until each
event is due and delivering it before the next, so a receiver sees a message's events in order.
Delivery is at-least-once: a non-2xx answer or a connection error is retried with doubling
backoff up to ``callback_max_attempts``, and ``p_duplicate_callback`` sends an event twice.
With ``p_stop_reply``, a recipient whose delivery was announced may reply STOP: one more task
POSTs its ``message-received`` callback to the same URL one ``callback_delay`` later.

All POSTs share one ``aiohttp.ClientSession``, opened by :meth:`CallbackDispatcher.start` and
closed by :meth:`CallbackDispatcher.close`, which first cancels and awaits every task, so
stopping the emulator leaks nothing.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Coroutine

import aiohttp
import msgspec

from .._auth import basic_header
from ._config import EmulatorConfig
from ._lifecycle import DELIVERED, callback_event, carrier_for, message_payload, reply_event, timeline
from ._state import AcceptedMessage, EmulatorStats, IdFactory, iso_us

__all__ = ["CallbackDispatcher"]

_HEADERS = {"Content-Type": "application/json; charset=utf-8", "User-Agent": "BandwidthAPI/v2"}
_encode = msgspec.json.Encoder().encode
#: What a recipient drawn by ``p_stop_reply`` replies.
STOP_REPLY_TEXT = "STOP"


class CallbackDispatcher:
    """Delivers the status callbacks of accepted messages; owns its session and tasks."""

    __slots__ = (
        "_auth",
        "_auth_for",
        "_clock",
        "_replies",
        "_reply_ids",
        "_rng",
        "_session",
        "_stats",
        "_tasks",
        "config",
    )

    def __init__(
        self,
        config: EmulatorConfig,
        stats: EmulatorStats,
        rng: random.Random,
        clock: Callable[[], float],
        *,
        replies: random.Random | None = None,
    ) -> None:
        self.config = config
        self._stats = stats
        self._rng = rng
        #: Draws who replies STOP, and the ids of those replies (a stream of its own, so turning
        #: replies on shifts no other draw).
        self._replies = replies or random.Random()
        self._reply_ids = IdFactory(self._replies)
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._auth: dict[str, str] | None = None
        self._auth_for: tuple[str | None, str | None] = (None, None)

    @property
    def pending(self) -> int:
        """Messages whose callbacks are not all delivered yet."""
        return len(self._tasks)

    async def start(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        connector = aiohttp.TCPConnector(limit=self.config.callback_concurrency)
        self._session = aiohttp.ClientSession(connector=connector, headers=_HEADERS)

    def schedule(self, msg: AcceptedMessage, url: str) -> None:
        """Start delivering ``msg``'s events to ``url`` (the callback URL when it was accepted)."""
        if self._session is not None:
            self._spawn(self._run(msg, url))

    def _spawn(self, coro: Coroutine[None, None, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait until every scheduled message's callbacks are delivered or given up."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        """Cancel undelivered callbacks, wait for the tasks to end, close the session."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _run(self, msg: AcceptedMessage, url: str) -> None:
        payload = message_payload(msg)
        carriers = self.config.carrier_names
        for event in timeline(msg):
            delay = msg.dequeue_at + event.offset - self._clock()
            if delay > 0:
                await asyncio.sleep(delay)
            body = _encode([callback_event(msg, event, time=iso_us(), payload=payload, carriers=carriers)])
            await self._deliver(url, body)
            p_duplicate = self.config.p_duplicate_callback
            if p_duplicate and self._rng.random() < p_duplicate:
                self._stats.callbacks_duplicated += 1
                await self._deliver(url, body)
            p_reply = self.config.p_stop_reply
            if event.type == DELIVERED and p_reply and self._replies.random() < p_reply:
                self._spawn(self._reply(msg, event.recipient or 0, url))

    async def _reply(self, msg: AcceptedMessage, index: int, url: str) -> None:
        """Recipient ``index`` replies STOP, a ``callback_delay`` after its delivery."""
        if msg.step > 0:
            await asyncio.sleep(msg.step)
        carrier = carrier_for(msg.to[index], self.config.carrier_names)
        message_id = self._reply_ids.new(int(time.time() * 1000))
        body = reply_event(msg, index, message_id=message_id, time=iso_us(), text=STOP_REPLY_TEXT, carrier=carrier)
        if await self._deliver(url, _encode([body])):
            self._stats.stop_replies_sent += 1

    def _headers(self) -> dict[str, str] | None:
        """The Authorization header for the configured callback credentials, if any."""
        cfg = self.config
        creds = (cfg.callback_username, cfg.callback_password)
        if creds != self._auth_for:
            self._auth_for = creds
            # Not aiohttp's BasicAuth: 3.14 deprecates it, older versions lack its successor.
            self._auth = None if creds[0] is None else {"Authorization": basic_header(creds[0], creds[1] or "")}
        return self._auth

    async def _deliver(self, url: str, body: bytes) -> bool:
        """POST one event until a 2xx, or ``callback_max_attempts`` are spent."""
        cfg = self.config
        stats = self._stats
        session = self._session
        assert session is not None
        attempt = 1
        while True:
            try:
                async with session.post(
                    url,
                    data=body,
                    headers=self._headers(),
                    timeout=aiohttp.ClientTimeout(total=cfg.callback_timeout),
                ) as resp:
                    await resp.read()
                    ok = 200 <= resp.status < 300
            except (aiohttp.ClientError, TimeoutError, OSError):
                ok = False
            if ok:
                stats.callbacks_sent += 1
                return True
            if attempt >= cfg.callback_max_attempts:
                stats.callbacks_failed += 1
                return False
            await asyncio.sleep(min(cfg.callback_backoff * 2 ** (attempt - 1), cfg.callback_backoff_max))
            attempt += 1
            stats.callbacks_redelivered += 1
