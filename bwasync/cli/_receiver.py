"""A tiny status-callback receiver for the demo: aiohttp on 127.0.0.1, Basic auth, idempotent.

:class:`CallbackCollector` is the pure part (which callbacks are expected, which have come,
duplicates dropped); :class:`CallbackReceiver` is the HTTP shell around it.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import socket
from collections.abc import Callable, Iterable
from types import TracebackType

import msgspec
from aiohttp import web

from .._models import Message, StatusCallback, decode_callbacks

__all__ = ["FINAL_TYPES", "CallbackCollector", "CallbackReceiver", "expected_callbacks"]

#: The callback types that end one recipient's delivery: exactly one of them per recipient.
FINAL_TYPES = frozenset({"message-delivered", "message-failed"})

_Key = tuple[str, str, str]


def expected_callbacks(message: Message) -> set[_Key]:
    """The callbacks a message will get: ``message-sending`` (MMS only), ``message-sent``, then
    one delivered-or-failed per recipient. Keys are ``(message id, kind, recipient)``; the
    per-message events name the first recipient, as Bandwidth's do."""
    first = message.to[0] if message.to else ""
    keys = {(message.id, "message-sent", first)}
    if message.media:
        keys.add((message.id, "message-sending", first))
    keys.update((message.id, "final", to) for to in message.to)
    return keys


def _key(event: StatusCallback) -> _Key:
    kind = "final" if event.type in FINAL_TYPES else event.type
    return (event.message.id, kind, event.to)


class CallbackCollector:
    """Status callbacks in arrival order, without duplicates, and when all expected are in.

    Delivery is at-least-once, so an event seen twice is counted once (``duplicates`` says how
    many were dropped). Events may arrive before their message's 202 has been read; they are
    kept and count as soon as the message is expected. ``done`` is set once :meth:`expect` has
    been called and every expected callback has arrived.
    """

    __slots__ = ("_expected", "_seen", "done", "duplicates", "events", "on_change")

    def __init__(self, on_change: Callable[[CallbackCollector], None] | None = None) -> None:
        self.events: list[StatusCallback] = []
        self.duplicates = 0
        self.done = asyncio.Event()
        self._seen: set[_Key] = set()
        self._expected: set[_Key] | None = None
        #: Called after every change (a progress display hooks in here).
        self.on_change = on_change

    @property
    def expected(self) -> int:
        return len(self._expected or ())

    @property
    def received(self) -> int:
        """Expected callbacks that have arrived."""
        return len(self._seen & self._expected) if self._expected is not None else 0

    def expect(self, messages: Iterable[Message]) -> None:
        """Declare every accepted message; ``done`` can be set from now on."""
        expected: set[_Key] = set()
        for message in messages:
            expected |= expected_callbacks(message)
        self._expected = expected
        self._changed()

    def add(self, events: Iterable[StatusCallback]) -> None:
        for event in events:
            key = _key(event)
            if key in self._seen:
                self.duplicates += 1
                continue
            self._seen.add(key)
            self.events.append(event)
        self._changed()

    def _changed(self) -> None:
        if self._expected is not None and self._expected <= self._seen:
            self.done.set()
        if self.on_change is not None:
            self.on_change(self)

    def __repr__(self) -> str:
        return f"<CallbackCollector {self.received}/{self.expected} duplicates={self.duplicates}>"


class CallbackReceiver:
    """Serves ``POST /callbacks`` on an ephemeral loopback port, checking HTTP Basic auth.

    >>> async with CallbackReceiver(collector, username="u", password="p") as receiver:  # doctest: +SKIP
    ...     receiver.url     # give this to the emulator as its callback URL
    """

    PATH = "/callbacks"

    def __init__(self, collector: CallbackCollector, *, username: str, password: str) -> None:
        self.collector = collector
        token = base64.b64encode(f"{username}:{password}".encode()).decode()
        self._authorization = f"Basic {token}".encode()
        self.rejected = 0
        self._runner: web.AppRunner | None = None
        self._port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}{self.PATH}"

    async def _handle(self, request: web.Request) -> web.Response:
        given = request.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(given, self._authorization):
            self.rejected += 1
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="callbacks"'})
        try:
            events = decode_callbacks(await request.read())
        except msgspec.DecodeError as exc:
            self.rejected += 1
            return web.Response(status=400, text=str(exc))
        self.collector.add(events)
        return web.Response(status=204)

    async def __aenter__(self) -> CallbackReceiver:
        app = web.Application()
        app.router.add_post(self.PATH, self._handle)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        # Bind the socket ourselves: port 0 picks a free port, and the socket says which.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind(("127.0.0.1", 0))
            self._port = sock.getsockname()[1]
            await web.SockSite(runner, sock).start()
        except BaseException:
            sock.close()
            await runner.cleanup()
            raise
        self._runner = runner
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
