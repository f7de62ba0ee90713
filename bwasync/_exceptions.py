"""Every exception bwasync raises, one tree (this drawing is the only one; keep it complete)::

    BwasyncError                    base of them all; ``.may_have_been_sent``
    ├── ConfigurationError          the client was set up wrongly (missing credentials...)
    ├── ClientClosedError           the client was closed; it cannot send any more
    ├── ValidationError             the request broke a Bandwidth rule; nothing was sent
    ├── SendCancelledError          a send_many input stopped or cancelled before its send ended
    │   └── StopRequestedError      a campaign or worker was stopping; the row never left (not exported)
    ├── RedisUnavailableError       a shared limiter could not reach Redis (``on_error="raise"``); not sent
    ├── APIError                    a send (or another API call) ended in failure; ``.attempts``
    │   ├── APIStatusError          Bandwidth answered 4xx/5xx; the message was NOT sent
    │   │   ├── BadRequestError             400 (``.field_errors`` lists every field)
    │   │   ├── AuthenticationError         401
    │   │   ├── PermissionDeniedError       403
    │   │   ├── NotFoundError               404
    │   │   ├── UnsupportedMediaTypeError   415
    │   │   ├── RateLimitError              429 (``.retry_after``, ``.allowed_rate`` when the server gave them)
    │   │   └── ServerError                 5xx (including a load balancer's HTML page)
    │   ├── APIConnectionError      no answer came back (refused, reset, dropped); ``.request_sent``
    │   │   └── APITimeoutError     no answer came back in time
    │   └── UnexpectedResponseError a 2xx whose body is not a message: it may have been sent
    └── CampaignError               the campaign layer (:mod:`bwasync.campaign`, its own module)
        ├── InputFileError          the input (or opt-out) file cannot be used at all (``.path``)
        ├── TemplateError           a message template is malformed or uses forbidden syntax
        │   └── MissingVariablesError   a row lacks variables the template needs (``.names``)
        ├── JournalError            the journal cannot do what was asked
        │   ├── JournalClosedError      the journal was closed (or its writer died)
        │   ├── JournalLockedError      another process (or Journal) has this journal open
        │   ├── JournalMismatchError    resuming with a different input file or template
        │   └── JournalStateError       a row may not be marked in flight (``.key``, ``.status``)
        └── ReconcileError          Bandwidth's message list could not be reached to resolve rows

The classes above ``CampaignError`` are defined here; the campaign subtree is defined in
``bwasync/campaign/_exceptions.py`` (so that the core never imports the campaign layer).

Every error that can end a send says, in ``.may_have_been_sent``, whether the message was
certainly not sent (``False``) or may have been (``True``). Bandwidth documents that any
4xx/5xx means the message was not accepted and not billed, so :class:`APIStatusError` is always
``False``. A connection error is ``False`` only when it happened before the request left this
process (connect refused, connect timeout); once the request was written, a lost answer is
*ambiguous* and retrying it could send the message twice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._models import FieldError

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "BwasyncError",
    "ClientClosedError",
    "ConfigurationError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "RedisUnavailableError",
    "SendCancelledError",
    "ServerError",
    "StopRequestedError",
    "UnexpectedResponseError",
    "UnsupportedMediaTypeError",
    "ValidationError",
    "status_error_class",
]


class BwasyncError(Exception):
    """Base of every exception bwasync raises."""

    #: Whether the message may have reached Bandwidth despite this error.
    may_have_been_sent: bool = False


class ConfigurationError(BwasyncError, ValueError):
    """The client was configured wrongly: a missing credential or an impossible setting."""


class ClientClosedError(BwasyncError):
    """The client was closed: every later call raises this instead of opening a new session."""


class RedisUnavailableError(BwasyncError):
    """A :class:`~bwasync.redis.RedisLimiter` built with ``on_error="raise"`` could not reach
    Redis; the message was NOT sent. Exported from :mod:`bwasync.redis`."""

    may_have_been_sent = False


class ValidationError(BwasyncError):
    """A request broke one or more of Bandwidth's rules; nothing was sent.

    ``field_errors`` lists every broken rule at once, shaped like Bandwidth's 400 body::

        try:
            MessageRequest(to="12", from_="+1invalid", application_id="a", text="hi")
        except ValidationError as exc:
            for err in exc.field_errors:
                print(err.field_name, err.description)
    """

    may_have_been_sent = False

    def __init__(self, field_errors: Sequence[FieldError]) -> None:
        self.field_errors: list[FieldError] = list(field_errors)
        detail = "; ".join(map(str, self.field_errors))
        super().__init__(f"invalid message request: {detail}")

    def __reduce__(self) -> tuple[type[ValidationError], tuple[list[FieldError]]]:
        return (type(self), (self.field_errors,))


class APIError(BwasyncError):
    """A send (or another API call) ended in failure."""

    def __init__(self, message: str, *, attempts: int = 1) -> None:
        super().__init__(message)
        #: How many attempts were made before giving up.
        self.attempts = attempts


class APIStatusError(APIError):
    """Bandwidth (or something in front of it) answered with a 4xx or 5xx status.

    The message was not accepted: Bandwidth does not send or bill a request it answered with
    an error, so ``may_have_been_sent`` is ``False``.
    """

    may_have_been_sent = False

    def __init__(
        self,
        *,
        status_code: int,
        type: str | None = None,
        description: str | None = None,
        field_errors: Sequence[FieldError] = (),
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
        attempts: int = 1,
    ) -> None:
        self.status_code = status_code
        #: Bandwidth's error ``type`` (``request-validation``, ``unauthorized``...), when the
        #: body was Bandwidth's JSON.
        self.type = type
        self.description = description
        self.field_errors: list[FieldError] = list(field_errors)
        self.headers: dict[str, str] = dict(headers or {})
        #: The raw body, at most a few KiB of it (an HTML error page is kept for diagnosis).
        self.body = body
        text = f"HTTP {status_code}"
        if type:
            text += f" {type}"
        if description:
            text += f": {description}"
        if self.field_errors:
            text += " (" + "; ".join(map(str, self.field_errors)) + ")"
        super().__init__(text, attempts=attempts)


class BadRequestError(APIStatusError):
    """400: Bandwidth rejected the request; ``field_errors`` says which fields and why."""


class AuthenticationError(APIStatusError):
    """401: the credentials or the OAuth2 token were refused."""


class PermissionDeniedError(APIStatusError):
    """403: the account may not do this (an unknown ``from`` number, a disabled feature...)."""


class NotFoundError(APIStatusError):
    """404: no such account, path or media file."""


class UnsupportedMediaTypeError(APIStatusError):
    """415: the request body was not sent as ``application/json``."""


class RateLimitError(APIStatusError):
    """429: Bandwidth's queue for the account is full (or the list endpoint's limit was hit)."""

    def __init__(
        self, *, retry_after: float | None = None, allowed_rate: float | None = None, **kwargs: object
    ) -> None:
        #: Seconds the server asked us to wait (``Retry-After``), when it said.
        self.retry_after = retry_after
        #: The account rate in messages per second, when the body stated it ("Your allowed rate
        #: is N messages per minute" in Bandwidth's queue-full answer); the limiter cuts to it.
        self.allowed_rate = allowed_rate
        super().__init__(**kwargs)  # type: ignore[arg-type]


class ServerError(APIStatusError):
    """5xx: Bandwidth or a load balancer in front of it failed; worth retrying."""


class APIConnectionError(APIError):
    """No HTTP answer came back: the connection was refused, reset or dropped.

    ``request_sent`` tells whether the request had already been written when it failed; if it
    had, the message may have been sent.
    """

    def __init__(self, message: str, *, request_sent: bool, attempts: int = 1) -> None:
        super().__init__(message, attempts=attempts)
        self.request_sent = request_sent
        self.may_have_been_sent = request_sent


class APITimeoutError(APIConnectionError):
    """No answer came back in time. Ambiguous unless the connect itself timed out."""


class UnexpectedResponseError(APIError):
    """Bandwidth answered 2xx but with a body that is not a message: it may have been sent."""

    may_have_been_sent = True


class SendCancelledError(BwasyncError):
    """The run was stopped or cancelled before this input's send completed."""

    def __init__(self, message: str, *, may_have_been_sent: bool) -> None:
        super().__init__(message)
        self.may_have_been_sent = may_have_been_sent


class StopRequestedError(SendCancelledError):
    """Raised by a campaign's (or a shared-campaign worker's) ``before_send`` hook once a stop was
    requested: this row's request never left, and the row stays to be sent by a later run."""

    def __init__(self, message: str) -> None:
        super().__init__(message, may_have_been_sent=False)


_STATUS_CLASSES: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    415: UnsupportedMediaTypeError,
    429: RateLimitError,
}


def status_error_class(status_code: int) -> type[APIStatusError]:
    """The most specific exception class for an HTTP error status."""
    cls = _STATUS_CLASSES.get(status_code)
    if cls is not None:
        return cls
    if status_code >= 500:
        return ServerError
    return APIStatusError
