"""Client-overhead by instruction count: bwasync ``send_many`` vs the bare aiohttp loop, per message.

    python -m benchmarks.instructions [--loop asyncio uvloop] [--n 500 2500]
    python -m benchmarks.instructions --own [--loop uvloop] [--n 2000 12000] [--code DIR]

On a shared machine the time a message takes moves by ±20% from run to run; the number of
instructions the client executes for it barely moves. Each contender of client-overhead (the same
code: :mod:`benchmarks._contenders`) runs twice under ``valgrind --tool=cachegrind`` against the
zero-latency responder in another process (not under valgrind), with ``n1`` and ``n2`` messages;
the difference divided by ``n2 - n1`` is the client's user-space instructions per message, start-up
and imports cancelled out. The ratio bare ÷ bwasync is what client-overhead's ratio would be if
every instruction cost the same (cache misses and the kernel are not counted). Needs valgrind
(``apt-get install valgrind``); each run takes a minute or two.

These counts move by ~1,000 instructions a message from run to run: how many answers the loop
finds at each wake-up depends on timing, even under valgrind. ``--own`` counts bwasync alone,
to the instruction: ``send_many`` against an in-process stand-in for aiohttp's session (each
request waits one loop turn for its answer, Bandwidth's 202 example, as a real one waits once
for the network), so only bwasync's own work and the event loop's turns are counted. Its
figure is no ratio to anything; it is for before/after comparisons of bwasync's code
(``--code DIR`` runs another copy of the package: a directory holding ``bwasync/``).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from ._common import Table, loop_names, run_on, tune_gc
from ._contenders import bare_aiohttp, bwasync_send_many
from ._responder import ServerProcess

CONCURRENCY = 64
CONTENDERS = {"bwasync": bwasync_send_many, "bare": bare_aiohttp}
_REFS = re.compile(r"I\s+refs:\s+([\d,]+)")


def _child(name: str, url: str, n: int, loop: str) -> None:
    tune_gc(True)
    if name == "own":
        run_on(loop, lambda: _own(n), timeout=1200)
        return
    fn = CONTENDERS[name]
    trial = run_on(loop, lambda: fn(url, n, concurrency=CONCURRENCY, seconds=900), timeout=1200)
    if trial.sent != n:
        raise SystemExit(f"{name}: {trial.sent} of {n} sent ({trial.first_error})")


class _Answer:
    """What the pipeline reads of aiohttp's response to a create: a 202 and its body."""

    status = 202

    def __init__(self, body: bytes) -> None:
        self._body = body
        self.headers: dict[str, str] = {}

    async def read(self) -> bytes:
        return self._body

    def release(self) -> None:
        pass


class _StandInSession:
    """Stands in for the client's ``aiohttp.ClientSession`` (``--own``): every POST waits one
    turn of the loop, then answers Bandwidth's 202 example."""

    closed = False

    def __init__(self, body: bytes) -> None:
        self._answer = _Answer(body)

    async def post(self, url: object, **options: Any) -> _Answer:
        loop = asyncio.get_running_loop()
        answered = loop.create_future()
        loop.call_soon(answered.set_result, None)
        await answered
        return self._answer


async def _own(n: int) -> None:
    from bwasync import MessagingClient

    from ._data import ACCOUNT_ID, PASSWORD, RESPONSE_202, USERNAME, cycled_requests, message_fields

    session: Any = _StandInSession(RESPONSE_202)
    fields = message_fields()
    client = MessagingClient(ACCOUNT_ID, username=USERNAME, password=PASSWORD, session=session, concurrency=CONCURRENCY)
    async with client, client.send_many(cycled_requests(fields, n), concurrency=CONCURRENCY) as results:
        accepted = sum([result.ok async for result in results])
    if accepted != n:
        raise SystemExit(f"own: {accepted} of {n} accepted")


def count(valgrind: str, name: str, url: str, n: int, loop: str, code: str | None = None) -> int:
    """User-space instructions of one whole run of ``name`` sending ``n`` messages."""
    argv = [valgrind, "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null"]
    # -P: not the working directory first on the path, so that ``code`` is the bwasync imported.
    argv += [sys.executable, "-P", "-m", "benchmarks.instructions", "--child", name, url, str(n), loop]
    root = str(Path(__file__).resolve().parent.parent)  # benchmarks' own checkout
    # A fixed hash seed: set and dict probes, hence counts, do not move between runs.
    env = dict(os.environ, PYTHONHASHSEED="0", PYTHONPATH=f"{code}{os.pathsep}{root}" if code else root)
    out = subprocess.run(argv, capture_output=True, text=True, timeout=1800, check=True, env=env)
    match = _REFS.search(out.stderr)
    if match is None:
        raise RuntimeError(f"no instruction count in valgrind's output: {out.stderr[-500:]}")
    return int(match.group(1).replace(",", ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.instructions", description=__doc__.split("\n\n")[0])
    parser.add_argument("--loop", nargs="+", choices=["asyncio", "uvloop"], default=loop_names())
    parser.add_argument("--n", nargs=2, type=int, metavar=("N1", "N2"), help="default: 500 2500; --own: 2000 12000")
    parser.add_argument("--own", action="store_true", help="bwasync alone, against a stand-in session (exact)")
    parser.add_argument("--code", help="with --own: the directory holding the bwasync package to count")
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
    if args.own:
        n1, n2 = args.n or (2000, 12000)
        table = Table(
            f"bwasync's own instructions per message ({n1:,} and {n2:,} messages, {CONCURRENCY} in flight,"
            " a stand-in session)",
            ["loop", "bwasync", "code"],
        )
        for loop in args.loop:
            counts = [count(valgrind, "own", "-", n, loop, args.code) for n in (n1, n2)]
            table.add(loop, f"{(counts[1] - counts[0]) / (n2 - n1):,.0f}", args.code or "this checkout")
        print(table.render())
        return 0
    n1, n2 = args.n or (500, 2500)
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
