"""``--metrics HOST:PORT``: Prometheus metrics of a command's sends, served while it runs.

A sending command takes the option and serves the metrics around its work::

    @click.command()
    @metrics_option
    def worker(metrics: tuple[str, int] | None) -> None:
        with serving_metrics(metrics) as client_metrics:   # None without --metrics
            ...
            client_metrics.instrument(client)               # requests, 429s, latency, limiter rate
            client_metrics.observe(result)                  # sends by outcome, retries

Everything that can make the server fail is checked before anything is sent: a value that is
not HOST:PORT is a usage error when the command line is parsed; a missing ``prometheus_client``
(the ``metrics`` extra) and a port that cannot be bound stop the command (exit 2) when
:func:`serving_metrics` is entered, which a command does before it opens a connection.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import click

from ._options import HostPort, bind_error
from ._output import note

if TYPE_CHECKING:
    from ..metrics import ClientMetrics

__all__ = ["MetricsServerError", "metrics_option", "serving_metrics", "worker_endpoint", "worker_metrics"]

#: ``--metrics``: the command receives it as ``metrics``, a ``(host, port)`` or None.
metrics_option = click.option(
    "--metrics",
    "metrics",
    type=HostPort(),
    help="Serve Prometheus metrics at http://HOST:PORT/metrics while running: sends by outcome, retries, "
    "429s, requests in flight, the limiter's current rate, request latency (a histogram). 127.0.0.1:0 "
    "picks a free port (printed). Needs the metrics extra: pip install 'bwasync[metrics]'.",
)


class MetricsServerError(click.ClickException):
    """The metrics cannot be served (the port is taken...): the command stops before sending."""

    exit_code = 2


@contextlib.contextmanager
def serving_metrics(
    endpoint: tuple[str, int] | None, *, announce: Callable[[str], None] = note
) -> Iterator[ClientMetrics | None]:
    """Serve a new :class:`~bwasync.metrics.ClientMetrics` on ``endpoint`` for the block (None: no
    server, and the block gets None).

    Raises :class:`click.UsageError` when ``prometheus_client`` is not installed and
    :class:`MetricsServerError` when the address cannot be bound, both before the block runs.
    """
    if endpoint is None:
        yield None
        return
    _require_prometheus()
    from ..metrics import ClientMetrics, start_metrics_server

    host, port = endpoint
    metrics = ClientMetrics()
    try:
        server, thread = start_metrics_server(host, port, metrics)
    except OSError as exc:
        raise MetricsServerError(f"--metrics: cannot serve on {host}:{port}: {exc.strerror or exc}") from None
    try:
        announce(f"Serving Prometheus metrics on http://{_address(host, server.server_port)}/metrics.")
        yield metrics
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def worker_endpoint(endpoint: tuple[str, int], index: int) -> str:
    """``--metrics`` for local worker ``index`` of a shared campaign: ``PORT + index`` (0 stays 0)."""
    host, port = endpoint
    return _address(host, port + index if port else 0)


def worker_metrics(endpoint: tuple[str, int] | None, workers: int) -> tuple[str, int] | None:
    """``campaign run --redis --workers N --metrics HOST:PORT``, checked before anything is loaded.

    Each local worker serves its own metrics on ``PORT + i``; every one of those ports must be
    free now, and ``prometheus_client`` installed (usage error / :class:`MetricsServerError`,
    exit 2, otherwise).
    """
    if endpoint is None:
        return None
    _require_prometheus()
    host, port = endpoint
    if port and port + workers - 1 > 65535:
        raise click.UsageError(f"--metrics: ports {port} to {port + workers - 1} (one per worker) go past 65535")
    for index in range(workers if port else 0):
        exc = bind_error(host, port + index)
        if exc is not None:
            raise MetricsServerError(
                f"--metrics: cannot serve worker {index + 1}'s metrics on {worker_endpoint(endpoint, index)}: "
                f"{exc.strerror or exc}"
            )
    return endpoint


def _require_prometheus() -> None:
    """A usage error (exit 2) naming the extra when ``prometheus_client`` is not installed."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        raise click.UsageError("--metrics needs prometheus_client: pip install 'bwasync[metrics]'") from None


def _address(host: str, port: int) -> str:
    """``HOST:PORT`` as a URL writes it (an IPv6 host in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
