"""Shared fixtures: the in-process emulator, and a receiver for its status callbacks.

* ``emulator``: a running :class:`~bwasync.emulator.Emulator` with default knobs, username
  ``u``, password ``p``, account ``9900000``.
* ``emulator_factory``: ``async with emulator_factory(p_500=0.1, seed=3) as emu: ...`` for
  any other knobs (same credentials and account unless overridden).
* ``callback_receiver``: the project's receiver on 127.0.0.1, recording every callback POST
  in an ``asyncio.Queue``; ``await receiver.next()`` waits for one without fixed sleeps.

Property-based tests (hypothesis) run a few dozen examples each in ``make test``; the ``fuzz``
profile (``HYPOTHESIS_PROFILE=fuzz``, what ``make fuzz`` sets) runs 10,000 per property.

Tests marked ``slow`` (the end-to-end proofs, seconds each) start first, half on each pytest-xdist
worker (:func:`pytest_collection_modifyitems`), so that the run does not end on one long test
while the other core is idle.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from hypothesis import HealthCheck, settings

from bwasync import campaign
from bwasync._models import StatusCallback, decode_callbacks
from bwasync.emulator import Emulator

#: Shared by every profile: no per-example deadline (the machine's cores are shared, timings
#: are noise), and the emulator fixtures outlive examples on purpose (one server, many requests).
_HYPOTHESIS_COMMON: dict[str, Any] = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    "print_blob": True,
}
#: ``make test``: enough examples to catch a regression, a few seconds in all.
settings.register_profile("default", max_examples=30, **_HYPOTHESIS_COMMON)
#: ``make fuzz``: the long search.
settings.register_profile("fuzz", max_examples=10_000, **_HYPOTHESIS_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deal the ``slow`` tests first: alternately to the head of the first and of the second half.

    ``make test`` runs ``pytest -n 2 --dist worksteal``, which hands each worker one half of the
    collection, in order, and lets an idle worker steal from the tail of the other's. Long tests
    at the head of both halves run side by side from the start; the short ones at the tails are
    what gets stolen at the end. (Every worker collects in the same order, as xdist requires.)
    """
    slow = [item for item in items if item.get_closest_marker("slow") is not None]
    if not slow:
        return
    rest = [item for item in items if item.get_closest_marker("slow") is None]
    first, second = slow[0::2], slow[1::2]
    head = max(len(items) // 2 - len(first), 0)
    items[:] = first + rest[:head] + second + rest[head:]


ACCOUNT_ID = "9900000"
USERNAME = "u"
PASSWORD = "p"
DEFAULT_KNOBS: dict[str, Any] = {"username": USERNAME, "password": PASSWORD, "account_id": ACCOUNT_ID}

EmulatorFactory = Callable[..., contextlib.AbstractAsyncContextManager[Emulator]]


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    async with Emulator(**DEFAULT_KNOBS) as emu:
        yield emu


@pytest.fixture
def emulator_factory() -> EmulatorFactory:
    @contextlib.asynccontextmanager
    async def make(**knobs: Any) -> AsyncIterator[Emulator]:
        async with Emulator(**{**DEFAULT_KNOBS, **knobs}) as emu:
            yield emu

    return make


@dataclass
class Delivery:
    """One callback POST as the receiver saw it (including attempts it refused)."""

    status: int
    headers: dict[str, str]
    body: bytes
    events: list[StatusCallback] = field(default_factory=list)


class CallbackReceiver(campaign.CallbackReceiver):
    """The project's receiver, answering ``statuses`` in turn, then ``default_status``.

    A test double for the emulator's redelivery: every POST, refused or not, is recorded and
    put on ``queue``; a test awaits :meth:`next` or :meth:`collect` (bounded by a timeout,
    never a fixed sleep).
    """

    def __init__(self, statuses: list[int] | None = None, default_status: int = 204) -> None:
        super().__init__("127.0.0.1", 0, on_event=lambda event: None)
        self.shutdown_timeout = 0.1
        self.statuses = list(statuses or [])
        self.default_status = default_status
        self.queue: asyncio.Queue[Delivery] = asyncio.Queue()
        self.deliveries: list[Delivery] = []

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        status = self.statuses.pop(0) if self.statuses else self.default_status
        delivery = Delivery(status, dict(request.headers), body, decode_callbacks(body))
        self.deliveries.append(delivery)
        self.queue.put_nowait(delivery)
        return web.Response(status=status)

    async def next(self, timeout: float = 5.0) -> Delivery:
        return await asyncio.wait_for(self.queue.get(), timeout)

    async def collect(self, n: int, timeout: float = 5.0) -> list[Delivery]:
        return [await self.next(timeout) for _ in range(n)]


@pytest.fixture
async def callback_receiver() -> AsyncIterator[CallbackReceiver]:
    async with CallbackReceiver() as receiver:
        yield receiver
