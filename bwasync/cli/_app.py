"""The root ``bwasync`` command group: version, verbosity, and the subcommands in a reading order."""

from __future__ import annotations

import contextlib
import logging
import platform
from collections.abc import Sequence
from importlib import metadata

import click
from rich.console import Console
from rich.logging import RichHandler

from .._version import __version__
from ._campaign import campaign
from ._campaign_demo import campaign_demo  # noqa: F401  (registers ``demo campaign``)
from ._demo import demo
from ._emulator_cmd import emulator_command
from ._loop import loop_factory
from ._options import reject_undecodable
from ._segments_cmd import segments_command
from ._send import send
from ._worker import worker_command

__all__ = ["cli", "main"]


class _OrderedGroup(click.Group):
    """Lists subcommands in the order they were added (most used first), not alphabetically."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)


def _version_line() -> str:
    parts = [f"Python {platform.python_version()}"]
    for dist in ("aiohttp", "msgspec"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            parts.append(f"{dist} {metadata.version(dist)}")
    factory = loop_factory()
    parts.append(f"loop {'uvloop ' + metadata.version('uvloop') if factory is not None else 'asyncio'}")
    return f"bwasync {__version__} ({', '.join(parts)})"


def _show_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(_version_line())
        ctx.exit()


def _configure_logging(verbosity: int) -> None:
    """``-v``: the ``bwasync`` logger at DEBUG on stderr; ``-vv``: every logger (asyncio, aiohttp)."""
    if verbosity <= 0:
        return
    handler = RichHandler(console=Console(stderr=True), show_path=False, rich_tracebacks=False)
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    logger = logging.getLogger() if verbosity > 1 else logging.getLogger("bwasync")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logging.getLogger("bwasync").setLevel(logging.DEBUG)


@click.group(
    cls=_OrderedGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110},
    epilog="""\b
Examples:
  # A 10,000-recipient campaign with delivery tracking, locally
  bwasync demo
  # Bandwidth's five example messages and their callbacks
  bwasync demo examples

\b
  # One message to an in-process emulator, then to Bandwidth
  bwasync send --emulator --to +15552223333 --text "Hello"
  export BW_ACCOUNT_ID=... BW_USERNAME=... BW_PASSWORD=...
  export BW_APPLICATION_ID=... BW_NUMBER=+15553332222
  bwasync send --to +15552223333 --text "Hello from bwasync"

\b
  # How many segments does a text cost, and why UCS-2?
  bwasync segments "Hi 👋"

\b
  # A local Bandwidth for any client (Ctrl-C stops it)
  bwasync emulator --port 3000

Run 'bwasync COMMAND --help' for a command's options. Exit status: 0 success,
1 the API or the network failed, 2 invalid usage or input (nothing sent),
3 paused (campaign run), 130/143 interrupted (campaign run; rerun to resume).""",
)
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_show_version,
    help="Show the version (and the event loop in use) and exit.",
)
@click.option("-v", "--verbose", count=True, help="Log to stderr: -v bwasync at DEBUG, -vv also asyncio and aiohttp.")
def cli(verbose: int) -> None:
    """An asyncio-native, high-throughput client for Bandwidth's Messaging V2 API.

    Sends SMS and MMS, single and group, checking every Bandwidth rule before anything leaves,
    pacing by segments to the account's rate, and retrying only what is safe to retry. It comes
    with an emulator of Bandwidth to try all of it locally.

    Sending commands take credentials from options or the environment (BW_ACCOUNT_ID,
    BW_USERNAME/BW_PASSWORD or BW_CLIENT_ID/BW_CLIENT_SECRET, BW_APPLICATION_ID, BW_NUMBER,
    BW_MESSAGING_URL); add --emulator to send to an in-process emulator instead.
    """
    _configure_logging(verbose)


cli.add_command(send)
cli.add_command(segments_command)
cli.add_command(demo)
cli.add_command(emulator_command)
cli.add_command(campaign)
cli.add_command(worker_command)
reject_undecodable(cli)


def main(argv: Sequence[str] | None = None) -> None:
    """The ``bwasync`` console script (exits with the command's status)."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="bwasync")
