"""Profile client-overhead's bwasync contender: where does a message's time go?

    python -m benchmarks.profile [--n 20000] [--loop uvloop|asyncio] [--top 25] [--no-py-spy]

Runs ``send_many`` (64 in flight, ``MessageRequest`` inputs, default limiter and retry policy)
against the zero-latency responder in another process, under cProfile, and prints the top
functions by cumulative and by self time, each attributed to its owner (bwasync, aiohttp, yarl,
multidict, msgspec, asyncio, ...), plus self time summed per owner. cProfile inflates the cost
of small Python calls; when ``py-spy`` is installed (``pip install py-spy``) the same run is also
sampled by it, without that distortion, and its self-time table is printed too.

On uvloop the event loop's own work is in C and invisible to cProfile (it shows in py-spy only
with ``--native``); ``--loop asyncio`` shows the stock loop's Python frames instead.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from ._common import Table, default_loop, fmt, run_on, tune_gc
from ._contenders import bwasync_send_many
from ._responder import ServerProcess

CONCURRENCY = 64

_OWNERS = (
    ("/benchmarks/", "benchmarks"),
    ("/bwasync/", "bwasync"),
    ("/aiohttp/", "aiohttp"),
    ("/yarl/", "yarl"),
    ("/multidict/", "multidict"),
    ("/propcache/", "propcache"),
    ("/msgspec/", "msgspec"),
    ("/tenacity/", "tenacity"),
    ("/asyncio/", "asyncio"),
    ("/uvloop/", "uvloop"),
)


def owner(filename: str, name: str = "") -> str:
    """Which package a profiled function belongs to (C functions: guessed from their name)."""
    path = "/" + filename.replace("\\", "/").lstrip("/")  # py-spy gives package-relative paths
    for marker, who in _OWNERS:
        if marker in path:
            return who
    if filename == "~" or not filename:
        for who in ("msgspec", "aiohttp", "yarl", "multidict", "uvloop", "asyncio", "_asyncio", "_contextvars"):
            if who in name:
                return who.lstrip("_")
        return "builtin"
    return "stdlib/other"


def _short(filename: str, line: int, name: str) -> str:
    if filename == "~":
        return name
    parts = Path(filename).parts
    for anchor in ("bwasync", "aiohttp", "yarl", "multidict", "asyncio", "msgspec", "benchmarks", "propcache"):
        if anchor in parts:
            i = len(parts) - 1 - parts[::-1].index(anchor)
            return f"{'/'.join(parts[i:])}:{line}({name})"
    return f"{Path(filename).name}:{line}({name})"


def cprofile_tables(stats: pstats.Stats, top: int, total_messages: int) -> list[Table]:
    raw = stats.stats  # type: ignore[attr-defined]
    rows = []
    for (filename, line, name), (_cc, nc, tt, ct, _callers) in raw.items():
        rows.append((filename, line, name, nc, tt, ct))
    total_tt = sum(r[4] for r in rows) or 1.0
    per_msg = 1e6 / max(1, total_messages)
    tables = []
    for key, title in ((5, "cumulative"), (4, "self")):
        table = Table(
            f"cProfile: top {top} by {title} time",
            ["function", "owner", "calls", "self s", "cum s", "self µs/msg", "self %"],
        )
        for filename, line, name, nc, tt, ct in sorted(rows, key=lambda r: r[key], reverse=True)[:top]:
            table.add(
                _short(filename, line, name),
                owner(filename, name),
                f"{nc:,}",
                f"{tt:.3f}",
                f"{ct:.3f}",
                f"{tt * per_msg:.2f}",
                f"{tt / total_tt * 100:.1f}",
            )
        tables.append(table)
    by_owner: Counter[str] = Counter()
    for filename, _line, name, _nc, tt, _ct in rows:
        by_owner[owner(filename, name)] += tt
    table = Table("cProfile: self time per owner", ["owner", "self s", "µs/msg", "%"])
    for who, tt in by_owner.most_common():
        table.add(who, f"{tt:.3f}", f"{tt * per_msg:.2f}", f"{tt / total_tt * 100:.1f}")
    tables.append(table)
    return tables


def py_spy_tables(raw_path: Path, top: int) -> list[Table]:
    """Self samples per function (the leaf of each stack) and per owner, from ``--format raw``
    recorded with ``--function`` (lines are each function's first line, so samples add up per function)."""
    leaves: Counter[str] = Counter()
    owners: Counter[str] = Counter()
    total = 0
    for line in raw_path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        # Skip idle samples: the loop waiting in select/epoll is not work.
        leaf = frames[-1]
        total += count
        leaves[leaf] += count
        # py-spy frames look like "function (path/to/file.py:123)"
        name, _, where = leaf.partition(" (")
        owners[owner(where.rstrip(")"), name)] += count
    if not total:
        return []
    table = Table(f"py-spy: top {top} by self samples", ["function", "owner", "samples", "%"])
    for leaf, count in leaves.most_common(top):
        name, _, where = leaf.partition(" (")
        where = where.rstrip(")")
        filename, _, line = where.rpartition(":")
        label = _short(filename, int(line) if line.isdigit() else 0, name) if filename else leaf
        table.add(label, owner(filename, name), f"{count:,}", f"{count / total * 100:.1f}")
    per_owner = Table("py-spy: self samples per owner", ["owner", "samples", "%"])
    for who, count in owners.most_common():
        per_owner.add(who, f"{count:,}", f"{count / total * 100:.1f}")
    ours = Table("py-spy: bwasync's own functions by self samples", ["function", "samples", "%"])
    for leaf, count in leaves.most_common():
        name, _, where = leaf.partition(" (")
        filename, _, line = where.rstrip(")").rpartition(":")
        if owner(filename, name) == "bwasync":
            ours.add(
                _short(filename, int(line) if line.isdigit() else 0, name), f"{count:,}", f"{count / total * 100:.1f}"
            )
    return [table, per_owner, ours]


def _target(url: str, n: int, loop: str) -> float:
    trial = run_on(loop, lambda: bwasync_send_many(url, n, concurrency=CONCURRENCY, seconds=120), timeout=150)
    return trial.rate


def sample_with_py_spy(spy: str, url: str, args: argparse.Namespace) -> None:
    """The same run in a child process, sampled by py-spy from its warmed-up start to its end.

    The child imports, warms up, says "ready" and waits; py-spy attaches by pid; then the child
    is told to go. So imports and the warm-up stay out of the samples.
    """
    child_argv = [sys.executable, "-m", "benchmarks.profile", "--target", url, "--n", str(args.n)]
    child_argv += ["--loop", args.loop] + (["--no-gc-tune"] if args.no_gc_tune else [])
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "profile.txt"
        child = subprocess.Popen(child_argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert child.stdin is not None and child.stdout is not None
        try:
            if child.stdout.readline().strip() != "ready":
                print("py-spy not run: the child did not start")
                return
            cmd = [spy, "record", "--pid", str(child.pid), "--format", "raw", "--rate", "500", "--function"]
            cmd += ["--output", str(raw)]
            spy_proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            time.sleep(1.0)  # let py-spy attach before the run starts
            child.stdin.write("go\n")
            child.stdin.flush()
            out, _ = child.communicate(timeout=300)
            _, spy_err = spy_proc.communicate(timeout=60)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        if spy_proc.returncode != 0 or not raw.exists():
            print(f"py-spy failed ({spy_proc.returncode}): {spy_err.strip()[-800:]}")
            return
        print(f"the same run in a child process, sampled by py-spy (500 Hz, no instrumentation): {out.strip()}")
        print("(on uvloop, time in the loop's C code, polling included, shows as self time of Runner.run)\n")
        for table in py_spy_tables(raw, args.top):
            print(table.render() + "\n")


def find_py_spy() -> str | None:
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20_000, help="messages to send (default 20,000)")
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default=default_loop())
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--no-py-spy", action="store_true", help="skip py-spy even if installed")
    parser.add_argument("--no-gc-tune", action="store_true")
    parser.add_argument("--target", metavar="URL", help=argparse.SUPPRESS)  # internal: py-spy's child
    args = parser.parse_args(argv)
    tune_gc(not args.no_gc_tune)
    if args.target:  # py-spy's child: warm up, wait for py-spy to attach, then run
        _target(args.target, max(1, args.n // 10), args.loop)
        print("ready", flush=True)
        sys.stdin.readline()
        print(f"{_target(args.target, args.n, args.loop):.0f} msg/s", flush=True)
        return 0

    with ServerProcess.responder() as server:
        _target(server.base_url, max(1, args.n // 10), args.loop)  # warm-up, not profiled
        profiler = cProfile.Profile()
        started = time.perf_counter()
        profiler.enable()
        rate = _target(server.base_url, args.n, args.loop)
        profiler.disable()
        elapsed = time.perf_counter() - started
        print(
            f"bwasync send_many, {args.n:,} messages, {CONCURRENCY} in flight, {args.loop}, under cProfile: "
            f"{elapsed:.1f} s ({fmt(rate)} msg/s; cProfile slows it down)\n"
        )
        for table in cprofile_tables(pstats.Stats(profiler), args.top, args.n):
            print(table.render() + "\n")

        spy = None if args.no_py_spy else find_py_spy()
        if spy is None:
            print("py-spy not run (not installed, or --no-py-spy): pip install py-spy")
            return 0
        sample_with_py_spy(spy, server.base_url, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
