"""campaign_memory: a million-row campaign file through ``bwasync campaign run``; peak RSS.

::

    python -m benchmarks.campaign_memory [--rows 1000000] [--key-column] [--server responder|emulator]
                                         [--dry-run-only] [--json benchmarks/results/campaign_memory.json]

It writes a CSV of ``--rows`` recipients (``id,to,first_name,code``) to a temporary directory,
then runs the campaign twice, each time in a fresh child process that runs the real command
line (``bwasync.cli.main``) in-process and reports its own peak RSS (``ru_maxrss``), its RSS
after the imports (the baseline) and its RSS sampled every 0.2 s by a thread:

1. ``campaign run FILE --dry-run``: every row validated and rendered, nothing kept.
2. ``campaign run FILE`` against a fast server in another process: the zero-latency responder
   of ``benchmarks._responder`` (default) or the emulator with ``--no-record`` (``--server
   emulator``), which answers 202 without keeping anything. This is the whole run: load pass
   into the journal, send pass, report.

Rows are keyed by line number unless ``--key-column`` (then the ``id`` column: the real run
leaves duplicates to the journal's primary key, the dry run keeps every key in a temporary SQLite
table, see ``bwasync.campaign._seenkeys``). A flat RSS across the run is the claim: nothing is
kept per row in memory, everything is on disk. ``--dry-run-only`` skips the real run.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

NAME = "campaign_memory"
MB = 1024 * 1024
RESULT = "CAMPAIGN_MEMORY_RESULT "
DEFAULT_JSON = Path(__file__).parent / "results" / "campaign_memory.json"
TEMPLATE = "Hi {first_name}, your verification code is {code}. Reply STOP to opt out."
NAMES = ("Ann", "Ben", "Chloé", "Dev", "Elif", "Farah", "Gus", "Hana", "Ivan", "Jo", "Zoë")


def _maxrss_mb() -> float:
    scale = 1 if sys.platform == "darwin" else 1024  # Linux reports KiB, macOS bytes
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / MB


def write_csv(path: Path, rows: int) -> None:
    """``rows`` recipients, streamed to disk (the generator holds nothing either)."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "to", "first_name", "code"])
        for i in range(rows):
            writer.writerow(
                [f"c{i:08d}", f"+1{2000000000 + i:010d}", NAMES[i % len(NAMES)], f"{i * 7919 % 1_000_000:06d}"]
            )


# --- The child: the real command line, measured from inside ------------------------------------------


def child(argv: Sequence[str]) -> dict[str, Any]:
    """Run ``bwasync`` with ``argv`` in this process; return the measurements."""
    import psutil

    from bwasync.cli import main as bwasync_main

    proc = psutil.Process()
    baseline = proc.memory_info().rss / MB
    samples: list[tuple[float, float]] = []
    stop = threading.Event()
    started = time.perf_counter()

    def sample() -> None:
        while not stop.wait(0.2):
            samples.append((time.perf_counter() - started, proc.memory_info().rss / MB))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    code = 0
    try:
        bwasync_main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0) if not isinstance(exc.code, str) else 1
    elapsed = time.perf_counter() - started
    stop.set()
    sampler.join()
    peak_sampled = max((rss for _, rss in samples), default=baseline)
    # RSS at each tenth of the run: flat means nothing accumulates per row.
    tenths = [min(samples, key=lambda s: abs(s[0] - elapsed * k / 10))[1] for k in range(1, 11)] if samples else []
    return {
        "exit_code": code,
        "elapsed_s": round(elapsed, 2),
        "baseline_rss_mb": round(baseline, 1),
        "peak_maxrss_mb": round(_maxrss_mb(), 1),
        "peak_sampled_rss_mb": round(peak_sampled, 1),
        "rss_by_tenth_mb": [round(x, 1) for x in tenths],
    }


def _run_child(argv: list[str], timeout: float) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.campaign_memory", "--child", "--", *argv]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    for line in done.stdout.splitlines():
        if line.startswith(RESULT):
            result: dict[str, Any] = json.loads(line[len(RESULT) :])
            return result
    raise RuntimeError(f"the child failed (exit {done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")


