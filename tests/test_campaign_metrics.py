"""``campaign run --metrics HOST:PORT``: Prometheus metrics served while a campaign runs.

The command runs in a worker thread (its own event loop) against an emulator on the test's loop;
the scrape is a real HTTP GET over loopback, made by the command's own process right after its
send pass ended and before the command closes the server (a wrapper around
``CampaignRunner.run``), so nothing waits on a clock.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sqlite3
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from click.testing import CliRunner, Result
from prometheus_client.parser import text_string_to_metric_families

from bwasync.campaign import _runner
from bwasync.cli import cli
from bwasync.emulator import Emulator

from .conftest import ACCOUNT_ID, PASSWORD, USERNAME, EmulatorFactory

APP = "93de2206-9669-4e07-948d-329f4b722ee2"
SENDER = "+15553332222"
ROWS = 30
RATE = 1000.0

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("BW_"):
            monkeypatch.delenv(name)


@pytest.fixture
def campaign_file(tmp_path: Path) -> Path:
    path = tmp_path / "list.csv"
    lines = ["to,name", *(f"+1919555{i:04d},Ann{i}" for i in range(ROWS))]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def connection(emu: Emulator) -> list[str]:
    return [
        "--base-url", emu.url, "--account-id", ACCOUNT_ID, "--username", USERNAME, "--password", PASSWORD,
        "--application-id", APP, "--from", SENDER,
    ]  # fmt: skip


def samples(text: str) -> Samples:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def journal_counts(path: Path) -> dict[str, int]:
    conn = sqlite3.connect(path)
    try:
        return dict(conn.execute("SELECT status, COUNT(*) FROM rows GROUP BY status"))
    finally:
        conn.close()


async def invoke(*args: str) -> Result:
    """The command as a user runs it, on its own loop in a worker thread (the emulator stays on ours)."""
    return await asyncio.to_thread(CliRunner().invoke, cli, list(args))


@dataclass
class Scrape:
    url: str = ""
    texts: list[str] = field(default_factory=list)


@pytest.fixture
def scrape_after_sending(monkeypatch: pytest.MonkeyPatch) -> Scrape:
    """Scrape ``scrape.url`` once the run's send pass is over, while the command still serves it."""
    scrape = Scrape()
    run = _runner.CampaignRunner.run

    async def run_then_scrape(self: _runner.CampaignRunner, client: Any) -> _runner.RunOutcome:
        outcome = await run(self, client)
        async with aiohttp.ClientSession() as session, session.get(scrape.url) as resp:
            assert resp.status == 200
            scrape.texts.append(await resp.text())
        return outcome

    monkeypatch.setattr(_runner.CampaignRunner, "run", run_then_scrape)
    return scrape


async def test_metrics_are_served_during_a_campaign_and_match_its_results(
    campaign_file: Path, emulator_factory: EmulatorFactory, scrape_after_sending: Scrape
) -> None:
    port = free_port()
    scrape_after_sending.url = f"http://127.0.0.1:{port}/metrics"
    # Half the creates answered 500 (retried once, then the row fails): accepted and failed rows,
    # retries and two statuses to count.
    async with emulator_factory(p_500=0.5, seed=5) as emu:
        result = await invoke(
            "campaign", "run", str(campaign_file), "--template", "Hi {name}", "--no-progress",
            "--rate", str(RATE), "--max-attempts", "2", "--metrics", f"127.0.0.1:{port}", *connection(emu),
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"Serving Prometheus metrics on http://127.0.0.1:{port}/metrics." in result.output
    assert len(scrape_after_sending.texts) == 1, "the run's send pass did not end while the server was up"
    got = samples(scrape_after_sending.texts[0])
    rows = journal_counts(Path(f"{campaign_file}.journal"))
    stats = emu.stats

    def sends(outcome: str) -> float:
        return got.get(("bwasync_sends_total", (("outcome", outcome),)), 0.0)

    assert rows.get("accepted", 0) == stats.accepted == sends("accepted") > 0
    assert rows.get("failed", 0) == sends("not_sent") > 0
    assert rows.get("ambiguous", 0) == sends("ambiguous")
    assert sends("accepted") + sends("not_sent") + sends("ambiguous") == ROWS
    assert got[("bwasync_retries_total", ())] == stats.creates - ROWS > 0
    assert got[("bwasync_requests_total", (("status", "202"),))] == stats.by_status[202]
    assert got[("bwasync_requests_total", (("status", "500"),))] == stats.by_status[500]
    assert got.get(("bwasync_rate_limited_total", ()), 0.0) == stats.by_status[429]
    assert got[("bwasync_request_latency_seconds_count", ())] == stats.creates
    assert got[("bwasync_requests_in_flight", ())] == 0
    # No 429: the run's --rate is the limit in force.
    assert got[("bwasync_limiter_rate", ())] == RATE


def test_a_bad_metrics_address_is_a_usage_error(campaign_file: Path) -> None:
    for bad in ("9464", "localhost:http", "127.0.0.1:70000"):
        result = CliRunner().invoke(
            cli, ["campaign", "run", str(campaign_file), "--template", "Hi", "--emulator", "--metrics", bad]
        )
        assert result.exit_code == 2, result.output
        assert "Invalid value for '--metrics'" in result.output and "is not HOST:PORT" in result.output
        assert not Path(f"{campaign_file}.journal").exists()


async def test_a_metrics_port_in_use_stops_the_run_before_sending(campaign_file: Path, emulator: Emulator) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = await invoke(
            "campaign", "run", str(campaign_file), "--template", "Hi {name}", "--no-progress",
            "--metrics", f"127.0.0.1:{port}", *connection(emulator),
        )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert f"--metrics: cannot serve on 127.0.0.1:{port}" in result.output
    assert "Traceback" not in result.output
    assert emulator.stats.requests == 0
    assert not Path(f"{campaign_file}.journal").exists()


def test_metrics_without_prometheus_client_names_the_extra(
    campaign_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [m for m in sys.modules if m == "prometheus_client" or m.startswith("bwasync.metrics")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "bwasync.metrics", None)
    result = CliRunner().invoke(
        cli,
        ["campaign", "run", str(campaign_file), "--template", "Hi {name}", "--emulator", "--metrics", "127.0.0.1:0"],
    )
    assert result.exit_code == 2, result.output
    assert "--metrics needs prometheus_client: pip install 'bwasync[metrics]'" in result.output
    assert not Path(f"{campaign_file}.journal").exists()
