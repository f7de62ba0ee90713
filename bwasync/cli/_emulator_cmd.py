"""``bwasync emulator``: serve the Bandwidth emulator on loopback until Ctrl-C.

The knob options are generated from :func:`bwasync.emulator._config.knob_fields`, the same
source as ``python -m bwasync.emulator``'s parser (each field carries its help, value parser
and metavar), so the two command lines cannot drift apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import signal
import sys
from collections.abc import Callable
from typing import Any

import click

from ..emulator import Emulator, EmulatorConfig
from ..emulator._config import knob_fields
from ._constants import (
    EMULATOR_ACCOUNT_ID,
    EMULATOR_APPLICATION_ID,
    EMULATOR_HOST,
    EMULATOR_NUMBER,
    EMULATOR_PASSWORD,
    EMULATOR_PORT,
    EMULATOR_USERNAME,
)
from ._loop import run
from ._options import ParamType
from ._output import note

__all__ = ["emulator_command", "emulator_config", "knob_option", "knob_options", "listening_line"]


class _KnobType(ParamType):
    """A click type around one of the emulator's argparse value parsers."""

    def __init__(self, parse: Callable[[str], Any], name: str | None) -> None:
        self.parse = parse
        self.name: str = name or str(getattr(parse, "__name__", "value"))

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value  # a default, already parsed
        try:
            return self.parse(value)
        except (TypeError, ValueError) as exc:
            self.fail(f"{value!r} is not a valid {self.name} ({exc})", param, ctx)


#: The knobs by field name, in the order ``--help`` shows them.
_KNOB_FIELDS = {f.name: f for f in knob_fields()}


#: Stands for "the field's own default" in :func:`knob_option`.
_FIELD_DEFAULT: Any = object()


def knob_option(name: str, *, default: Any = _FIELD_DEFAULT) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The option for one :class:`EmulatorConfig` field (``"latency"`` gives ``--latency``), with the
    field's help, value parser and metavar; ``default`` replaces the field's default (a demo's own)."""
    f = _KNOB_FIELDS[name]
    value = f.default if default is _FIELD_DEFAULT else default
    flag = "--" + f.name.replace("_", "-")
    meta = f.metadata
    if isinstance(f.default, bool):
        return click.option(f"{flag}/--no-{flag[2:]}", f.name, default=value, show_default=True, help=meta["help"])
    return click.option(
        flag,
        f.name,
        type=_KnobType(meta["parse"], meta["metavar"]),
        default=value,
        show_default=value is not None,
        metavar=meta["metavar"] or f.name.upper(),
        help=meta["help"],
    )


def knob_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """One option per :class:`EmulatorConfig` field (``--p-delivered``, ``--latency``...), with its help."""
    decorated = func
    for name in reversed(_KNOB_FIELDS):
        decorated = knob_option(name)(decorated)
    return decorated


def emulator_config(knobs: dict[str, Any]) -> EmulatorConfig:
    """The emulator's configuration from knob options; a usage error (exit 2) for a value it refuses."""
    try:
        return EmulatorConfig(**knobs)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


def listening_line(url: str) -> str:
    """The first line printed once bound: the same as ``python -m bwasync.emulator`` prints."""
    return f"bwasync emulator listening on {url}"


def _exports(emu: Emulator) -> list[str]:
    cfg = emu.config
    values = {
        "BW_MESSAGING_URL": emu.url,
        "BW_ACCOUNT_ID": cfg.account_id or EMULATOR_ACCOUNT_ID,
        "BW_USERNAME": cfg.username or EMULATOR_USERNAME,
        "BW_PASSWORD": cfg.password or (EMULATOR_PASSWORD if cfg.username is None else ""),
        "BW_APPLICATION_ID": EMULATOR_APPLICATION_ID,
        "BW_NUMBER": EMULATOR_NUMBER,
    }
    return [f"export {name}={shlex.quote(value)}" for name, value in values.items()]


async def _serve(config: EmulatorConfig, host: str, port: int) -> Emulator:
    """Serve until SIGINT/SIGTERM; return the (stopped) emulator for its statistics."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    handled: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # no loop signal handlers on Windows
            loop.add_signal_handler(sig, stop.set)
            handled.append(sig)
    emu = Emulator(config, host=host, port=port)
    try:
        async with emu:
            # The URL line first, flushed, so a parent process can read it (also with --port 0).
            click.echo(listening_line(emu.url))
            click.echo("\nPoint bwasync (or any Bandwidth client) at it:\n")
            for line in _exports(emu):
                click.echo(f"  {line}")
            click.echo('  bwasync send --to +15552223333 --text "Hello from the emulator"\n')
            click.echo("Press Ctrl-C to stop.")
            sys.stdout.flush()
            await stop.wait()
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)
    return emu


@click.command(
    "emulator",
    short_help="Serve an emulator of Bandwidth's Messaging API on loopback.",
    epilog="""\b
Examples:
  bwasync emulator --port 3000 --username u --password p
  bwasync emulator --latency 0.05 --jitter 0.1 --dequeue-rate 10 --p-500 0.01
  bwasync emulator --callback-url http://127.0.0.1:8000/callbacks --p-delivered 0.9""",
)
@click.option("--host", default=EMULATOR_HOST, show_default=True, help="Interface to bind (keep it on loopback).")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=EMULATOR_PORT,
    show_default=True,
    help="Port to bind; 0 picks a free one (the URL line says which).",
)
@knob_options
def emulator_command(host: str, port: int, **knobs: Any) -> None:
    """Serve an in-memory emulator of Bandwidth's Messaging V2 API until Ctrl-C.

    It answers like Bandwidth (202 bodies, error bodies, 429 when the account queue is full),
    serves the list and media endpoints and OAuth2 tokens, posts status callbacks, and injects
    latency and faults on demand, reproducibly with --seed. Without --username any Basic
    credentials are accepted; without --account-id any account.
    """
    config = emulator_config(knobs)
    try:
        emu = run(_serve(config, host, port))
    except OSError as exc:
        raise click.ClickException(f"cannot serve on {host}:{port}: {exc.strerror or exc}") from None
    stats = emu.stats
    note(
        f"Stopped after {_plural(stats.requests, 'request')}: {_plural(stats.accepted, 'message')} accepted, "
        f"{_plural(stats.callbacks_sent, 'callback')} delivered."
    )


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"
