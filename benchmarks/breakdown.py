"""What bwasync adds to one message, piece by piece, in µs: no network, no event-loop wakeups.

    python -m benchmarks.breakdown [--repeat 7] [--number 20000]

Each row times one step of a ``send_many`` message in a tight loop (median of ``--repeat``
runs of ``--number`` calls; the coroutine steps run inside one event loop without suspending).
The sum is bwasync's own Python cost per message on top of an aiohttp request; compare it with
the client CPU µs/msg of ``python -m benchmarks --only client-overhead`` (the whole request,
aiohttp and the event loop included). Figures move with the machine's load; ratios between rows
are the stable part.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable

from bwasync import AdaptiveLimiter, MessageRequest, SendResult
from bwasync._fanout import _ACCEPTED
from bwasync._models import decode_message, encode_request
from bwasync._pipeline import Gate, Slot
from bwasync._ratelimit import fast_acquire, success_reporter
from bwasync._segments import message_cost

from ._common import Table
from ._data import APPLICATION_ID, CYCLE, RESPONSE_202, SENDER, message_fields


def _time(fn: Callable[[], object], number: int, repeat: int) -> float:
    """Median µs per call of ``fn``."""
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        for _ in range(number):
            fn()
        runs.append((time.perf_counter() - started) / number * 1e6)
    return statistics.median(runs)


def measure(number: int, repeat: int) -> list[tuple[str, float]]:
    fields = message_fields()  # the client-overhead contender's inputs, formatted beforehand
    recipient, text = fields[1]
    req = MessageRequest(application_id=APPLICATION_ID, to=[recipient], from_=SENDER, text=text)
    body = encode_request(req)
    message = decode_message(RESPONSE_202)
    limiter = AdaptiveLimiter()
    gate = Gate(64)
    slot = Slot()
    counter = iter(range(10**9))

    def build() -> object:
        to, body = fields[next(counter) & (CYCLE - 1)]
        return MessageRequest(application_id=APPLICATION_ID, to=[to], from_=SENDER, text=body)

    try_acquire, report_success = fast_acquire(limiter), success_reporter(limiter)
    assert try_acquire is not None

    def limiter_round() -> None:
        # What the pipeline does: the non-waiting fast path, then the success report (positional).
        try_acquire(1, SENDER)
        report_success(1, SENDER)

    def gate_round() -> None:
        # As Pipeline.attempt passes it: try_take and release's common case, inlined.
        if gate._free and not gate._waiters:
            gate._free -= 1
        if gate._round or gate._waiters:
            gate.release()
        else:
            gate._free += 1

    def stamp() -> None:
        slot.sent_at = time.monotonic()
        slot.latency()

    def result() -> object:
        return SendResult(index=1, outcome=_ACCEPTED, request=req, message=message, attempts=1, latency=0.001)

    rows = [
        ("build + validate a MessageRequest (its fields formatted beforehand)", _time(build, number, repeat)),
        ("encode the request body (msgspec)", _time(lambda: encode_request(req), number, repeat)),
        ("segments × recipients for the limiter", _time(lambda: message_cost(req), number, repeat)),
        ("limiter: try_acquire (fast path) + report_success", _time(limiter_round, number, repeat)),
        ("in-flight gate: take + release", _time(gate_round, number, repeat)),
        ("clock reads for latency", _time(stamp, number, repeat)),
        ("decode the 202 into a Message (msgspec)", _time(lambda: decode_message(RESPONSE_202), number, repeat)),
        ("build the SendResult", _time(result, number, repeat)),
    ]
    assert body
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.breakdown", description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)
    rows = asyncio.run(_in_loop(args.number, args.repeat))
    table = Table("bwasync's own work per message (no network)", ["step", "µs/msg"])
    for name, value in rows:
        table.add(name, f"{value:.2f}")
    table.add("sum", f"{sum(v for _, v in rows):.2f}")
    print(table.render())


async def _in_loop(number: int, repeat: int) -> list[tuple[str, float]]:
    return measure(number, repeat)  # inside a running loop, as the limiter expects


if __name__ == "__main__":
    main()