def _real_run(args: argparse.Namespace, common: list[str], path: Path) -> tuple[dict[str, Any], float]:
    """The whole campaign against a fast server in another process: (measurements, journal MB)."""
    from ._responder import ServerProcess

    if args.server == "responder":
        server = ServerProcess.responder()
    else:
        argv = [sys.executable, "-m", "bwasync.emulator", "--no-record", "--username", "u", "--password", "p"]
        server = ServerProcess(argv, name="emulator (no record)")
    print(f"real run against the {server.name} ...", flush=True)
    with server:
        connection = [
            "--base-url", server.base_url, "--account-id", "9900000", "--username", "u", "--password", "p",
            "--application-id", "93de2206-9669-4e07-948d-329f4b722ee2", "--from", "+15553332222",
        ]  # fmt: skip
        run = [*common, "--concurrency", str(args.concurrency), *connection]
        result = _run_child(run, args.timeout)
    return result, round(os.path.getsize(str(path) + ".journal") / MB, 1)


# --- The parent ----------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["--child"]:
        rest = args_list[2:] if args_list[1:2] == ["--"] else args_list[1:]
        result = child(rest)
        sys.stdout.flush()
        print(RESULT + json.dumps(result), flush=True)
        return 0

    parser = argparse.ArgumentParser(prog="python -m benchmarks.campaign_memory", description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows in the campaign file (default 1,000,000)")
    parser.add_argument("--key-column", action="store_true", help="key rows by the id column instead of line number")
    parser.add_argument("--server", choices=("responder", "emulator"), default="responder")
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds allowed per child run")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"where to write results ({DEFAULT_JSON})")
    parser.add_argument("--keep", action="store_true", help="keep the CSV and journal (path printed)")
    parser.add_argument("--dry-run-only", action="store_true", help="measure the dry run only (no server, no real run)")
    args = parser.parse_args(args_list)

    directory = Path(tempfile.mkdtemp(prefix="bwasync-campaign-memory-"))
    results: dict[str, Any] = {"rows": args.rows, "key_column": args.key_column, "server": args.server}
    try:
        path = directory / "campaign.csv"
        t = time.perf_counter()
        write_csv(path, args.rows)
        results["csv_mb"] = round(os.path.getsize(path) / MB, 1)
        print(f"wrote {args.rows:,} rows ({results['csv_mb']} MB) in {time.perf_counter() - t:.1f} s: {path}")
        common = ["campaign", "run", str(path), "--template", TEMPLATE, "--no-progress"]
        if args.key_column:
            common += ["--key-column", "id"]

        print("dry run ...", flush=True)
        results["dry_run"] = _run_child([*common, "--dry-run", "--from", "+15553332222"], args.timeout)

        if not args.dry_run_only:
            results["run"], results["journal_mb"] = _real_run(args, common, path)
    finally:
        if args.keep:
            print(f"kept {directory}")
        else:
            shutil.rmtree(directory, ignore_errors=True)

    print()
    print(f"campaign_memory: {args.rows:,} rows, keyed by {'the id column' if args.key_column else 'line number'}")
    print(f"{'run':<10} {'exit':>4} {'time':>9} {'baseline':>10} {'peak RSS':>10}   RSS at each tenth (MB)")
    for name in ("dry_run", "run")[: 1 if args.dry_run_only else 2]:
        r = results[name]
        tenths = " ".join(f"{x:.0f}" for x in r["rss_by_tenth_mb"])
        print(
            f"{name:<10} {r['exit_code']:>4} {r['elapsed_s']:>8.1f}s {r['baseline_rss_mb']:>8.1f}MB "
            f"{r['peak_maxrss_mb']:>8.1f}MB   {tenths}"
        )
    if not args.dry_run_only:
        rows_per_s = args.rows / results["run"]["elapsed_s"] if results["run"]["elapsed_s"] else 0
        print(f"journal {results['journal_mb']} MB on disk; whole run {rows_per_s:,.0f} rows/s (load, send, report)")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0 if all(results[name]["exit_code"] == 0 for name in ("dry_run", "run") if name in results) else 1


if __name__ == "__main__":
    sys.exit(main())
