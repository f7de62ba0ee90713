"""The metrics, how a client feeds them, and two ways to serve them."""

from __future__ import annotations

import math
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast
from wsgiref.simple_server import WSGIServer

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import start_http_server as _start_http_server

from .._exceptions import APIConnectionError, RateLimitError

if TYPE_CHECKING:
    from .._client import MessagingClient
    from .._fanout import SendResult
    from .._models import Message
    from .._transport import Transport

__all__ = ["LATENCY_BUCKETS", "ClientMetrics", "add_metrics_route", "metrics_handler", "start_metrics_server"]

#: Request latency buckets (seconds): Bandwidth answers a create in ~50-300 ms; the tail up to the
#: 30-s request timeout is what an operator needs to see when the queue backs up.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0)


class ClientMetrics:
    """The metrics of one or more clients, in their own registry (``registry`` to share one).

    * ``bwasync_sends_total{outcome}``: sends ended (accepted / not_sent / ambiguous), via
      :meth:`observe`;
    * ``bwasync_retries_total``: attempts beyond each send's first, via :meth:`observe`;
    * ``bwasync_requests_total{status}``: requests answered, by HTTP status ("error" when no
      answer came), and ``bwasync_rate_limited_total``: the 429s among them;
    * ``bwasync_requests_in_flight``: requests on the wire now;
    * ``bwasync_request_latency_seconds``: each request's round trip, as a histogram;
    * ``bwasync_limiter_rate``: the limiter's current account rate (segments/s; NaN while
      unthrottled), read when scraped.

    The request metrics come from :meth:`instrument`, which wraps the client's one request path.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True) if registry is None else registry
        r = self.registry
        self.sends = Counter("bwasync_sends", "Sends ended, by outcome.", ["outcome"], registry=r)
        self.retries = Counter("bwasync_retries", "Attempts beyond each send's first.", registry=r)
        self.requests = Counter("bwasync_requests", "Create requests answered, by HTTP status.", ["status"], registry=r)
        self.rate_limited = Counter("bwasync_rate_limited", "Create requests answered 429.", registry=r)
        self.in_flight = Gauge("bwasync_requests_in_flight", "Create requests on the wire.", registry=r)
        self.latency = Histogram(
            "bwasync_request_latency_seconds",
            "Round trip of each create request.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.limiter_rate = Gauge(
            "bwasync_limiter_rate", "Current account rate of the limiter, segments/s (NaN: unthrottled).", registry=r
        )
        self._rate_sources: list[Callable[[], float | None]] = []
        self.limiter_rate.set_function(self._current_rate)

    def observe(self, result: SendResult) -> None:
        """Count one send's outcome and its retries."""
        self.sends.labels(result.outcome.value).inc()
        if result.attempts > 1:
            self.retries.inc(result.attempts - 1)

    def instrument(self, client: MessagingClient, *, rate: float | None = None) -> MessagingClient:
        """Measure every create request of ``client`` (and of ``with_options`` copies made after).

        ``rate``: a cap its sends add under the client's limiter (``send_many(rate=...)``, a
        campaign's ``--rate``); the limiter-rate gauge then shows the lower of the two.
        """

        def current() -> float | None:
            limiter_rate = client.limiter.rate
            if rate is None or limiter_rate is None:
                return rate if limiter_rate is None else limiter_rate
            return min(limiter_rate, rate)

        self._rate_sources.append(current)
        pipeline = client._pipeline
        pipeline.transport = cast("Transport", _MeasuredTransport(pipeline.transport, self))
        return client

    def _current_rate(self) -> float:
        rates = [rate for rate in (source() for source in self._rate_sources) if rate is not None]
        return min(rates) if rates else math.nan


class _MeasuredTransport:
    """The client's transport, with its create requests measured; everything else passes through."""

    def __init__(self, inner: Transport, metrics: ClientMetrics) -> None:
        self._inner = inner
        self._metrics = metrics

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def create_message(self, body: bytes, *args: Any, **kwargs: Any) -> Message:
        m = self._metrics
        m.in_flight.inc()
        status = "202"
        try:
            with m.latency.time():
                return await self._inner.create_message(body, *args, **kwargs)
        except RateLimitError:
            status = "429"
            m.rate_limited.inc()
            raise
        except APIConnectionError:
            status = "error"
            raise
        except Exception as exc:
            status = str(getattr(exc, "status_code", "error"))
            raise
        finally:
            m.in_flight.dec()
            m.requests.labels(status).inc()


def _registry_of(metrics: ClientMetrics | CollectorRegistry) -> CollectorRegistry:
    return metrics.registry if isinstance(metrics, ClientMetrics) else metrics


def start_metrics_server(
    host: str, port: int, metrics: ClientMetrics | CollectorRegistry
) -> tuple[WSGIServer, threading.Thread]:
    """Serve ``GET /metrics`` on ``host:port`` from a daemon thread; ``server.shutdown()`` stops it."""
    server, thread = _start_http_server(port, addr=host, registry=_registry_of(metrics))
    return server, thread


def metrics_handler(metrics: ClientMetrics | CollectorRegistry) -> Callable[[web.Request], Awaitable[web.Response]]:
    """An aiohttp handler answering with the metrics in Prometheus's text format."""
    registry = _registry_of(metrics)

    async def handle(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    return handle


def add_metrics_route(app: web.Application, metrics: ClientMetrics | CollectorRegistry, path: str = "/metrics") -> None:
    """Mount the metrics on a web service's own aiohttp app at ``path``."""
    app.router.add_get(path, metrics_handler(metrics))
