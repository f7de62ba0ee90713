"""``bwasync send``: one message, with every problem reported before or after it leaves."""

from __future__ import annotations

import sys
import time
from typing import NoReturn

import click

from .._exceptions import APIError, ValidationError
from .._models import Message, MessageRequest
from ._loop import run
from ._options import Connection, ConnectionOptions, connection_options
from ._output import echo_json, error_document, print_accepted, print_error

__all__ = ["send"]

#: Exit status of a send Bandwidth (or the network) failed: usage and validation errors are 2.
EXIT_API_ERROR = 1
EXIT_INVALID = 2


def _recipients(values: tuple[str, ...]) -> list[str]:
    """``--to`` values, each of which may also be a comma-separated list."""
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def _fail(exc: ValidationError | APIError, *, as_json: bool, code: int) -> NoReturn:
    if as_json:
        echo_json(error_document(exc))
    else:
        print_error(exc)
    click.get_current_context().exit(code)


@click.command(
    "send",
    short_help="Send one SMS or MMS and print Bandwidth's answer.",
    epilog="""\b
Examples:
  bwasync send --emulator --to +15552223333 --text "Hello"
  bwasync send --to +15552223333,+15554443333 --text "Group hello"
  bwasync send --to +15552223333 --media https://example.com/a.jpg --tag order-42
  echo "From a pipe" | bwasync send --to +15552223333 --text - --json

Exit status: 0 accepted (202), 1 Bandwidth or the network refused it, 2 invalid input (nothing sent).""",
)
@click.option(
    "--to",
    "to",
    multiple=True,
    required=True,
    metavar="E164",
    help="Recipient (repeat, or separate with commas, for a group message of up to 10).",
)
@click.option("--text", metavar="TEXT", help="Message text (up to 2048 characters); '-' reads standard input.")
@click.option("--media", multiple=True, metavar="URL", help="Media URL to attach (repeatable); any media makes an MMS.")
@click.option("--tag", metavar="TEXT", help="Tag echoed in every status callback (no personal data).")
@click.option(
    "--priority",
    type=click.Choice(["default", "high"]),
    help="Queue priority relative to the account's other messages.",
)
@click.option("--expiration", metavar="RFC3339", help="Give up if not sent by then, e.g. 2030-01-01T00:00:00Z.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON only: the 202 body, or {'error': {...}}.")
@connection_options
def send(
    connection: ConnectionOptions,
    to: tuple[str, ...],
    text: str | None,
    media: tuple[str, ...],
    tag: str | None,
    priority: str | None,
    expiration: str | None,
    as_json: bool,
) -> None:
    """Send one message (SMS, MMS, group SMS or group MMS) and print Bandwidth's 202 answer.

    The message is checked against every rule Bandwidth applies before it is sent: an invalid
    one lists all its field errors and sends nothing (exit 2). If Bandwidth refuses it, the
    status, error type, description and field errors are printed, with whether the message may
    nevertheless have been sent (exit 1).
    """
    settings = connection.resolve()
    if text == "-":
        text = sys.stdin.read().rstrip("\n")
    try:
        request = MessageRequest(
            application_id=settings.application_id or "",
            to=_recipients(to),
            from_=settings.from_ or "",
            text=text,
            media=list(media) or None,
            tag=tag,
            priority=priority,  # type: ignore[arg-type]  # validated (and converted) by the Struct
            expiration=expiration,  # type: ignore[arg-type]
        )
    except ValidationError as exc:
        _fail(exc, as_json=as_json, code=EXIT_INVALID)
    try:
        message, elapsed = run(_send(settings, request))
    except APIError as exc:
        _fail(exc, as_json=as_json, code=EXIT_API_ERROR)
    if as_json:
        echo_json(message)
    else:
        print_accepted(message, elapsed=elapsed)


async def _send(settings: Connection, request: MessageRequest) -> tuple[Message, float]:
    """Send ``request``; return Bandwidth's answer and the seconds it took (retries included)."""
    async with settings.connect() as session:
        started = time.perf_counter()
        message = await session.client.create_message(request)
        return message, time.perf_counter() - started
