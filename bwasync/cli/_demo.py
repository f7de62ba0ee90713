"""``bwasync demo``: bwasync at work against the embedded emulator; nothing leaves this machine.

``demo`` is a group so that demos can be added side by side. Without a subcommand it runs
:data:`DEFAULT_DEMO`: ``campaign``, the main job (a 10,000-recipient campaign with delivery
tracking, registered by ``bwasync.cli._campaign_demo``). ``bwasync demo examples`` runs the
five-message tour below.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import secrets
import time
from collections.abc import Iterator
from typing import Any

import click
from rich.console import Console
from rich.status import Status
from rich.text import Text

from .._client import MessagingClient
from .._exceptions import BwasyncError
from .._fanout import SendResult
from .._models import Message, MessageRequest
from ..campaign import CallbackReceiver, ReceiverStats
from ..emulator import Emulator, EmulatorConfig
from ._constants import (
    DEMO_CALLBACK_DELAY,
    DEMO_CALLBACK_TIMEOUT,
    DEMO_JITTER,
    DEMO_LATENCY,
    DEMO_P_DELIVERED,
    DEMO_SEED,
    EMULATOR_ACCOUNT_ID,
    EMULATOR_APPLICATION_ID,
    EMULATOR_NUMBER,
    EMULATOR_PASSWORD,
    EMULATOR_USERNAME,
)
from ._emulator_cmd import emulator_config, knob_option
from ._loop import run
from ._options import emulator_option_note
from ._output import callbacks_table, echo_json, err_console, message_panel, note, out_console, print_error
from ._receiver import FINAL_TYPES, CallbackCollector

__all__ = ["DEFAULT_DEMO", "EXAMPLES", "demo", "examples"]

#: The demo ``bwasync demo`` runs without a subcommand (a name in ``demo.commands``).
DEFAULT_DEMO = "campaign"

_PICTURES = (
    "https://s3.amazonaws.com/bw-v2-api/demo.jpg",
    "https://dev.bandwidth.com/images/bandwidth-logo.png",
    "https://dev.bandwidth.com/images/github_logo.png",
)
_TO = "+12345678902"
_GROUP = ["+12345678902", "+12345678903"]

#: The five kinds of message in Bandwidth's "Send Messages" guide, with its example values:
#: (title, request fields without ``applicationId``/``from``).
EXAMPLES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("Single SMS", {"to": [_TO], "text": "Hey, check this out!", "tag": "test message"}),
    ("MMS with one picture", {"to": [_TO], "text": "Check out this picture!", "media": [_PICTURES[0]]}),
    ("MMS with several pictures", {"to": [_TO], "text": "Check out these pictures!", "media": list(_PICTURES)}),
    ("Group SMS", {"to": _GROUP, "text": "Hey everyone, check this out!", "tag": "test group message"}),
    ("Group MMS", {"to": _GROUP, "text": "Hey everyone, check these out!", "media": list(_PICTURES[:2])}),
)


@click.group(
    "demo",
    invoke_without_command=True,
    short_help="The main job, end to end, on a local emulator (a 10,000-recipient campaign).",
)
@click.pass_context
def demo(ctx: click.Context) -> None:
    """Show bwasync at work against an in-process emulator of Bandwidth.

    Without a subcommand, runs the default demo ('campaign': 10,000 personalised messages with
    a rate limit, delivery tracking, a progress bar and the report). 'examples' sends the five
    example messages of Bandwidth's docs and shows their 202 answers and status callbacks.
    """
    if ctx.invoked_subcommand is None:
        ctx.invoke(demo.commands[DEFAULT_DEMO])


@demo.command(
    "examples",
    short_help="Bandwidth's five example messages and their status callbacks.",
)
@knob_option("latency", default=DEMO_LATENCY)
@knob_option("jitter", default=DEMO_JITTER)
@knob_option("p_delivered", default=DEMO_P_DELIVERED)
@knob_option("callback_delay", default=DEMO_CALLBACK_DELAY)
@knob_option("seed", default=DEMO_SEED)
@click.option(
    "--timeout",
    type=click.FloatRange(0, min_open=True),
    default=DEMO_CALLBACK_TIMEOUT,
    show_default=True,
    help="Seconds to wait for every status callback.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document: responses, callbacks, summary.")
def examples(timeout: float, as_json: bool, **knobs: Any) -> None:
    """Send the five examples of Bandwidth's docs (SMS, MMS with one picture, MMS with several
    pictures, group SMS, group MMS) to an in-process emulator with realistic latency and some
    failed deliveries, print each 202 answer, then wait for every status callback (sent to a
    receiver this command runs on 127.0.0.1, with Basic auth) and print them as a table.

    Exit status: 0 when every expected callback arrived, 1 otherwise.
    """
    ok = run(_examples(emulator_config(knobs), wait_seconds=timeout, as_json=as_json))
    if not ok:
        click.get_current_context().exit(1)


@contextlib.contextmanager
def _waiting(console: Console, collector: CallbackCollector) -> Iterator[None]:
    """A spinner with the callback count, on a terminal only (logs and pipes get nothing)."""
    if not console.is_terminal:
        yield
        return
    status: Status = console.status("Waiting for status callbacks")

    def show(c: CallbackCollector) -> None:
        status.update(f"Waiting for status callbacks: {c.received}/{c.expected}")

    previous, collector.on_change = collector.on_change, show
    try:
        with status:
            show(collector)
            yield
    finally:
        collector.on_change = previous


async def _examples(config: EmulatorConfig, *, wait_seconds: float, as_json: bool) -> bool:
    """Run the tour; True when every expected callback arrived in time."""
    collector = CallbackCollector()
    callback_user, callback_password = "bwasync-demo", secrets.token_urlsafe(16)
    async with (
        CallbackReceiver(
            "127.0.0.1", 0, on_event=collector.add_one, username=callback_user, password=callback_password
        ) as receiver,
        Emulator(
            config,
            username=EMULATOR_USERNAME,
            password=EMULATOR_PASSWORD,
            account_id=EMULATOR_ACCOUNT_ID,
            callback_url=receiver.url,
            callback_username=callback_user,
            callback_password=callback_password,
        ) as emu,
        MessagingClient(
            EMULATOR_ACCOUNT_ID, username=EMULATOR_USERNAME, password=EMULATOR_PASSWORD, base_url=emu.url
        ) as client,
    ):
        if not as_json:
            note(emulator_option_note(emu.url, EMULATOR_ACCOUNT_ID))
            note(f"Status callbacks go to {receiver.url} (Basic auth).")
        requests = [
            MessageRequest(application_id=EMULATOR_APPLICATION_ID, from_=EMULATOR_NUMBER, **fields)
            for _, fields in EXAMPLES
        ]
        started = time.perf_counter()
        results, _ = await client.send_all(requests)
        send_seconds = time.perf_counter() - started
        messages = [r.message for r in results if r.message is not None]
        if not as_json:
            _print_responses(results)
        collector.expect(messages)
        with _waiting(err_console(), collector), contextlib.suppress(TimeoutError):
            await asyncio.wait_for(collector.done.wait(), wait_seconds)
        # From the first send to the last callback: the whole life of the five messages.
        callback_seconds = time.perf_counter() - started
    complete = collector.done.is_set() and len(messages) == len(EXAMPLES)
    summary = _summary(messages, collector, send_seconds, callback_seconds, receiver.stats)
    # Number callbacks like the panels above them (by example, whichever sends succeeded).
    labels = {r.message.id: str(r.index + 1) for r in results if r.message is not None}
    if as_json:
        # Callbacks in arrival order (the table below sorts them by their time instead).
        echo_json({"messages": messages, "callbacks": collector.events, "summary": summary})
    else:
        by_time = sorted(collector.events, key=lambda event: event.time)
        console = out_console()
        console.print(callbacks_table(by_time, labels=labels, width=console.width))
        _print_summary(summary, complete=complete, timeout=wait_seconds)
    return complete


def _print_responses(results: list[SendResult]) -> None:
    console = out_console()
    for result, (title, _) in zip(results, EXAMPLES, strict=True):
        heading = f"{result.index + 1}. {title}"
        if result.message is not None:
            console.print(
                message_panel(
                    result.message, title=f"{heading} — 202 Accepted", subtitle=f"{result.latency * 1000:.0f} ms"
                )
            )
        elif result.error is not None:
            console.print(Text(heading, style="bold red"))
            if isinstance(result.error, BwasyncError):
                print_error(result.error)
            else:
                err_console().print(Text(repr(result.error), style="red"))


def _summary(
    messages: list[Message],
    collector: CallbackCollector,
    send_seconds: float,
    callback_seconds: float,
    stats: ReceiverStats,
) -> dict[str, Any]:
    finals = [e for e in collector.events if e.type in FINAL_TYPES]
    codes = collections.Counter(e.error_code for e in finals if e.type == "message-failed")
    return {
        "accepted": len(messages),
        "examples": len(EXAMPLES),
        "recipients": sum(len(m.to) for m in messages),
        "sendSeconds": round(send_seconds, 3),
        "expectedCallbacks": collector.expected,
        "receivedCallbacks": collector.received,
        "callbackSeconds": round(callback_seconds, 3),
        "delivered": sum(e.type == "message-delivered" for e in finals),
        "failed": sum(e.type == "message-failed" for e in finals),
        "errorCodes": {str(code): n for code, n in sorted(codes.items(), key=lambda kv: kv[0] or 0)},
        # Redelivered events: dropped by the receiver, or by the collector (a second final state).
        "duplicateCallbacks": collector.duplicates + stats.duplicates,
        "rejectedCallbacks": stats.rejected,
    }


def _print_summary(summary: dict[str, Any], *, complete: bool, timeout: float) -> None:
    codes = ", ".join(f"{code} ×{n}" for code, n in summary["errorCodes"].items())
    line = Text.assemble(
        ("✓ " if complete else "✗ ", "bold green" if complete else "bold red"),
        f"{summary['accepted']}/{summary['examples']} messages accepted "
        f"({summary['recipients']} recipients) in {summary['sendSeconds'] * 1000:.0f} ms; "
        f"{summary['receivedCallbacks']}/{summary['expectedCallbacks']} status callbacks "
        f"within {summary['callbackSeconds']:.1f} s: ",
        (f"{summary['delivered']} delivered", "green"),
        ", ",
        (f"{summary['failed']} failed", "red" if summary["failed"] else ""),
        f" ({codes})" if codes else "",
        ".",
    )
    out_console().print(line)
    if not complete:
        err_console().print(
            Text(
                f"Not every expected callback arrived within {timeout:g} s "
                f"({summary['rejectedCallbacks']} callback POSTs were rejected).",
                style="bold red",
            )
        )
