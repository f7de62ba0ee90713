"""Proof that processes sharing a RedisLimiter share one account rate (issue: beyond one process).

Three worker processes, each an unthrottled client whose only limit is ``RedisLimiter(rate=R)``,
send to one emulator (in this process, on loopback). The emulator's own record of when it
accepted each message is the ground truth: after the first second, no 1-s window holds more than
R + burst, together the workers reach at least 0.95 R, and when one is killed mid-run the other
two take over its share.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from benchmarks._redis import RedisProcess
from bwasync.emulator import Emulator

from ._redis_server import redis_server

__all__ = ["redis_server"]

ACCOUNT = "9900000"
RATE = 60.0
BURST = 10.0
#: Seconds of sending, and the lead time for the start signal to reach the workers.
SENDING = 4.0
LEAD = 0.2
#: Longest a worker may take to import and set up on a busy 2-core machine (seconds).
STARTUP_TIMEOUT = 30.0
#: Worker 0 is killed once it has this many messages accepted (about 1.5 s into the run).
KILL_AFTER = 30
ROOT = Path(__file__).resolve().parent.parent


def window_counts(times: list[float], start: float, end: float, step: float = 0.05) -> list[int]:
    """Messages in every 1-s window [t, t + 1) for t from ``start`` to ``end - 1``."""
    counts = []
    t = start
    while t + 1.0 <= end:
        counts.append(sum(1 for x in times if t <= x < t + 1.0))
        t += step
    return counts


@pytest.mark.slow
async def test_three_processes_share_one_rate_and_survive_a_kill(redis_server: RedisProcess) -> None:
    async with Emulator(username="u", password="p", account_id=ACCOUNT) as emu:
        workers = []
        for n in range(3):
            args = ["--redis", redis_server.url, "--url", emu.url, "--account", ACCOUNT, "--name", f"w{n}"]
            args += ["--rate", str(RATE), "--burst", str(BURST)]
            workers.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "tests._redis_worker",
                    *args,
                    cwd=ROOT,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    env={**os.environ, "PYTHONPATH": str(ROOT)},
                )
            )
        for worker in workers:  # every worker imported and set up before the clock starts
            assert worker.stdout is not None
            assert await asyncio.wait_for(worker.stdout.readline(), timeout=STARTUP_TIMEOUT) == b"ready\n"
        start_at = time.monotonic() + LEAD
        stop_at = start_at + SENDING
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write(f"{start_at} {stop_at}\n".encode())
            await worker.stdin.drain()
        victim = workers[0]
        assert victim.stdout is not None
        while True:
            line = await asyncio.wait_for(victim.stdout.readline(), timeout=SENDING + 5)
            assert line, "worker 0 ended before it could be killed"
            if int(line.split()[1]) >= KILL_AFTER:
                break
        victim.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        for worker in workers:
            await asyncio.wait_for(worker.communicate(), timeout=SENDING + 10)
        assert [w.returncode for w in workers[1:]] == [0, 0]
        times = sorted(m.received_at for m in emu.accepted)
        survivors = sorted(m.received_at for m in emu.accepted if not (m.tag or "").startswith("w0-"))

    first = times[0]
    assert first >= start_at - 0.01
    # Never over the shared rate (+ burst) in any 1-s window after the first.
    counts = window_counts(times, first + 1.0, times[-1])
    assert counts and max(counts) <= RATE + BURST, f"windows: {counts}"
    # Together they use the whole rate.
    # (Requests pulled before STOP still drain through the limiter after it: rates end at STOP.)
    steady = [x for x in times if first + 1.0 <= x < stop_at]
    assert len(steady) / (stop_at - first - 1.0) >= 0.95 * RATE
    # After the kill, the other two take over its share within a second.
    assert killed_at < stop_at - 1.5, "the kill came too late to measure the take-over"
    after = [x for x in survivors if killed_at + 1.0 <= x < stop_at]
    assert len(after) / (stop_at - killed_at - 1.0) >= 0.9 * RATE
