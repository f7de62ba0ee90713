"""bwasync.metrics: a client's sends, retries, 429s, in-flight requests, latency and limiter rate,
served in Prometheus's text format (own HTTP server, or a route in a service's aiohttp app)."""

from __future__ import annotations

import math

import aiohttp
from aiohttp import web
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bwasync import MessagingClient, RetryPolicy
from bwasync.emulator import Emulator
from bwasync.metrics import ClientMetrics, add_metrics_route, start_metrics_server

ACCOUNT = "9900000"
APP = "93de2206-9669-4e07-948d-329f4b722ee2"
FAST_RETRY = RetryPolicy(max_attempts=2, initial_delay=0.001, max_delay=0.002)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def request(i: int) -> dict[str, object]:
    return {"to": ["+15552223333"], "from": "+15553332222", "text": f"m{i}", "applicationId": APP}


async def test_a_run_is_counted_and_served_from_a_service_app() -> None:
    metrics = ClientMetrics()
    # A queue holding 2 segments: of 6 sent at once, some are answered 429 (and retried once).
    queue = {"dequeue_rate": 1_000.0, "queue_seconds": 0.002}
    async with Emulator(username="u", password="p", account_id=ACCOUNT, **queue) as emu:
        async with MessagingClient(ACCOUNT, username="u", password="p", base_url=emu.url, retry=FAST_RETRY) as client:
            metrics.instrument(client)
            results, summary = await client.send_all([request(i) for i in range(6)], concurrency=6)
            for result in results:
                metrics.observe(result)
        app = web.Application()
        add_metrics_route(app, metrics)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        try:
            async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/metrics") as resp:
                assert resp.status == 200
                assert resp.headers["Content-Type"].startswith("text/plain")
                got = samples(await resp.text())
        finally:
            await runner.cleanup()
    rate_limited = emu.stats.by_status[429]
    assert rate_limited > 0
    assert got[("bwasync_sends_total", (("outcome", "accepted"),))] == summary.accepted
    assert got.get(("bwasync_sends_total", (("outcome", "not_sent"),)), 0) == summary.not_sent
    assert got[("bwasync_retries_total", ())] == summary.attempts - summary.total
    assert got[("bwasync_rate_limited_total", ())] == rate_limited
    assert got[("bwasync_requests_total", (("status", "429"),))] == rate_limited
    assert got[("bwasync_requests_total", (("status", "202"),))] == summary.accepted
    assert got[("bwasync_request_latency_seconds_count", ())] == emu.stats.creates
    assert got[("bwasync_requests_in_flight", ())] == 0
    assert got[("bwasync_limiter_rate", ())] > 0  # throttled after the 429s


async def test_own_metrics_server_serves_the_limiter_rate() -> None:
    metrics = ClientMetrics()
    client = MessagingClient(ACCOUNT, username="u", password="p", rate=50)
    metrics.instrument(client)
    server, thread = start_metrics_server("127.0.0.1", 0, metrics)
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{server.server_port}/metrics") as resp:
                got = samples(await resp.text())
        assert got[("bwasync_limiter_rate", ())] == 50.0
        assert got[("bwasync_requests_in_flight", ())] == 0
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
        await client.close()
    # An unthrottled limiter reads as NaN.
    unthrottled = ClientMetrics()
    unthrottled.instrument(MessagingClient(ACCOUNT, username="u", password="p"))
    assert math.isnan(samples(generate_latest(unthrottled.registry).decode())[("bwasync_limiter_rate", ())])
