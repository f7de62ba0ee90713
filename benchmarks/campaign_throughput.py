"""campaign_throughput: a journaled campaign vs bare ``send_many`` on the same rows, unthrottled.

Both contenders send the same CSV file (``id,to,first_name,code``, a personalised template) to
the zero-latency responder of ``benchmarks._responder`` in its own process, 100 in flight, on
the loop the CLI uses (uvloop when installed), alternated round by round after a discarded
warm-up:

* **campaign**: what ``bwasync campaign run FILE`` does, through the library's
  :class:`~bwasync.campaign.CampaignRunner` on a fresh journal: the load pass (read, render,
  validate, insert every row), then the send pass (each row's ``in_flight`` mark committed
  before its request leaves, each result recorded), then the journal closed. Rows/s over all
  of it; the send pass's own rate is shown apart.
* **send_many**: the same file read by the same reader and rendered into the same validated,
  tagged requests (:func:`~bwasync.campaign.build_request`), streamed straight into
  ``send_many``: the same messages with no journal, so no crash safety.

The target is the issue's: a campaign at ≥ 0.8× bare ``send_many`` (median of per-round ratios).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bwasync import MessageRequest, Outcome, ValidationError
from bwasync.campaign import CampaignOptions, CampaignRunner, Template, build_request, read_rows

from ._common import Config, ScenarioResult, Table, Target, alternate, default_loop, median, paired_ratios, run_on
from ._compare import busy_seconds, ratio_cell, stolen_seconds
from ._contenders import make_client
from ._data import APPLICATION_ID, SENDER
from ._responder import ServerProcess
from .campaign_memory import TEMPLATE, write_csv

NAME = "campaign_throughput"
TITLE = "a journaled campaign vs bare send_many on the same rows, zero-latency responder, unthrottled"
CONCURRENCY = 100
#: Rows per trial and rounds. A trial of a few thousand rows lasts about a second or two.
SIZES: dict[str, dict[str, int]] = {
    "full": {"rows": 6000, "rounds": 7},
    "quick": {"rows": 4000, "rounds": 3},
    "smoke": {"rows": 150, "rounds": 1},
}
#: Every trial is cancelled after this many seconds (the count normally ends it far earlier).
TRIAL_SECONDS = 60.0
TARGET = 0.8
CAMPAIGN_ID = "bench"


@dataclass
class Run:
    """One trial: rows accepted, wall time, process CPU (all threads), and the send pass alone."""

    accepted: int
    rows: int
    elapsed: float
    cpu: float
    other_cpu: float = 0.0
    #: Cores the hypervisor took meanwhile (see ``_compare.stolen_seconds``).
    stolen: float = 0.0
    send_elapsed: float = 0.0

    @property
    def rate(self) -> float:
        return self.accepted / self.elapsed if self.elapsed > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "rate": self.rate}


async def campaign_trial(url: str, csv_path: Path, journal_path: Path) -> Run:
    options = CampaignOptions(
        input_path=str(csv_path),
        application_id=APPLICATION_ID,
        template=TEMPLATE,
        default_from=SENDER,
        key_column="id",
        campaign_id=CAMPAIGN_ID,
        concurrency=CONCURRENCY,
    )
    started, cpu = time.perf_counter(), time.process_time()
    async with CampaignRunner(journal_path, options) as runner, make_client(url, CONCURRENCY) as client:
        await runner.load()
        send_started = time.perf_counter()
        outcome = await runner.run(client)
        send_elapsed = time.perf_counter() - send_started
    return Run(
        accepted=outcome.counts["accepted"],
        rows=outcome.counts.total,
        elapsed=time.perf_counter() - started,
        cpu=time.process_time() - cpu,
        send_elapsed=send_elapsed,
    )


async def send_many_trial(url: str, csv_path: Path) -> Run:
    template = Template(TEMPLATE)
    rows = accepted = 0

    def requests() -> Iterator[MessageRequest]:
        nonlocal rows
        with read_rows(str(csv_path), key_column="id") as reader:
            for row in reader:
                rows += 1
                try:
                    yield build_request(
                        row,
                        template=template,
                        application_id=APPLICATION_ID,
                        default_from=SENDER,
                        campaign_id=CAMPAIGN_ID,
                    )
                except ValidationError:
                    continue

    started, cpu = time.perf_counter(), time.process_time()
    async with (
        make_client(url, CONCURRENCY) as client,
        client.send_many(requests(), concurrency=CONCURRENCY) as results,
    ):
        async for result in results:
            accepted += result.outcome is Outcome.ACCEPTED
    elapsed = time.perf_counter() - started
    return Run(accepted=accepted, rows=rows, elapsed=elapsed, cpu=time.process_time() - cpu, send_elapsed=elapsed)


def _measured(server: ServerProcess, trial: Callable[[], Run]) -> Callable[[], Run]:
    """A trial, with the CPU everything else on the machine used meanwhile (in cores)."""

    def run() -> Run:
        busy, stolen, before = busy_seconds(), stolen_seconds(), server.cpu_seconds()
        result = trial()
        used = server.cpu_seconds() - before
        other = max(0.0, busy_seconds() - busy - used - result.cpu)
        if result.elapsed > 0:
            result.other_cpu = other / result.elapsed
            result.stolen = (stolen_seconds() - stolen) / result.elapsed
        return result

    return run


def run(cfg: Config) -> ScenarioResult:
    started = time.perf_counter()
    size = cfg.pick(SIZES)
    rows, rounds = size["rows"], size["rounds"]
    loop = default_loop()
    result = ScenarioResult(
        NAME,
        TITLE,
        params={"rows/trial": rows, "rounds": rounds, "in flight": CONCURRENCY, "loop": loop, "keyed by": "id column"},
    )
    directory = Path(tempfile.mkdtemp(prefix="bwasync-campaign-throughput-"))
    counter = iter(range(10**9))
    try:
        csv_path = directory / "campaign.csv"
        write_csv(csv_path, rows)
        with ServerProcess.responder() as server:
            url = server.base_url

            def campaign() -> Run:
                journal = directory / f"run{next(counter)}.journal"
                try:
                    return run_on(loop, lambda: campaign_trial(url, csv_path, journal), timeout=TRIAL_SECONDS)
                finally:
                    for leftover in directory.glob(journal.name + "*"):
                        leftover.unlink()

            def bare() -> Run:
                return run_on(loop, lambda: send_many_trial(url, csv_path), timeout=TRIAL_SECONDS)

            contenders = {"campaign": _measured(server, campaign), "send_many": _measured(server, bare)}
            samples = alternate(contenders, rounds=rounds, warmup=cfg.size != "smoke")
    finally:
        shutil.rmtree(directory, ignore_errors=True)

    table = Table(
        "rows/s (median of trials, min–max)",
        ["contender", "rows/s", "min–max", "send pass rows/s", "CPU µs/row", "other CPU", "stolen", "accepted/rows"],
    )
    for name, trials in samples.items():
        rates = [t.rate for t in trials]
        table.add(
            name,
            median(rates),
            f"{min(rates):,.0f}–{max(rates):,.0f}",
            median([t.accepted / t.send_elapsed for t in trials if t.send_elapsed > 0]),
            median([t.cpu / t.accepted * 1e6 for t in trials if t.accepted]),
            f"{median([t.other_cpu for t in trials]):.2f}",
            f"{median([t.stolen for t in trials]):.2f}",
            f"{sum(t.accepted for t in trials):,}/{sum(t.rows for t in trials):,}",
        )
    result.tables.append(table)
    ratios = paired_ratios([t.rate for t in samples["campaign"]], [t.rate for t in samples["send_many"]])
    cpu = paired_ratios(
        [t.cpu / t.accepted for t in samples["send_many"] if t.accepted],
        [t.cpu / t.accepted for t in samples["campaign"] if t.accepted],
    )
    result.notes.append(f"campaign / send_many: {ratio_cell(ratios)} by rate; {ratio_cell(cpu)} by CPU per row")
    result.targets.append(Target("journaled campaign / bare send_many", median(ratios), ">=", TARGET, "×"))
    result.data["samples"] = {name: [t.to_json() for t in trials] for name, trials in samples.items()}
    result.data["ratio"] = median(ratios)
    result.data["cpu_ratio"] = median(cpu)
    result.elapsed = time.perf_counter() - started
    return result
