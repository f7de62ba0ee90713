"""bwasync inside an aiohttp web service.

One :class:`~bwasync.MessagingClient` lives as long as the app (``cleanup_ctx``), so every
request shares its connection pool, rate limiter and retry policy. ``POST /messages`` sends one
message and maps bwasync's errors to HTTP answers; ``POST /bandwidth/callbacks`` receives
Bandwidth's status callbacks; ``GET /messages/{id}`` shows the events received for a message.

    export BW_ACCOUNT_ID=... BW_USERNAME=... BW_PASSWORD=... BW_APPLICATION_ID=... BW_NUMBER=+15553332222
    export BW_CALLBACK_USERNAME=bw BW_CALLBACK_PASSWORD=...   # the Basic auth your Bandwidth application sends
    python -m examples.aiohttp_app --port 8000                 # from the repository's root

    curl -s localhost:8000/messages -d '{"to": "+15552223333", "text": "Hello"}'
    202 {"id": "1589228074636lm4k2je7j7jklbn2", "segments": 1}
    422 {"error": "invalid message request", "field_errors": [{"field": "to", "description": "..."}]}
    503 {"error": "HTTP 429 ...", "may_have_been_sent": false}   not sent, Bandwidth busy or unreachable: retry later
    502 {"error": "...", "may_have_been_sent": true}             the answer was lost: do NOT blindly resend
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from bwasync import APIError, MessagingClient, ValidationError
from bwasync.campaign import make_callback_handler

from ._service import DeliveryLog, Settings, failed_body, failed_status, invalid_body

CLIENT = web.AppKey("client", MessagingClient)
SETTINGS = web.AppKey("settings", Settings)
DELIVERIES = web.AppKey("deliveries", DeliveryLog)


async def send_message(request: web.Request) -> web.Response:
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return web.json_response({"error": "the body must be a JSON object"}, status=400)
    settings = request.app[SETTINGS]
    try:
        message = await request.app[CLIENT].create_message(
            # Bandwidth's wire names; a missing or mistyped field is a ValidationError (422).
            {
                "to": body.get("to"),
                "text": body.get("text"),
                "media": body.get("media"),
                "tag": body.get("tag"),
                "from": settings.from_number,
                "applicationId": settings.application_id,
            },
            retry=settings.retry,
        )
    except ValidationError as exc:
        return web.json_response(invalid_body(exc), status=422)
    except APIError as exc:
        return web.json_response(failed_body(exc), status=failed_status(exc))
    return web.json_response({"id": message.id, "segments": message.segment_count}, status=202)


async def message_events(request: web.Request) -> web.Response:
    message_id = request.match_info["id"]
    events = request.app[DELIVERIES].events.get(message_id)
    if events is None:
        return web.json_response({"error": "no status callback received for this message"}, status=404)
    return web.json_response({"id": message_id, "events": events})


def create_app(
    settings: Settings, client_factory: Callable[[], MessagingClient] = MessagingClient.from_env
) -> web.Application:
    """The service. ``client_factory`` builds the client when the app starts (inside its loop)."""
    app = web.Application()
    app[SETTINGS] = settings
    app[DELIVERIES] = deliveries = DeliveryLog()

    async def client_context(app: web.Application) -> AsyncIterator[None]:
        async with client_factory() as client:
            app[CLIENT] = client
            yield  # the app serves here; the client's connections close on shutdown

    app.cleanup_ctx.append(client_context)
    app.router.add_post("/messages", send_message)
    app.router.add_get("/messages/{id}", message_events)
    # Bandwidth's status callbacks: Basic auth checked in constant time, bodies capped,
    # duplicate events (Bandwidth delivers at least once) dropped before ``record`` sees them.
    callbacks = make_callback_handler(
        deliveries.record, username=settings.callback_username, password=settings.callback_password
    )
    app.router.add_post("/bandwidth/callbacks", callbacks)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description="bwasync inside an aiohttp web service")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    web.run_app(create_app(Settings.from_env()), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
