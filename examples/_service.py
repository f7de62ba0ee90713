"""What both example services share: settings, the error → HTTP status policy, a delivery log."""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from bwasync import (
    APIConnectionError,
    APIError,
    RateLimitError,
    RetryPolicy,
    ServerError,
    StatusCallback,
    ValidationError,
)

#: A web request should not wait a minute for retries: two attempts within 10 s, then an answer.
WEB_RETRY = RetryPolicy(max_attempts=2, deadline=10.0)


@dataclass(frozen=True)
class Settings:
    """What every send shares, and the credentials Bandwidth's callbacks carry."""

    application_id: str
    from_number: str
    callback_username: str | None = None
    callback_password: str | None = None
    retry: RetryPolicy = WEB_RETRY

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            application_id=os.environ["BW_APPLICATION_ID"],
            from_number=os.environ["BW_NUMBER"],
            callback_username=os.environ.get("BW_CALLBACK_USERNAME"),
            callback_password=os.environ.get("BW_CALLBACK_PASSWORD"),
        )


def invalid_body(exc: ValidationError) -> dict[str, Any]:
    """422's body: nothing was sent; every broken rule at once, for the caller to fix."""
    errors = [{"field": e.field_name, "description": e.description} for e in exc.field_errors]
    return {"error": "invalid message request", "field_errors": errors}


def failed_status(exc: APIError) -> int:
    """503 when the message was certainly not sent and trying later may work (Bandwidth's queue
    is full, Bandwidth is failing, or it could not be reached); 502 otherwise: refused for good
    (credentials, permissions, a number Bandwidth rejects) or, worse, fate unknown."""
    if exc.may_have_been_sent:
        return 502
    return 503 if isinstance(exc, RateLimitError | ServerError | APIConnectionError) else 502


def failed_body(exc: APIError) -> dict[str, Any]:
    """502/503's body: what happened and whether the message may have gone out anyway."""
    return {"error": str(exc), "may_have_been_sent": exc.may_have_been_sent}


class DeliveryLog:
    """Status events per message id, as Bandwidth reported them (in memory, for the example;
    a real service writes them to its database)."""

    def __init__(self) -> None:
        self.events: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)

    def record(self, event: StatusCallback) -> None:
        self.events[event.message.id].append({"type": event.type, "to": event.to, "error_code": event.error_code})
