"""What the demo expects of status callbacks, and which have come.

:class:`CallbackCollector` is pure (which callbacks are expected, which have come, duplicates
dropped); the HTTP side is the project's one receiver,
:class:`~bwasync.campaign.CallbackReceiver`, with :meth:`CallbackCollector.add_one` as its
``on_event``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

from .._models import Message, StatusCallback

__all__ = ["FINAL_TYPES", "CallbackCollector", "expected_callbacks"]

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

    def add_one(self, event: StatusCallback) -> None:
        """One event (the receiver's ``on_event``)."""
        self.add((event,))

    def _changed(self) -> None:
        if self._expected is not None and self._expected <= self._seen:
            self.done.set()
        if self.on_change is not None:
            self.on_change(self)

    def __repr__(self) -> str:
        return f"<CallbackCollector {self.received}/{self.expected} duplicates={self.duplicates}>"
