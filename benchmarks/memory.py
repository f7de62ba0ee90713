"""memory: a million personalised messages streamed through ``send_many``; peak RSS of the process.

The send runs in a child process (``python -m benchmarks.memory --child ...``) so that the number
is that of a fresh process doing only this: it reports its RSS after the imports (the baseline),
its peak (``getrusage(RUSAGE_SELF).ru_maxrss``, the kernel's ``VmHWM``, and psutil's RSS sampled
every 50 ms by a thread), its RSS at every tenth of the run (flat means nothing accumulates per
message), and the time.

Why the child forks once more before it starts: Linux keeps ``ru_maxrss`` across ``execve``, and
a process started by ``fork`` + ``exec`` from the harness (hundreds of MB by then, after the
other scenarios) inherits the harness's high-water mark as its own. The ``--child`` process is
small when it starts, so it forks at once (no ``exec``) and the forked process, whose
``ru_maxrss`` starts from that small image, does the work and reports.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from typing import Any

import msgspec

from ._common import Config, ScenarioResult, Table, Target, default_loop, fmt, run_on, tune_gc
from ._responder import ServerProcess

NAME = "memory"
SIZES = {"full": 1_000_000, "quick": 100_000, "smoke": 200}
#: Backstop for the whole child run (it stops sending at its own deadline first).
SECONDS = {"full": 400.0, "quick": 60.0, "smoke": 20.0}
CONCURRENCY = 100
TARGET_MB = 150.0
MB = 1024 * 1024


def _maxrss_mb() -> float:
    # Linux reports ru_maxrss in KiB (macOS in bytes).
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / MB


def _vmhwm_mb() -> float:
    """Peak RSS of this address space (Linux ``VmHWM``); NaN elsewhere."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def forked_child(argv: Sequence[str]) -> int:
    """Run :func:`child` in a forked copy of this (still small) process; print its JSON line."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the forked process: fresh ru_maxrss, no exec
        os.close(read_fd)
        code = 0
        try:
            line = msgspec.json.encode(child(argv)) + b"\n"
            with os.fdopen(write_fd, "wb") as pipe:
                pipe.write(line)
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    sys.stdout.write(data.decode())
    return os.waitstatus_to_exitcode(status)


def child(argv: Sequence[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory --child")
    parser.add_argument("--url", required=True)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY)
    parser.add_argument("--loop", default=default_loop())
    parser.add_argument("--gc-tune", action="store_true")
    args = parser.parse_args(argv)

    # Everything the run imports, imported before the baseline is read.
    import psutil

    from bwasync import Outcome

    from ._contenders import make_client
    from ._data import requests

    tune_gc(args.gc_tune)
    proc = psutil.Process()
    baseline_rss = proc.memory_info().rss / MB
    baseline_maxrss = _maxrss_mb()

    peak_sampled = baseline_rss
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak_sampled
        while not stop.wait(0.05):
            peak_sampled = max(peak_sampled, proc.memory_info().rss / MB)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()

    n = args.n
    checkpoints: list[tuple[int, float]] = []
    step = max(1, n // 10)

    async def main() -> tuple[int, int, float, str | None]:
        ok = errors = 0
        first_error: str | None = None
        started = time.perf_counter()
        async with make_client(args.url, args.concurrency) as client:
            inputs = requests(n, deadline=started + args.seconds)
            async with client.send_many(inputs, concurrency=args.concurrency) as results:
                async for result in results:
                    if result.outcome is Outcome.ACCEPTED:
                        ok += 1
                    else:
                        errors += 1
                        if first_error is None:
                            first_error = repr(result.error)
                    if (ok + errors) % step == 0:
                        checkpoints.append((ok + errors, proc.memory_info().rss / MB))
        return ok, errors, time.perf_counter() - started, first_error

    ok, errors, elapsed, first_error = run_on(args.loop, main, timeout=args.seconds + 30)
    stop.set()
    sampler.join()
    return {
        "n": n,
        "accepted": ok,
        "errors": errors,
        "first_error": first_error,
        "elapsed": elapsed,
        "rate": ok / elapsed if elapsed > 0 else 0.0,
        "loop": args.loop,
        "concurrency": args.concurrency,
        "gc_threshold": list(__import__("gc").get_threshold()),
        "baseline_rss_mb": baseline_rss,
        "baseline_maxrss_mb": baseline_maxrss,
        "peak_maxrss_mb": _maxrss_mb(),
        "peak_vmhwm_mb": _vmhwm_mb(),
        "peak_sampled_rss_mb": max(peak_sampled, proc.memory_info().rss / MB),
        "final_rss_mb": proc.memory_info().rss / MB,
        "checkpoints": checkpoints,
    }


def run(cfg: Config) -> ScenarioResult:
    started = time.perf_counter()
    n = cfg.pick(SIZES)
    seconds = cfg.pick(SECONDS)
    loop = default_loop()
    result = ScenarioResult(
        NAME,
        f"{n:,} messages streamed through send_many: peak RSS of the sending process",
        params={"messages": n, "concurrency": CONCURRENCY, "loop": loop, "inputs": "generator of MessageRequest"},
    )
    with ServerProcess.responder() as server:
        argv = [sys.executable, "-m", "benchmarks.memory", "--child", "--url", server.base_url, "--n", str(n)]
        argv += ["--seconds", str(seconds), "--concurrency", str(CONCURRENCY), "--loop", loop]
        if cfg.gc_tuned:
            argv.append("--gc-tune")
        done = subprocess.run(argv, capture_output=True, timeout=seconds + 60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"memory child failed ({done.returncode}): {done.stderr.decode(errors='replace')[-2000:]}")
    out: dict[str, Any] = msgspec.json.decode(done.stdout.strip().splitlines()[-1])
    result.data = out

    table = Table("the sending process (a fresh child)", ["measure", "value"])
    table.add("messages accepted / errors", f"{out['accepted']:,} / {out['errors']:,}")
    table.add("time", f"{out['elapsed']:.1f} s ({fmt(out['rate'])} msg/s)")
    table.add("RSS after imports (baseline)", f"{out['baseline_rss_mb']:.1f} MB")
    table.add("peak RSS, ru_maxrss", f"{out['peak_maxrss_mb']:.1f} MB")
    table.add("peak RSS, VmHWM (/proc/self/status)", f"{out['peak_vmhwm_mb']:.1f} MB")
    table.add("peak RSS, psutil sampled every 50 ms", f"{out['peak_sampled_rss_mb']:.1f} MB")
    table.add("RSS at the end", f"{out['final_rss_mb']:.1f} MB")
    result.tables.append(table)
    if out["checkpoints"]:
        growth = Table(
            "RSS along the run (flat = nothing kept per message)",
            ["messages done"] + [f"{c:,}" for c, _ in out["checkpoints"]],
        )
        growth.add("RSS MB", *[f"{m:.1f}" for _, m in out["checkpoints"]])
        result.tables.append(growth)
        first, last = out["checkpoints"][0][1], out["checkpoints"][-1][1]
        result.notes.append(
            f"RSS grew {last - first:+.1f} MB between the first and the last tenth of the run "
            f"({(last - first) * MB / max(1, out['checkpoints'][-1][0] - out['checkpoints'][0][0]):.2f} bytes/message)"
        )
    complete = out["accepted"] + out["errors"] == n
    result.targets.append(
        Target(
            f"peak RSS for {n:,} messages (ru_maxrss)",
            out["peak_maxrss_mb"] if complete else float("nan"),
            "<",
            TARGET_MB,
            "MB",
            "" if complete else f"incomplete: {out['accepted'] + out['errors']:,} of {n:,} within {seconds:.0f} s",
        )
    )
    result.notes.append(
        "results are consumed as they come and dropped; inputs are built by a generator as the workers pull them"
    )
    result.elapsed = time.perf_counter() - started
    return result


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        sys.exit(forked_child(sys.argv[2:]))
    else:
        sys.exit("run the memory scenario with: python -m benchmarks --only memory")
