"""scale_out: what sharing the rate limit through Redis costs, and what worker processes add.

Against the raw responder (``benchmarks._responder``, its own process) at 64 in flight:

1. **Overhead.** bwasync ``send_many`` with the in-process ``AdaptiveLimiter`` vs with a
   ``RedisLimiter`` on a local ``redis-server``, both at a rate that never binds (so the limiter's
   own cost is what differs), alternated round by round after a warm-up. Redis's ``INFO
   commandstats`` and ``INFO cpu`` give the round trips per message and Redis's CPU per call.
2. **Worker processes.** One, then two ``python -m benchmarks.scale_out --worker`` processes at
   once, each a client with a ``RedisLimiter`` on the same account: messages/s each and in total,
   first with the rate unbinding (capacity), then with a shared rate that binds (the total must
   stay at that rate however many processes share it).

The fleet estimate in the README is calculated from these numbers; this machine has 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import msgspec
import redis

from bwasync import AdaptiveLimiter, RateLimiter
from bwasync.redis import RedisLimiter

from ._common import (
    Config,
    ScenarioResult,
    Table,
    Target,
    alternate,
    default_loop,
    fmt,
    median,
    paired_ratios,
    run_on,
    tune_gc,
)
from ._compare import Contender, Measured, cpu_per_message, measured, noise_note, ratio_cell, throughput_table
from ._contenders import Trial, _Progress, make_client
from ._data import ACCOUNT_ID, requests
from ._redis import RedisProcess
from ._responder import ServerProcess

NAME = "scale_out"
TITLE = "RedisLimiter vs the in-process limiter at 64 in flight, Redis round trips per message, 1 and 2 processes"
CONCURRENCY = 64
#: A rate that never binds here: the trials measure what the limiter itself costs.
UNBINDING_RATE = 1_000_000.0
#: The shared rate for the binding run (segments/s): well below what one process reaches here even
#: on a busy machine (~1,000 msg/s), so the limiter, not the machine, decides the total.
BINDING_RATE = 600.0
#: Its burst: a tenth of a second, so the first second's burst barely shows in a few seconds' total.
BINDING_BURST = 60.0
SIZES: dict[str, dict[str, Any]] = {
    "full": {"n": 6000, "rounds": 5, "worker_n": 30000, "worker_seconds": 6.0, "probe_calls": 20000},
    "quick": {"n": 3000, "rounds": 3, "worker_n": 15000, "worker_seconds": 4.0, "probe_calls": 10000},
    "smoke": {"n": 200, "rounds": 1, "worker_n": 300, "worker_seconds": 1.0, "probe_calls": 200},
}
#: Every trial stops after this many seconds even if its count is not reached.
TRIAL_SECONDS = 15.0
OVERHEAD_TARGET = 0.9


async def send_trial(
    base_url: str, n: int, *, limiter: RateLimiter, concurrency: int = CONCURRENCY, seconds: float = TRIAL_SECONDS
) -> Trial:
    """bwasync ``send_many`` (validation, limiter, retries on) with the given limiter."""
    progress = _Progress(n)
    async with make_client(base_url, concurrency, limiter=limiter) as client:
        started = time.perf_counter()
        cpu_started = time.process_time()
        async with client.send_many(requests(n, deadline=started + seconds), concurrency=concurrency) as results:
            async for result in results:
                progress.done(result.ok, result.error)
        trial = progress.trial(started, cpu_started)
    if isinstance(limiter, RedisLimiter):
        await limiter.aclose()
    return trial


async def _local_trial(url: str, n: int) -> Trial:
    return await send_trial(url, n, limiter=AdaptiveLimiter(rate=UNBINDING_RATE))


async def _redis_trial(
    url: str, n: int, *, redis_url: str, rate: float = UNBINDING_RATE, burst: float | None = None, seconds: float
) -> Trial:
    limiter = RedisLimiter(redis_url, account_id=ACCOUNT_ID, rate=rate, burst=burst)
    return await send_trial(url, n, limiter=limiter, seconds=seconds)


async def _probe_redis(redis_url: str, calls: int, *, concurrency: int = 8) -> int:
    """Keep Redis busy with ``calls`` acquisition round trips (rate unbinding, 1 segment each)."""
    limiter = RedisLimiter(redis_url, account_id=ACCOUNT_ID, rate=UNBINDING_RATE, namespace="probe")
    remaining = calls

    async def one() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await limiter._call(1.0, 1.0, 0.0, None, covered=False)

    await asyncio.gather(*(one() for _ in range(concurrency)))
    await limiter.aclose()
    return calls


def redis_cpu_per_call(redis_url: str, calls: int, loop: str) -> float:
    """Redis's own CPU (µs) per acquisition round trip while it is kept busy with them: the
    figure that says how many round trips per second one Redis core can serve."""
    counters = RedisCounters(redis_url)
    calls_before, cpu_before = counters.read()
    run_on(loop, partial(_probe_redis, redis_url, calls), timeout=60)
    calls_after, cpu_after = counters.read()
    counters.close()
    return (cpu_after - cpu_before) / max(1, calls_after - calls_before) * 1e6


class RedisCounters:
    """Script calls and CPU seconds a Redis server has spent, read with ``INFO``."""

    def __init__(self, url: str) -> None:
        self._client = redis.Redis.from_url(url)

    def read(self) -> tuple[int, float]:
        stats = self._client.info("commandstats")
        calls = sum(int(v["calls"]) for k, v in stats.items() if k in ("cmdstat_evalsha", "cmdstat_eval"))
        cpu = self._client.info("cpu")
        return calls, float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])

    def close(self) -> None:
        self._client.close()


def run_workers(
    base_url: str, redis_url: str, processes: int, n: int, seconds: float, rate: float, burst: float | None
) -> dict[str, Any]:
    """``processes`` worker processes at once, each with its own RedisLimiter on one account."""
    argv = [sys.executable, "-m", "benchmarks.scale_out", "--worker", base_url, redis_url]
    argv += ["--n", str(n), "--seconds", str(seconds), "--rate", str(rate)]
    argv += [] if burst is None else ["--burst", str(burst)]
    counters = RedisCounters(redis_url)
    calls_before, cpu_before = counters.read()
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE) for _ in range(processes)]
    runs = []
    for proc in procs:
        stdout, _ = proc.communicate(timeout=seconds + 60)
        runs.append(msgspec.json.decode(stdout.strip().splitlines()[-1]))
    calls_after, cpu_after = counters.read()
    counters.close()
    sent = sum(r["sent"] for r in runs)
    # The processes start and end at slightly different moments: the total is over the whole span
    # during which any of them was running (adding up each one's own rate would overstate it).
    span = max(r["ended"] for r in runs) - min(r["started"] for r in runs)
    return {
        "rates": [r["rate"] for r in runs],
        "total_rate": sent / span if span > 0 else float("nan"),
        "span_seconds": span,
        "sent": sent,
        "round_trips_per_message": (calls_after - calls_before) / sent if sent else float("nan"),
        "redis_cpu_us_per_call": (cpu_after - cpu_before) / max(1, calls_after - calls_before) * 1e6,
    }


def run(cfg: Config) -> ScenarioResult:
    started = time.perf_counter()
    size = cfg.pick(SIZES)
    n, rounds = size["n"], size["rounds"]
    loop = default_loop()
    result = ScenarioResult(
        NAME,
        TITLE,
        params={
            "in flight": CONCURRENCY,
            "messages/trial": n,
            "rounds": rounds,
            "loop": loop,
            "unbinding rate": UNBINDING_RATE,
            "binding rate": BINDING_RATE,
            "redis-server": "local, loopback, no persistence",
        },
    )
    with (
        tempfile.TemporaryDirectory() as tmp,
        RedisProcess(Path(tmp)) as redis_server,
        ServerProcess.responder() as server,
    ):
        url = server.base_url
        counters = RedisCounters(redis_server.url)
        redis_calls = {"calls": 0, "cpu": 0.0, "sent": 0}

        def redis_contender(count: int) -> Trial:
            calls, cpu = counters.read()
            trial = run_on(
                loop,
                partial(_redis_trial, url, count, redis_url=redis_server.url, seconds=TRIAL_SECONDS),
                timeout=TRIAL_SECONDS + 30,
            )
            calls_after, cpu_after = counters.read()
            redis_calls["calls"] += calls_after - calls
            redis_calls["cpu"] += cpu_after - cpu
            redis_calls["sent"] += trial.sent
            return trial

        shown = {
            "local": Contender("send_many + AdaptiveLimiter", loop, CONCURRENCY),
            "redis": Contender("send_many + RedisLimiter", loop, CONCURRENCY),
        }
        runs = {
            "local": measured(server, lambda: run_on(loop, partial(_local_trial, url, n), timeout=TRIAL_SECONDS + 30)),
            "redis": measured(server, partial(redis_contender, n)),
        }
        warm = {
            "local": lambda: run_on(loop, partial(_local_trial, url, max(1, n // 3)), timeout=TRIAL_SECONDS + 30),
            "redis": partial(redis_contender, max(1, n // 3)),
        }
        samples: dict[str, list[Measured]] = alternate(
            runs, rounds=rounds, warmup=warm if cfg.size != "smoke" else False
        )
        counters.close()
        busy_cpu_per_call = redis_cpu_per_call(redis_server.url, size["probe_calls"], loop)
        runs_wanted = [
            (kind, rate, burst, p)
            for kind, rate, burst in (("unbinding", UNBINDING_RATE, None), ("binding", BINDING_RATE, BINDING_BURST))
            for p in (1, 2)
        ]
        if cfg.size == "smoke":  # the tests only check that it runs: the one run a target reads
            runs_wanted = runs_wanted[-1:]
        workers = {
            f"{kind} ×{p}": run_workers(url, redis_server.url, p, size["worker_n"], size["worker_seconds"], rate, burst)
            for kind, rate, burst, p in runs_wanted
        }

    result.tables.append(throughput_table("messages/s (whole trial), rate never binding", shown, samples))
    rate = {key: [m.trial.rate for m in trials] for key, trials in samples.items()}
    ratio = paired_ratios(rate["redis"], rate["local"])
    cpu_ratio = paired_ratios(cpu_per_message(samples["local"]), cpu_per_message(samples["redis"]))
    per_msg = redis_calls["calls"] / redis_calls["sent"] if redis_calls["sent"] else float("nan")
    cpu_per_call = redis_calls["cpu"] / redis_calls["calls"] * 1e6 if redis_calls["calls"] else float("nan")
    ratios = Table(
        "RedisLimiter / in-process limiter: median of per-round ratios (min–max), and Redis's side",
        [
            "messages/s ratio",
            "client CPU per message: in-process ÷ Redis",
            "Redis round trips per message",
            "Redis CPU µs per round trip (incl. idle)",
        ],
    )
    ratios.add(ratio_cell(ratio), ratio_cell(cpu_ratio), f"{per_msg:.4f}", cpu_per_call)
    result.tables.append(ratios)
    result.targets.append(
        Target(
            "RedisLimiter / AdaptiveLimiter messages/s",
            median(ratio),
            ">=",
            OVERHEAD_TARGET,
            "×",
            f"{per_msg:.4f} round trips/message; by client CPU per message {median(cpu_ratio):.2f}×",
        )
    )

    table = Table(
        "worker processes at once, each a client with a RedisLimiter on one account (64 in flight each)",
        [
            "run",
            "msg/s each",
            "msg/s in total",
            "Redis round trips per message",
            "Redis CPU µs per round trip (incl. idle)",
        ],
    )
    for key, row in workers.items():
        table.add(
            key,
            " + ".join(fmt(r) for r in row["rates"]),
            row["total_rate"],
            f"{row['round_trips_per_message']:.4f}",
            row["redis_cpu_us_per_call"],
        )
    result.tables.append(table)
    binding = workers["binding ×2"]["total_rate"]
    result.targets.append(
        Target(
            "two processes sharing a binding rate: total / rate",
            binding / BINDING_RATE,
            "<=",
            1.05,
            "×",
            f"{fmt(binding)} msg/s in total for a shared {fmt(BINDING_RATE)}/s, burst {fmt(BINDING_BURST)}",
        )
    )
    calls_per_core = 1e6 / busy_cpu_per_call if busy_cpu_per_call > 0 else float("nan")
    result.notes.append(
        f"Redis kept busy with acquisition round trips: ~{fmt(busy_cpu_per_call)} µs of its CPU each, so one Redis "
        f"core serves ~{fmt(calls_per_core)} round trips/s (measured); at {per_msg:.4f} round trips/message that is "
        f"~{fmt(calls_per_core / per_msg)} messages/s before Redis saturates (calculated)"
    )
    result.data = {
        "samples": {key: [m.to_json() for m in trials] for key, trials in samples.items()},
        "ratio": ratio,
        "cpu_ratio": cpu_ratio,
        "round_trips_per_message": per_msg,
        "redis_cpu_us_per_call": cpu_per_call,
        "redis_cpu_us_per_call_busy": busy_cpu_per_call,
        "redis_round_trips_per_core_second": calls_per_core,
        "workers": workers,
    }
    result.notes += noise_note(samples)
    result.elapsed = time.perf_counter() - started
    return result


def worker_main(argv: Sequence[str] | None = None) -> None:
    """``python -m benchmarks.scale_out --worker URL REDIS_URL``: one trial, one JSON line."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale_out --worker")
    parser.add_argument("url")
    parser.add_argument("redis_url")
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--rate", type=float, default=UNBINDING_RATE)
    parser.add_argument("--burst", type=float, default=None)
    parser.add_argument("--loop", default=default_loop())
    args = parser.parse_args(argv)
    tune_gc(True)
    started = time.time()
    trial = run_on(
        args.loop,
        partial(
            _redis_trial,
            args.url,
            args.n,
            redis_url=args.redis_url,
            rate=args.rate,
            burst=args.burst,
            seconds=args.seconds,
        ),
        timeout=args.seconds + 30,
    )
    out = {"sent": trial.sent, "errors": trial.errors, "rate": trial.rate, "started": started, "ended": time.time()}
    sys.stdout.write(msgspec.json.encode(out).decode() + "\n")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        worker_main(sys.argv[2:])
    else:
        sys.exit("usage: python -m benchmarks.scale_out --worker URL REDIS_URL [--n N --seconds S --rate R]")
