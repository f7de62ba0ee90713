"""latency-bound: 100 ms server latency, 1000-2000 requests in flight.

The server is bwasync's emulator in its own process (``python -m bwasync.emulator --latency 0.1
--no-record``, no callbacks), falling back to ``benchmarks._responder --latency 0.1`` when the
emulator is not installed. At this latency a client's rate is ``in flight / latency`` until its
own CPU runs out, so the comparison is: bwasync ``send_many`` at 1000 and 2000 in flight (uvloop,
raised GC threshold) against the official SDK on 32 threads (its ceiling is 32 / 0.1 s = 320/s),
with a bare aiohttp loop at the same concurrencies as the ceiling for an aiohttp client here.

Rates are quoted both over the whole trial and in the steady state (between the 10% and the 90%
completions): with 1000+ in flight a trial of a few thousand messages opens 1000+ connections
first, a one-off cost that a real campaign pays once; ratios use the steady rate.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from functools import partial
from typing import Any

from ._common import Config, ScenarioResult, Table, Target, alternate, default_loop, median, paired_ratios
from ._compare import (
    Contender,
    Measured,
    cpu_per_message,
    first_errors,
    measured,
    noise_note,
    on_loop,
    ratio_cell,
    throughput_table,
)
from ._contenders import bare_aiohttp, bwasync_send_many, sdk_threads
from ._data import PASSWORD, USERNAME
from ._responder import ServerProcess

NAME = "latency-bound"
TITLE = "100 ms server latency: bwasync at 1000/2000 in flight vs the official SDK on 32 threads"
LATENCY = 0.1
IN_FLIGHT = (1000, 2000)
SDK_THREADS = 32
SIZES: dict[str, dict[str, int]] = {
    "full": {"n": 6_000, "sdk_n": 600, "rounds": 2, "ceiling_rounds": 1},
    "quick": {"n": 4_000, "sdk_n": 400, "rounds": 2, "ceiling_rounds": 1},
    "smoke": {"n": 200, "sdk_n": 40, "rounds": 1, "ceiling_rounds": 0},
}
TRIAL_SECONDS = 15.0
SDK_TARGET = 30.0


def server_process() -> ServerProcess:
    if importlib.util.find_spec("bwasync.emulator.__main__") is not None:
        argv = [sys.executable, "-m", "bwasync.emulator", "--latency", str(LATENCY), "--no-record"]
        argv += ["--username", USERNAME, "--password", PASSWORD]
        return ServerProcess(argv, name=f"bwasync emulator (latency {LATENCY * 1000:g} ms, record off)")
    return ServerProcess.responder(latency=LATENCY)


def ceiling_check(n: int, loop: str, rounds: int) -> tuple[dict[str, Contender], dict[str, list[Measured]]] | None:
    """bwasync and the bare loop at the higher concurrency against the cheap raw responder."""
    if rounds < 1:
        return None
    in_flight = IN_FLIGHT[-1]
    shown: dict[str, Contender] = {}
    runs: dict[str, Any] = {}
    warm: dict[str, Any] = {}
    with ServerProcess.responder(latency=LATENCY) as server:
        url = server.base_url
        for key, label, fn in (
            (f"bwasync/{in_flight}", "bwasync send_many", bwasync_send_many),
            (f"bare/{in_flight}", "bare aiohttp loop", bare_aiohttp),
        ):
            shown[key] = Contender(label, loop, in_flight)
            runs[key] = measured(server, on_loop(loop, fn, url, n, concurrency=in_flight, seconds=TRIAL_SECONDS))
            warm_n = max(1, n // 4)
            warm[key] = measured(server, on_loop(loop, fn, url, warm_n, concurrency=in_flight, seconds=TRIAL_SECONDS))
        return shown, alternate(runs, rounds=rounds, warmup=warm)


def run(cfg: Config) -> ScenarioResult:
    started = time.perf_counter()
    size = cfg.pick(SIZES)
    n, sdk_n, rounds = size["n"], size["sdk_n"], size["rounds"]
    warm_n, warm_sdk_n = max(1, n // 4), max(1, sdk_n // 4)  # the warm-up round is lighter
    loop = default_loop()
    server = server_process()
    result = ScenarioResult(
        NAME,
        TITLE,
        params={
            "server": server.name,
            "latency": f"{LATENCY * 1000:g} ms",
            "messages/trial": n,
            "sdk messages/trial": sdk_n,
            "rounds": rounds,
            "loop": loop,
            "gc": "tuned" if cfg.gc_tuned else "default",
        },
    )
    with server:
        url = server.base_url
        shown: dict[str, Contender] = {}
        runs: dict[str, Any] = {}
        warm: dict[str, Any] = {}
        for in_flight in IN_FLIGHT:
            for key, label, fn in (
                (f"bwasync/{in_flight}", "bwasync send_many", bwasync_send_many),
                (f"bare/{in_flight}", "bare aiohttp loop", bare_aiohttp),
            ):
                shown[key] = Contender(label, loop, in_flight)
                runs[key] = measured(server, on_loop(loop, fn, url, n, concurrency=in_flight, seconds=TRIAL_SECONDS))
                warm[key] = measured(
                    server, on_loop(loop, fn, url, warm_n, concurrency=in_flight, seconds=TRIAL_SECONDS)
                )
        shown["sdk"] = Contender("bandwidth-sdk", f"{SDK_THREADS} threads", SDK_THREADS)
        runs["sdk"] = measured(server, partial(sdk_threads, url, sdk_n, threads=SDK_THREADS, seconds=TRIAL_SECONDS))
        warm["sdk"] = measured(
            server, partial(sdk_threads, url, warm_sdk_n, threads=SDK_THREADS, seconds=TRIAL_SECONDS)
        )
        samples: dict[str, list[Measured]] = alternate(
            runs, rounds=rounds, warmup=warm if cfg.size != "smoke" else False
        )
    ceiling = ceiling_check(n, loop, size["ceiling_rounds"]) if "emulator" in server.name else None

    result.tables.append(throughput_table("messages/s", shown, samples))
    steady = {key: [m.trial.steady for m in trials] for key, trials in samples.items()}
    ratios = Table(
        "ratios of steady rates: median of per-round ratios (min–max)",
        ["in flight", "bwasync / sdk", "bare / sdk", "bwasync / bare", "CPU per msg: bare ÷ bwasync"],
    )
    best_ratio = 0.0
    best_key = ""
    for in_flight in IN_FLIGHT:
        bw, bare = f"bwasync/{in_flight}", f"bare/{in_flight}"
        vs_sdk = paired_ratios(steady[bw], steady["sdk"])
        ratios.add(
            f"{in_flight:,}",
            ratio_cell(vs_sdk),
            ratio_cell(paired_ratios(steady[bare], steady["sdk"])),
            ratio_cell(paired_ratios(steady[bw], steady[bare])),
            ratio_cell(paired_ratios(cpu_per_message(samples[bare]), cpu_per_message(samples[bw]))),
        )
        result.data[f"ratio bwasync/sdk {in_flight}"] = median(vs_sdk)
        if median(vs_sdk) > best_ratio:
            best_ratio, best_key = median(vs_sdk), bw
    result.tables.append(ratios)
    sdk_rate = median(steady["sdk"])
    bare_best = max(median(steady[f"bare/{c}"]) for c in IN_FLIGHT)
    result.targets.append(
        Target(
            "bwasync / bandwidth-sdk (32 threads), steady rates",
            best_ratio,
            ">=",
            SDK_TARGET,
            "×",
            f"bwasync best at {best_key.split('/')[1]} in flight; reaching it needs ≥ {SDK_TARGET * sdk_rate:,.0f} "
            f"msg/s here, the bare aiohttp loop's best is {bare_best:,.0f} (bare/sdk = {bare_best / sdk_rate:.1f}×)"
            if sdk_rate > 0
            else "",
        )
    )
    if ceiling is not None:
        ceiling_shown, ceiling_samples = ceiling
        result.tables.append(
            throughput_table(
                "ceiling check: the same clients against benchmarks._responder at 100 ms (a raw asyncio.Protocol, "
                "~20 µs CPU/request), so the server costs little",
                ceiling_shown,
                ceiling_samples,
            )
        )
        result.data["ceiling_samples"] = {k: [m.to_json() for m in v] for k, v in ceiling_samples.items()}
    busiest = max(median([m.server_cpu for m in trials]) for trials in samples.values())
    result.notes.append(
        f"SDK ceiling = threads / latency = {SDK_THREADS / LATENCY:,.0f} msg/s; "
        f"the server's busiest median CPU was {busiest:.2f} core"
        + (" (near saturation: the server may cap the async clients)" if busiest > 0.85 else "")
    )
    result.data["samples"] = {key: [m.to_json() for m in trials] for key, trials in samples.items()}
    result.notes += noise_note(samples)
    result.notes += first_errors(samples)
    result.elapsed = time.perf_counter() - started
    return result
