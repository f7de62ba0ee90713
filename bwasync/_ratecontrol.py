"""How the account rate adapts to 429s: the pure policy behind :class:`~bwasync.AdaptiveLimiter`.

Nothing here reads a clock, sleeps or touches a bucket: every call takes ``now`` (seconds, any
monotonic clock) and :class:`RateController` only answers what the rate should be. The limiter
applies that answer to its token bucket. Every rule is a method or a function below, each with
its own unit test on a hand-moved clock (tests/test_ratecontrol.py).

The rules, and why (PERFORMANCE.md, "Rate control under 429s", holds the measurements):

1. **Cut to what got through, not by a factor.** Bandwidth answers 429 when the account's queue
   is full, and a full queue accepts exactly its dequeue rate ``R``. So on a 429 the rate is cut
   to ``RATE_DRAIN_FACTOR`` × the *accepted* rate measured over the last second (the
   delivery-rate idea behind BBR), a little below ``R`` so the queue drains and the 429s stop.
   With too few answers to measure the accepted rate, the cut is to ``RATE_CUT_FLOOR`` × the
   rate that was being sent (botocore's β = 0.7). A sample can still lie low (the client was
   not sending at full speed): rule 4 undoes such a cut.
2. **The server's word first.** Bandwidth's queue-full 429 says "Your allowed rate is N messages
   per minute"; when present (:attr:`~bwasync.RateLimitError.allowed_rate`, parsed by
   :func:`bwasync._transport.parse_allowed_rate`) the rate is cut to
   ``RATE_HINT_FACTOR`` × that, never above a configured rate.
3. **One cut per episode.** 429s within ``RATE_LIMIT_EPISODE`` seconds of a cut answer requests
   sent before it took effect and do not cut again.
4. **Judge every cut.** At the end of the episode the 429 share of its second half (answers to
   requests sent after the cut) is compared with the share that caused the cut:

   * it fell to at most ``RATE_PAYOFF_SHARE`` of it, and to at most ``RATE_NOISE_MAX_SHARE``:
     the cut paid off; the rate regrows (a share halved from 70 % to 30 % is still a full queue);
   * it did not fall, although the client sent no faster than was being accepted before the cut,
     and it is at most ``RATE_NOISE_MAX_SHARE``: those 429s do not depend on the rate (a flaky
     load balancer, another layer's limit). The cut is **undone**, and that share is remembered
     as background noise: later 429s while the share stays within ``RATE_NOISE_MARGIN`` × the
     noise do not cut at all. This is what keeps a 3 % sprinkle of 429s from driving the rate to
     nothing (each cut shrinking the way back: throughput ∝ 1/√p, Mathis et al.);
   * otherwise the queue is still overflowing: cut again, now to the accepted rate of that second
     half, which was measured while the queue was full and is the account's rate.
5. **Regrow as CUBIC.** After a cut the rate follows ``w_max × (1 + RATE_CUBIC_SCALE × (t - K)³)``
   from the cut rate (``t`` = seconds since the cut): concave up to ``w_max`` (the accepted rate
   the cut was measured from) in ``K`` seconds, flat around it, then convex beyond it to find a
   raised limit, in a few seconds whatever the scale (the curve is relative to ``w_max``).
6. **Back to unthrottled.** A limiter with no configured rate stops throttling once the regrown
   rate is ``RATE_UNTHROTTLE_FACTOR`` times both what the client actually sends and the last
   measured maximum: the limit no longer binds, and the fast path is cheaper without it.

7. **Not on a stray 429 at the start.** In the first second of answers (or after idling), a
   one-second sample of the accepted rate is mostly empty, and a cut to it would be deep. A
   full queue shows itself within milliseconds by a flood of 429s; so until a window has been
   measured, 429s cut only once there are ``RATE_EARLY_SAMPLE`` of them and they are more than
   ``RATE_NOISE_MAX_SHARE`` of the answers since the first of them, or ``RATE_FLOOD_SAMPLE`` of
   them and more than ``RATE_FLOOD_SHARE``: mostly in a row, as the end of a first round that
   overflowed the queue comes back (stray 429s are not in a row). The answers before it do
   not count: they are what the empty queue absorbed, and counting them let a 2-s queue of
   400 seg/s take 50 more 429s before the cut. For the same reason such a first cut goes to
   ``RATE_CUT_FLOOR`` (not ``RATE_DRAIN_FACTOR``) × the accepted rate: that first second's
   accepted rate includes the queue's fill, well above the account's rate, and is no maximum
   for rule 5 to regrow to (the curve's maximum is the cut itself). A cut too deep is
   short-lived: the queue is still full, and rule 4 cuts again to what it accepted (measured
   against the emulator's queue, 200 seg/s: ~20 % fewer 429s, same run time).
8. **Hold at the maximum before probing beyond it.** Rule 5's curve pauses for ``RATE_PLATEAU``
   seconds once it reaches ``w_max`` (CUBIC's plateau, made explicit): ``w_max`` is what a full
   queue accepted, and every probe above it refills the queue and costs a round of 429s. After a
   cut to the rate the server stated (rule 2), the pause is ``RATE_HINT_PLATEAU``: that rate is
   the account's, not an estimate, and probing beyond it every few seconds only buys 429s.

A ``Retry-After`` does not pause the account here: it delays only the retry of the request that
carried it (:mod:`bwasync._retry`). A cut already slows everyone when the queue is full, and
pausing the account on every 429 is what makes rate-independent 429s collapse a run (measured:
3 % of 429s with ``Retry-After: 1`` paused the account most of the time).

Two guards live with the limiter's callers rather than here: the client starts with a probe round
of ``FIRST_ROUND_SIZE`` requests, answered before any other request leaves
(``Gate(first_round=...)`` in :mod:`bwasync._pipeline`), so a queue too small for the round (or
already full) refuses at most the round, and the cut its 429s make paces what follows; and a cut
leaves the account bucket exactly full (``TokenBucket._exhaust``), not paused for as long as the
old rate's burst would take to drain at the new one.
"""

