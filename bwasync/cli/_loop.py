"""Running a command's coroutine: on uvloop when it is installed.

The CLI is an application, so it may choose the event loop; the library never installs one.
Set ``BWASYNC_LOOP=asyncio`` to run on the standard loop (to compare, or to debug).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

__all__ = ["loop_factory", "on_signals", "run"]

T = TypeVar("T")
logger = logging.getLogger("bwasync.cli")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's ``new_event_loop`` when uvloop is importable (and not disabled), else ``None``."""
    if os.environ.get("BWASYNC_LOOP", "").lower() == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to completion on a fresh loop and close the loop (as ``asyncio.run``)."""
    factory = loop_factory()
    logger.debug("event loop: %s", "uvloop" if factory is not None else "asyncio")
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.get_loop().set_exception_handler(report_loop_error)
        return runner.run(main)


def report_loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """What the loop could not hand to anyone (a task whose exception nobody retrieved, a failed
    callback), as one warning line: the loop's default handler would print a traceback, which no
    command prints (``-vv`` logs it in full, at debug level)."""
    exc = context.get("exception")
    what = context.get("message") or "unhandled error in the event loop"
    logger.warning("%s: %s", what, f"{type(exc).__name__}: {exc}" if exc is not None else "no exception")
    if exc is not None:
        logger.debug("in full", exc_info=exc)


@contextlib.contextmanager
def on_signals(handler: Callable[[signal.Signals], None]) -> Iterator[None]:
    """SIGINT and SIGTERM call ``handler(sig)`` while in the block (where the loop supports it)."""
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, handler, sig)
            installed.append(sig)
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
