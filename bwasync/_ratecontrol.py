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
   not sending at full speed): rule 10 bounds such a cut, and rule 4 undoes it.
2. **The server's word first.** Bandwidth's queue-full 429 says "Your allowed rate is N messages
   per minute"; when present (:attr:`~bwasync.RateLimitError.allowed_rate`, parsed by
   :func:`bwasync._transport.parse_allowed_rate`) the rate is cut to
   ``RATE_HINT_FACTOR`` × that, never above a configured rate.
3. **One cut per episode.** 429s within ``RATE_LIMIT_EPISODE`` seconds of a cut answer requests
   sent before it took effect and do not cut again; nor do 429s while its judgment (rule 4) is
   still counting: they are its evidence, and a cut from the last second's counts would leave
   nothing for the judgment to undo but itself.
4. **Judge every cut, on the odds.** From the end of the episode the 429 share of its second half
   (answers to requests sent after the cut) is compared with the share that caused the cut:

   * it fell to at most ``RATE_PAYOFF_SHARE`` of it, and to at most ``RATE_NOISE_MAX_SHARE``,
     and chance does not explain the fall (:func:`chance_of_so_few` at most
     ``RATE_EVIDENCE_ALPHA``): the cut paid off; the rate regrows (a share halved from 70 % to
     30 % is still a full queue);
   * it did not fall, although the server was offered no more than it accepted before the cut
     (what was answered 202 or 429: a 5xx is no answer from the queue), and it is not beyond
     ``RATE_NOISE_MAX_SHARE`` by more than chance: those 429s do not depend on the rate (a flaky
     load balancer, another layer's limit). The cut is **undone**, and that share is remembered
     as background noise: later 429s do not cut while the share stays within
     ``RATE_NOISE_MARGIN`` × the noise, or within what chance puts in a sample of that size.
     This is what keeps a 3 % sprinkle of 429s from driving the rate to nothing (each cut
     shrinking the way back: throughput ∝ 1/√p, Mathis et al.);
   * otherwise the queue is still overflowing: cut again, now to the accepted rate of that second
     half, which was measured while the queue was full and is the account's rate;
   * with no verdict by ``RATE_JUDGE_MAX`` (few answers, rare 429s), the cut is undone.

   Every verdict needs odds, not a share: a cut is judged at each answer, and a share read on a
   few dozen answers lies often. Judged by shares alone, a cut on a stray 429 was taken to have
   paid off whenever a lull followed (none among 39 answers at 5 %: one time in seven), the noise
   was never learned, and each run's next stray 429 cut deeper: run after run of ``send_many``
   with 5 % of 429s fell from ~3,000 to 2 messages a second.
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
   ``RATE_FLOOD_CUT`` (not ``RATE_DRAIN_FACTOR``) × the accepted rate: that first second's
   accepted rate includes the queue's fill, well above the account's rate, and is no maximum
   for rule 5 to regrow to (the curve's maximum is the cut itself). The cut errs low on
   purpose: the queue is full and holds at least what it accepted, so sending below its rate
   costs nothing until it empties, while sending above it costs a 429 per message (β = 0.7 of
   the fill of a 2-s queue is 1.4 × its rate: 8 more 429s at 20 seg/s before rule 4 could tell).
   A cut still above the rate is short-lived: rule 9 measures the rate from the 429s that follow.
8. **Hold at the maximum before probing beyond it.** Rule 5's curve pauses for ``RATE_PLATEAU``
   seconds once it reaches ``w_max`` (CUBIC's plateau, made explicit): ``w_max`` is what a full
   queue accepted, and every probe above it refills the queue and costs a round of 429s. After a
   cut to the rate the server stated (rule 2), the pause is ``RATE_HINT_PLATEAU``: that rate is
   the account's, not an estimate, and probing beyond it every few seconds only buys 429s. The
   same holds after a cut to a drain measured over ``RATE_PRECISE_SAMPLE`` answers (rule 9),
   which is the account's rate to within 1 %.
9. **Measure the rate while the queue is full.** At a 429 the queue is full; at the next one it
   is full again, so whatever it accepted in between is what it drained: ``accepted / span`` is
   the account's rate to within one message over the span, whatever the client sent and however
   the answers bunched (:func:`drain_rate`; the accepted rate of the last second, rule 1, is the
   queue's *fill* whenever it had room in that second, as after each probe). A span opens at
   the first 429 of an overflow, or, for the first 429 after ``RATE_FULL_GAP`` of quiet, at the
   last 429 before it, so a probe that overflows measures the whole plateau before it (seconds,
   hundreds of answers); it reaches back at most ``RATE_FULL_SPAN_MAX``. The measure is used:

   * while a cut is judged and the overflow shows a full queue (``RATE_FLOOD_SAMPLE`` 429s, over
     ``RATE_FULL_SHARE`` of its answers: not stray 429s), as soon as it is below the rate in
     force: the rate is cut again at once, to the measure less one message
     (:func:`drain_floor`), regrowing to the measure; such a cut is never undone as noise
     (rule 4), the measure being the queue's rate;
   * at any other cut, as a cap: never above the measure less one message (nor below
     ``RATE_FLOOD_CUT`` × the cut the other rules made), and regrowing to the measure, not to
     what was accepted while the queue refilled. Only a span that shows a full queue at one end
     or holds ``RATE_PRECISE_SAMPLE`` answers measures anything (a few answers between two stray
     429s do not), and none across an idle window (the queue emptied; the count reads low).

   Measured against the emulator's 2-s queue with the 429's stated rate ignored, alternated with
   the code before: 2.4 % / 2.6 % of requests answered 429 at 20 / 200 seg/s, from 5.0 % / 4.1 %
   (README, "Finding the rate without the hint").

   An overflow shows a full queue only by more 429s than the learned background explains, and
   that holds for ``RATE_LIMIT_EPISODE``, not for the rest of the overflow (429s that never
   pause are one endless overflow); after a recut, the next one needs the answers since it to
   show a full queue again. A cut to a measured drain that did not lower the share stands, but
   that share is learned as background (rule 4). Without these, five stray 429s bunched once,
   with 5xx answers lowering what is accepted between two 429s, recut a run ever lower.
10. **No deeper than the peak allows, without a full queue.** A cut that nothing shows was made
    against a full queue (no flood) goes no lower than ``RATE_CUT_FLOOR`` × the most accepted
    in one second over the last ``RATE_PEAK_WINDOW`` (BBR's bandwidth filter): the second
    before a stray 429 may read the client's own demand (a run's tail of retries in backoff, a
    quiet spell in a service), and the next burst would be held to it.

11. **Not on a stray 429 or two in a quiet spell.** While nothing throttles (no rate in force
    below the configured one, if any) and fewer than ``RATE_EARLY_SAMPLE`` segments a second were
    sent and fewer answers came over the last second or two, 429s cut only once
    ``RATE_QUIET_EVIDENCE`` of them came within ``RATE_PEAK_WINDOW`` seconds. Such a second is a
    quiet service's own demand, no measure of the account, one or two 429s are no evidence (rule
    4 wants ``RATE_MIN_EVIDENCE`` too), and a cut to it held the next burst there until rule 4's
    deadline undid it: against the emulator, 400 messages after 12 s at 2 msg/s and one 429
    took 4.6 s instead of 0.09 s. A queue that is really full at that rate answers 429 again and
    again (the retries of the requests that got them, after their ``Retry-After``, among them).

A ``Retry-After`` does not pause the account here: it delays only the retry of the request that
carried it (:mod:`bwasync._retry`). A cut already slows everyone when the queue is full, and
pausing the account on every 429 is what makes rate-independent 429s collapse a run (measured:
3 % of 429s with ``Retry-After: 1`` paused the account most of the time).

Two guards live with the limiter's callers rather than here: the client starts with a probe round
of ``FIRST_ROUND_SIZE`` requests, answered before any other request leaves
(``Gate(first_round=...)`` in :mod:`bwasync._pipeline`), so a queue too small for the round (or
already full) refuses at most the round, and the cut its 429s make paces what follows; and a cut
leaves the account bucket full (``TokenBucket._exhaust``), with what the old rate put in it
carried over up to ``CUT_CARRY_BURSTS`` (a pause while an over-full queue drains, as after the
account rate halved), except after a cut to a measured drain (:attr:`RateController.carry`):
that queue is full, not over-full, and a pause only empties what it holds.
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
    RATE_DRAIN_MIN_SPAN,
    RATE_DRAIN_SAMPLE,
    RATE_EARLY_SAMPLE,
    RATE_EVIDENCE_ALPHA,
    RATE_FLOOD_CUT,
    RATE_FLOOD_SAMPLE,
    RATE_FLOOD_SHARE,
    RATE_FULL_GAP,
    RATE_FULL_SHARE,
    RATE_FULL_SPAN_MAX,
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
    RATE_PEAK_WINDOW,
    RATE_PLATEAU,
    RATE_PRECISE_SAMPLE,
    RATE_QUIET_EVIDENCE,
    RATE_RECUT_MARGIN,
    RATE_UNTHROTTLE_FACTOR,
)

__all__ = [
    "Meter",
    "RateController",
    "Verdict",
    "binomial_at_least",
    "binomial_cdf",
    "chance_of_so_few",
    "cubic_rate",
    "cut_target",
    "drain_floor",
    "drain_rate",
    "judge_cut",
]

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


#: Tails of more terms than this are bounded (Chernoff) rather than summed: a 429 flood at
#: thousands of answers a second would otherwise cost a sum of thousands of terms per 429. The
#: bound is above the true tail, so it can only make a verdict wait for more evidence.
_EXACT_TERMS: Final = 200


def _divergence(a: float, p: float) -> float:
    """The Kullback-Leibler divergence of a coin of bias ``a`` from one of bias ``p`` (0 < p < 1)."""
    total = 0.0
    if a > 0.0:
        total += a * math.log(a / p)
    if a < 1.0:
        total += (1.0 - a) * math.log((1.0 - a) / (1.0 - p))
    return total


def binomial_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p): how likely at most ``k`` 429s are among ``n`` answers
    that each are one with probability ``p``. Summed exactly up to ``_EXACT_TERMS`` terms;
    beyond, below the mean, the Chernoff bound ``exp(-n D(k/n || p))`` (above the true value),
    and at or above the mean 1."""
    if k < 0:
        return 0.0
    if k >= n or p >= 1.0 or p <= 0.0:
        return 1.0
    if k >= _EXACT_TERMS:
        return 1.0 if k >= n * p else math.exp(-n * _divergence(k / n, p))
    q = 1.0 - p
    # Terms in log space from the first: (1-p)^n underflows for the thousands of answers a
    # second a fast account gets back.
    log_term = n * math.log(q)
    ratio = math.log(p / q)
    total = 0.0
    for i in range(k + 1):
        total += math.exp(log_term)
        log_term += math.log((n - i) / (i + 1)) + ratio
    return min(1.0, total)


def binomial_at_least(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p): how likely ``k`` or more 429s are among ``n`` answers
    at a background share ``p``. Exact up to ``_EXACT_TERMS`` terms; beyond, the Chernoff
    bound above the mean, and 1 at or below it (never below the true value)."""
    if k <= 0:
        return 1.0
    if k > n or p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    if k > _EXACT_TERMS:
        return 1.0 if k <= n * p else math.exp(-n * _divergence(k / n, p))
    return max(0.0, 1.0 - binomial_cdf(k - 1, n, p))


def _beyond_chance(limited: int, answers: int, share: float) -> bool:
    """Whether ``limited`` 429s among ``answers`` are more than a share ``share`` of them puts
    there by chance, at the odds of ``RATE_EVIDENCE_ALPHA``."""
    return binomial_at_least(limited, answers, share) <= RATE_EVIDENCE_ALPHA


def _log_comb(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def chance_of_so_few(*, limited_after: int, answers_after: int, limited_before: int, answers_before: int) -> float:
    """How likely, were the share of 429s the same before and after, at most ``limited_after``
    of the 429s counted in both samples would fall among the ``answers_after`` answers (Fisher's
    exact test, one-sided: the hypergeometric lower tail). A share read on few answers counts
    for what it is worth: five 429s among nine answers, then none among 47, is no chance
    (3e-5); six among 77 (a stray 5 %, read high), then none among 39, is one time in twelve.
    Beyond ``_EXACT_TERMS`` terms, Hoeffding's bound (the binomial's Chernoff bound holds for
    drawing without replacement too), and 1 at or above the mean."""
    total = answers_before + answers_after
    limited = limited_before + limited_after
    if limited == 0 or answers_after == 0:
        return 1.0
    low = max(0, answers_after - (total - limited))
    high = min(limited_after, limited)
    if high - low >= _EXACT_TERMS:
        share = limited / total
        if limited_after >= answers_after * share:
            return 1.0
        return math.exp(-answers_after * _divergence(limited_after / answers_after, share))
    denominator = _log_comb(total, answers_after)
    return min(
        1.0,
        sum(
            math.exp(_log_comb(limited, i) + _log_comb(total - limited, answers_after - i) - denominator)
            for i in range(low, high + 1)
        ),
    )


def judge_cut(
    *,
    answers_before: int,
    limited_before: int,
    answers_after: int,
    limited_after: int,
    offered_after: float,
    accepted_before: float,
    final: bool,
) -> Verdict | None:
    """Rule 4: did the cut stop the 429s? ``PAID_OFF``, ``NOISE``, ``STILL_FULL``, or None.

    ``limited_before`` of ``answers_before`` answers were 429 when the cut was made (those that
    caused it, and those of its episode's first half, which answer requests sent before it);
    ``answers_after`` and ``limited_after`` count the answers and the 429s since the middle of
    its episode. ``offered_after`` is the rate (segments/s) the server was offered since then:
    what it answered 202 or 429, not what it answered 5xx (a retried 5xx is sent twice and
    offered to the queue once at most). ``accepted_before`` is the accepted rate the cut was
    measured from.

    * ``PAID_OFF`` only when the share fell to at most ``RATE_PAYOFF_SHARE`` of the share before
      and to at most ``RATE_NOISE_MAX_SHARE``, **and** that fall is no chance: had the share not
      changed, so few 429s would fall after the cut less than ``RATE_EVIDENCE_ALPHA`` of the
      time (:func:`chance_of_so_few`). A cut made on a stray 429 sees a chance lull now and then (no 429 among 39
      answers at 5 % happens one time in seven); judged "paid off", it leaves the rate cut and
      the noise unlearned, and the next stray 429 cuts again: the ratchet that collapsed runs.
    * ``NOISE`` when the share did not fall although the server was offered no more than it
      accepted before the cut (within ``2 - RATE_DRAIN_FACTOR``): a full queue accepts all that,
      so the 429s are not about the rate. Also when the deadline (``final``) comes without the
      evidence for either other verdict: nothing shows the cut was needed, so it is undone.
    * ``STILL_FULL`` when the share did not fall while more than that was offered, or is above
      ``RATE_NOISE_MAX_SHARE`` whatever was offered (by more than chance explains, at the same
      odds: a few answers at a low rate easily hold a share above it).
    * None: not enough answers yet to tell (fewer than ``RATE_MIN_EVIDENCE`` 429s, and fewer
      expected at the share before).
    """
    share_before = limited_before / answers_before if answers_before else 0.0
    share_after = limited_after / answers_after if answers_after else 0.0
    enough = limited_after >= RATE_MIN_EVIDENCE or answers_after * share_before >= RATE_MIN_EVIDENCE
    if not enough and not final:
        return None  # one or two 429s, or none among few answers, say little about a share
    if limited_after == 0 or share_after <= min(RATE_PAYOFF_SHARE * share_before, RATE_NOISE_MAX_SHARE):
        odds = chance_of_so_few(
            limited_after=limited_after,
            answers_after=answers_after,
            limited_before=limited_before,
            answers_before=answers_before,
        )
        if odds <= RATE_EVIDENCE_ALPHA:
            return PAID_OFF
        # Fewer 429s, but not so few that chance could not explain it: count on, and at the
        # deadline undo the cut (a full queue answers 429 again soon enough).
        return NOISE if final else None
    # A full queue accepts everything offered below its drain rate: offering no more than it just
    # accepted and still meeting the same share of 429s means the 429s are not about the rate.
    # "More than RATE_NOISE_MAX_SHARE" must be more than chance too: three 429s among twenty
    # answers are 15 %, and come at 5 % one time in thirteen.
    if not _beyond_chance(limited_after, answers_after, RATE_NOISE_MAX_SHARE) and offered_after <= accepted_before * (
        2.0 - RATE_DRAIN_FACTOR
    ):
        return NOISE
    return STILL_FULL


def drain_rate(*, span: float, accepted: float, answers: int, limited: int) -> float | None:
    """Rule 9: the account's rate measured between two 429s, or None if the span says too little.

    At each end of a span that starts and ends with a 429 the queue was full, so what it accepted
    in between (``accepted`` segments in ``answers`` accepted answers, ``span`` seconds apart) is
    what it drained, to within one message: the drain rate, whatever was sent (a cut goes to
    :func:`drain_floor`, one message less). ``limited`` 429s came in the span besides the one
    that opened it. The span must be ``RATE_DRAIN_MIN_SPAN`` long and hold
    ``RATE_DRAIN_SAMPLE`` accepted answers.
    """
    if span < RATE_DRAIN_MIN_SPAN or answers < RATE_DRAIN_SAMPLE or limited < 1:
        return None
    return accepted / span


def drain_floor(drain: float, answers: int) -> float:
    """Rule 9: the measured ``drain`` less one message of the ``answers`` it rests on, the most
    that surely does not refill the queue (NaN stays NaN)."""
    return drain * (answers - 1) / answers if answers else math.nan


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
    burst reads as ``burst / window`` rather than an enormous rate. The counts are kept as
    running totals (:attr:`total`) with a mark at the start of each window, so the counts over
    any span between two readings of :attr:`total` are one subtraction away. It also keeps the
    most accepted in one window over the last ``RATE_PEAK_WINDOW`` (:meth:`peak`, rule 10).

    A caller that counts once per message may count into :attr:`total` itself while
    ``now < counting_until``: until then :meth:`sent` is exactly ``total[0] += cost`` and
    :meth:`accepted` exactly ``total[1] += cost; total[2] += 1`` (the current window has not
    ended, and answers are coming back). From ``counting_until`` on it must call them.
    """

    __slots__ = (
        "_answered_from",
        "_end",
        "_mark",
        "_peaks",
        "_prev_mark",
        "_prev_start",
        "counting_until",
        "total",
    )

    def __init__(self) -> None:
        #: Since the start: [sent segments, accepted segments, accepted answers, 429 answers].
        self.total = [0.0, 0.0, 0, 0]
        # ``total`` when the current window (``_mark``) and the previous one began.
        self._mark = [0.0, 0.0, 0, 0]
        self._prev_mark = [0.0, 0.0, 0, 0]
        self._end = -math.inf
        self._prev_start = -math.inf
        # When answers started coming back (after the start, or an idle window); inf: none yet.
        self._answered_from = math.inf
        #: Loop time before which a caller may count into ``total`` itself (class docstring);
        #: ``_end`` while answers are coming back, else -inf. Set wherever either changes.
        self.counting_until = -math.inf
        # [end, accepted segments] of the windows that ended in the last ``RATE_PEAK_WINDOW``,
        # each larger than all that ended after it (a monotonic queue: the first is the peak).
        # A list of lists, at most a dozen: the shared limiter stores it in Redis as JSON.
        self._peaks: list[list[float]] = []

    def roll(self, now: float) -> None:
        if now < self._end:
            return
        self._ended(self._end, self.total[1] - self._mark[1])
        if now < self._end + ACHIEVED_RATE_WINDOW:
            self._prev_mark = self._mark
            self._prev_start = self._end - ACHIEVED_RATE_WINDOW
            self._end += ACHIEVED_RATE_WINDOW
            self._mark = list(self.total)
            if self._answered_from != math.inf:
                self.counting_until = self._end
        else:  # idle for a window or more: nothing happened in the window before ``now``
            self._mark = list(self.total)
            self._prev_mark = self._mark
            self._prev_start = now
            self._end = now + ACHIEVED_RATE_WINDOW
            self._answered_from = math.inf
            self.counting_until = -math.inf

    def _ended(self, end: float, accepted: float) -> None:
        peaks = self._peaks
        while peaks and peaks[-1][1] <= accepted:
            peaks.pop()
        peaks.append([end, accepted])

    def peak(self, now: float) -> float:
        """The most segments accepted in one window that ended in the last ``RATE_PEAK_WINDOW``
        seconds, as a rate (segments/s); 0 when none did."""
        self.roll(now)
        peaks = self._peaks
        while peaks and peaks[0][0] < now - RATE_PEAK_WINDOW:
            del peaks[0]
        return peaks[0][1] / ACHIEVED_RATE_WINDOW if peaks else 0.0

    def _answering(self, now: float) -> None:
        """The first answer since the start or an idle window came back at ``now``."""
        self._answered_from = now
        self.counting_until = self._end

    def sent(self, cost: float, now: float) -> None:
        if now >= self._end:  # roll's own test, inlined: sent and accepted run once per message
            self.roll(now)
        self.total[0] += cost

    def unsent(self, cost: float) -> None:
        self.total[0] = max(self._mark[0], self.total[0] - cost)

    def accepted(self, cost: float, now: float) -> None:
        if now >= self._end:
            self.roll(now)
        if self._answered_from == math.inf:
            self._answering(now)
        total = self.total
        total[1] += cost
        total[2] += 1

    def limited(self, now: float) -> None:
        self.roll(now)
        if self._answered_from == math.inf:
            self._answering(now)
        self.total[3] += 1

    def answering_since(self, when: float) -> bool:
        """Whether answers have kept coming back since ``when``, with no idle window between."""
        return self._answered_from <= when

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
        total, prev = self.total, self._prev_mark
        return (
            (total[0] - prev[0]) / span,
            (total[1] - prev[1]) / span,
            int(total[2] - prev[2]),
            int(total[3] - prev[3]),
        )


def _share(accepted: int, limited: int) -> float:
    answers = accepted + limited
    return limited / answers if answers else 0.0


def _shows_full(total: list[float], mark: list[float], noise: float) -> bool:
    """Whether the answers since the meter's totals were ``mark`` show a full queue (rule 9):
    ``RATE_FLOOD_SAMPLE`` 429s at least, more than ``RATE_FULL_SHARE`` of the answers, and more
    than the background share ``noise`` of rate-independent 429s explains (rule 4's odds): five
    429s among eighteen answers come at 7 % one time in fifty, and a run sees many overflows."""
    answers, limited = int(total[2] - mark[2]), int(total[3] - mark[3])
    if limited < RATE_FLOOD_SAMPLE or _share(answers, limited) <= RATE_FULL_SHARE:
        return False
    return noise == 0.0 or _beyond_chance(limited, answers + limited, noise)


class RateController:
    """The account rate, adapted to 429s by the rules in this module's docstring.

    ``rate`` is None while unthrottled. Feed it what happens; after :meth:`on_success` or
    :meth:`on_rate_limited` read ``rate`` again (both return whether it changed)::

        control = RateController(ceiling=None)
        control.on_sent(1, now)
        control.on_rate_limited(now, allowed_rate=None)   # True: a cut; control.rate is set

    Until its first :meth:`on_rate_limited`, :meth:`on_sent` and :meth:`on_success` do nothing
    but count in :attr:`meter` (``Meter.sent`` / ``Meter.accepted``; ``on_success`` answers
    False): :class:`~bwasync.AdaptiveLimiter`'s fast path counts into the meter itself meanwhile
    (as :class:`Meter` allows), and tests/test_ratelimit.py checks that it ends with the same
    state as these methods.
    """

    __slots__ = (
        "_accepted_before",
        "_before",
        "_ceiling",
        "_cut_at",
        "_cut_to",
        "_drain",
        "_drain_answers",
        "_early",
        "_early_from",
        "_episode_end",
        "_first",
        "_full_at",
        "_full_mark",
        "_full_trusted",
        "_half",
        "_half_start",
        "_hinted",
        "_last_full_at",
        "_last_full_mark",
        "_measured",
        "_meter",
        "_next_step",
        "_noise",
        "_noise_at",
        "_overflow_full",
        "_overflow_mark",
        "_overflow_shown",
        "_plateau",
        "_recent",
        "_recut_mark",
        "_undo",
        "_w_max",
        "carry",
        "rate",
    )

    def __init__(self, *, ceiling: float | None) -> None:
        self._ceiling = ceiling
        self.rate: float | None = ceiling
        #: Whether the latest cut should keep what the old rate put in the bucket (a pause while
        #: an over-full queue drains): not after a cut to a measured drain (rule 9), whose queue
        #: is full, not over-full, and would only lose what a pause lets it drain.
        self.carry = True
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
        # The answers that caused the cut in force: [accepted, 429s].
        self._before = [0, 0]  # a list: the shared limiter stores the state as JSON
        self._accepted_before = 0.0
        self._undo: float | None = None
        self._hinted = False
        # Rule 9: the cut in force was to a measured drain rate (never undone as noise).
        self._measured = False
        self._plateau = RATE_PLATEAU
        # Rule 9: the 429 that opens the span the drain is measured over, and the latest 429,
        # each with the meter's totals right after it (-inf: none yet).
        self._full_at = -math.inf
        self._full_mark = [0.0, 0.0, 0, 0]
        self._last_full_at = -math.inf
        self._last_full_mark = [0.0, 0.0, 0, 0]
        # Whether the span opened at a 429 of an overflow that showed a full queue; the meter's
        # totals before the first 429 of the current overflow, and whether it shows one.
        self._full_trusted = False
        self._overflow_mark = [0.0, 0.0, 0, 0]
        self._overflow_full = False
        self._overflow_shown = -math.inf  # when the overflow last showed a full queue
        # The meter's totals at the last recut in this overflow (None: none yet).
        self._recut_mark: list[float] | None = None
        # The drain measured over that span at the latest 429 (NaN: not measured), and how many
        # accepted answers it rests on.
        self._drain = math.nan
        self._drain_answers = 0
        self._next_step = math.inf  # next regrowth step; inf while nothing to regrow
        self._noise = 0.0
        self._noise_at = -math.inf
        # Rule 7: answers since the first 429 of a young meter ([accepted, 429s]), counted from
        # ``_early_from`` for one window; inf: none yet.
        self._early = [0, 0]
        self._early_from = math.inf
        # Rule 11: the times of the latest ``RATE_QUIET_EVIDENCE`` 429s.
        self._recent: list[float] = []

    @property
    def meter(self) -> Meter:
        """What was sent and answered recently, as the rules read it (counted by the ``on_*`` methods)."""
        return self._meter

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
        recent = self._recent  # rule 11: the latest 429s
        recent.append(now)
        if len(recent) > RATE_QUIET_EVIDENCE:
            del recent[0]
        few = len(recent) < RATE_QUIET_EVIDENCE or now - recent[0] > RATE_PEAK_WINDOW
        full = self._measure_drain(now)
        early = False
        if now >= self._half_start:
            half = self._half
            half[3] += 1
            early = (
                half[2] >= RATE_EARLY_SAMPLE
                and half[3] >= RATE_EARLY_SAMPLE
                and self._half_start + RATE_LIMIT_EPISODE / 4 <= now < self._episode_end
            )
        elif now < self._episode_end:
            self._first[1] += 1
        if full and allowed_rate is None and self._recut(now):
            return True  # rule 9: the queue stayed full while the cut was judged, and its drain is measured
        if early:
            # Enough answers already to see the queue is still full: no need to wait.
            return self._judge(now, early=True)
        pending = self._half_start != math.inf and now >= self._episode_end  # this 429 is evidence
        changed = self._tick(now) if pending or now >= self._next_step else False
        if now < self._episode_end or self._half_start != math.inf:
            # Rule 3; or the judgment just cut again; or it is still counting: the 429s are its
            # evidence, and a cut from the last second's counts would undo nothing it finds.
            return changed
        sent, accepted, n_ok, n_limited = self._meter.rates(now)
        if allowed_rate is None:
            if not self._beyond_noise(n_ok, n_limited, now):
                return changed  # rule 4: within the background share of rate-independent 429s
            if self._meter.young(now):
                if not self._early_flood(now):
                    return changed  # rule 7: too early to tell a full queue from a stray 429
            elif few and max(sent, n_ok + n_limited) < RATE_EARLY_SAMPLE and self.rate == self._ceiling:
                return changed  # rule 11: a stray 429 or two in a quiet spell, while nothing throttles
        self._undo = self.rate
        if allowed_rate is not None:
            hint = allowed_rate if self._ceiling is None else min(allowed_rate, self._ceiling)
            self._cut(
                now,
                w_max=hint,
                to=max(MIN_RATE, hint * RATE_HINT_FACTOR),
                before=(n_ok, n_limited),
                accepted=accepted,
                hinted=True,
            )
            return True
        trusted = accepted if n_ok >= RATE_MIN_SAMPLE else None
        young = self._meter.young(now)
        if trusted is not None and young:
            trusted *= RATE_FLOOD_CUT / RATE_DRAIN_FACTOR  # rule 7: the queue's fill inflates it
        to = cut_target(sent=sent, accepted=trusted, current=self.rate)
        if not young and not self._overflow_full:
            # Rule 10: nothing shows a full queue, so the last second may read the client's own
            # demand (a run's tail, a quiet spell in a service): no deeper than beta of the peak.
            # (A peak above the rate in force is a burst: the floor is then beta of that rate.)
            peak = self._meter.peak(now) if self.rate is None else min(self._meter.peak(now), self.rate)
            if RATE_CUT_FLOOR * peak > to:
                to = RATE_CUT_FLOOR * peak
                accepted = max(accepted, peak)
        # Rule 7 again: a young accepted rate is the queue's fill, no maximum to regrow to.
        self._cut_capped(
            now, w_max=to if young else max(to, accepted), to=to, before=(n_ok, n_limited), accepted=accepted
        )
        return True

    # --- internals ----------------------------------------------------------------------------

    def _noise_now(self, now: float) -> float:
        """The remembered background share, halving every ``RATE_NOISE_HALF_LIFE`` seconds."""
        if self._noise == 0.0:
            return 0.0
        return self._noise * math.pow(0.5, (now - self._noise_at) / RATE_NOISE_HALF_LIFE)

    def _beyond_noise(self, accepted: int, limited: int, now: float) -> bool:
        """Rule 4's memory: whether ``limited`` 429s among ``accepted + limited`` answers are more
        than the remembered background share explains: above ``RATE_NOISE_MARGIN`` times it, and
        too many for chance (fewer than ``RATE_EVIDENCE_ALPHA`` of samples that size would hold
        as many). The second test is what holds at a few messages a second, where two 429s
        among fifteen answers are 13 %, but come at 5 % one time in six."""
        noise = self._noise_now(now)
        if noise == 0.0:
            return limited > 0
        if _share(accepted, limited) <= RATE_NOISE_MARGIN * noise:
            return False
        return _beyond_chance(limited, accepted + limited, noise)

    def _learn_noise(self, now: float, accepted: float, limited: float) -> None:
        """Rule 4: remember ``limited`` 429s among ``accepted + limited`` answers as background."""
        share = min(_share(int(accepted), int(limited)), RATE_NOISE_MAX_SHARE)  # a small sample reads high
        self._noise = max(self._noise_now(now), share)
        self._noise_at = now

    def _measure_drain(self, now: float) -> bool:
        """Rule 9, on a 429 at ``now`` (already counted): move the span's ends, and measure the
        drain over it (``_drain``, NaN when the span says too little). True when this overflow
        (the 429s since the last quiet spell of ``RATE_FULL_GAP``) shows a full queue: at least
        ``RATE_FLOOD_SAMPLE`` 429s, more than ``RATE_FULL_SHARE`` of its answers (a
        rate-independent 3 % does not, nor a chance cluster of three stray 429s)."""
        total = self._meter.total
        last = self._last_full_at
        if now - last >= RATE_FULL_GAP or now - self._full_at > RATE_FULL_SPAN_MAX:
            # The first 429 after a quiet spell: the span opens at the last 429 before it (the
            # queue was full then too, if that overflow showed a full queue) unless that is too
            # old to say what the rate is now.
            if now - last <= RATE_FULL_SPAN_MAX:
                self._full_at, self._full_mark, self._full_trusted = last, self._last_full_mark, self._overflow_full
            else:
                self._full_at, self._full_mark, self._full_trusted = now, list(total), False
        if now - last >= RATE_FULL_GAP:
            self._overflow_mark = [total[0], total[1], total[2], total[3] - 1]  # this 429 counts
            self._overflow_shown = -math.inf
            self._recut_mark = None
        self._last_full_at, self._last_full_mark = now, list(total)
        noise = self._noise_now(now)
        if _shows_full(total, self._overflow_mark, noise):
            self._overflow_shown = now
        # A full queue shown holds for an episode, not for the whole overflow: 429s that never
        # pause for ``RATE_FULL_GAP`` (a steady background share) make one endless overflow, and
        # five of them bunched at its start must not stand for a full queue for the rest of it.
        self._overflow_full = now - self._overflow_shown <= RATE_LIMIT_EPISODE
        # Rule 9's recut: the overflow showed a full queue, and so did the answers since the
        # last recut in it, if any.
        full = self._overflow_full and (self._recut_mark is None or _shows_full(total, self._recut_mark, noise))
        mark = self._full_mark
        answers, limited = int(total[2] - mark[2]), int(total[3] - mark[3])
        drain = drain_rate(span=now - self._full_at, accepted=total[1] - mark[1], answers=answers, limited=limited)
        self._drain = math.nan if drain is None else drain
        self._drain_answers = answers
        return full and drain is not None

    def _recut(self, now: float) -> bool:
        """Rule 9: while a cut is judged and the queue still overflows, cut to its measured drain
        as soon as that is below the rate in force (by more than ``RATE_RECUT_MARGIN``)."""
        rate = self.rate
        if rate is None or self._hinted or self._half_start == math.inf:
            return False
        drain = self._drain
        to = max(MIN_RATE, drain_floor(drain, self._drain_answers))
        if not to < rate * (1.0 - RATE_RECUT_MARGIN):
            return False
        self._undo = rate
        counts = self._first if self._half_start > now else self._before
        before = (counts[0], counts[1])
        self._cut(
            now,
            w_max=max(to, self._hold()),
            to=to,
            before=before,
            accepted=drain,
            measured=True,
            precise=self._drain_answers >= RATE_PRECISE_SAMPLE,
        )
        # The next measure starts here: the first answers of an overflow bunch (202s of requests
        # the queue took before it filled come back among its first 429s) and read high.
        total = self._meter.total
        self._full_at, self._full_mark, self._full_trusted = now, list(total), True
        # And the next recut needs the answers since this one to show a full queue again: a
        # queue cut to its drain stops answering 429, while 429s that do not depend on the rate
        # keep their share and, with 5xx answers lowering what is accepted, measure a "drain"
        # below every rate (five stray 429s bunched once recut a run ever lower).
        self._recut_mark = list(total)
        return True

    def _cut_capped(self, now: float, *, w_max: float, to: float, before: tuple[int, int], accepted: float) -> None:
        """A cut decided by rules 1, 4 or 7, capped by rule 9's measured drain when there is one.

        A span measures the queue only if it opened or ends in an overflow that showed a full
        queue, or holds ``RATE_PRECISE_SAMPLE`` answers (a few answers between two stray 429s
        are no measure), and only if the client did not idle in it (the queue then emptied and
        the count reads low). Even so the cap goes no deeper than ``RATE_FLOOD_CUT`` of the
        decided cut: a client that sent slowly for part of the span reads low too.
        """
        drain = self._drain  # NaN when not measured: every comparison with it is False
        precise = self._drain_answers >= RATE_PRECISE_SAMPLE and drain == drain
        measured = self._full_trusted or self._overflow_full
        if not (precise or measured) or not self._meter.answering_since(self._full_at):
            drain = math.nan
        floor = drain_floor(drain, self._drain_answers)
        if floor < to:
            to = max(floor, RATE_FLOOD_CUT * to)
            w_max = max(to, min(self._hold(), w_max))
        elif precise:
            # The cut stands (the 429s say the rate in force is too high), but what to regrow to
            # and hold at is the measured rate, not what was accepted while the queue refilled.
            w_max = max(to, min(w_max, self._hold()))
        self._cut(now, w_max=w_max, to=to, before=before, accepted=accepted, measured=measured, precise=precise)

    def _hold(self) -> float:
        """Rule 9: the rate to regrow to after a cut to a measured drain: the drain itself, or
        one message less once it is precise (the rate then holds there for long)."""
        answers = self._drain_answers
        return drain_floor(self._drain, answers) if answers >= RATE_PRECISE_SAMPLE else self._drain

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

    def _cut(
        self,
        now: float,
        *,
        w_max: float,
        to: float,
        before: tuple[int, int],
        accepted: float,
        hinted: bool = False,
        measured: bool = False,
        precise: bool = False,
    ) -> None:
        self._hinted = hinted
        self._measured = measured
        self.carry = not measured
        # Rule 8: hold long at a rate the server stated, or one measured over many answers.
        self._plateau = RATE_HINT_PLATEAU if hinted or precise else RATE_PLATEAU
        self.rate = to
        self._w_max = max(w_max, to)
        self._cut_to = to
        self._cut_at = now
        self._before = list(before)
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
        # The 429s of the first half answer requests sent before the cut: they are "before" too
        # (the sample with the larger share of them is the one the cut is judged against).
        before, first = self._before, self._first
        ok_before, limited_before = before if _share(*before) >= _share(*first) else first
        # What the server was offered (answered 202 or 429; a 5xx is not the queue's answer): the
        # accepted segments, scaled up by the share of answers that were 429.
        offered = ok_segs / span * (n_ok + n_limited) / n_ok if n_ok else math.inf
        verdict = (
            PAID_OFF
            if self._hinted
            else judge_cut(
                answers_before=ok_before + limited_before,
                limited_before=limited_before,
                answers_after=int(n_ok + n_limited),
                limited_after=int(n_limited),
                offered_after=offered,
                accepted_before=self._accepted_before,
                final=now >= self._cut_at + RATE_JUDGE_MAX,
            )
        )
        if verdict is None or (early and verdict != STILL_FULL):
            return False  # keep counting at the cut rate
        if verdict == NOISE and self._measured:
            # Rule 9: a measured drain is the queue's rate: the cut stands. But the 429s that
            # did not fall with it are background, and remembered as such: were the measure a
            # chance (stray 429s bunched), later stray 429s would otherwise cut again and again.
            self._learn_noise(now, n_ok, n_limited)
            verdict = PAID_OFF
        self._half_start = math.inf
        if verdict == NOISE:
            self._learn_noise(now, n_ok, n_limited)
            undo = self._undo
            self.rate = undo
            if undo is None or undo == self._ceiling:
                self._next_step = math.inf
            else:  # regrow from the restored rate as from a plateau
                self._plateau = RATE_PLATEAU
                self._w_max = self._cut_to = undo
                self._cut_at = now
            return True
        if verdict == STILL_FULL:
            # The queue stayed full through the half: what it accepted is its rate (rule 4).
            trusted = ok_segs / span if n_ok >= RATE_MIN_SAMPLE else None
            to = cut_target(sent=sent_segs / span, accepted=trusted, current=self.rate)
            accepted = trusted if trusted is not None else to
            self._undo = self.rate
            self._cut_capped(now, w_max=max(to, accepted), to=to, before=(int(n_ok), int(n_limited)), accepted=accepted)
            return True
        return self._grow(now)

    def _grow(self, now: float) -> bool:
        rate = self.rate
        if rate is None:
            self._next_step = math.inf
            return False
        new = cubic_rate(w_max=self._w_max, cut_to=self._cut_to, elapsed=now - self._cut_at, plateau=self._plateau)
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