from __future__ import annotations

import math
from typing import Final

from ._constants import (
    ACHIEVED_RATE_WINDOW,
    MIN_RATE,
    RATE_ADJUST_INTERVAL,
    RATE_CUBIC_SCALE,
    RATE_CUT_FLOOR,
    RATE_DRAIN_FACTOR,
    RATE_EARLY_SAMPLE,
    RATE_FLOOD_SAMPLE,
    RATE_FLOOD_SHARE,
    RATE_HINT_FACTOR,
    RATE_HINT_PLATEAU,
    RATE_JUDGE_FROM,
    RATE_JUDGE_MAX,
    RATE_LIMIT_EPISODE,
    RATE_MIN_EVIDENCE,
    RATE_MIN_SAMPLE,
    RATE_NOISE_HALF_LIFE,
    RATE_NOISE_MARGIN,
    RATE_NOISE_MAX_SHARE,
    RATE_PAYOFF_SHARE,
    RATE_PLATEAU,
    RATE_UNTHROTTLE_FACTOR,
)

__all__ = ["Meter", "RateController", "Verdict", "cubic_rate", "cut_target", "judge_cut"]

#: What the end of an episode decided (see :func:`judge_cut`).
Verdict = str
PAID_OFF: Final = "paid off"
NOISE: Final = "noise"
STILL_FULL: Final = "still full"


def cut_target(*, sent: float, accepted: float | None, current: float | None) -> float:
    """Rule 1: the rate to cut to, from the rates measured before the cut (segments/s).

    ``sent`` is what the limiter admitted, ``accepted`` what the server accepted (None when too
    few answers came back to trust it), ``current`` the rate in force (None while unthrottled).
    With a trusted accepted rate: ``RATE_DRAIN_FACTOR`` of it. Without: ``RATE_CUT_FLOOR`` of
    what was being sent. Never above the rate in force or what was being sent (a cut never
    raises), never below ``MIN_RATE``.
    """
    base = sent if current is None else min(current, sent)
    base = max(base, MIN_RATE)
    target = RATE_CUT_FLOOR * base if accepted is None else accepted * RATE_DRAIN_FACTOR
    target = max(MIN_RATE, min(target, base))
    return target if current is None else min(target, current)


