"""limiter-accuracy: 1,000 segments/s through ``send_many``; achieved rate and largest burst.

Every send's admission time is taken by the ``before_send`` hook, which ``send_many`` awaits
right after the limiter admitted the send and right before the request leaves (``loop.time()``,
the limiter's own clock). From those timestamps ``t_1 <= ... <= t_N`` (one segment each):

* **rate, all sends** = ``N / (t_N - t_0)``, ``t_0`` the start of the run. It includes the
  initial burst, so with a burst of ``B`` it reads about ``(B + rate*T) / T``.
* **rate, excluding the initial burst** = sends admitted in ``(t_1 + B/rate, t_N]`` divided by
  that window's length. A bucket that started full has drained its burst by ``B/rate`` seconds
  after the first send (sooner when the client sends faster than the rate).
* **largest burst** = the maximum, over every window ``[a, b]``, of ``count(a <= t_i <= b) -
  rate * (b - a)``: how far any stretch of the run got ahead of the rate. A token bucket of rate
  ``r`` and burst ``B`` guarantees it is at most ``B``. It is computed exactly, in one pass, as
  ``max over j of (j - rate*t_j) + max over i <= j of (rate*t_i - i) + 1``.

The hook runs when the admitted task resumes, a few microseconds to a millisecond after the
limiter's decision, so the timestamps carry that jitter (at 1,000/s, 1 ms of jitter is one segment).
"""

from __future__ import annotations

import asyncio
import math
import time
from array import array
from collections.abc import Sequence
from functools import partial
from typing import Any

from bwasync import MessageRequest, Outcome

from ._common import Config, ScenarioResult, Table, Target, default_loop, fmt, run_on
from ._contenders import make_client
from ._data import requests
from ._responder import ServerProcess

NAME = "limiter-accuracy"
TITLE = "send_many at 1,000 segments/s: achieved rate and largest burst, from per-send timestamps"
RATE = 1000.0
#: Seconds of paced sending per configuration.
SECONDS = {"full": 10.0, "quick": 3.0, "smoke": 0.2}
CONCURRENCY = 64
RATE_TOLERANCE = 0.02


def largest_burst(times: Sequence[float], rate: float) -> tuple[float, float, float]:
    """``max over windows [a, b] of count - rate*(b - a)`` and the window ``(a, b)`` reaching it.

    ``times`` must be sorted. For a window from the i-th to the j-th timestamp (0-based) the
    excess is ``(j - i + 1) - rate*(t_j - t_i)``; any other window is dominated by one of these.
    """
    best = -math.inf
    best_a = best_b = math.nan
    prefix = -math.inf  # max over i <= j of rate*t_i - i
    prefix_at = math.nan
    for j, t in enumerate(times):
        candidate = rate * t - j
        if candidate > prefix:
            prefix, prefix_at = candidate, t
        excess = j + 1 - rate * t + prefix
        if excess > best:
            best, best_a, best_b = excess, prefix_at, t
    return best, best_a, best_b


def max_in_window(times: Sequence[float], width: float) -> int:
    """Most timestamps in any window of ``width`` seconds (two pointers over sorted times)."""
    most = lo = 0
    for hi, t in enumerate(times):
        while t - times[lo] > width:
            lo += 1
        most = max(most, hi - lo + 1)
    return most


async def _paced_run(base_url: str, n: int, seconds: float, burst: float | None) -> dict[str, Any]:
    """``n`` one-segment sends at ``RATE``; ``burst=None``: ``send_many(rate=RATE)`` (default
    burst); else the client's own limiter built with ``rate=RATE, burst=burst``."""
    loop = asyncio.get_running_loop()
    stamps = array("d")

    async def hook(index: int, request: MessageRequest) -> None:
        stamps.append(loop.time())

    options: dict[str, Any] = {} if burst is None else {"rate": RATE, "burst": burst}
    ok = errors = 0
    async with make_client(base_url, CONCURRENCY, **options) as client:
        t0 = loop.time()
        wall = time.perf_counter()
        run_rate = RATE if burst is None else None
        inputs = requests(n, deadline=wall + seconds)
        async with client.send_many(inputs, concurrency=CONCURRENCY, rate=run_rate, before_send=hook) as results:
            async for result in results:
                if result.outcome is Outcome.ACCEPTED:
                    ok += 1
                else:
                    errors += 1
    return {"t0": t0, "stamps": sorted(stamps), "accepted": ok, "errors": errors}


