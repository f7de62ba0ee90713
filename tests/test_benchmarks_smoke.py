"""Smoke test of the benchmark harness: every scenario on tiny counts, and its output's shape.

No timing is asserted here (timings belong to ``python -m benchmarks``); what is checked is that
the machinery runs end to end (servers in child processes, alternation, the memory child, the
limiter's timestamps) and produces the tables, PASS/MISS lines and JSON the README quotes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest

from benchmarks.__main__ import SCENARIOS, main, run
from benchmarks._common import Config, ScenarioResult, Table, Target, alternate
from benchmarks.limiter_accuracy import analyse, largest_burst, max_in_window


def test_largest_burst_is_exact_on_known_sequences() -> None:
    # Three at t=0, then one a second at rate 1: the worst window is [0, 0] (3) or [0, 2] (5 - 2).
    excess, start, end = largest_burst([0.0, 0.0, 0.0, 1.0, 2.0], rate=1.0)
    assert excess == pytest.approx(3.0)
    assert start == 0.0 and end in (0.0, 2.0)
    # Perfectly paced: every window holds at most one more than rate * width.
    paced = [i / 100 for i in range(500)]
    assert largest_burst(paced, rate=100.0)[0] == pytest.approx(1.0)
    # Twice too fast for the last half second: 50 extra sends.
    fast = paced + [5.0 + i / 200 for i in range(100)]
    assert largest_burst(fast, rate=100.0)[0] == pytest.approx(51.0, abs=0.5)
    assert max_in_window([0.0, 0.1, 0.2, 1.5], width=1.0) == 3


def test_analyse_separates_the_initial_burst() -> None:
    burst, rate = 20, 100.0
    stamps = [1.0] * burst + [1.0 + (i + 1) / rate for i in range(300)]
    stats = analyse(0.999, stamps, rate, burst)
    assert stats["rate_steady"] == pytest.approx(rate, rel=0.01)
    assert stats["rate_all"] > rate * 1.05  # the burst inflates the all-sends rate
    assert stats["largest_burst"] == pytest.approx(burst, abs=1.0)


def test_alternate_rotates_and_discards_the_warm_up() -> None:
    calls: list[str] = []

    def contender(name: str) -> Callable[[], int]:
        def trial() -> int:
            calls.append(name)
            return len(calls)

        return trial

    contenders = {name: contender(name) for name in "ABC"}
    results = alternate(contenders, rounds=3)
    assert calls == list("ABC" + "ABC" + "BCA" + "CAB")
    assert {k: len(v) for k, v in results.items()} == {"A": 3, "B": 3, "C": 3}
    assert results["A"][0] == 4  # the warm-up's trials are not among the results


def test_alternate_keeps_a_group_back_to_back_and_swaps_who_goes_first() -> None:
    calls: list[str] = []

    def contender(name: str) -> Callable[[], None]:
        return lambda: calls.append(name)

    contenders = {name: contender(name) for name in ["a1", "a2", "b1", "b2", "c"]}
    alternate(contenders, rounds=4, warmup=False, groups=[["a1", "a2"], ["b1", "b2"], ["c"]])
    assert calls[:5] == ["a1", "a2", "b1", "b2", "c"]
    assert calls[5:10] == ["b2", "b1", "c", "a2", "a1"]  # groups rotate; each group reversed
    assert calls[10:15] == ["c", "a1", "a2", "b1", "b2"]
    assert calls[15:] == ["a2", "a1", "b2", "b1", "c"]
    with pytest.raises(ValueError, match="exactly once"):
        alternate(contenders, rounds=1, warmup=False, groups=[["a1", "a2"], ["b1", "b2"]])


def test_target_render() -> None:
    assert Target("x / y", 0.95, ">=", 0.9, "×").render().lstrip().startswith("PASS")
    assert Target("rss", 151.0, "<", 150.0, "MB").render().lstrip().startswith("MISS")
    assert not Target("nan", math.nan, "<=", 1.0).passed


#: The scenarios whose smoke run takes seconds (marked ``slow``: started first, see conftest.py).
SLOW_SCENARIOS = {"rate_control", "scale_out"}


#: One test per scenario, so that pytest-xdist spreads them over its workers.
@pytest.mark.parametrize(
    "name", [pytest.param(name, marks=[pytest.mark.slow] if name in SLOW_SCENARIOS else []) for name in SCENARIOS]
)
def test_every_scenario_runs_and_reports(name: str, tmp_path: Path) -> None:
    lines: list[str] = []
    out = tmp_path / "bench.json"
    payload = run([name], Config(size="smoke"), json_path=out, out=lines.append)
    text = "\n".join(lines)

    assert payload["failed"] == [], payload["failed"]
    assert set(payload["scenarios"]) == {name}
    assert "gc.set_threshold(50000, 20, 100)" in text
    written = json.loads(out.read_text())
    assert written["environment"]["size"] == "smoke"
    assert set(written["scenarios"]) == {name}
    assert written["summary"]["passed"] + written["summary"]["missed"] == len(written["summary"]["targets"])

    scenario = written["scenarios"][name]
    assert f"== {name}:" in text
    assert scenario["tables"], name
    assert 0.0 <= scenario["stolen_share"] < 1.0  # the host's share of the machine's CPU time (steal)
    for table in scenario["tables"]:
        rendered = Table(**table).render()
        assert table["title"] in rendered
        assert table["rows"], (name, table["title"])
        assert all(len(row) == len(table["columns"]) for row in table["rows"])
    for target in scenario["targets"]:
        assert isinstance(target["passed"], bool)
        assert f"{'PASS' if target['passed'] else 'MISS'}  {target['name']}" in text
    data = scenario["data"]

    # Every contender was measured, and the tiny loads went through without errors.
    if name in ("client-overhead", "latency-bound"):
        for key, trials in data["samples"].items():
            assert trials and all(t["sent"] > 0 and t["errors"] == 0 for t in trials), (name, key)
    if name == "client-overhead":
        assert {t["name"].split(":")[0] for t in scenario["targets"]} >= {
            "bwasync / bare aiohttp on asyncio",
            "bwasync / bandwidth-sdk on asyncio",
        }
    if name == "memory":
        assert data["accepted"] == 200 and data["peak_maxrss_mb"] >= data["baseline_maxrss_mb"] > 0
    if name == "limiter-accuracy":
        for stats in data.values():
            assert stats["sends"] > 0 and stats["errors"] == 0
    if name == "campaign_throughput":
        # Both contenders sent every row of the same file (the campaign through a fresh journal each time).
        throughput = data["samples"]
        assert set(throughput) == {"campaign", "send_many"}
        assert all(t["accepted"] == t["rows"] == 150 for trials in throughput.values() for t in trials)


def test_a_run_of_several_scenarios_reports_each_and_totals_their_targets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def scenario(name: str, *values: float) -> Callable[[Config], ScenarioResult]:
        def run_it(cfg: Config) -> ScenarioResult:
            assert cfg.size == "smoke"
            return ScenarioResult(name, name, targets=[Target(f"{name} {v}", v, ">=", 1.0) for v in values])

        return run_it

    def broken(cfg: Config) -> ScenarioResult:
        raise RuntimeError("this scenario broke")

    monkeypatch.setitem(SCENARIOS, "first", scenario("first", 2.0, 0.5))
    monkeypatch.setitem(SCENARIOS, "broken", broken)
    monkeypatch.setitem(SCENARIOS, "second", scenario("second", 1.0))
    lines: list[str] = []
    out = tmp_path / "bench.json"
    payload = run(["first", "broken", "second"], Config(size="smoke"), json_path=out, out=lines.append)
    text = "\n".join(lines)

    assert list(payload["scenarios"]) == ["first", "second"]  # a broken scenario does not stop the rest
    assert [f["name"] for f in payload["failed"]] == ["broken"] and "this scenario broke" in text
    assert (payload["summary"]["passed"], payload["summary"]["missed"]) == (2, 1)
    assert [t["scenario"] for t in payload["summary"]["targets"]] == ["first", "first", "second"]
    assert "targets: 2 PASS, 1 MISS; 1 scenario(s) FAILED" in text
    assert text.index("== first:") < text.index("== broken: FAILED") < text.index("== second:")
    assert json.loads(out.read_text())["summary"] == payload["summary"]


def test_cli_lists_scenarios(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in SCENARIOS)


def test_breakdown_measures_every_step(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.breakdown import main as breakdown

    breakdown(["--number", "50", "--repeat", "1"])
    out = capsys.readouterr().out
    assert "limiter: try_acquire" in out and "decode the 202" in out and "sum" in out


def test_instructions_says_how_to_get_valgrind_when_it_is_missing(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from benchmarks import instructions

    monkeypatch.setattr(instructions.shutil, "which", lambda name: None)
    assert instructions.main(["--loop", "asyncio"]) == 1
    assert "apt-get install valgrind" in capsys.readouterr().out


def test_instructions_own_sends_through_the_stand_in_session() -> None:
    # What ``--own`` runs under valgrind: send_many against the stand-in for aiohttp's session;
    # it stops with an error unless every message was accepted.
    from benchmarks import instructions
    from benchmarks._common import run_on

    run_on("asyncio", lambda: instructions._own(50), timeout=60)


def test_the_share_of_cpu_time_stolen_by_the_host_is_measured_and_noted() -> None:
    from benchmarks._compare import STOLEN_NOTE_SHARE, cpu_times, stolen_note, stolen_share

    before = cpu_times()
    assert before[0] > 0 and 0 <= before[1] <= before[0]
    # 100 s of CPU time passed, 30 of them stolen: 30%, noted with its share.
    assert stolen_share((1000.0, 10.0), (1100.0, 40.0)) == pytest.approx(0.3)
    assert stolen_share(before, before) == 0.0  # no time passed: nothing to divide
    (note,) = stolen_note(0.3)
    assert "30%" in note and "steal" in note
    assert stolen_note(STOLEN_NOTE_SHARE / 2) == []
