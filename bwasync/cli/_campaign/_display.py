"""The live progress of a run: a bar on a terminal, periodic lines otherwise, or nothing."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import sys
import time
from typing import Any, Final

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TaskID, TextColumn
from rich.text import Text

from ...campaign import (
    Phase,
    RunProgress,
)
from .._output import err_console
from ._render import duration

#: Seconds between progress lines when the output is not a terminal (logs, CI).
PROGRESS_LOG_INTERVAL: Final = 5.0
#: Seconds between progress bar updates (rich redraws on its own thread in between).
PROGRESS_BAR_INTERVAL: Final = 0.25
#: Seconds of history behind the rates shown (msg/s, seg/s) and the ETA.
RATE_WINDOW: Final = 10.0


class ProgressMode:
    """How ``run`` shows progress."""

    BAR = "bar"
    LOG = "log"
    OFF = "off"


def progress_mode(disabled: bool) -> str:
    """A bar on a terminal, periodic lines otherwise (logs, CI, pipes), nothing if ``disabled``."""
    if disabled:
        return ProgressMode.OFF
    if sys.stdout.isatty() and err_console().is_terminal:
        return ProgressMode.BAR
    return ProgressMode.LOG


class _Rates:
    """Messages and segments per second over the last ``RATE_WINDOW`` seconds."""

    def __init__(self) -> None:
        self._samples: collections.deque[tuple[float, int, int]] = collections.deque()

    def update(self, sent: int, segments: int) -> tuple[float, float]:
        now = time.monotonic()
        samples = self._samples
        samples.append((now, sent, segments))
        while len(samples) > 2 and now - samples[0][0] > RATE_WINDOW:
            samples.popleft()
        t0, s0, g0 = samples[0]
        elapsed = now - t0
        if elapsed <= 0:
            return 0.0, 0.0
        return (sent - s0) / elapsed, (segments - g0) / elapsed


def _error_text(p: RunProgress) -> str:
    by = p.by_status
    return (
        f"failed {by.get('failed', 0):,} · ambiguous {by.get('ambiguous', 0):,} · "
        f"invalid {by.get('invalid', 0):,} · skipped {by.get('skipped', 0):,}"
    )


_LABELS: Final = {
    Phase.OPENING: "opening",
    Phase.LOADING: "loading",
    Phase.SETTLING: "settling",
    Phase.RECONCILING: "checking",
    Phase.SENDING: "sending",
    Phase.HELD: "held",
    Phase.DELIVERY: "receipts",
    Phase.DONE: "done",
}


class _Line:
    """A line of text under the bar (the error counts), updated in place."""

    def __init__(self) -> None:
        self.text = Text("")

    def __rich__(self) -> Text:
        return self.text


class Display:
    """The progress bar (a terminal), periodic lines (anything else), or nothing; and notes.

    The bar fits 80 columns: phase, bar, rows done of total, msg/s and seg/s, ETA; the error
    counts go on a second line.
    """

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.console: Console = err_console()
        self._bar: Progress | None = None
        self._live: Live | None = None
        self._errors = _Line()
        self._task: TaskID | None = None
        self._rates = _Rates()
        # Periodic lines start one interval in: a short run prints only the final line.
        self._last_log = time.monotonic()

    def note(self, text: str) -> None:
        self.console.print(Text(text, style="dim"))

    @contextlib.asynccontextmanager
    async def showing(self, progress: RunProgress) -> Any:
        if self.mode == ProgressMode.OFF:
            yield
            return
        if self.mode == ProgressMode.BAR:
            self._bar = Progress(
                TextColumn("[bold]{task.description:<8}"),
                BarColumn(bar_width=16),
                TextColumn("{task.fields[count]}"),
                TextColumn("{task.fields[speed]}"),
                TextColumn("{task.fields[eta]}"),
                console=self.console,
            )
            self._task = self._bar.add_task("opening", total=None, count="", speed="", eta="")
            self._live = Live(Group(self._bar, self._errors), console=self.console, refresh_per_second=8)
            self._live.start()
        interval = PROGRESS_BAR_INTERVAL if self._bar is not None else 1.0
        refresher = asyncio.ensure_future(self._refresh(progress, interval))
        failed = False
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher
            # After an error the error is what counts: no stale "loading: 0 rows read" line.
            if not failed or progress.phase not in (Phase.OPENING, Phase.LOADING):
                self.update(progress, final=True)
            if self._live is not None:
                self._live.stop()

    async def _refresh(self, progress: RunProgress, interval: float) -> None:
        while True:
            self.update(progress)
            await asyncio.sleep(interval)

    def update(self, p: RunProgress, *, final: bool = False) -> None:
        sent_rate, seg_rate = self._rates.update(p.sent, p.segments)
        eta = speed = ""
        if p.phase is Phase.LOADING:
            done, total = p.load_bytes, p.load_size or None
            count = f"{p.loaded_rows:,} rows read"
        elif p.phase is Phase.DELIVERY:
            done = p.delivered + p.delivery_failed
            total = p.by_status.get("accepted", 0)
            count = f"{done:,}/{total:,}"
            speed = f"{p.delivered:,} delivered, {p.delivery_failed:,} failed"
        else:
            done, total = p.done, p.total or None
            count = f"{done:,}/{total or 0:,}"
            if p.phase is Phase.SENDING:
                speed = f"{sent_rate:,.0f} msg/s {seg_rate:,.0f} seg/s"
                if sent_rate > 0:
                    eta = f"ETA {duration(((total or 0) - done) / sent_rate)}"
        errors = _error_text(p)
        if self._bar is not None and self._task is not None:
            label = _LABELS.get(p.phase, str(p.phase))
            self._bar.update(
                self._task, description=label, completed=done, total=total, count=count, speed=speed, eta=eta
            )
            self._errors.text = Text(" " * 9 + errors, style="dim")
            return
        now = time.monotonic()
        if not final and now - self._last_log < PROGRESS_LOG_INTERVAL:
            return
        self._last_log = now
        if p.phase is Phase.LOADING:
            line = f"loading: {p.loaded_rows:,} rows read"
        elif p.phase is Phase.DELIVERY:
            line = f"delivery receipts: {done:,}/{total:,} ({speed})"
        elif p.phase in (Phase.SETTLING, Phase.RECONCILING, Phase.OPENING) and not final:
            return
        else:
            share = f" ({done / total:.0%})" if total else ""
            line = f"{done:,}/{total or 0:,} rows done{share}" + (f", {speed}" if speed else "")
            line += (f", {eta}" if eta else "") + f"; {errors}"
        self.console.print(Text(line), highlight=False, soft_wrap=True)
