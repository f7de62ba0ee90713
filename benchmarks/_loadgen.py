"""A bare aiohttp load generator in its own process, for checking a server's capacity.

``python -m benchmarks._loadgen URL --n N --concurrency C --seconds S [--loop uvloop]`` prints one
JSON line: ``{"sent", "errors", "elapsed", "rate", "started", "ended"}`` (``time.time()`` stamps, so
that several generators' runs can be checked for overlap).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import msgspec

from ._common import default_loop, run_on, tune_gc
from ._contenders import bare_aiohttp


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks._loadgen")
    parser.add_argument("url")
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--loop", default=default_loop())
    parser.add_argument("--no-gc-tune", action="store_true")
    args = parser.parse_args(argv)
    tune_gc(not args.no_gc_tune)
    started = time.time()
    trial = run_on(
        args.loop,
        lambda: bare_aiohttp(args.url, args.n, concurrency=args.concurrency, seconds=args.seconds),
        timeout=args.seconds + 30,
    )
    out = {
        "sent": trial.sent,
        "errors": trial.errors,
        "elapsed": trial.elapsed,
        "rate": trial.rate,
        "started": started,
        "ended": time.time(),
    }
    sys.stdout.write(msgspec.json.encode(out).decode() + "\n")


if __name__ == "__main__":
    main()
