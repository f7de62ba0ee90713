"""Prometheus metrics for bwasync clients (``pip install bwasync[metrics]``).

::

    from bwasync.metrics import ClientMetrics, start_metrics_server

    metrics = ClientMetrics()
    metrics.instrument(client)                  # requests in flight, latency, 429s, limiter rate
    start_metrics_server("127.0.0.1", 9464, metrics)
    async with client.send_many(requests) as results:
        async for result in results:
            metrics.observe(result)             # sends by outcome, retries

In an aiohttp service, ``add_metrics_route(app, metrics)`` serves ``GET /metrics`` instead.
"""

from __future__ import annotations

try:
    import prometheus_client  # noqa: F401 - fail here, with the fix, rather than deep inside
except ImportError as exc:  # pragma: no cover - exercised in a subprocess without it
    raise ImportError(
        "bwasync.metrics needs the prometheus_client package; install it with: pip install 'bwasync[metrics]'"
    ) from exc

from ._metrics import LATENCY_BUCKETS, ClientMetrics, add_metrics_route, metrics_handler, start_metrics_server

__all__ = ["LATENCY_BUCKETS", "ClientMetrics", "add_metrics_route", "metrics_handler", "start_metrics_server"]
