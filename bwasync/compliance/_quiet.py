"""Quiet hours: may a message go now, in its recipients' local time, and if not, when?

A window ``"21:00-08:00"`` is *quiet*: no sending from 21:00 (inclusive) to 08:00 (exclusive),
local wall-clock time. A window whose start is later than its end crosses midnight; a window
like ``"12:00-13:00"`` is quiet within one day. Everything here is pure: the instant is an
argument, never read from a clock, so it is tested on fixed instants.

Rules, exactly:

* A message may go at instant *t* only when *t* is outside the window in **every** time zone
  considered: all zones of every recipient (a number can span several zones; a group message
  has several recipients).
* When it may not, :attr:`QuietCheck.next_allowed` is the first instant at which it is
  outside the window in all of them at once. Daylight saving is followed as the wall clock
  does: if the window's end is skipped by a spring-forward (``"21:00-02:30"`` on the night
  New York jumps from 02:00 to 03:00), the window ends at the jump; if it occurs twice in a
  fall-back, the window ends at its first occurrence after the instant.
* If the zones never leave the window at the same time (zones half a day apart with a long
  window), ``next_allowed`` is None and the message may never go under this window.

::

    window = QuietHours.parse("21:00-08:00")
    check = window.check(["America/New_York"], datetime(2026, 3, 8, 3, 0, tzinfo=UTC))
    check.allowed         # False: 22:00 in New York
    check.next_allowed    # 2026-03-08 12:00 UTC: 08:00 EDT, the morning the clocks went forward
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .._exceptions import ConfigurationError
from ._constants import QUIET_CACHE_SIZE, QUIET_SEARCH_HORIZON
from ._numbers import zones_for_number

__all__ = ["QuietCheck", "QuietHours"]

_WINDOW = re.compile(r"(\d{2}):(\d{2})-(\d{2}):(\d{2})")
_FORMAT_HINT = "expected HH:MM-HH:MM in 24-hour local time, quiet from the first to the second (e.g. 21:00-08:00)"


@dataclass(frozen=True, slots=True)
class QuietCheck:
    """Whether a message may go now, and if not, from when.

    ``next_allowed`` is an aware UTC datetime: the instant checked when ``allowed``, the first
    instant it may go otherwise, None when it never may (see ``reason``). ``zones`` are the
    zones considered, ``quiet_zones`` those in which it is quiet at the instant checked.
    """

    allowed: bool
    next_allowed: datetime | None
    zones: tuple[str, ...]
    quiet_zones: tuple[str, ...] = ()
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class QuietHours:
    """A daily quiet window in local time: quiet from ``start`` (inclusive) to ``end`` (exclusive).

    >>> QuietHours.parse("21:00-08:00").is_quiet_at(time(7, 59))
    True
    """

    start: time
    end: time

    def __post_init__(self) -> None:
        if self.start == self.end:
            raise ConfigurationError(
                f"quiet hours {self}: start and end are equal, which could mean never or always quiet"
            )
        if self.start.tzinfo is not None or self.end.tzinfo is not None:
            raise ConfigurationError("quiet hours are local wall-clock times: give them without a time zone")
        if any(t.second or t.microsecond for t in (self.start, self.end)):
            raise ConfigurationError("quiet hours start and end on whole minutes")

    @classmethod
    def parse(cls, text: str) -> QuietHours:
        """``"HH:MM-HH:MM"`` (surrounding spaces allowed); :class:`~bwasync.ConfigurationError` otherwise."""
        match = _WINDOW.fullmatch(text.strip())
        if match is None:
            raise ConfigurationError(f"invalid quiet hours {text!r}: {_FORMAT_HINT}")
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        for hour, minute in ((h1, m1), (h2, m2)):
            if hour > 23 or minute > 59:
                raise ConfigurationError(
                    f"invalid quiet hours {text!r}: {hour:02d}:{minute:02d} is not a time of day (00:00 to 23:59)"
                )
        return cls(time(h1, m1), time(h2, m2))

    def __str__(self) -> str:
        return f"{_hhmm(self.start)}-{_hhmm(self.end)}"

    def is_quiet_at(self, local: time) -> bool:
        """Whether the local wall-clock time ``local`` (naive) is inside the window."""
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end

    def check(self, zones: Iterable[str], now: datetime) -> QuietCheck:
        """May a message go at ``now`` to someone in all of ``zones`` (IANA names)?

        An unknown zone name raises :class:`~bwasync.ConfigurationError`; no zones at all is
        not allowed (nothing says it is daytime there): ``next_allowed`` None.
        """
        names = zones if isinstance(zones, tuple) else tuple(zones)
        if now.tzinfo is None or now.utcoffset() is None:
            raise ConfigurationError("the instant to check quiet hours at must be timezone-aware")
        if not names:
            return QuietCheck(False, None, names, reason="no time zone known for the recipient")
        # The answer is the same for every instant of a UTC minute: windows are whole minutes,
        # and zone offsets and their changes are too. So a campaign checking row after row for
        # the same zones computes it once a minute.
        check = _check_minute(self, names, int(now.timestamp()) // 60)
        return QuietCheck(True, now.astimezone(UTC), names) if check.allowed else check

    def check_numbers(self, numbers: Iterable[str], now: datetime) -> QuietCheck:
        """:meth:`check` for the zones of every number (E.164): a group message goes only
        when it may go to every recipient. Needs ``bwasync[compliance]`` (phonenumbers).

        A number with no known zone at all makes the message not allowed (see
        :func:`zones_for_number`); give such a recipient a zone and use :meth:`check`.
        """
        zones: list[str] = []
        for number in numbers:
            found = zones_for_number(number)
            if not found:
                return QuietCheck(False, None, tuple(zones), reason=f"no time zone known for {number}")
            zones.extend(found)
        return self.check(tuple(dict.fromkeys(zones)), now)

    def _check_minute(self, names: tuple[str, ...], at: datetime) -> QuietCheck:
        tzs = [(name, _zone(name)) for name in names]
        quiet = tuple(name for name, tz in tzs if self.is_quiet_at(at.astimezone(tz).time()))
        if not quiet:
            return QuietCheck(True, at, names)
        first = quiet[0]
        local = at.astimezone(_zone(first))
        reason = f"quiet hours {self} in {first} ({_hhmm(local.time())} local)"
        after = self._next_allowed_in_all(tzs, at)
        if after is None:
            reason += f"; the window never ends in all of {', '.join(names)} at once"
        return QuietCheck(False, after, names, quiet, reason)

    def _next_allowed_in_all(self, tzs: list[tuple[str, tzinfo]], at: datetime) -> datetime | None:
        # Each zone's next allowed instant is at or before the first instant allowed in all of
        # them (that instant is allowed in each), so moving to the latest of them never
        # overshoots; when it no longer moves, every zone allows it.
        t = at
        limit = at + QUIET_SEARCH_HORIZON
        while t <= limit:
            latest = max(self._next_allowed_in(tz, t) for _, tz in tzs)
            if latest == t:
                return t
            t = latest
        return None

    def _next_allowed_in(self, tz: tzinfo, at: datetime) -> datetime:
        """The first instant at or after ``at`` (UTC) that is outside the window in ``tz``."""
        local = at.astimezone(tz)
        if not self.is_quiet_at(local.time()):
            return at
        day = local.date()
        if self.start > self.end and local.time() >= self.start:
            day += timedelta(days=1)  # in the evening part: the window ends tomorrow morning
        wall = datetime.combine(day, self.end)
        # fold=0 and fold=1 are the wall time's two readings: the same instant normally, two
        # instants an hour apart in a fall-back, and (PEP 495) the offsets before and after a
        # spring-forward when the wall time does not exist.
        readings = [wall.replace(tzinfo=tz, fold=fold).astimezone(UTC) for fold in (0, 1)]
        real = [u for u in readings if u.astimezone(tz).replace(tzinfo=None) == wall and u > at]
        if real:
            return min(real)
        return _transition(tz, min(readings), max(readings))


@lru_cache(maxsize=QUIET_CACHE_SIZE)
def _check_minute(window: QuietHours, names: tuple[str, ...], minute: int) -> QuietCheck:
    return window._check_minute(names, datetime.fromtimestamp(minute * 60, UTC))


def _hhmm(t: time) -> str:
    return f"{t.hour:02d}:{t.minute:02d}"


@lru_cache(maxsize=1024)
def _zone(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigurationError(f"unknown time zone {name!r} (expected an IANA name like America/New_York)") from None


def _transition(tz: tzinfo, before: datetime, after: datetime) -> datetime:
    """The instant in (before, after] at which ``tz``'s UTC offset changes to ``after``'s (to the second).

    Bisection on whole seconds: zone offsets change on whole seconds, and the interval is the
    size of the skipped wall-clock time (an hour, rarely more), so this takes about a dozen steps.
    """
    target = after.astimezone(tz).utcoffset()
    lo, hi = int(before.timestamp()), int(after.timestamp())
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, UTC).astimezone(tz).utcoffset() == target:
            hi = mid
        else:
            lo = mid
    return datetime.fromtimestamp(hi, UTC)