def judge_cut(
    *,
    share_before: float,
    answers_after: int,
    limited_after: int,
    sent_after: float,
    accepted_before: float,
    final: bool,
) -> Verdict | None:
    """Rule 4: did the cut stop the 429s? ``PAID_OFF``, ``NOISE``, ``STILL_FULL``, or None.

    ``share_before`` is the 429 share (of answers) that caused the cut; ``answers_after`` and
    ``limited_after`` count the answers and the 429s since the middle of its episode,
    ``sent_after`` is the rate sent since then and ``accepted_before`` the accepted rate the cut
    was measured from. None means "not enough answers yet to tell": had nothing changed, fewer
    than ``RATE_MIN_EVIDENCE`` 429s would be expected among them, and fewer than that many came.
    ``final`` (the judgment has waited ``RATE_JUDGE_MAX``) decides on what there is: a cut that
    nothing shows was needed is undone (``NOISE``).
    """
    share_after = limited_after / answers_after if answers_after else 0.0
    enough = limited_after >= RATE_MIN_EVIDENCE or answers_after * share_before >= RATE_MIN_EVIDENCE
    if not enough and not final:
        return None  # one or two 429s, or none among few answers, say little about a share
    if limited_after == 0 or share_after <= min(RATE_PAYOFF_SHARE * share_before, RATE_NOISE_MAX_SHARE):
        # Without enough answers even at the deadline (a low rate, rare 429s), nothing shows
        # the cut was needed: undo it. A full queue will answer 429 again soon enough.
        return PAID_OFF if enough else NOISE
    # A full queue accepts everything sent below its drain rate: sending no faster than it just
    # accepted and still meeting the same share of 429s means the 429s are not about the rate.
    if share_after <= RATE_NOISE_MAX_SHARE and sent_after <= accepted_before * (2.0 - RATE_DRAIN_FACTOR):
        return NOISE
    return STILL_FULL


def cubic_rate(*, w_max: float, cut_to: float, elapsed: float, plateau: float = 0.0) -> float:
    """Rule 5: the rate ``elapsed`` seconds after a cut from ``w_max`` down to ``cut_to``,
    held flat at ``w_max`` for ``plateau`` seconds once it gets there (rule 8)."""
    depth = max(0.0, 1.0 - cut_to / w_max)
    k = math.pow(depth / RATE_CUBIC_SCALE, 1.0 / 3.0)
    if elapsed > k:
        elapsed = max(k, elapsed - plateau)
    return w_max * (1.0 + RATE_CUBIC_SCALE * (elapsed - k) ** 3)


