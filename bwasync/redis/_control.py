"""The shared rate controller: the in-process :class:`~bwasync._ratecontrol.RateController`, its
state kept in Redis.

The account's adaptive state is one :class:`RateController` (its module states the rules: cut
to the accepted rate or the server's stated rate, one cut per episode, undo cuts that do not
lower the 429 share, regrow as CUBIC). For every worker to share it, its state lives in the
limiter's Redis hash (field ``ctl``, written by the ``CAS`` script together with the ``rate``
the acquisition script reads). Each worker counts what it sees (:class:`Events`: segments sent
and given back, answers accepted, 429s) and, every ``SHARED_SYNC_INTERVAL`` seconds or at once
on a 429, loads the controller, replays its events on it at Redis's clock, and writes it back if
nobody wrote in between (else it reloads and replays again). The decision rules are the
in-process limiter's, run once per event whichever worker saw it; the meter they read (accepted
rate, 429 share) counts every worker's traffic, which is what the account's queue sees.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import msgspec

from .._ratecontrol import Meter, RateController

__all__ = ["Events", "apply", "dump", "load"]


@dataclass(slots=True)
class Events:
    """What one worker saw since its last sync (segments, and answers by kind)."""

    sent: float = 0.0
    unsent: float = 0.0
    accepted: float = 0.0
    answers: int = 0
    limited: int = 0
    #: The server's stated account rate in the latest 429 that carried one (segments/s).
    allowed_rate: float | None = None

    def __bool__(self) -> bool:
        return bool(self.sent or self.unsent or self.answers or self.limited)


def apply(control: RateController, events: Events, now: float) -> None:
    """Replay a worker's events on the shared controller, at ``now`` (Redis's clock)."""
    if events.sent:
        control.on_sent(events.sent, now)
    if events.unsent:
        control.on_unsent(events.unsent)
    if events.answers:
        cost = events.accepted / events.answers
        for _ in range(events.answers):
            control.on_success(cost, now)
    for _ in range(events.limited):
        control.on_rate_limited(now, allowed_rate=events.allowed_rate)


# --- the controller's state as JSON ------------------------------------------------------------
# Every slot of the controller (and of its meter) is a number, None, a flag or a list of numbers;
# JSON has no infinities, so they travel as strings.

_NON_FINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


def _encode(value: Any) -> Any:
    if isinstance(value, Meter):
        return {"meter": {name: _encode(getattr(value, name)) for name in Meter.__slots__}}
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, list):
        return [_encode(item) for item in value]
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict) and "meter" in value:
        meter = Meter()
        for name, item in value["meter"].items():
            if name in Meter.__slots__:
                setattr(meter, name, _decode(item))
        return meter
    if isinstance(value, str) and value in _NON_FINITE:
        return _NON_FINITE[value]
    if isinstance(value, list):
        return [_decode(item) for item in value]
    return value


def dump(control: RateController) -> bytes:
    """The controller's whole state, as JSON."""
    return msgspec.json.encode({name: _encode(getattr(control, name)) for name in RateController.__slots__})


def load(blob: bytes | str | None, ceiling: float | None) -> RateController:
    """The controller stored in ``blob`` (a fresh one when there is none), under ``ceiling``.

    The configured ceiling in Redis wins over the one stored with the state (the last limiter
    started sets it): the rate is capped by it, and set to it if the state was unthrottled.
    """
    control = RateController(ceiling=ceiling)
    if blob:
        state = msgspec.json.decode(blob)
        for name, value in state.items():
            if name in RateController.__slots__:
                setattr(control, name, _decode(value))
        control._ceiling = ceiling
        if ceiling is not None and (control.rate is None or control.rate > ceiling):
            control.rate = ceiling
    return control
