"""``python -m benchmarks [--quick] [--json out.json] [--only NAME ...]``: run, print, write JSON."""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec

from . import (
    campaign_throughput,
    client_overhead,
    latency_bound,
    limiter_accuracy,
    memory,
    rate_control,
    scale_out,
    validation_encoding,
)
from ._common import Config, ScenarioResult, environment, header, tune_gc
from ._compare import cpu_times, stolen_note, stolen_share

#: Every scenario, in the order a full run executes them.
SCENARIOS: dict[str, Callable[[Config], ScenarioResult]] = {
    client_overhead.NAME: client_overhead.run,
    latency_bound.NAME: latency_bound.run,
    memory.NAME: memory.run,
    limiter_accuracy.NAME: limiter_accuracy.run,
    rate_control.NAME: rate_control.run,
    validation_encoding.NAME: validation_encoding.run,
    campaign_throughput.NAME: campaign_throughput.run,
    scale_out.NAME: scale_out.run,
}
DEFAULT_JSON = Path(__file__).parent / "results" / "latest.json"


def scenario_name(text: str) -> str:
    """A scenario's registered name, whichever of ``-`` and ``_`` the caller wrote."""
    for candidate in (text, text.replace("_", "-"), text.replace("-", "_")):
        if candidate in SCENARIOS:
            return candidate
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="bwasync's benchmarks: a table per scenario on stdout, every number in JSON.",
    )
    parser.add_argument("--quick", action="store_true", help="smaller counts and fewer rounds (about a minute)")
    parser.add_argument(
        "--json", type=Path, default=DEFAULT_JSON, help=f"where to write results (default: {DEFAULT_JSON})"
    )
    parser.add_argument(
        "--only",
        nargs="+",
        type=scenario_name,
        choices=list(SCENARIOS),
        metavar="NAME",
        help="run only these scenarios (- and _ are interchangeable: rate_control = rate-control)",
    )
    parser.add_argument(
        "--no-gc-tune", action="store_true", help="leave the GC thresholds alone (default: raise generation 0)"
    )
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    return parser


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(msgspec.json.format(msgspec.json.encode(payload), indent=2) + b"\n")
    os.replace(tmp, path)


def run(
    names: Sequence[str], cfg: Config, *, json_path: Path | None, out: Callable[[str], None] = print
) -> dict[str, Any]:
    """Run the named scenarios in order, printing as they finish; return (and write) the JSON."""
    tune_gc(cfg.gc_tuned)
    env = environment(cfg)
    out(header(env))
    started = time.perf_counter()
    payload: dict[str, Any] = {"environment": env, "command": sys.argv, "scenarios": {}, "failed": []}
    for name in names:
        out("")
        before = cpu_times()
        try:
            result = SCENARIOS[name](cfg)
        except Exception:
            payload["failed"].append({"name": name, "error": traceback.format_exc()})
            out(f"== {name}: FAILED\n{traceback.format_exc()}")
            continue
        result.stolen_share = stolen_share(before, cpu_times())
        result.notes += stolen_note(result.stolen_share)
        out(result.render())
        payload["scenarios"][name] = result.to_json()
    targets = [t for s in payload["scenarios"].values() for t in s["targets"]]
    payload["summary"] = {
        "passed": sum(t["passed"] for t in targets),
        "missed": sum(not t["passed"] for t in targets),
        "targets": [{"scenario": s["name"], **t} for s in payload["scenarios"].values() for t in s["targets"]],
    }
    payload["elapsed"] = time.perf_counter() - started
    out("")
    out(
        f"targets: {payload['summary']['passed']} PASS, {payload['summary']['missed']} MISS"
        + (f"; {len(payload['failed'])} scenario(s) FAILED" if payload["failed"] else "")
        + f"; {payload['elapsed']:.0f} s in all"
    )
    if json_path is not None:
        write_json(json_path, payload)
        out(f"results written to {json_path}")
    return payload


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list:
        for name, fn in SCENARIOS.items():
            doc = (sys.modules[fn.__module__].__doc__ or "").strip().splitlines()[0]
            print(f"{name:22} {doc}")
        return 0
    cfg = Config(size="quick" if args.quick else "full", gc_tuned=not args.no_gc_tune)
    payload = run(args.only or list(SCENARIOS), cfg, json_path=args.json, out=lambda s: print(s, flush=True))
    return 1 if payload["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
