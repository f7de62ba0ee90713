"""bwasync: an asyncio-native, high-throughput sender for Bandwidth's Messaging V2 API."""

import typing

from ._constants import (
    DEFAULT_BASE_URL,
    DEFAULT_CONCURRENCY,
    DEFAULT_DEADLINE,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_TIMEOUT,
    DEFAULT_TOKEN_URL,
    INITIAL_RETRY_DELAY,
    MAX_RETRY_AFTER,
    MAX_RETRY_DELAY,
)
from ._exceptions import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    BwasyncError,
    ClientClosedError,
    ConfigurationError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    SendCancelledError,
    ServerError,
    UnexpectedResponseError,
    UnsupportedMediaTypeError,
    ValidationError,
)
from ._fanout import Outcome, SendResult, SendStream, SendSummary
from ._models import (
    CreateMessageRequestErrorBody,
    FieldError,
    InboundCallback,
    ListFilters,
    ListMessageItem,
    Media,
    Message,
    MessageFields,
    MessageRequest,
    MessagesList,
    MessagingRequestErrorBody,
    PageInfo,
    Priority,
    StatusCallback,
    StatusCallbackMessage,
)
from ._ratelimit import AdaptiveLimiter, RateLimiter, TokenBucket
from ._retry import RetryPolicy
from ._segments import SegmentInfo, segments
from ._version import __version__

if typing.TYPE_CHECKING:
    from ._client import MessagingClient


def __getattr__(name: str) -> typing.Any:
    """``MessagingClient``, imported on first use: it brings aiohttp (~0.4 s of CPU at a process's
    start), which what never sends (the models, ``segments``, the errors) does not need.
    ``from bwasync import MessagingClient`` works as for any other name."""
    if name == "MessagingClient":
        from ._client import MessagingClient

        globals()[name] = MessagingClient
        return MessagingClient
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_CONCURRENCY",
    "DEFAULT_DEADLINE",
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_TIMEOUT",
    "DEFAULT_TOKEN_URL",
    "INITIAL_RETRY_DELAY",
    "MAX_RETRY_AFTER",
    "MAX_RETRY_DELAY",
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AdaptiveLimiter",
    "AuthenticationError",
    "BadRequestError",
    "BwasyncError",
    "ClientClosedError",
    "ConfigurationError",
    "CreateMessageRequestErrorBody",
    "FieldError",
    "InboundCallback",
    "ListFilters",
    "ListMessageItem",
    "Media",
    "Message",
    "MessageFields",
    "MessageRequest",
    "MessagesList",
    "MessagingClient",
    "MessagingRequestErrorBody",
    "NotFoundError",
    "Outcome",
    "PageInfo",
    "PermissionDeniedError",
    "Priority",
    "RateLimitError",
    "RateLimiter",
    "RetryPolicy",
    "SegmentInfo",
    "SendCancelledError",
    "SendResult",
    "SendStream",
    "SendSummary",
    "ServerError",
    "StatusCallback",
    "StatusCallbackMessage",
    "TokenBucket",
    "UnexpectedResponseError",
    "UnsupportedMediaTypeError",
    "ValidationError",
    "__version__",
    "segments",
]
