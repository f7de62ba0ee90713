"""client-overhead: messages/s at 64 in flight against a zero-latency responder.

The responder (``benchmarks._responder``: a raw ``asyncio.Protocol`` on uvloop answering
Bandwidth's 202 example) runs in its own process, so the client's own cost per message decides
the rate. Contenders, alternated round by round after a discarded warm-up, each ratio's two
contenders back to back (bwasync then bare, bare then bwasync, ...: a ratio compares trials
seconds apart, not a whole round of seven):

* **bwasync** ``send_many`` with everything on: validation (inputs are ``MessageRequest``s built by
  a generator as the workers pull them), the default limiter (unthrottled until a 429) and the
  retry policy, each answer decoded into a ``Message``; on asyncio and on uvloop.
* **bare aiohttp**: the same worker-pool shape (64 coroutines, one ``ClientSession``) posting
  pre-encoded bodies and reading each answer, nothing else; on asyncio and on uvloop.

Both send the same 1,024 distinct messages, cycled: the bare loop's bodies are encoded and
bwasync's recipients and texts formatted before the clock starts; bwasync builds, validates and
encodes every message inside the timed loop.
* **bandwidth-sdk** 23.3.1 (sync urllib3 + pydantic) on 8, 16 and 32 threads; the best is compared.

Afterwards, a capacity check: one, then two bare-aiohttp processes at once against the responder.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from functools import partial
from typing import Any

import msgspec

from ._common import (
    Config,
    ScenarioResult,
    Table,
    Target,
    alternate,
    fmt,
    loop_names,
    median,
    paired_ratios,
)
from ._compare import (
    Contender,
    Measured,
    busy_seconds,
    cpu_per_message,
    first_errors,
    measured,
    noise_note,
    on_loop,
    ratio_cell,
    throughput_table,
)
from ._contenders import bare_aiohttp, bwasync_send_many, sdk_threads
from ._responder import ServerProcess

NAME = "client-overhead"
TITLE = "zero-latency responder, 64 in flight: bwasync vs a bare aiohttp loop vs the official SDK"
CONCURRENCY = 64
SDK_THREADS = (8, 16, 32)
#: Messages per async trial, per SDK trial, rounds, and the capacity check's messages per process.
SIZES: dict[str, dict[str, int]] = {
    "full": {"n": 3000, "sdk_n": 1000, "rounds": 15, "capacity_n": 12000},
    "quick": {"n": 3000, "sdk_n": 1000, "rounds": 3, "capacity_n": 6000},
    "smoke": {"n": 200, "sdk_n": 60, "rounds": 1, "capacity_n": 0},  # 0: no capacity check
}
#: Every trial stops after this many seconds even if its count is not reached.
TRIAL_SECONDS = 15.0
#: bwasync ÷ a bare aiohttp loop, per event loop: its validation must be paid for by using aiohttp better.
BARE_TARGET = {"asyncio": 0.9, "uvloop": 0.95}
SDK_TARGET = 4.0


def capacity_check(server: ServerProcess, n: int, *, gc_tuned: bool) -> dict[str, Any]:
    """One, then two bare-aiohttp client processes at once: what the responder served, and its CPU.

    The responder's CPU per request is the decisive number (it says how many requests one core
    could serve); the two-process total only shows headroom when the machine has a core to spare
    for the second client, so the CPU used by everything else meanwhile is recorded too.
    """
    out: dict[str, Any] = {}
    for processes in (1, 2):
        argv = [sys.executable, "-m", "benchmarks._loadgen", server.base_url, "--n", str(n), "--seconds", "8"]
        argv += ["--concurrency", str(CONCURRENCY)] + ([] if gc_tuned else ["--no-gc-tune"])
        before = server.cpu_seconds()
        busy = busy_seconds()
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        procs = [subprocess.Popen(argv, stdout=subprocess.PIPE) for _ in range(processes)]
        runs = []
        for proc in procs:
            stdout, _ = proc.communicate(timeout=60)
            runs.append(msgspec.json.decode(stdout.strip().splitlines()[-1]))
        wall = time.perf_counter() - started
        used = server.cpu_seconds() - before
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        clients = (after.ru_utime - children.ru_utime) + (after.ru_stime - children.ru_stime)
        other = max(0.0, busy_seconds() - busy - used - clients)
        sent = sum(r["sent"] for r in runs)
        out[str(processes)] = {
            "rates": [r["rate"] for r in runs],
            "total_rate": sum(r["rate"] for r in runs),
            "server_cpu_us_per_request": used / sent * 1e6 if sent else float("nan"),
            "server_cpu": used / wall,
            "other_cpu": other / wall,
        }
    return out


def capacity_table(capacity: dict[str, Any]) -> Table:
    table = Table(
        "responder capacity check: bare aiohttp (uvloop) in separate processes at once",
        ["client processes", "msg/s each", "msg/s served in total", "responder CPU µs/request", "other CPU"],
    )
    for k, row in capacity.items():
        table.add(
            k,
            " + ".join(fmt(r) for r in row["rates"]),
            row["total_rate"],
            row["server_cpu_us_per_request"],
            f"{row['other_cpu']:.2f}",
        )
    return table


def capacity_note(capacity: dict[str, Any], busiest_client_rate: float) -> str:
    one, two = capacity["1"]["total_rate"], capacity["2"]["total_rate"]
    cpu_us = capacity["1"]["server_cpu_us_per_request"]
    if not (one > 0 and cpu_us > 0):
        return "responder capacity check produced no numbers"
    per_core = 1e6 / cpu_us
    verdict = (
        "the responder is not the bottleneck"
        if per_core > 3 * busiest_client_rate
        else "CAUTION: the responder may limit the fastest clients"
    )
    headroom = (
        f"two client processes got {two / one:.2f}× what one got served"
        if two >= 1.2 * one
        else f"two client processes got {two / one:.2f}× what one got: with three processes on two cores (and "
        f"{capacity['2']['other_cpu']:.2f} cores of other work), the cores, not the responder, were the limit"
    )
    return (
        f"{verdict}: it spends ~{fmt(cpu_us)} µs CPU per request (~{fmt(per_core)} requests/s per core, vs "
        f"{fmt(busiest_client_rate)} msg/s for the fastest client above, and its 'server CPU' stays far below "
        f"1 core while each client uses a full core); {headroom}"
    )


def run(cfg: Config) -> ScenarioResult:
    started = time.perf_counter()
    size = cfg.pick(SIZES)
    n, sdk_n, rounds = size["n"], size["sdk_n"], size["rounds"]
    warm_n, warm_sdk_n = max(1, n // 3), max(1, sdk_n // 3)  # the warm-up round is lighter
    loops = loop_names()
    result = ScenarioResult(
        NAME,
        TITLE,
        params={
            "in flight": CONCURRENCY,
            "messages/trial": n,
            "sdk messages/trial": sdk_n,
            "rounds": rounds,
            "bwasync inputs": "MessageRequest built and validated per message (1,024 pre-formatted texts, cycled)",
            "limiter": "default (unthrottled until a 429)",
        },
    )
    with ServerProcess.responder() as server:
        url = server.base_url
        shown: dict[str, Contender] = {}
        runs: dict[str, Any] = {}
        warm: dict[str, Any] = {}
        for loop in loops:
            for key, label, fn in (
                (f"bwasync/{loop}", "bwasync send_many", bwasync_send_many),
                (f"bare/{loop}", "bare aiohttp loop", bare_aiohttp),
            ):
                shown[key] = Contender(label, loop, CONCURRENCY)
                runs[key] = measured(server, on_loop(loop, fn, url, n, concurrency=CONCURRENCY, seconds=TRIAL_SECONDS))
                warm[key] = measured(
                    server, on_loop(loop, fn, url, warm_n, concurrency=CONCURRENCY, seconds=TRIAL_SECONDS)
                )
        for threads in SDK_THREADS:
            key = f"sdk/{threads}"
            shown[key] = Contender("bandwidth-sdk", f"{threads} threads", threads)
            runs[key] = measured(server, partial(sdk_threads, url, sdk_n, threads=threads, seconds=TRIAL_SECONDS))
            warm[key] = measured(server, partial(sdk_threads, url, warm_sdk_n, threads=threads, seconds=TRIAL_SECONDS))
        # Each ratio's two trials run back to back (see alternate): bwasync and the bare loop
        # on one event loop, then the other loop, then the SDK's thread counts.
        groups = [[f"bwasync/{loop}", f"bare/{loop}"] for loop in loops] + [[f"sdk/{t}" for t in SDK_THREADS]]
        samples: dict[str, list[Measured]] = alternate(
            runs, rounds=rounds, warmup=warm if cfg.size != "smoke" else False, groups=groups
        )
        capacity = capacity_check(server, size["capacity_n"], gc_tuned=cfg.gc_tuned) if size["capacity_n"] else {}

    result.tables.append(throughput_table("messages/s (whole trial)", shown, samples))
    rate = {key: [m.trial.rate for m in trials] for key, trials in samples.items()}
    best_sdk = max((f"sdk/{t}" for t in SDK_THREADS), key=lambda k: median(rate[k]))
    ratios = Table(
        f"ratios: median of per-round ratios (min–max); sdk = its best, {shown[best_sdk].runtime}",
        ["loop", "bwasync / bare", "bwasync / sdk", "bare / sdk", "CPU per msg: bare ÷ bwasync"],
    )
    for loop in loops:
        vs_bare = paired_ratios(rate[f"bwasync/{loop}"], rate[f"bare/{loop}"])
        vs_sdk = paired_ratios(rate[f"bwasync/{loop}"], rate[best_sdk])
        bare_sdk = paired_ratios(rate[f"bare/{loop}"], rate[best_sdk])
        cpu = paired_ratios(cpu_per_message(samples[f"bare/{loop}"]), cpu_per_message(samples[f"bwasync/{loop}"]))
        ratios.add(loop, ratio_cell(vs_bare), ratio_cell(vs_sdk), ratio_cell(bare_sdk), ratio_cell(cpu))
        result.data[f"cpu per message bare/bwasync {loop}"] = median(cpu)
        result.targets.append(
            Target(
                f"bwasync / bare aiohttp on {loop}",
                median(vs_bare),
                ">=",
                BARE_TARGET[loop],
                "×",
                f"by the client's CPU per message: {median(cpu):.2f}×",
            )
        )
        result.targets.append(
            Target(
                f"bwasync / bandwidth-sdk on {loop}",
                median(vs_sdk),
                ">=",
                SDK_TARGET,
                "×",
                f"sdk at its best, {shown[best_sdk].runtime}; a bare aiohttp loop reaches {median(bare_sdk):.2f}× here",
            )
        )
        result.data[f"ratio bwasync/bare {loop}"] = median(vs_bare)
        result.data[f"ratio bwasync/sdk {loop}"] = median(vs_sdk)
    result.tables.append(ratios)

    if capacity:
        result.tables.append(capacity_table(capacity))
        fastest = max(median([m.trial.rate for m in trials]) for trials in samples.values())
        result.notes.append(capacity_note(capacity, fastest))
    else:
        result.notes.append("responder capacity check skipped (smoke run)")
    result.data["samples"] = {key: [m.to_json() for m in trials] for key, trials in samples.items()}
    result.data["capacity"] = capacity
    result.data["best_sdk"] = best_sdk
    result.notes += noise_note(samples)
    result.notes += first_errors(samples)
    result.elapsed = time.perf_counter() - started
    return result
