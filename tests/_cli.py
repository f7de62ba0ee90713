"""``bwasync`` run in this process: the click command, its own event loop, on a worker thread.

A subprocess costs a Python start and the package's imports (most of a second of CPU); a test
pays that only where the process itself is what it proves (kill -9, signals, the installed
script). Everywhere else :func:`run_cli` runs the same command in-process, in a thread, so the
test's own loop (an emulator, a receiver) goes on serving while the command runs::

    done = await run_cli("campaign", "run", str(path), "--template", "Hi {name}", *connection(emu))
    assert done.code == 0, done.err

A command in a thread cannot install signal handlers (the CLI skips them there, as it does on a
loop that does not support them); what it sets globally (the garbage collector's thresholds)
it restores on the way out. ``env`` is set for the command's duration only (click's
``CliRunner``); the test's own ``monkeypatch`` works as usual.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass

from click.testing import CliRunner

from bwasync.cli import cli

__all__ = ["Done", "invoke", "run_cli"]


@dataclass
class Done:
    """A command's exit status and what it wrote on stdout and on stderr."""

    code: int
    out: str
    err: str


def invoke(*args: str, env: Mapping[str, str | None] | None = None) -> Done:
    """Run ``bwasync ARGS`` here, on this thread; an exception the CLI let out fails the test."""
    result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
    assert "Traceback" not in result.output, result.output[-3000:]
    return Done(result.exit_code, result.stdout, result.stderr)


async def run_cli(*args: str, env: Mapping[str, str | None] | None = None) -> Done:
    """:func:`invoke` on a worker thread, leaving this loop free to serve the command."""
    return await asyncio.to_thread(invoke, *args, env=env)