class Meter:
    """Segments sent and accepted, and answers (accepted / 429), over the last one to two windows.

    Windows of ``ACHIEVED_RATE_WINDOW`` follow each other; an estimate spans the previous
    window and the current one, and never a span shorter than one window, so a single early
    burst reads as ``burst / window`` rather than an enormous rate.
    """

    __slots__ = ("_answered_from", "_cur", "_end", "_prev", "_prev_start")

    def __init__(self) -> None:
        # [sent segments, accepted segments, accepted answers, 429 answers]
        self._cur = [0.0, 0.0, 0, 0]
        self._prev = [0.0, 0.0, 0, 0]
        self._end = -math.inf
        self._prev_start = -math.inf
        # When answers started coming back (after the start, or an idle window); inf: none yet.
        self._answered_from = math.inf

    def roll(self, now: float) -> None:
        if now < self._end:
            return
        if now < self._end + ACHIEVED_RATE_WINDOW:
            self._prev = self._cur
            self._prev_start = self._end - ACHIEVED_RATE_WINDOW
            self._end += ACHIEVED_RATE_WINDOW
        else:  # idle for a window or more: nothing happened in the window before ``now``
            self._prev = [0.0, 0.0, 0, 0]
            self._prev_start = now
            self._end = now + ACHIEVED_RATE_WINDOW
            self._answered_from = math.inf
        self._cur = [0.0, 0.0, 0, 0]

    def sent(self, cost: float, now: float) -> None:
        if now >= self._end:  # roll's own test, inlined: sent and accepted run once per message
            self.roll(now)
        self._cur[0] += cost

    def unsent(self, cost: float) -> None:
        self._cur[0] = max(0.0, self._cur[0] - cost)

    def accepted(self, cost: float, now: float) -> None:
        if now >= self._end:
            self.roll(now)
        if self._answered_from == math.inf:
            self._answered_from = now
        cur = self._cur
        cur[1] += cost
        cur[2] += 1

    def limited(self, now: float) -> None:
        self.roll(now)
        if self._answered_from == math.inf:
            self._answered_from = now
        self._cur[3] += 1

    def young(self, now: float) -> bool:
        """Whether answers have been coming back for less than a window (the start of a run,
        or after idling): the first round trip can take long on a busy machine, and until a
        window of answers is in, the accepted rate reads low."""
        self.roll(now)
        return now - self._answered_from < ACHIEVED_RATE_WINDOW

    def rates(self, now: float) -> tuple[float, float, int, int]:
        """(sent segments/s, accepted segments/s, accepted answers, 429 answers) over the span."""
        self.roll(now)
        span = max(now - self._prev_start, ACHIEVED_RATE_WINDOW)
        cur, prev = self._cur, self._prev
        return (
            (cur[0] + prev[0]) / span,
            (cur[1] + prev[1]) / span,
            int(cur[2] + prev[2]),
            int(cur[3] + prev[3]),
        )


def _share(accepted: int, limited: int) -> float:
    answers = accepted + limited
    return limited / answers if answers else 0.0


