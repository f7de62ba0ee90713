"""Throughput comparisons: a trial plus what the server spent on it, and the summary table."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import psutil

from ._common import Table, fmt, median, run_on, spread
from ._contenders import Trial
from ._responder import ServerProcess


@dataclass
class Measured:
    trial: Trial
    #: The server's CPU during the trial, in cores (1.0 = one core fully busy): a server near
    #: 1.0 is the bottleneck, and the comparison says nothing about the clients.
    server_cpu: float
    #: CPU used by everything else on the machine during the trial, in cores (other people's
    #: tests on a shared machine...): a noisy trial shows here.
    other_cpu: float
    #: CPU the hypervisor gave to other guests while this machine wanted it, in cores: the
    #: host, not this machine, was short of CPU (see :func:`stolen_seconds`).
    stolen: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            **asdict(self.trial),
            "rate": self.trial.rate,
            "server_cpu": self.server_cpu,
            "other_cpu": self.other_cpu,
            "stolen": self.stolen,
        }


def busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (all cores; steal and idle excluded)."""
    t = psutil.cpu_times()
    return float(sum(getattr(t, f, 0.0) for f in ("user", "nice", "system", "irq", "softirq")))


def stolen_seconds() -> float:
    """CPU seconds the hypervisor ran other guests while this (virtual) machine wanted a core.

    A virtual machine on a busy host runs slower without any process of its own showing it:
    its cores are simply not there part of the time. 0 on bare metal (and where unknown).
    """
    return float(getattr(psutil.cpu_times(), "steal", 0.0))


#: An async contender of :mod:`benchmarks._contenders`: ``fn(url, n, *, concurrency, seconds)``.
AsyncContender = Callable[..., Coroutine[Any, Any, Trial]]


def on_loop(
    loop: str, fn: AsyncContender, url: str, n: int, *, concurrency: int, seconds: float
) -> Callable[[], Trial]:
    """One bounded trial of an async contender on a fresh event loop of the given kind."""

    def trial() -> Trial:
        return run_on(loop, lambda: fn(url, n, concurrency=concurrency, seconds=seconds), timeout=seconds + 30)

    return trial


def measured(server: ServerProcess, trial: Callable[[], Trial]) -> Callable[[], Measured]:
    def run() -> Measured:
        busy, stolen = busy_seconds(), stolen_seconds()
        before = server.cpu_seconds()
        result = trial()
        used = server.cpu_seconds() - before
        busy = busy_seconds() - busy
        stolen = stolen_seconds() - stolen
        if result.elapsed <= 0:
            return Measured(result, 0.0, 0.0)
        other = max(0.0, busy - used - result.cpu)
        return Measured(result, used / result.elapsed, other / result.elapsed, stolen / result.elapsed)

    return run


@dataclass(frozen=True)
class Contender:
    """How a contender is shown: its label, event loop (or threads) and requests in flight."""

    label: str
    runtime: str
    in_flight: int


def throughput_table(
    title: str, contenders: Mapping[str, Contender], samples: Mapping[str, Sequence[Measured]]
) -> Table:
    table = Table(
        title,
        [
            "contender",
            "runtime",
            "in flight",
            "msg/s (median)",
            "min–max",
            "steady msg/s",
            "client CPU",
            "CPU µs/msg",
            "server CPU",
            "other CPU",
            "stolen",
            "errors",
        ],
    )
    for key, who in contenders.items():
        trials = samples[key]
        rates = [m.trial.rate for m in trials]
        table.add(
            who.label,
            who.runtime,
            f"{who.in_flight:,}",
            median(rates),
            spread(rates),
            median([m.trial.steady for m in trials]),
            f"{median([m.trial.cpu / m.trial.elapsed for m in trials]):.2f}",
            median([m.trial.cpu / m.trial.sent * 1e6 for m in trials if m.trial.sent]),
            f"{median([m.server_cpu for m in trials]):.2f}",
            f"{median([m.other_cpu for m in trials]):.2f}",
            f"{median([m.stolen for m in trials]):.2f}",
            f"{sum(m.trial.errors for m in trials):,}",
        )
    return table


def cpu_per_message(trials: Sequence[Measured]) -> list[float]:
    """The client's own CPU µs per message in each trial (less sensitive to a busy machine than rates)."""
    return [m.trial.cpu / m.trial.sent * 1e6 if m.trial.sent else float("nan") for m in trials]


def ratio_cell(ratios: Sequence[float]) -> str:
    return f"{fmt(median(ratios))}× ({spread(ratios)})"


def first_errors(samples: Mapping[str, Sequence[Measured]]) -> list[str]:
    out = []
    for key, trials in samples.items():
        for m in trials:
            if m.trial.first_error:
                out.append(f"{key}: {m.trial.errors} errors, first: {m.trial.first_error[:200]}")
                break
    return out


def cpu_times() -> tuple[float, float]:
    """(all CPU seconds of the machine so far, idle included; those stolen): see :func:`stolen_share`."""
    t = psutil.cpu_times()
    return float(sum(t)), float(getattr(t, "steal", 0.0))


def stolen_share(before: tuple[float, float], after: tuple[float, float]) -> float:
    """The share of the machine's CPU time the hypervisor took between two :func:`cpu_times`."""
    total = after[0] - before[0]
    return (after[1] - before[1]) / total if total > 0 else 0.0


#: A scenario during which the host took at least this share of the machine's CPU time gets a note.
STOLEN_NOTE_SHARE = 0.05


def stolen_note(share: float) -> list[str]:
    """A note when the hypervisor took CPU from this machine during a scenario (a shared host)."""
    if share < STOLEN_NOTE_SHARE:
        return []
    return [
        f"the host took {share:.0%} of this machine's CPU time during this scenario (steal: its cores were "
        "running other guests): every process here ran slower by fits, and timed ratios are noisier than the "
        "tables' other columns show"
    ]


def noise_note(samples: Mapping[str, Sequence[Measured]], threshold: float = 0.25) -> list[str]:
    """A note when other work on the machine took CPU during the trials (a shared machine)."""
    other = [m.other_cpu for trials in samples.values() for m in trials]
    busy = median(other) if other else 0.0
    if busy < threshold:
        return []
    return [
        f"the machine was busy with other work during these trials (median {busy:.2f} cores of 2, max "
        f"{max(other):.2f}; column 'other CPU'): absolute rates are depressed and noisy; alternation and paired "
        "ratios limit, but do not remove, the effect; 'CPU µs/msg' (the client's own CPU per message) is the "
        "least noisy measure of client cost"
    ]
