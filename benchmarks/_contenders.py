"""The contenders: bwasync ``send_many``, a bare aiohttp loop, and the official SDK on threads.

Each runs one bounded trial (``n`` messages or ``seconds``, whichever comes first) against a
server and returns a :class:`Trial`. The async ones are coroutines; run them on the loop you want
with :func:`benchmarks._common.run_on`.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import aiohttp

from bwasync import MessagingClient, Outcome

from ._data import (
    ACCOUNT_ID,
    PASSWORD,
    USERNAME,
    cycled_requests,
    encoded_bodies,
    message_fields,
    request_dicts,
    sdk_request,
)


@dataclass
class Trial:
    """One bounded run of one contender."""

    sent: int
    errors: int
    elapsed: float
    #: Process CPU seconds (all threads) during the trial.
    cpu: float
    #: Messages/s between the 10% and 90% completions: the steady state, without ramp-up/drain.
    steady: float
    first_error: str | None = None

    @property
    def rate(self) -> float:
        return self.sent / self.elapsed if self.elapsed > 0 else 0.0


class _Progress:
    """Counts completions and notes when 10% and 90% of the planned ones were reached."""

    __slots__ = ("errors", "first_error", "hi", "lo", "n", "ok", "t_hi", "t_lo")

    def __init__(self, n: int) -> None:
        self.n = n
        self.ok = 0
        self.errors = 0
        self.first_error: str | None = None
        self.lo = max(1, n // 10)
        self.hi = max(self.lo + 1, n - n // 10)
        self.t_lo = 0.0
        self.t_hi = 0.0

    def done(self, ok: bool, error: object = None) -> None:
        if ok:
            self.ok += 1
        else:
            self.errors += 1
            if self.first_error is None:
                self.first_error = repr(error)
        count = self.ok + self.errors
        if count == self.lo:
            self.t_lo = time.perf_counter()
        elif count == self.hi:
            self.t_hi = time.perf_counter()

    def trial(self, started: float, cpu_started: float) -> Trial:
        elapsed = time.perf_counter() - started
        steady = (self.hi - self.lo) / (self.t_hi - self.t_lo) if self.t_hi > self.t_lo else 0.0
        return Trial(
            sent=self.ok,
            errors=self.errors,
            elapsed=elapsed,
            cpu=time.process_time() - cpu_started,
            steady=steady,
            first_error=self.first_error,
        )


def make_client(base_url: str, concurrency: int, **options: Any) -> MessagingClient:
    return MessagingClient(
        ACCOUNT_ID, username=USERNAME, password=PASSWORD, base_url=base_url, concurrency=concurrency, **options
    )


async def bwasync_send_many(
    base_url: str, n: int, *, concurrency: int, seconds: float, dicts: bool = False, rate: float | None = None
) -> Trial:
    """bwasync ``send_many`` with validation, the (unthrottled) limiter and retries on.

    Inputs are ``MessageRequest``s built in the generator as the workers pull them, from the
    same pre-formatted messages the bare loop posts pre-encoded (:func:`~._data.cycled_requests`;
    ``dicts``: wire-named dicts that ``send_many`` validates), so building, validation and
    encoding are timed.
    """
    progress = _Progress(n)
    fields = message_fields()
    async with make_client(base_url, concurrency) as client:
        started = time.perf_counter()
        cpu_started = time.process_time()
        deadline = started + seconds
        inputs = request_dicts(n, deadline=deadline) if dicts else cycled_requests(fields, n, deadline=deadline)
        async with client.send_many(inputs, concurrency=concurrency, rate=rate) as results:
            async for result in results:
                progress.done(result.outcome is Outcome.ACCEPTED, result.error)
        return progress.trial(started, cpu_started)


async def bare_aiohttp(base_url: str, n: int, *, concurrency: int, seconds: float) -> Trial:
    """The ceiling for an aiohttp client: ``concurrency`` coroutines on one session posting
    pre-encoded bodies and reading each answer; no validation, no limiter, no retry, no decode."""
    bodies = encoded_bodies()
    mask = len(bodies) - 1
    url = f"{base_url}/users/{ACCOUNT_ID}/messages"
    headers = {
        "Authorization": "Basic " + base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode(),
        "Content-Type": "application/json",
        "Accept": "application/json",
    }
    progress = _Progress(n)
    counter = itertools.count()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        started = time.perf_counter()
        cpu_started = time.process_time()
        deadline = started + seconds

        async def worker() -> None:
            while (i := next(counter)) < n and time.perf_counter() < deadline:
                try:
                    async with session.post(url, data=bodies[i & mask], headers=headers) as resp:
                        await resp.read()
                        progress.done(resp.status == 202, resp.status)
                except (aiohttp.ClientError, OSError) as exc:
                    progress.done(False, exc)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return progress.trial(started, cpu_started)


def sdk_threads(base_url: str, n: int, *, threads: int, seconds: float) -> Trial:
    """The official ``bandwidth-sdk`` (sync urllib3 + pydantic) on a pool of ``threads`` threads,
    one shared ``ApiClient`` whose urllib3 pool holds one connection per thread."""
    from bandwidth import ApiClient, Configuration
    from bandwidth.api.messages_api import MessagesApi

    config = Configuration(host=base_url, username=USERNAME, password=PASSWORD, ignore_operation_servers=True)
    config.connection_pool_maxsize = threads  # default is 5 x CPUs: would make extra threads wait
    api = MessagesApi(ApiClient(config))
    progress = _Progress(n)
    counter = itertools.count()
    started = time.perf_counter()
    cpu_started = time.process_time()
    deadline = started + seconds

    lock = threading.Lock()

    def work() -> None:
        while (i := next(counter)) < n and time.perf_counter() < deadline:
            try:
                api.create_message(ACCOUNT_ID, sdk_request(i))
                ok, error = True, None
            except Exception as exc:
                ok, error = False, exc
            with lock:
                progress.done(ok, error)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        for future in [pool.submit(work) for _ in range(threads)]:
            future.result()
    return progress.trial(started, cpu_started)