class RateController:
    """The account rate, adapted to 429s by the rules in this module's docstring.

    ``rate`` is None while unthrottled. Feed it what happens; after :meth:`on_success` or
    :meth:`on_rate_limited` read ``rate`` again (both return whether it changed)::

        control = RateController(ceiling=None)
        control.on_sent(1, now)
        control.on_rate_limited(now, allowed_rate=None)   # True: a cut; control.rate is set

    Until its first :meth:`on_rate_limited`, :meth:`on_sent` and :meth:`on_success` do nothing
    but count in the meter (``Meter.sent`` / ``Meter.accepted``; ``on_success`` answers False):
    :class:`~bwasync.AdaptiveLimiter`'s fast path counts there itself meanwhile, and
    tests/test_ratelimit.py checks that it ends with the same state as these methods.
    """

    __slots__ = (
        "_accepted_before",
        "_ceiling",
        "_cut_at",
        "_cut_to",
        "_early",
        "_early_from",
        "_episode_end",
        "_first",
        "_half",
        "_half_start",
        "_hinted",
        "_meter",
        "_next_step",
        "_noise",
        "_noise_at",
        "_share_before",
        "_undo",
        "_w_max",
        "rate",
    )

    def __init__(self, *, ceiling: float | None) -> None:
        self._ceiling = ceiling
        self.rate: float | None = ceiling
        self._meter = Meter()
        self._episode_end = -math.inf
        self._half_start = math.inf
        # Second half of the episode: [sent segments, accepted segments, accepted answers, 429s]
        self._half = [0.0, 0.0, 0, 0]
        # First half of the episode: [accepted answers, 429s]
        self._first = [0, 0]
        self._cut_at = -math.inf
        self._cut_to = 0.0
        self._w_max = 0.0
        self._share_before = 0.0
        self._accepted_before = 0.0
        self._undo: float | None = None
        self._hinted = False
        self._next_step = math.inf  # next regrowth step; inf while nothing to regrow
        self._noise = 0.0
        self._noise_at = -math.inf
        # Rule 7: answers since the first 429 of a young meter ([accepted, 429s]), counted from
        # ``_early_from`` for one window; inf: none yet.
        self._early = [0, 0]
        self._early_from = math.inf

    # --- events -------------------------------------------------------------------------------

    def on_sent(self, cost: float, now: float) -> None:
        """``cost`` segments were admitted to be sent."""
        self._meter.sent(cost, now)
        if now >= self._half_start:
            self._half[0] += cost

    def on_unsent(self, cost: float) -> None:
        """An admission was given back: its request never left."""
        self._meter.unsent(cost)

    def on_success(self, cost: float, now: float) -> bool:
        """A send of ``cost`` segments was accepted; True when ``rate`` changed."""
        self._meter.accepted(cost, now)
        if now >= self._half_start:
            half = self._half
            half[1] += cost
            half[2] += 1
        elif now < self._episode_end:
            self._first[0] += 1
        if now >= self._early_from:
            self._early[0] += 1
        if now < self._next_step:
            return False
        return self._tick(now)

    def on_rate_limited(self, now: float, *, allowed_rate: float | None = None) -> bool:
        """A send was answered 429; True when ``rate`` changed."""
        self._meter.limited(now)
        if now >= self._half_start:
            half = self._half
            half[3] += 1
            if (
                half[2] >= RATE_EARLY_SAMPLE
                and half[3] >= RATE_EARLY_SAMPLE
                and self._half_start + RATE_LIMIT_EPISODE / 4 <= now < self._episode_end
            ):
                # Enough answers already to see the queue is still full: no need to wait.
                return self._judge(now, early=True)
        elif now < self._episode_end:
            self._first[1] += 1
        pending = self._half_start != math.inf and now >= self._episode_end  # this 429 is evidence
        changed = self._tick(now) if pending or now >= self._next_step else False
        if now < self._episode_end:
            return changed  # rule 3 (or the judgment just cut again)
        sent, accepted, n_ok, n_limited = self._meter.rates(now)
        share = _share(n_ok, n_limited)
        if allowed_rate is None:
            if share <= RATE_NOISE_MARGIN * self._noise_now(now):
                return changed  # rule 4: within the background share of rate-independent 429s
            if self._meter.young(now) and not self._early_flood(now):
                return changed  # rule 7: too early to tell a full queue from a stray 429
        self._undo = self.rate
        if allowed_rate is not None:
            hint = allowed_rate if self._ceiling is None else min(allowed_rate, self._ceiling)
            self._cut(now, w_max=hint, to=max(MIN_RATE, hint * RATE_HINT_FACTOR), share=share, accepted=accepted)
            self._hinted = True
            return True
        trusted = accepted if n_ok >= RATE_MIN_SAMPLE else None
        young = self._meter.young(now)
        if trusted is not None and young:
            trusted *= RATE_CUT_FLOOR / RATE_DRAIN_FACTOR  # rule 7: the queue's fill inflates it
        to = cut_target(sent=sent, accepted=trusted, current=self.rate)
        # Rule 7 again: a young accepted rate is the queue's fill, no maximum to regrow to.
        self._cut(now, w_max=to if young else max(to, accepted), to=to, share=share, accepted=accepted)
        self._hinted = False
        return True

    # --- internals ----------------------------------------------------------------------------

    def _noise_now(self, now: float) -> float:
        """The remembered background share, halving every ``RATE_NOISE_HALF_LIFE`` seconds."""
        if self._noise == 0.0:
            return 0.0
        return self._noise * math.pow(0.5, (now - self._noise_at) / RATE_NOISE_HALF_LIFE)

    def _early_flood(self, now: float) -> bool:
        """Rule 7: whether the 429s since the first one (this one included) show a full queue."""
        early = self._early
        if now >= self._early_from + ACHIEVED_RATE_WINDOW:
            self._early_from = math.inf
        if self._early_from == math.inf:
            self._early_from = now
            early[0] = early[1] = 0
        early[1] += 1
        share = _share(early[0], early[1])
        if early[1] >= RATE_EARLY_SAMPLE:
            return share > RATE_NOISE_MAX_SHARE
        return early[1] >= RATE_FLOOD_SAMPLE and share > RATE_FLOOD_SHARE

    def _cut(self, now: float, *, w_max: float, to: float, share: float, accepted: float) -> None:
        self.rate = to
        self._w_max = max(w_max, to)
        self._cut_to = to
        self._cut_at = now
        self._share_before = share
        self._accepted_before = accepted
        self._episode_end = now + RATE_LIMIT_EPISODE
        self._half_start = now + RATE_LIMIT_EPISODE * RATE_JUDGE_FROM
        self._half = [0.0, 0.0, 0, 0]
        self._first = [0, 0]
        self._next_step = self._episode_end

    def _tick(self, now: float) -> bool:
        """Judge a finished episode, or take one regrowth step; True when ``rate`` changed."""
        self._next_step = now + RATE_ADJUST_INTERVAL
        if self._half_start != math.inf:
            return self._judge(now)
        return self._grow(now)

    def _judge(self, now: float, *, early: bool = False) -> bool:
        """Rule 4 at the end of an episode (``early``: before it, only to cut again)."""
        sent_segs, ok_segs, n_ok, n_limited = self._half
        span = max(now - self._half_start, 1e-3)
        # The 429s of the first half answer requests sent before the cut: they are "before" too.
        share_before = max(self._share_before, _share(*self._first))
        verdict = (
            PAID_OFF
            if self._hinted
            else judge_cut(
                share_before=share_before,
                answers_after=int(n_ok + n_limited),
                limited_after=int(n_limited),
                sent_after=sent_segs / span,
                accepted_before=self._accepted_before,
                final=now >= self._cut_at + RATE_JUDGE_MAX,
            )
        )
        if verdict is None or (early and verdict != STILL_FULL):
            return False  # keep counting at the cut rate
        self._half_start = math.inf
        if verdict == NOISE:
            self._noise = max(self._noise_now(now), n_limited / (n_ok + n_limited))
            self._noise_at = now
            undo = self._undo
            self.rate = undo
            if undo is None or undo == self._ceiling:
                self._next_step = math.inf
            else:  # regrow from the restored rate as from a plateau
                self._w_max = self._cut_to = undo
                self._cut_at = now
            return True
        if verdict == STILL_FULL:
            # The queue stayed full through the half: what it accepted is its rate (rule 4).
            trusted = ok_segs / span if n_ok >= RATE_MIN_SAMPLE else None
            to = cut_target(sent=sent_segs / span, accepted=trusted, current=self.rate)
            accepted = trusted if trusted is not None else to
            share = n_limited / (n_ok + n_limited)
            self._undo = self.rate
            self._cut(now, w_max=max(to, accepted), to=to, share=share, accepted=accepted)
            return True
        return self._grow(now)

    def _grow(self, now: float) -> bool:
        rate = self.rate
        if rate is None:
            self._next_step = math.inf
            return False
        plateau = RATE_HINT_PLATEAU if self._hinted else RATE_PLATEAU
        new = cubic_rate(w_max=self._w_max, cut_to=self._cut_to, elapsed=now - self._cut_at, plateau=plateau)
        ceiling = self._ceiling
        if ceiling is not None and new >= ceiling:
            new = ceiling
            self._next_step = math.inf
        elif ceiling is None:
            sent = self._meter.rates(now)[0]
            if new >= RATE_UNTHROTTLE_FACTOR * max(sent, self._w_max, MIN_RATE):
                self.rate = None  # rule 6
                self._next_step = math.inf
                return True
        if new <= rate:
            return False
        self.rate = new
        return True
