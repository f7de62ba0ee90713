"""rate-control: send_many against the emulator's account queue and 429s; the issue's four rows, and short runs.

Every scenario runs an unthrottled ``send_many`` (default client, 100 in flight, no ``rate``)
against the emulator in its own process (``benchmarks._emulator_child``), whose knobs are turned
while it runs. The limiter is the client's own :class:`~bwasync.AdaptiveLimiter`, subclassed only
to timestamp every answer it is told about (accepted or 429) and every change of its rate.

* **queue model** (dequeue R = 20 / 200 / 2,000 segments/s, a queue of 2 s): ideal time
  ``(n - 2R) / R`` (the first ``2R`` fill the queue at once, the rest leave at R); achieved time
  = start to the last accepted message; ratio = ideal / achieved; share of requests answered 429.
  Run with Bandwidth's "Your allowed rate is N messages per minute" in the 429 (as the emulator
  and Bandwidth send it), and once more with the limiter deaf to it (the rate must then be found
  from the accepted rate alone).
* **sporadic 429s**: 3 % of first attempts answered 429 with ``Retry-After: 1`` whatever the rate;
  throughput (accepted/s) against a fault-free run of the same size, alternated.
* **short runs**: one client, ``send_many`` runs of 300 messages one after another, against 5 %
  of first attempts answered 429 (``Retry-After: 1``) and 20 % of attempts answered 5xx (retried);
  each run's throughput up to its 60th percentile (the rest wait out a Retry-After or a backoff),
  the median over the second half of the runs, against the same runs without the 429s,
  alternated. Each run's tail (retries in backoff) sends little: a limiter that takes a stray
  429 there for a full queue cuts to that, and used to ratchet down run after run.
* **one 429 episode**: a client with a configured rate; every first attempt is answered 429 for
  ``EPISODE_LENGTH`` s; recovery = from the first 429 until the limiter's rate is back at the
  pre-cut rate (what was accepted in the second before; the configured rate unless the machine
  is slower) for good.
* **the account rate halves**: dequeue rate R1, then R1/2 while sending; convergence = from the
  change until every later second has attempts (202 + 429) at most 1.1 x R2 and accepted at least
  0.9 x R2.
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from bwasync import AdaptiveLimiter, Outcome, RetryPolicy

from ._common import Config, ScenarioResult, Table, Target, default_loop, fmt, median, run_on
from ._contenders import make_client
from ._data import requests
from ._responder import ServerProcess

NAME = "rate_control"
TITLE = "rate control under 429s: the queue model, sporadic 429s, one episode, a halved account rate"
CONCURRENCY = 100
QUEUE_SECONDS = 2.0
#: Seconds of ideal sending time per queue-model run (n = R * seconds + queue capacity).
QUEUE_IDEAL = {"full": 20.0, "quick": 8.0, "smoke": 0.1}
QUEUE_RATES = {"full": (20.0, 200.0, 2000.0), "quick": (20.0, 200.0, 2000.0), "smoke": (200.0,)}
SPORADIC_SHARE = 0.03
SPORADIC_N = {"full": 20_000, "quick": 6_000, "smoke": 100}
SPORADIC_ROUNDS = {"full": 2, "quick": 1, "smoke": 1}
EPISODE_RATE = 500.0
EPISODE_LENGTH = 0.2
#: (seconds before the episode, seconds after it) for the one-episode run.
EPISODE_SPAN = {"full": (4.0, 12.0), "quick": (3.0, 11.0), "smoke": (0.3, 0.4)}
#: Short runs: one client, ``send_many`` run after run of ``SHORT_RUN_SIZE`` messages at
#: ``SHORT_CONCURRENCY`` in flight, against 5 % of first attempts answered 429 (Retry-After: 1)
#: and 10 % + 10 % of attempts answered 500 / 503 (retried). Each run ends with a tail of
#: retries waiting out their backoff: seconds where the client sends little, read by a limiter
#: as the account's capacity if it mistakes a stray 429 for a full queue.
SHORT_P_429 = 0.05
SHORT_P_5XX = 0.1
SHORT_RUN_SIZE = {"full": 300, "quick": 300, "smoke": 30}
SHORT_RUNS = {"full": 14, "quick": 8, "smoke": 2}
SHORT_ROUNDS = {"full": 2, "quick": 1, "smoke": 1}
SHORT_CONCURRENCY = 30
#: Retries in quick succession (5xx at 20 % chain now and then): the runs' length is then set by
#: the rate control and the 429s' Retry-After, not by a backoff of seconds.
SHORT_RETRY = RetryPolicy(max_attempts=12, max_delay=1.0, deadline=600.0)
HALVED_FROM = 400.0
#: (seconds at R1, seconds at R1 / 2).
HALVED_SPAN = {"full": (8.0, 16.0), "quick": (5.0, 12.0), "smoke": (0.1, 0.2)}
#: More attempts than the default, so a message is not given up during the first overflow and the
#: run's length measures the rate control rather than the retry policy.
RETRY = RetryPolicy(max_attempts=12, deadline=600.0)


class RecordingLimiter(AdaptiveLimiter):
    """The client's own limiter, timestamping answers and rate changes (``hint=False``: deaf to
    the 429's stated rate)."""

    __slots__ = ("hint", "limited", "ok", "rates")

    def __init__(self, *, hint: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.hint = hint
        self.ok = array("d")
        self.limited = array("d")
        self.rates: list[tuple[float, float | None]] = [(-math.inf, self.rate)]

    def report_success(self, cost: float, *, sender: str) -> None:
        super().report_success(cost, sender=sender)
        self.ok.append(self._now())
        self._note()

    def report_rate_limited(self, *, sender: str, retry_after: float | None, allowed_rate: float | None = None) -> None:
        super().report_rate_limited(
            sender=sender, retry_after=retry_after, allowed_rate=allowed_rate if self.hint else None
        )
        self.limited.append(self._now())
        self._note()

    def _note(self) -> None:
        rate = self.rate
        if rate != self.rates[-1][1]:
            self.rates.append((self._now(), rate))


@dataclass
class Run:
    """One send_many run: its start, its answers and its limiter's rates, on the loop's clock."""

    t0: float
    elapsed: float
    accepted: int
    failed: int
    ok: list[float]
    limited: list[float]
    rates: list[tuple[float, float | None]]
    marks: dict[str, float] = field(default_factory=dict)

    @property
    def share_429(self) -> float:
        answers = len(self.ok) + len(self.limited)
        return len(self.limited) / answers if answers else math.nan

    def window_counts(self, start: float, end: float, width: float = 1.0) -> list[tuple[float, int, int]]:
        """(window start, accepted, 429s) per ``width`` seconds over [start, end)."""
        out = []
        t = start
        while t + width <= end + 1e-9:
            ok = sum(1 for x in self.ok if t <= x < t + width)
            limited = sum(1 for x in self.limited if t <= x < t + width)
            out.append((t - self.t0, ok, limited))
            t += width
        return out


Control = Callable[[str], None]


async def drive(
    base_url: str,
    n: int,
    *,
    seconds: float,
    control: Control | None = None,
    schedule: Sequence[tuple[float, str]] = (),
    hint: bool = True,
    rate: float | None = None,
    stop_after: float | None = None,
) -> Run:
    """``n`` one-segment messages through an unthrottled ``send_many`` (or one at ``rate``).

    ``schedule`` holds ``(seconds after the start, command)`` pairs given to ``control`` (which
    turns the emulator's knobs) while sending; no input is taken after ``seconds``, and with
    ``stop_after`` the run is stopped then, retries still pending or not.
    """
    loop = asyncio.get_running_loop()
    limiter = RecordingLimiter(hint=hint, rate=rate)
    accepted = failed = 0
    last = 0.0
    marks: dict[str, float] = {}

    async def turn_knobs(t0: float) -> None:
        # Commands keep at least their scheduled spacing: after a stall of the loop, two commands
        # due by then are not run back to back with no request served in between.
        prev_at, prev_delay = t0, 0.0
        for delay, command in schedule:
            when = max(t0 + delay, prev_at + delay - prev_delay)
            await asyncio.sleep(max(0.0, when - loop.time()))
            prev_at, prev_delay = loop.time(), delay
            marks[command] = prev_at
            if control is not None:
                control(command)

    async with make_client(base_url, CONCURRENCY, limiter=limiter, retry=RETRY) as client:
        t0 = loop.time()
        knobs = asyncio.ensure_future(turn_knobs(t0))
        try:
            inputs = requests(n, deadline=time.perf_counter() + seconds)
            async with client.send_many(inputs) as results:
                async for result in results:
                    if stop_after is not None and loop.time() >= t0 + stop_after:
                        break
                    if result.outcome is Outcome.ACCEPTED:
                        accepted += 1
                        last = loop.time()
                    else:
                        failed += 1
        finally:
            knobs.cancel()
            await asyncio.gather(knobs, return_exceptions=True)
    return Run(
        t0=t0,
        elapsed=last - t0,
        accepted=accepted,
        failed=failed,
        ok=list(limiter.ok),
        limited=list(limiter.limited),
        rates=limiter.rates,
        marks=marks,
    )


async def drive_runs(base_url: str, runs: int, size: int, *, seconds: float) -> list[list[float]]:
    """``runs`` back-to-back ``send_many`` runs of ``size`` messages through one client (no input
    taken after ``seconds``): for each run, the seconds from its start to each accepted message."""
    limiter = RecordingLimiter()
    out: list[list[float]] = []
    deadline = time.perf_counter() + seconds
    async with make_client(base_url, SHORT_CONCURRENCY, limiter=limiter, retry=SHORT_RETRY) as client:
        for _ in range(runs):
            if time.perf_counter() >= deadline:
                break
            started = time.perf_counter()
            accepted: list[float] = []
            async with client.send_many(requests(size, deadline=deadline)) as results:
                async for result in results:
                    if result.outcome is Outcome.ACCEPTED:
                        accepted.append(time.perf_counter() - started)
            out.append(accepted)
    return out


def run_rate(accepted: list[float], size: int, share: float = 0.6) -> float:
    """A run's throughput up to its ``share`` of ``size`` accepted (messages/s): the rest wait out
    a Retry-After or a retry's backoff, which says nothing about the rate control (with 5 % of
    429s and 20 % of 5xx, 76 % of first attempts are accepted: 60 % come without a retry)."""
    k = int(share * size)
    return k / accepted[k - 1] if len(accepted) >= k > 0 and accepted[k - 1] > 0 else 0.0


# --- the measures ---------------------------------------------------------------------------------


def queue_ideal(n: int, rate: float, queue_seconds: float = QUEUE_SECONDS) -> float:
    """Seconds a perfect client needs: the queue takes its capacity at once, the rest leave at ``rate``."""
    return max(0.0, n - rate * queue_seconds) / rate


def recovery_time(run: Run, since: float, target: float) -> float:
    """Seconds from ``since`` until the limiter's rate is back at ``target`` (or unthrottled) for
    good; 0 if it was never cut, NaN if it never came back."""
    back = 0.0
    for when, rate in run.rates:
        if when < since:
            continue
        if rate is not None and rate < target * 0.999:
            back = math.nan
        elif math.isnan(back):
            back = when - since
    return back


def pre_cut_rate(run: Run, since: float) -> float:
    """Messages/s accepted in the second before ``since``."""
    return sum(1 for t in run.ok if since - 1.0 <= t < since) / 1.0


def convergence_time(run: Run, since: float, rate: float, end: float) -> float:
    """Seconds from ``since`` until every later second has attempts <= 1.1 x ``rate`` and accepted
    >= 0.9 x ``rate`` (NaN if it never settles before ``end``)."""
    windows = run.window_counts(since, end)
    settled = math.nan
    for start, ok, limited in windows:
        good = ok + limited <= 1.1 * rate and ok >= 0.9 * rate
        if good and math.isnan(settled):
            settled = start - (since - run.t0)
        elif not good:
            settled = math.nan
    return settled


# --- scenarios ------------------------------------------------------------------------------------


class EmulatorProcess(ServerProcess):
    """``benchmarks._emulator_child`` with the given knobs; ``command()`` turns one while it runs."""

    def __init__(self, *flags: str) -> None:
        argv = [sys.executable, "-m", "benchmarks._emulator_child", "--no-record", *flags]
        super().__init__(argv, name="emulator")

    def command(self, line: str) -> None:
        proc = self._proc
        assert proc is not None and proc.stdin is not None
        proc.stdin.write(line.encode() + b"\n")
        proc.stdin.flush()


def _counts(run: Run) -> dict[str, Any]:
    return {
        "share_429": run.share_429,
        "requests_429": len(run.limited),
        "accepted": run.accepted,
        "failed": run.failed,
    }


def _queue_row(loop: str, rate: float, ideal_s: float, hint: bool) -> dict[str, Any]:
    n = int(rate * (ideal_s + QUEUE_SECONDS))
    with EmulatorProcess("--dequeue-rate", str(rate), "--queue-seconds", str(QUEUE_SECONDS)) as emu:
        run = run_on(
            loop, partial(drive, emu.base_url, n, seconds=ideal_s * 3 + 30, hint=hint), timeout=ideal_s * 3 + 60
        )
    ideal = queue_ideal(n, rate)
    return {
        "rate": rate,
        "n": n,
        "hint": hint,
        "ideal": ideal,
        "achieved": run.elapsed,
        "ratio": ideal / run.elapsed if run.elapsed > 0 else math.nan,
        **_counts(run),
    }


def _sporadic(loop: str, n: int, p: float) -> dict[str, Any]:
    with EmulatorProcess("--p-429", str(p), "--p-429-retry-after", "1") as emu:
        run = run_on(loop, partial(drive, emu.base_url, n, seconds=120.0), timeout=180.0)
    return {
        "p_429": p,
        "n": n,
        "elapsed": run.elapsed,
        "throughput": run.accepted / run.elapsed if run.elapsed > 0 else math.nan,
        **_counts(run),
    }


def _short_runs(loop: str, runs: int, size: int, p_429: float) -> dict[str, Any]:
    flags = ["--p-500", str(SHORT_P_5XX), "--p-503", str(SHORT_P_5XX), "--p-429", str(p_429)]
    with EmulatorProcess(*flags, "--p-429-retry-after", "1") as emu:
        done = run_on(loop, partial(drive_runs, emu.base_url, runs, size, seconds=240.0), timeout=300.0)
    rates = [run_rate(accepted, size) for accepted in done]
    return {
        "p_429": p_429,
        "runs": len(done),
        "size": size,
        "per_run": [round(r, 1) for r in rates],
        # The second half of the runs: a collapse takes a few runs to set in, and stays.
        "late": median(rates[len(rates) // 2 :]) if rates else math.nan,
        "not_sent": sum(size - len(a) for a in done) + size * (runs - len(done)),
    }


def _episode(loop: str, before: float, after: float) -> dict[str, Any]:
    n = int(EPISODE_RATE * (before + after + 2))
    schedule = [(before, "p_429 1"), (before + EPISODE_LENGTH, "p_429 0")]
    with EmulatorProcess("--p-429-retry-after", "1") as emu:
        run = run_on(
            loop,
            partial(
                drive,
                emu.base_url,
                n,
                seconds=before + after,
                control=emu.command,
                schedule=schedule,
                rate=EPISODE_RATE,
            ),
            timeout=before + after + 60,
        )
    first = min((t for t in run.limited), default=math.nan)
    cut = min((r for t, r in run.rates if r is not None and t >= first), default=math.nan)
    before_cut = pre_cut_rate(run, first)
    return {
        "rate": EPISODE_RATE,
        "n": n,
        "episode_s": EPISODE_LENGTH,
        "pre_cut_rate": before_cut,
        "cut_to": cut,
        "recovery": recovery_time(run, first, min(EPISODE_RATE, before_cut)),
        "recovery_to_configured": recovery_time(run, first, EPISODE_RATE),
        **_counts(run),
        "rates": [(round(t - run.t0, 3), r) for t, r in run.rates[1:]],
    }


def _halved(loop: str, before: float, after: float) -> dict[str, Any]:
    r2 = HALVED_FROM / 2
    n = int(HALVED_FROM * (before + QUEUE_SECONDS) + r2 * after * 1.5)
    schedule = [(before, f"dequeue_rate {r2}")]
    with EmulatorProcess("--dequeue-rate", str(HALVED_FROM), "--queue-seconds", str(QUEUE_SECONDS)) as emu:
        run = run_on(
            loop,
            partial(drive, emu.base_url, n, seconds=before + after, control=emu.command, schedule=schedule),
            timeout=before + after + 60,
        )
    change = run.marks.get(schedule[0][1], math.nan)
    end = run.t0 + before + after
    tail = [(t, ok, lim) for t, ok, lim in run.window_counts(change, end)]
    return {
        "from": HALVED_FROM,
        "to": r2,
        "n": n,
        "convergence": convergence_time(run, change, r2, end),
        "share_429_after": sum(x[2] for x in tail) / max(1, sum(x[1] + x[2] for x in tail)),
        **_counts(run),
        "windows_after_change": tail,
        "rates": [(round(t - run.t0, 3), r) for t, r in run.rates[1:]],
    }


def run(cfg: Config) -> ScenarioResult:
    started = time.perf_counter()
    loop = default_loop()
    ideal_s = cfg.pick(QUEUE_IDEAL)
    result = ScenarioResult(
        NAME,
        TITLE,
        params={
            "concurrency": CONCURRENCY,
            "queue": f"{QUEUE_SECONDS:g} s",
            "loop": loop,
            "retry": f"{RETRY.max_attempts} attempts",
            "emulator": "own process",
        },
    )
    table = Table(
        "queue model: unthrottled send_many, 1 segment per message",
        ["dequeue rate", "429 hint", "n", "ideal s", "achieved s", "ideal/achieved", "429 share", "not sent"],
    )
    rows = []
    # Both ways also in a quick run: the hint-ignored rows are the harder half of the table.
    hints = (True,) if cfg.size == "smoke" else (True, False)
    for rate in cfg.pick(QUEUE_RATES):
        for hint in hints:
            row = _queue_row(loop, rate, ideal_s, hint)
            rows.append(row)
            table.add(
                f"{fmt(rate)}/s",
                "used" if hint else "ignored",
                f"{row['n']:,}",
                f"{row['ideal']:.2f}",
                f"{row['achieved']:.2f}",
                f"{row['ratio']:.3f}",
                f"{row['share_429'] * 100:.2f}%",
                str(row["failed"]),
            )
            label = f"queue {fmt(rate)}/s, hint {'used' if hint else 'ignored'}"
            result.targets.append(Target(f"{label}: ideal/achieved", row["ratio"], ">=", 0.95))
            result.targets.append(
                Target(f"{label}: share of requests answered 429", row["share_429"] * 100, "<=", 3.0, "%")
            )
    result.tables.append(table)
    result.data["queue"] = rows

    n = cfg.pick(SPORADIC_N)
    clean_runs, sporadic_runs = [], []
    for _ in range(cfg.pick(SPORADIC_ROUNDS)):
        clean_runs.append(_sporadic(loop, n, 0.0))
        sporadic_runs.append(_sporadic(loop, n, SPORADIC_SHARE))
    ratios = [s["throughput"] / c["throughput"] for c, s in zip(clean_runs, sporadic_runs, strict=True)]
    ratio = median(ratios)
    sporadic_table = Table(
        f"sporadic 429s: {SPORADIC_SHARE:.0%} of first attempts, Retry-After: 1, no queue limit",
        ["run", "n", "s", "accepted/s", "429 share", "not sent"],
    )
    for clean, sporadic in zip(clean_runs, sporadic_runs, strict=True):
        for label, r in (("fault-free", clean), ("sporadic 429s", sporadic)):
            sporadic_table.add(
                label,
                f"{r['n']:,}",
                f"{r['elapsed']:.2f}",
                r["throughput"],
                f"{r['share_429'] * 100:.2f}%",
                str(r["failed"]),
            )
    result.tables.append(sporadic_table)
    result.targets.append(Target("sporadic 429s: throughput / fault-free throughput", ratio, ">=", 0.5))
    result.data["sporadic"] = {"clean": clean_runs, "sporadic": sporadic_runs, "ratios": ratios}

    runs, size = cfg.pick(SHORT_RUNS), cfg.pick(SHORT_RUN_SIZE)
    plain_runs, faulty_runs = [], []
    for _ in range(cfg.pick(SHORT_ROUNDS)):
        plain_runs.append(_short_runs(loop, runs, size, 0.0))
        faulty_runs.append(_short_runs(loop, runs, size, SHORT_P_429))
    short_ratios = [f["late"] / p["late"] for p, f in zip(plain_runs, faulty_runs, strict=True)]
    short_table = Table(
        f"short runs: {runs} x send_many({size} messages, {SHORT_CONCURRENCY} in flight) on one client, "
        f"{SHORT_P_5XX:.0%} 500 + {SHORT_P_5XX:.0%} 503 (retried), with and without {SHORT_P_429:.0%} 429s",
        ["run", "runs", "accepted/s, median of the second half", "accepted/s per run", "not sent"],
    )
    for plain, faulty in zip(plain_runs, faulty_runs, strict=True):
        for label, r in (("5xx only", plain), ("5xx + sporadic 429s", faulty)):
            short_table.add(
                label,
                str(r["runs"]),
                r["late"],
                " ".join(f"{x:.0f}" for x in r["per_run"]),
                str(r["not_sent"]),
            )
    result.tables.append(short_table)
    result.targets.append(
        Target("short runs with sporadic 429s: throughput / without the 429s", median(short_ratios), ">=", 0.5)
    )
    result.data["short_runs"] = {"plain": plain_runs, "faulty": faulty_runs, "ratios": short_ratios}

    before, after = cfg.pick(EPISODE_SPAN)
    episode = _episode(loop, before, after)
    before, after = cfg.pick(HALVED_SPAN)
    halved = _halved(loop, before, after)
    dynamics = Table(
        "one 429 episode; the account rate halved mid-run",
        ["scenario", "429 share", "pre-cut rate", "cut to", "back / converged in", "not sent"],
    )
    dynamics.add(
        f"send_many(rate={fmt(EPISODE_RATE)}), every first attempt 429 for {EPISODE_LENGTH:g} s",
        f"{episode['share_429'] * 100:.2f}%",
        f"{episode['pre_cut_rate']:.0f}/s",
        f"{episode['cut_to']:.0f}/s",
        f"{episode['recovery']:.2f} s",
        str(episode["failed"]),
    )
    dynamics.add(
        f"dequeue {fmt(HALVED_FROM)} -> {fmt(HALVED_FROM / 2)}/s while sending",
        f"{halved['share_429_after'] * 100:.2f}%",
        f"{fmt(HALVED_FROM)}/s",
        "",
        f"{halved['convergence']:.2f} s",
        str(halved["failed"]),
    )
    result.tables.append(dynamics)
    result.targets.append(Target("one 429 episode: back to the pre-cut rate", episode["recovery"], "<=", 10.0, "s"))
    result.targets.append(
        Target("account rate halved: converged to the new rate", halved["convergence"], "<=", 10.0, "s")
    )
    result.data["episode"] = episode
    result.data["halved"] = halved
    result.notes.append(
        "ideal = (n - queue capacity) / dequeue rate; achieved = start to the last accepted message; "
        "429 share = 429 answers / all answers (retries included)"
    )
    result.notes.append(
        "converged = every later second has attempts <= 1.1 x and accepted >= 0.9 x the new rate; "
        "back = the limiter's rate is at the pre-cut rate again (what was accepted in the second before the "
        "episode: the configured rate unless the machine is slower)"
    )
    result.elapsed = time.perf_counter() - started
    return result
