"""The rate-control table's four rows and its short runs, at reduced size, against the in-process emulator.

The same driver as ``python -m benchmarks --only rate_control`` (benchmarks/rate_control.py):
an unthrottled ``send_many`` through the client's own limiter, which timestamps every answer.
Margins are generous and nothing here asserts a wall-clock duration: the ratios compare a run
with itself (or with a fault-free run of the same size), so a loaded machine slows both sides.
"""

from __future__ import annotations

from benchmarks.rate_control import CONCURRENCY, drive, drive_runs, pre_cut_rate, queue_ideal, run_rate
from bwasync._constants import FIRST_ROUND_SIZE
from bwasync.emulator import Emulator


async def test_queue_model_finishes_near_the_ideal_time_with_few_429s() -> None:
    rate, queue_seconds = 100.0, 0.4  # a queue of 40: the client's probe round of 50 overflows it
    n = int(rate * 1.5 + rate * queue_seconds)
    async with Emulator(dequeue_rate=rate, queue_seconds=queue_seconds, record=False) as emu:
        run = await drive(emu.url, n, seconds=30.0)
    assert run.accepted == n and run.failed == 0
    assert run.limited  # the queue did overflow
    # From the first answer (connecting sockets on a loaded machine is not rate control).
    first = min(run.ok + run.limited)
    assert queue_ideal(n, rate, queue_seconds) / (run.t0 + run.elapsed - first) >= 0.5
    # Only the probe round (FIRST_ROUND_SIZE requests of the CONCURRENCY places) leaves before
    # any answer: it overflows the queue by at most FIRST_ROUND_SIZE - capacity = 10, and the
    # cut its 429s make paces the rest. (A first round of all 100 places cost 60 429s; no round
    # at all, ~100.)
    floor = min(FIRST_ROUND_SIZE, CONCURRENCY) - rate * queue_seconds
    assert len(run.limited) <= 2 * floor + 5


async def test_queue_model_without_the_rate_hint_finds_the_rate_with_few_429s() -> None:
    # The benchmark's 20 seg/s row in small: a 2-s queue of 40, the client deaf to the 429's
    # stated rate. The probe round overflows it by 10; the rate must then be found from what the
    # queue accepts (rule 9 in bwasync/_ratecontrol.py), costing a few 429s more, not a second's
    # worth of sending above the rate.
    rate, queue_seconds = 20.0, 2.0
    n = int(rate * 2.0 + rate * queue_seconds)
    async with Emulator(dequeue_rate=rate, queue_seconds=queue_seconds, record=False) as emu:
        run = await drive(emu.url, n, seconds=30.0, hint=False)
    assert run.accepted == n and run.failed == 0
    first = min(run.ok + run.limited)
    assert queue_ideal(n, rate, queue_seconds) / (run.t0 + run.elapsed - first) >= 0.6
    floor = min(FIRST_ROUND_SIZE, CONCURRENCY) - rate * queue_seconds
    assert len(run.limited) <= floor + 5


async def test_sporadic_429s_do_not_collapse_throughput() -> None:
    n = 800
    rates = []
    for p_429 in (0.0, 0.03):
        async with Emulator(p_429=p_429, p_429_retry_after=1, record=False, seed=5) as emu:
            run = await drive(emu.url, n, seconds=30.0)
        assert run.accepted == n
        assert bool(run.limited) == bool(p_429)
        # Throughput up to the 80th percentile: the 3 % retried after their Retry-After come last.
        ok = sorted(run.ok)
        first, p80 = ok[0], ok[int(0.8 * n)]
        rates.append(0.8 * n / (p80 - first))
    clean, sporadic = rates
    assert sporadic >= 0.4 * clean


async def test_short_runs_with_sporadic_429s_and_5xx_do_not_ratchet_the_rate_down() -> None:
    # One client, send_many run after run: each run ends with retries in backoff, a second in
    # which the client sends little. A stray 429 there once cut the rate to that second's
    # accepted rate, the cut was taken to have paid off, and each run cut deeper (2 msg/s after
    # four runs of 300). Now such a cut is judged on the odds, undone, and the share learned.
    size, runs = 200, 8
    medians = []
    for p_429 in (0.0, 0.05):
        async with Emulator(p_429=p_429, p_429_retry_after=1, p_500=0.1, p_503=0.1, record=False, seed=11) as emu:
            done = await drive_runs(emu.url, runs, size, seconds=60.0)
        assert [len(accepted) for accepted in done] == [size] * runs  # every message, none lost
        rates = sorted(run_rate(accepted, size) for accepted in done[runs // 2 :])
        medians.append((rates[1] + rates[2]) / 2)
    plain, sporadic = medians
    assert sporadic >= 0.3 * plain


async def test_one_429_episode_is_recovered_from() -> None:
    rate = 300.0
    async with Emulator(p_429_retry_after=1, record=False) as emu:

        def control(command: str) -> None:
            # "on": every first attempt is answered 429; "off": stop once some were (a loaded
            # machine may have served none yet at the first "off"); "end": stop regardless.
            if command == "on":
                emu.config.p_429 = 1.0
            elif command == "end" or emu.stats.faults["429"] >= 80:
                emu.config.p_429 = 0.0

        # After two seconds: answers must have been coming back for a second before a 429 is
        # believed (a loaded machine may take a second to connect).
        schedule = [(2.0, "on"), (2.15, "off"), (2.4, "off"), (2.8, "end")]
        run = await drive(emu.url, 100_000, seconds=4.2, rate=rate, control=control, schedule=schedule, stop_after=4.2)
    first = min(run.limited)
    before = pre_cut_rate(run, first)
    rates = [r for t, r in run.rates if t >= first]
    assert all(r is not None for r in rates)
    # At most one shallow cut to just below what was getting through (not a halving), then only
    # growth: the rate climbs back (on this machine's clock; the benchmark times the recovery).
    if rates:
        cut = min(r for r in rates if r is not None)
        assert cut >= 0.5 * min(rate, before)
        grown = [r for r in rates[rates.index(cut) :] if r is not None]
        assert grown == sorted(grown)
        assert grown[-1] >= cut


async def test_halved_account_rate_is_followed() -> None:
    r1, r2 = 300.0, 150.0
    async with Emulator(dequeue_rate=r1, queue_seconds=0.5, record=False) as emu:

        def control(command: str) -> None:
            emu.set_dequeue_rate(float(command))

        run = await drive(emu.url, 100_000, seconds=2.6, control=control, schedule=[(1.0, str(r2))], stop_after=2.6)
    # The limiter settled near the new rate (the 429's stated rate), not below it and not at the
    # old one. (Answer counts per second are left to the benchmark: on a loaded machine the
    # in-process client and emulator starve each other.)
    final = run.rates[-1][1]
    assert any(r is not None and r <= 1.1 * r2 for _, r in run.rates)
    assert final is not None and 0.6 * r2 <= final <= 1.4 * r2
