"""The shared rate controller: pure decision rules over the state kept in Redis.

The account's adaptive state (current rate, ceiling, additive step, episode and pause times) lives
in one Redis hash. A limiter that sees a 429, or enough successes to grow the rate, reads that
state, decides here what it becomes, and writes it back with a compare-and-set script (see
``_scripts.CAS``): the decision is made once, by these functions, whichever worker makes it, and
every worker then sends at the new rate. Times are Redis server seconds.

The rules are the in-process :class:`~bwasync.AdaptiveLimiter`'s (AIMD with one cut per
rate-limit episode, a pause for ``Retry-After``, additive recovery measured from the end of the
episode, the first cut of an unthrottled run made below the achieved rate), on the same constants.
This module is the seam where a different controller plugs in: :func:`cut` and :func:`grow` are
all the shared limiter asks of one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from .._constants import (
    ACHIEVED_RATE_WINDOW,
    MAX_RETRY_AFTER,
    MIN_RATE,
    RATE_DECREASE_FACTOR,
    RATE_INCREASE_PER_SECOND,
    RATE_LIMIT_EPISODE,
)
from ._constants import SHARED_ADJUST_INTERVAL

__all__ = ["RateState", "achieved_rate", "cut", "grow"]


@dataclass(frozen=True, slots=True)
class RateState:
    """The controlled part of the shared state (times in Redis server seconds)."""

    #: Current account rate (segments/s); None while unthrottled.
    rate: float | None
    #: Configured rate, never exceeded; None when there is none.
    ceiling: float | None
    #: Additive increase, segments/s regained per second.
    step: float
    #: 429s before this belong to the latest episode and do not cut again.
    episode_end: float = -math.inf
    #: The rate grows only for time after this.
    grow_from: float = -math.inf
    #: Nothing is admitted before this (Retry-After).
    paused_until: float = -math.inf


def initial_step(ceiling: float | None) -> float:
    """Additive step for a configured ceiling (0 until the first cut when there is none)."""
    return RATE_INCREASE_PER_SECOND * ceiling if ceiling is not None else 0.0


def cut(state: RateState, now: float, retry_after: float | None, achieved: float) -> tuple[RateState, bool] | None:
    """A 429 at ``now``: the new state, and whether the bucket's burst must be dropped.

    ``None`` when nothing changes (a 429 of an episode already cut, with no longer pause).
    ``achieved`` is the account-wide admitted rate (segments/s) over the last window or two.
    """
    pause_end = -math.inf
    if retry_after is not None and retry_after > 0:  # NaN and <= 0 mean "no pause"
        pause_end = now + min(retry_after, MAX_RETRY_AFTER)
    if state.rate is not None and now < state.episode_end:
        if pause_end <= state.paused_until:
            return None
        return (
            replace(
                state,
                paused_until=pause_end,
                episode_end=max(state.episode_end, pause_end),
                grow_from=max(state.grow_from, pause_end),
            ),
            False,
        )
    floor = MIN_RATE if state.ceiling is None else min(MIN_RATE, state.ceiling)
    if state.rate is None:
        before = achieved  # first 429 of an unthrottled run: throttle below what got through
    elif state.ceiling is None:
        before = min(state.rate, achieved) if achieved > 0 else state.rate
    else:
        before = state.rate
    new_rate = max(floor, before * RATE_DECREASE_FACTOR)
    step = state.step if state.ceiling is not None else RATE_INCREASE_PER_SECOND * max(before, floor)
    episode_end = max(now + RATE_LIMIT_EPISODE, pause_end)
    return (
        RateState(
            rate=new_rate,
            ceiling=state.ceiling,
            step=step,
            episode_end=episode_end,
            grow_from=episode_end,
            paused_until=max(state.paused_until, pause_end),
        ),
        True,
    )


def grow(state: RateState, now: float) -> RateState | None:
    """Additive increase for the time since ``grow_from``; ``None`` when there is nothing to do."""
    if state.rate is None:
        return None
    elapsed = now - state.grow_from
    if elapsed < SHARED_ADJUST_INTERVAL:
        return None
    if state.ceiling is not None and state.rate >= state.ceiling:
        return None
    new_rate = state.rate + state.step * elapsed
    if state.ceiling is not None:
        new_rate = min(new_rate, state.ceiling)
    return replace(state, rate=new_rate, grow_from=now)


def achieved_rate(win_end: float, win_count: float, prev_count: float, prev_start: float, now: float) -> float:
    """Segments/s admitted over the last one to two windows, from the counters the scripts keep.

    The scripts roll the window only when they admit; here it is rolled on read the same way, and
    the span is never taken as shorter than one window (a single early burst is not a huge rate).
    """
    window = ACHIEVED_RATE_WINDOW
    if now >= win_end:
        if now < win_end + window:
            prev_count, prev_start, win_count = win_count, win_end - window, 0.0
        else:
            prev_count, prev_start, win_count = 0.0, now, 0.0
    span = max(now - prev_start, window)
    return (prev_count + win_count) / span
