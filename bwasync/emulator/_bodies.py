"""Bandwidth's response bodies, encoded once where they never change.

Types and wording follow BANDWIDTH.md and the spec's examples: messaging errors are
``{"type", "description"}`` (kebab-case types), the list endpoint's 429 uses
``rate_limit_exceeded``, an unknown path gets the Spring-style 404 of the gateway, and a
load balancer in front answers 502 with an HTML page.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from .._validation import FieldError, safe_str
from ._state import iso_ms

__all__ = [
    "BAD_GATEWAY_HTML",
    "FORBIDDEN",
    "INTERNAL_ERROR",
    "INVALID_CLIENT",
    "LIST_RATE_LIMITED",
    "SERVICE_UNAVAILABLE",
    "UNAUTHORIZED",
    "UNSUPPORTED_GRANT",
    "encode",
    "error",
    "malformed",
    "media_not_found",
    "method_not_allowed",
    "not_found",
    "unsupported_content_type",
    "validation_failed",
]

encode = msgspec.json.Encoder().encode


def error(type: str, description: str) -> bytes:
    """A ``messagingRequestError`` body (a lone surrogate from the request is escaped)."""
    return encode({"type": type, "description": safe_str(description)})


def malformed(description: str, *, oauth: bool = False) -> bytes:
    """The 400 for a request this server cannot even read: Bandwidth's messaging error shape,
    or the OAuth2 error shape (RFC 6749 section 5.2) on the token endpoint."""
    if oauth:
        return encode({"error": "invalid_request", "error_description": safe_str(description)})
    return error("request-validation", description)


UNAUTHORIZED = error("unauthorized", "Authentication Failed")
FORBIDDEN = error("forbidden", "Access Denied")
INTERNAL_ERROR = error("internal-server-error", "An internal server error occurred. Please try again later.")
SERVICE_UNAVAILABLE = error("service-unavailable", "The service is temporarily unavailable. Please try again later.")
LIST_RATE_LIMITED = error(
    "rate_limit_exceeded", "Rate limit exceeded. Wait for Retry-After time before sending another request."
)
INVALID_CLIENT = encode({"error": "invalid_client"})
UNSUPPORTED_GRANT = encode({"error": "unsupported_grant_type"})
BAD_GATEWAY_HTML = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n</body>\r\n</html>\r\n"
)


def validation_failed(field_errors: Sequence[FieldError]) -> bytes:
    """The create 400 (``createMessageRequestError``), listing every field error."""
    return encode(
        {
            "type": "request-validation",
            "description": "Your request could not be accepted.",
            "fieldErrors": field_errors,
        }
    )


def unsupported_content_type(content_type: str) -> bytes:
    return error(
        "unsupported-content-type",
        f"Content type '{content_type}' not supported. Please use 'application/json'",
    )


def media_not_found(media_id: str) -> bytes:
    return error("object-not-found", f"Media '{media_id}' not found")


def method_not_allowed(method: str) -> bytes:
    return error("method-not-allowed", f"Method '{method}' not supported for this resource.")


def not_found(path: str) -> bytes:
    """The gateway's Spring-style 404 for a path no endpoint serves."""
    body: dict[str, Any] = {
        "timestamp": iso_ms(),
        "status": 404,
        "error": "Not Found",
        "message": "No message available",
        "path": safe_str(path),
    }
    return encode(body)