def analyse(t0: float, stamps: Sequence[float], rate: float, burst: float) -> dict[str, float]:
    n = len(stamps)
    if n < 2:
        return {"sends": n}
    t1, tn = stamps[0], stamps[-1]
    overall = n / (tn - t0)
    cut = t1 + burst / rate
    after = sum(1 for t in stamps if t > cut)
    steady = after / (tn - cut) if tn > cut else math.nan
    excess, a, b = largest_burst(stamps, rate)
    return {
        "sends": n,
        "span": tn - t0,
        "rate_all": overall,
        "rate_steady": steady,
        "steady_window": tn - cut,
        "largest_burst": excess,
        "largest_burst_from": a - t0,
        "largest_burst_to": b - t0,
        "max_in_1s": max_in_window(stamps, 1.0),
        "max_in_100ms": max_in_window(stamps, 0.1),
    }


def run(cfg: Config) -> ScenarioResult:
    started = time.perf_counter()
    seconds = cfg.pick(SECONDS)
    loop = default_loop()
    result = ScenarioResult(
        NAME,
        TITLE,
        params={"rate": RATE, "seconds": seconds, "concurrency": CONCURRENCY, "loop": loop, "segments/message": 1},
    )
    # (label, burst given to the client (None: send_many's rate=), the burst in force, seconds)
    configs = [
        ("send_many(rate=1000), default burst", None, RATE, seconds),  # DEFAULT_BURST_SECONDS = 1 s of rate
        ("client rate=1000, burst=20", 20.0, 20.0, seconds / 2),
    ]
    table = Table(
        "admissions (before_send timestamps)",
        [
            "configuration",
            "burst B",
            "sends",
            "span s",
            "rate, all",
            "rate, after burst",
            "largest burst",
            "max in 1 s",
            "max in 100 ms",
        ],
    )
    with ServerProcess.responder() as server:
        for label, burst, effective_burst, length in configs:
            n = int(effective_burst + RATE * length)
            raw = run_on(loop, partial(_paced_run, server.base_url, n, length + 5.0, burst), timeout=length + 30)
            stats = analyse(raw["t0"], raw["stamps"], RATE, effective_burst)
            result.data[label] = {
                "burst": effective_burst,
                **stats,
                "accepted": raw["accepted"],
                "errors": raw["errors"],
            }
            table.add(
                label,
                effective_burst,
                f"{stats['sends']:,}",
                f"{stats.get('span', math.nan):.3f}",
                stats.get("rate_all", math.nan),
                f"{stats.get('rate_steady', math.nan):.2f}",
                f"{stats.get('largest_burst', math.nan):.3f}",
                f"{stats.get('max_in_1s', 0):,}",
                f"{stats.get('max_in_100ms', 0):,}",
            )
            steady = stats.get("rate_steady", math.nan)
            result.targets.append(
                Target(
                    f"{label}: |rate after burst / target - 1|",
                    abs(steady / RATE - 1) * 100,
                    "<=",
                    RATE_TOLERANCE * 100,
                    "%",
                    f"{steady:.2f}/s over {stats.get('steady_window', math.nan):.2f} s",
                )
            )
            result.targets.append(
                Target(
                    f"{label}: largest burst (max over windows of count - rate*width)",
                    stats.get("largest_burst", math.nan),
                    "<=",
                    effective_burst,
                    "segments",
                )
            )
            if raw["errors"]:
                result.notes.append(f"{label}: {raw['errors']} sends failed")
    result.tables.append(table)
    result.notes.append(
        "'rate, all' = sends / (last admission - start), initial burst included; 'after burst' counts only "
        "admissions later than B/rate after the first; largest burst is computed exactly from the timestamps "
        "(see benchmarks/limiter_accuracy.py)"
    )
    result.notes.append(
        f"a bucket of rate r and burst B admits at most r*w + B in any window w: here {fmt(RATE)}*w + B"
    )
    result.elapsed = time.perf_counter() - started
    return result
