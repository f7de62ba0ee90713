"""Client-overhead by instruction count: bwasync ``send_many`` vs the bare aiohttp loop, per message.

    python -m benchmarks.instructions [--loop asyncio uvloop] [--n 500 2500]

On a shared machine the time a message takes moves by ±20% from run to run; the number of
instructions the client executes for it barely moves. Each contender of client-overhead (the same
code: :mod:`benchmarks._contenders`) runs twice under ``valgrind --tool=cachegrind`` against the
zero-latency responder in another process (not under valgrind), with ``n1`` and ``n2`` messages;
the difference divided by ``n2 - n1`` is the client's user-space instructions per message, start-up
and imports cancelled out. The ratio bare ÷ bwasync is what client-overhead's ratio would be if
every instruction cost the same (cache misses and the kernel are not counted). Needs valgrind
(``apt-get install valgrind``); each run takes a minute or two.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import re
import shutil
import subprocess
import sys

from ._common import Table, loop_names, run_on, tune_gc
from ._contenders import bare_aiohttp, bwasync_send_many
from ._responder import ServerProcess

CONCURRENCY = 64
CONTENDERS = {"bwasync": bwasync_send_many, "bare": bare_aiohttp}
_REFS = re.compile(r"I\s+refs:\s+([\d,]+)")


def _child(name: str, url: str, n: int, loop: str) -> None:
    tune_gc(True)
    fn = CONTENDERS[name]
    trial = run_on(loop, lambda: fn(url, n, concurrency=CONCURRENCY, seconds=900), timeout=1200)
    if trial.sent != n:
        raise SystemExit(f"{name}: {trial.sent} of {n} sent ({trial.first_error})")


def count(valgrind: str, name: str, url: str, n: int, loop: str) -> int:
    """User-space instructions of one whole run of ``name`` sending ``n`` messages."""
    argv = [valgrind, "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null"]
    argv += [sys.executable, "-m", "benchmarks.instructions", "--child", name, url, str(n), loop]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=1800, check=True)
    match = _REFS.search(out.stderr)
    if match is None:
        raise RuntimeError(f"no instruction count in valgrind's output: {out.stderr[-500:]}")
    return int(match.group(1).replace(",", ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.instructions", description=__doc__.split("\n\n")[0])
    parser.add_argument("--loop", nargs="+", choices=["asyncio", "uvloop"], default=loop_names())
    parser.add_argument("--n", nargs=2, type=int, default=[500, 2500], metavar=("N1", "N2"))
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)  # internal: the run valgrind measures
    args = parser.parse_args(argv)
    if args.child:
        name, url, n, loop = args.child
        _child(name, url, int(n), loop)
        return 0
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        print("valgrind is not installed: apt-get install valgrind")
        return 1
    n1, n2 = args.n
    table = Table(
        f"user-space instructions per message ({n1:,} and {n2:,} messages, {CONCURRENCY} in flight)",
        ["loop", "bwasync", "bare aiohttp", "difference", "bare ÷ bwasync"],
    )
    with ServerProcess.responder() as server, concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        for loop in args.loop:
            jobs = {
                (name, n): pool.submit(count, valgrind, name, server.base_url, n, loop)
                for name in CONTENDERS
                for n in (n1, n2)
            }
            per = {name: (jobs[name, n2].result() - jobs[name, n1].result()) / (n2 - n1) for name in CONTENDERS}
            ours, bare = per["bwasync"], per["bare"]
            table.add(loop, f"{ours:,.0f}", f"{bare:,.0f}", f"{ours - bare:+,.0f}", f"{bare / ours:.3f}")
    print(table.render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
