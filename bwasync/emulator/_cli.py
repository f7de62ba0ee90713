"""``python -m bwasync.emulator``: run the emulator standalone until SIGINT/SIGTERM.

The parser is generated from :class:`EmulatorConfig` (one ``--flag`` per knob, with the knob's
help), and split into :func:`build_parser`, :func:`config_from_args` and :func:`serve` so that
another command line (``bwasync emulator ...``) can reuse the pieces::

    python -m bwasync.emulator --port 8080 --username u --password p --dequeue-rate 10

Once it listens it prints exactly one line, ``bwasync emulator listening on <url>``, and
flushes it, so a parent process can read the URL (also with ``--port 0``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from collections.abc import Sequence
from typing import Any

from ._config import EmulatorConfig, knob_fields
from ._server import Emulator

__all__ = ["build_parser", "config_from_args", "main", "serve"]


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The emulator's options (on ``parser`` if given): ``--host``, ``--port``, then every knob."""
    if parser is None:
        parser = argparse.ArgumentParser(
            prog="python -m bwasync.emulator",
            description="An in-memory emulator of Bandwidth's Messaging V2 API, for tests, demos and benchmarks.",
            formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        )
    parser.add_argument("--host", default="127.0.0.1", help="Interface to bind.")
    parser.add_argument("--port", type=int, default=0, help="Port to bind; 0 picks a free one (printed on start).")
    parser.add_argument(
        "--uvloop",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Run on uvloop when it is installed.",
    )
    knobs = parser.add_argument_group("knobs", "Every field of EmulatorConfig.")
    for f in knob_fields():
        flag = "--" + f.name.replace("_", "-")
        meta = f.metadata
        if isinstance(f.default, bool):
            knobs.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=meta["help"])
            continue
        knobs.add_argument(flag, type=meta["parse"], default=f.default, metavar=meta["metavar"], help=meta["help"])
    return parser


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    """An :class:`EmulatorConfig` from parsed arguments (unknown attributes are ignored)."""
    values: dict[str, Any] = {f.name: getattr(args, f.name) for f in knob_fields() if hasattr(args, f.name)}
    return EmulatorConfig(**values)


async def serve(config: EmulatorConfig, host: str = "127.0.0.1", port: int = 0) -> None:
    """Serve until SIGINT or SIGTERM, printing the listening line once bound."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # Windows has no loop signal handlers
            loop.add_signal_handler(sig, stop.set)
    try:
        async with Emulator(config, host=host, port=port) as emu:
            print(f"bwasync emulator listening on {emu.url}", flush=True)
            await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.remove_signal_handler(sig)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, serve, and return the exit status (0 after a signal)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    loop_factory = None
    if args.uvloop:
        # An application may pick the loop; the library itself never installs one.
        try:
            import uvloop
        except ImportError:
            pass
        else:
            loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve(config, args.host, args.port))
    return 0
