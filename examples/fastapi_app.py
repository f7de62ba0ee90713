"""bwasync inside a FastAPI service: the aiohttp example (``aiohttp_app.py``), the FastAPI way.

One :class:`~bwasync.MessagingClient` for the app's lifetime (``lifespan``); ``POST /messages``
sends and maps errors (422 with the field errors, 503/502 with ``may_have_been_sent``);
``POST /bandwidth/callbacks`` hands Bandwidth's status callbacks to bwasync's
:class:`~bwasync.campaign.CallbackHandler` (Basic auth, size cap, de-duplication);
``GET /messages/{id}`` shows what arrived.

    pip install fastapi uvicorn
    export BW_ACCOUNT_ID=... BW_USERNAME=... BW_PASSWORD=... BW_APPLICATION_ID=... BW_NUMBER=+15553332222
    uvicorn --factory examples.fastapi_app:app_from_env --port 8000    # from the repository's root
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from bwasync import APIError, MessagingClient, ValidationError
from bwasync.campaign import CallbackHandler

from ._service import DeliveryLog, Settings, failed_body, failed_status, invalid_body


class SendBody(BaseModel):
    """The JSON a caller posts; bwasync checks Bandwidth's rules (E.164, lengths, ...) itself."""

    to: str | list[str] | None = None
    text: str | None = None
    media: list[str] | None = None
    tag: str | None = None


def create_app(settings: Settings, client_factory: Callable[[], MessagingClient] = MessagingClient.from_env) -> FastAPI:
    deliveries = DeliveryLog()
    callbacks = CallbackHandler(
        deliveries.record, username=settings.callback_username, password=settings.callback_password
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with client_factory() as client:
            app.state.client = client
            yield  # the app serves here; the client's connections close on shutdown

    app = FastAPI(lifespan=lifespan)

    @app.post("/messages", status_code=202)
    async def send_message(body: SendBody, request: Request) -> JSONResponse:
        client: MessagingClient = request.app.state.client
        try:
            message = await client.create_message(
                {
                    "to": body.to,
                    "text": body.text,
                    "media": body.media,
                    "tag": body.tag,
                    "from": settings.from_number,
                    "applicationId": settings.application_id,
                },
                retry=settings.retry,
            )
        except ValidationError as exc:
            return JSONResponse(invalid_body(exc), status_code=422)
        except APIError as exc:
            return JSONResponse(failed_body(exc), status_code=failed_status(exc))
        return JSONResponse({"id": message.id, "segments": message.segment_count}, status_code=202)

    @app.get("/messages/{message_id}")
    async def message_events(message_id: str) -> JSONResponse:
        events = deliveries.events.get(message_id)
        if events is None:
            return JSONResponse({"error": "no status callback received for this message"}, status_code=404)
        return JSONResponse({"id": message_id, "events": events})

    # Bandwidth's status callbacks through the same handler the aiohttp example mounts: Basic auth
    # in constant time, the body read only after that and no further than its cap, duplicates dropped.
    @app.post("/bandwidth/callbacks")
    async def bandwidth_callbacks(request: Request) -> Response:
        length = request.headers.get("content-length")
        reply = await callbacks.process(
            request.headers.get("authorization"), request.stream(), int(length) if length and length.isdigit() else None
        )
        return Response(reply.text, status_code=reply.status, headers=dict(reply.headers), media_type="text/plain")

    return app


def app_from_env() -> FastAPI:
    return create_app(Settings.from_env())
