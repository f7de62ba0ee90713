"""Shared machinery: configuration, event loops, alternation, statistics, results and tables."""

from __future__ import annotations

import asyncio
import gc
import importlib.metadata
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, TypeVar

T = TypeVar("T")

Size = Literal["full", "quick", "smoke"]

#: The generation-0 threshold the harness (an application, not the library) may set. Every request
#: allocates many container objects; with a thousand requests alive each young collection walks
#: more of them (PERFORMANCE.md: +19% at 64 in flight, +58% at 1000).
GC_THRESHOLD = (50_000, 20, 100)


@dataclass(frozen=True)
class Config:
    """What a scenario needs to know about the run it is part of."""

    #: ``full`` (the default run), ``quick`` (``--quick``) or ``smoke`` (tiny counts, for the tests).
    size: Size = "full"
    #: Whether ``GC_THRESHOLD`` is applied (here and in the child processes the harness starts).
    gc_tuned: bool = True

    def pick(self, table: Mapping[str, T]) -> T:
        """This run's entry of a ``{"full": ..., "quick": ..., "smoke": ...}`` table."""
        return table[self.size]


# --- event loops ------------------------------------------------------------------------------


def uvloop_version() -> str | None:
    """uvloop's version when it is installed (and importable), else None."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return None
    return _version("uvloop") or "?"


def loop_names() -> list[str]:
    """Every event loop available here: asyncio, and uvloop when it is installed."""
    return ["asyncio", "uvloop"] if uvloop_version() else ["asyncio"]


def default_loop() -> str:
    """The loop an application of bwasync runs on: uvloop when installed."""
    return "uvloop" if uvloop_version() else "asyncio"


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    if name == "asyncio":
        # Explicitly the stock loop, whatever policy may have been installed.
        return asyncio.SelectorEventLoop
    raise ValueError(f"unknown event loop {name!r}")


def run_on(loop: str, main: Callable[[], Coroutine[Any, Any, T]], *, timeout: float) -> T:
    """Run ``main()`` on a fresh loop of the given kind, cancelled after ``timeout`` seconds.

    Load loops stop themselves at their own deadline; the timeout is the backstop.
    """

    async def bounded() -> T:
        async with asyncio.timeout(timeout):
            return await main()

    with asyncio.Runner(loop_factory=loop_factory(loop)) as runner:
        return runner.run(bounded())


def tune_gc(enabled: bool) -> None:
    if enabled:
        gc.set_threshold(*GC_THRESHOLD)


# --- statistics -------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def spread(values: Sequence[float]) -> str:
    """``min–max`` of a sample, for a table cell."""
    if not values:
        return "-"
    return f"{fmt(min(values))}–{fmt(max(values))}"


def fmt(value: float, digits: int = 3) -> str:
    """A number for a table: thousands separated, a few significant digits."""
    if value != value:  # NaN
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.{digits}g}"


def alternate(
    contenders: Mapping[str, Callable[[], T]],
    *,
    rounds: int,
    warmup: bool | Mapping[str, Callable[[], object]] = True,
    on_trial: Callable[[str, int, T], None] | None = None,
    groups: Sequence[Sequence[str]] | None = None,
) -> dict[str, list[T]]:
    """Run every contender once per round, alternating (A B C, B C A, ...), after a warm-up.

    The warm-up round (the contenders themselves, or the lighter stand-ins given as ``warmup``)
    is run and discarded: lazy imports, caches, the allocator and the server all warm up. The
    start of each round rotates so that no contender always runs right after the same
    neighbour. Returns each contender's trials, in round order.

    ``groups`` (a partition of the contenders) keeps the contenders that a ratio compares next
    to each other: each round runs group after group (the groups' order rotating), and a
    group's contenders run back to back, in reverse order every other round (A B, B A, ...).
    So the two trials of a per-round ratio are seconds apart, not a whole round, and neither
    always runs first: the host's drift within a round moves both alike.
    """
    names = list(contenders)
    blocks = [list(g) for g in groups] if groups is not None else [[name] for name in names]
    if sorted(n for g in blocks for n in g) != sorted(names):
        raise ValueError("groups must hold every contender exactly once")
    if warmup:
        warm = contenders if warmup is True else warmup
        for name in names:
            warm[name]()
    results: dict[str, list[T]] = {name: [] for name in names}
    for r in range(rounds):
        k = r % len(blocks)
        for block in blocks[k:] + blocks[:k]:
            for name in block if r % 2 == 0 else block[::-1]:
                trial = contenders[name]()
                results[name].append(trial)
                if on_trial is not None:
                    on_trial(name, r, trial)
    return results


def paired_ratios(num: Sequence[float], den: Sequence[float]) -> list[float]:
    """Per-round ratios ``num[i] / den[i]`` (rounds are paired: they ran next to each other)."""
    return [a / b for a, b in zip(num, den, strict=True) if b > 0]


# --- results ----------------------------------------------------------------------------------


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)

    def add(self, *cells: str | float) -> None:
        self.rows.append([c if isinstance(c, str) else fmt(c) for c in cells])

    def render(self) -> str:
        widths = [len(c) for c in self.columns]
        for row in self.rows:
            for i, cell in enumerate(row):
                widths[i] = max(widths[i], len(cell))

        def line(cells: Sequence[str]) -> str:
            first, *rest = cells
            out = [first.ljust(widths[0])] + [c.rjust(w) for c, w in zip(rest, widths[1:], strict=True)]
            return "  ".join(out).rstrip()

        rule = "  ".join("-" * w for w in widths)
        return "\n".join(
            [f"  {self.title}", "  " + line(self.columns), "  " + rule] + ["  " + line(r) for r in self.rows]
        )


@dataclass
class Target:
    """A target the scenario is measured against: reported, never asserted."""

    name: str
    value: float
    op: Literal[">=", "<=", "<"]
    threshold: float
    unit: str = ""
    note: str = ""

    @property
    def passed(self) -> bool:
        if self.value != self.value:
            return False
        if self.op == ">=":
            return self.value >= self.threshold
        if self.op == "<=":
            return self.value <= self.threshold
        return self.value < self.threshold

    def render(self) -> str:
        status = "PASS" if self.passed else "MISS"
        unit = f" {self.unit}" if self.unit else ""
        note = f"  ({self.note})" if self.note else ""
        return f"  {status}  {self.name}: {fmt(self.value)}{unit} {self.op} {fmt(self.threshold)}{unit}{note}"

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


@dataclass
class ScenarioResult:
    name: str
    title: str
    params: dict[str, Any] = field(default_factory=dict)
    tables: list[Table] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: Raw samples (per-trial numbers), for anyone who wants to recompute.
    data: dict[str, Any] = field(default_factory=dict)
    elapsed: float = 0.0
    #: The share of the machine's CPU time the host took during the scenario (steal).
    stolen_share: float = 0.0

    def render(self) -> str:
        out = [f"== {self.name}: {self.title}"]
        if self.params:
            out.append("  " + ", ".join(f"{k}={v}" for k, v in self.params.items()))
        for table in self.tables:
            out += ["", table.render()]
        if self.targets:
            out.append("")
            out += [t.render() for t in self.targets]
        if self.notes:
            out.append("")
            out += [f"  note: {n}" for n in self.notes]
        out.append(f"  ({self.elapsed:.1f} s)")
        return "\n".join(out)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "params": self.params,
            "tables": [asdict(t) for t in self.tables],
            "targets": [t.to_json() for t in self.targets],
            "notes": self.notes,
            "data": self.data,
            "elapsed": self.elapsed,
            "stolen_share": self.stolen_share,
        }


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment(cfg: Config) -> dict[str, Any]:
    """What the numbers were measured on, for the header and the JSON."""
    try:
        load = os.getloadavg()
    except OSError:
        load = (float("nan"),) * 3
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg": [round(x, 2) for x in load],
        "bwasync": _version("bwasync"),
        "aiohttp": _version("aiohttp"),
        "msgspec": _version("msgspec"),
        "uvloop": uvloop_version(),
        "bandwidth-sdk": _version("bandwidth-sdk"),
        "default_loop": default_loop(),
        "gc_threshold": list(gc.get_threshold()),
        "gc_tuned": cfg.gc_tuned,
        "size": cfg.size,
    }


def header(env: Mapping[str, Any]) -> str:
    gc_line = (
        f"gc.set_threshold{tuple(env['gc_threshold'])} (raised by the harness, an application; the library never does)"
        if env["gc_tuned"]
        else f"gc thresholds left at {tuple(env['gc_threshold'])}"
    )
    loop = env["default_loop"] + (f" {env['uvloop']}" if env["default_loop"] == "uvloop" else "")
    return "\n".join(
        [
            f"bwasync benchmarks ({env['size']}) — {env['date']}",
            f"  Python {env['python']} on {env['platform']}, {env['cpus']} CPUs, load {env['loadavg']}",
            f"  bwasync {env['bwasync']}, aiohttp {env['aiohttp']}, msgspec {env['msgspec']}, "
            f"bandwidth-sdk {env['bandwidth-sdk']}",
            f"  event loop: {loop} (client-overhead also runs every contender on stock asyncio)",
            f"  {gc_line}",
            "  servers run in their own process (the other core); contenders alternate after a "
            "discarded warm-up; medians, and medians of per-round ratios",
        ]
    )
