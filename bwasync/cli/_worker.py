"""``bwasync worker``, and the ``--redis`` option shared with ``campaign run/status/report``.

The commands are declared here without importing Redis; their bodies run in :mod:`._fleet`,
imported on use (it needs the ``redis`` extra).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, Final

import click

from ._campaign._session import run_tuned
from ._metrics import metrics_option, serving_metrics
from ._options import ConnectionOptions, connection_options

__all__ = ["CLAIM_IDLE_OPTION", "REDIS_OPTION", "fleet", "worker_command"]

#: ``--redis URL``; read from the environment too, so that a URL with a password need not be
#: typed on a command line (where ``ps`` shows it). Kept in step with ``_fleet.REDIS_ENV``.
REDIS_ENV: Final = "BWASYNC_REDIS_URL"
REDIS_OPTION = click.option(
    "--redis",
    "redis_url",
    metavar="URL",
    envvar=REDIS_ENV,
    show_envvar=True,
    help="The Redis that keeps shared campaigns (instead of a journal file), for workers on any machine, "
    "e.g. redis://127.0.0.1:6379/0. Run it with AOF and appendfsync always (see the README).",
)
CLAIM_IDLE_OPTION = click.option(
    "--claim-idle",
    type=click.FloatRange(0, min_open=True),
    default=None,
    metavar="SECONDS",
    help="With --redis: rows a dead worker held are taken over by another after this long idle. [default: 30]",
)


def fleet() -> ModuleType:
    """:mod:`._fleet`, or a usage error naming the extra to install."""
    try:
        from . import _fleet
    except ImportError as exc:
        if (exc.name or "").split(".")[0] != "redis":
            raise
        raise click.UsageError("--redis needs the redis package: pip install 'bwasync[redis]'") from None
    return _fleet


@click.command(
    "worker",
    short_help="Send the rows of campaigns shared in Redis (one on every machine of a fleet).",
    epilog="""\b
Examples:
  # On each machine (credentials from the environment, never from Redis):
  export BW_USERNAME=... BW_PASSWORD=... BWASYNC_REDIS_URL=redis://redis.internal:6379/0
  bwasync worker
  # Only one campaign, 50 requests in flight here:
  bwasync worker --campaign 3f2a9c0d1e5b7a64 --concurrency 50

Exit status: 0 every campaign joined is complete; 1 Redis unreachable (nothing sent) or gone for
longer than a minute, or credentials refused; 2 invalid usage (no such campaign); 3 a campaign
paused by its error-rate guard; 130/143 interrupted (requests on the wire finish, the rows not
sent go back to the queue). With --metrics, 2 also when the port cannot be served (nothing sent).""",
)
@REDIS_OPTION
@click.option("--campaign", "campaign_id", metavar="ID", help="Join only this campaign. [default: every one]")
@click.option(
    "--concurrency",
    type=click.IntRange(1),
    default=None,
    help="Requests in flight in this worker. [default: the campaign's]",
)
@CLAIM_IDLE_OPTION
@metrics_option
@connection_options
def worker_command(
    connection: ConnectionOptions,
    redis_url: str | None,
    campaign_id: str | None,
    concurrency: int | None,
    claim_idle: float | None,
    metrics: tuple[str, int] | None,
) -> None:
    """Join the campaigns in Redis that are not complete and send their rows until they are.

    The account, the API's URL, concurrency, rate and retries come from each campaign's record
    (this worker's --account-id, --base-url and --concurrency win); credentials from this
    worker's options or environment. Every row is marked in Redis before its request leaves.
    Rows held by a worker that died are taken over after --claim-idle seconds: those it had
    not sent are sent; those it had marked are looked up in Bandwidth's message list (found:
    accepted; not found: ambiguous, never resent silently).
    """
    ctx = click.get_current_context()
    if not redis_url:
        raise click.UsageError(f"Missing --redis (or set {REDIS_ENV})")
    if connection.emulator:
        raise click.UsageError("--emulator is for 'campaign run --redis': a worker sends where the campaign says")
    overrides: dict[str, Any] = {"concurrency": concurrency, "claim_idle": claim_idle}
    shared = fleet()
    with serving_metrics(metrics) as client_metrics:
        ctx.exit(run_tuned(shared.work_shared(redis_url, connection, campaign_id, overrides, client_metrics)))
