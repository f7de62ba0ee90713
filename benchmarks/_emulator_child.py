"""The emulator in its own process, with knobs that can be turned while it runs.

``python -m benchmarks._emulator_child [emulator flags]`` takes the flags of
``python -m bwasync.emulator``, prints ``bwasync emulator listening on <url>`` once bound, then
reads commands from its standard input, one per line, until it closes:

* ``dequeue_rate 200`` (or ``none``): change the account's dequeue rate now
  (:meth:`~bwasync.emulator.Emulator.set_dequeue_rate`: what is queued drained at the old rate);
* ``p_429 0.5`` (any other knob, parsed as its flag is): set that knob of the running config.

Start it with :class:`benchmarks._responder.ServerProcess` and write to its ``stdin``.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence
from typing import Any

from bwasync.emulator import Emulator
from bwasync.emulator._cli import build_parser, config_from_args
from bwasync.emulator._config import knob_fields


def apply(emu: Emulator, line: str) -> None:
    """Apply one ``knob value`` command to a running emulator (unknown or bad lines are ignored)."""
    name, _, text = line.strip().partition(" ")
    fields = {f.name: f for f in knob_fields()}
    if name not in fields:
        return
    parse: Any = fields[name].metadata.get("parse") or str
    try:
        value = None if text.strip().lower() in ("", "none", "off") else parse(text.strip())
        if name == "dequeue_rate":
            emu.set_dequeue_rate(value)
        else:
            setattr(emu.config, name, value)
            emu.config.check()
    except ValueError as exc:
        print(f"ignored {line.strip()!r}: {exc}", file=sys.stderr, flush=True)


async def serve(argv: Sequence[str]) -> None:
    config = config_from_args(build_parser().parse_args(argv))
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    buffer = b""
    async with Emulator(config) as emu:

        def stdin_ready() -> None:
            nonlocal buffer
            chunk = os.read(sys.stdin.fileno(), 4096)
            if not chunk:
                done.set()
                return
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                apply(emu, line.decode(errors="replace"))

        loop.add_reader(sys.stdin.fileno(), stdin_ready)
        print(f"bwasync emulator listening on {emu.url}", flush=True)
        try:
            await done.wait()
        finally:
            loop.remove_reader(sys.stdin.fileno())


def main(argv: Sequence[str] | None = None) -> None:
    factory: Any = asyncio.SelectorEventLoop
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:
        pass
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(serve(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
