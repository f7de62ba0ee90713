"""When to retry a failed send, and how long to wait: small pure functions, then a thin shell.

The rule that matters most: a send whose fate is unknown (the request left, no answer came
back) is **ambiguous** and is never retried unless the caller asked for at-least-once delivery,
because retrying it may deliver the message twice.

=================================  ============  ==========================================
failure                            kind          retried
=================================  ============  ==========================================
429                                rate_limited  yes; waits Retry-After (capped) if given
500, 502, 503, 504 (any 5xx)       server        yes
connection failed before sending   not_sent      yes (refused, connect timeout)
timeout/drop after sending         ambiguous     only with ``retry_ambiguous=True``
400, 401, 403, 404, 415, other 4xx final         never
ValidationError                    final         never (nothing was sent)
=================================  ============  ==========================================

The success path never touches tenacity: :func:`retry_after_failure` is entered only once a
first attempt has failed, so a message that goes through first time pays nothing for retries.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, stop_before_delay

from ._constants import (
    DEFAULT_DEADLINE,
    DEFAULT_MAX_ATTEMPTS,
    INITIAL_RETRY_DELAY,
    MAX_RETRY_AFTER,
    MAX_RETRY_DELAY,
)
from ._exceptions import APIConnectionError, APIError, APIStatusError, RateLimitError

__all__ = ["FailureKind", "RetryPolicy", "classify", "compute_wait", "retry_after_failure", "should_retry"]

log = logging.getLogger("bwasync")
T = TypeVar("T")


class FailureKind(enum.StrEnum):
    RATE_LIMITED = "rate_limited"
    SERVER = "server"
    NOT_SENT = "not_sent"
    AMBIGUOUS = "ambiguous"
    FINAL = "final"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a failed send is retried. Per-call overrides: ``policy.with_(max_attempts=1)``.

    >>> RetryPolicy(max_attempts=6, retry_ambiguous=True)   # at-least-once
    """

    #: Attempts in all, the first one included (1 = never retry).
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    #: First backoff in seconds; doubles each attempt, up to ``max_delay``; full jitter.
    initial_delay: float = INITIAL_RETRY_DELAY
    max_delay: float = MAX_RETRY_DELAY
    #: No attempt starts later than this many seconds after the first one.
    deadline: float = DEFAULT_DEADLINE
    #: A Retry-After above this is capped.
    max_retry_after: float = MAX_RETRY_AFTER
    #: Retry ambiguous failures too (at-least-once: a message may then arrive twice).
    retry_ambiguous: bool = False

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.initial_delay < 0 or self.max_delay < 0 or self.deadline < 0:
            raise ValueError("delays and deadline must not be negative")

    def with_(self, **changes: object) -> RetryPolicy:
        """A copy with some settings changed."""
        return replace(self, **changes)  # type: ignore[arg-type]


def classify(exc: BaseException) -> FailureKind:
    """What kind of failure ``exc`` is, for retry purposes."""
    if isinstance(exc, APIStatusError):
        if isinstance(exc, RateLimitError):
            return FailureKind.RATE_LIMITED
        return FailureKind.SERVER if exc.status_code >= 500 else FailureKind.FINAL
    if isinstance(exc, APIConnectionError):
        return FailureKind.AMBIGUOUS if exc.request_sent else FailureKind.NOT_SENT
    if isinstance(exc, APIError) and exc.may_have_been_sent:
        return FailureKind.AMBIGUOUS
    return FailureKind.FINAL


def should_retry(exc: BaseException, policy: RetryPolicy) -> bool:
    """Whether a failure of this kind may be retried under ``policy`` (attempts aside)."""
    kind = classify(exc)
    if kind is FailureKind.FINAL:
        return False
    if kind is FailureKind.AMBIGUOUS:
        return policy.retry_ambiguous
    return True


def compute_wait(exc: BaseException, attempt: int, policy: RetryPolicy, rand: Callable[[], float]) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based).

    Exponential backoff with full jitter (``uniform(0, min(max_delay, initial * 2**(n-1)))``),
    so that many senders that failed together do not retry together. A 429 that carries
    ``Retry-After`` waits at least that long (capped at ``max_retry_after``).
    """
    ceiling = min(policy.max_delay, policy.initial_delay * 2.0 ** (attempt - 1))
    wait = rand() * ceiling
    if isinstance(exc, RateLimitError) and exc.retry_after is not None:
        wait = max(wait, min(exc.retry_after, policy.max_retry_after))
    return wait


async def retry_after_failure(
    attempt: Callable[[], Awaitable[T]],
    first_error: BaseException,
    policy: RetryPolicy,
    *,
    started: float,
    rand: Callable[[], float] = random.random,
    sleep: Callable[[float], Awaitable[None]] | None = None,
) -> tuple[T, int]:
    """Retry ``attempt`` after ``first_error``; return its result and the attempts made in all.

    Raises the last error (with ``.attempts`` set) when the policy gives up. ``started`` is the
    ``time.monotonic()`` of the first attempt, against which the deadline runs.
    """
    if not should_retry(first_error, policy) or policy.max_attempts <= 1:
        _set_attempts(first_error, 1)
        raise first_error
    remaining = policy.deadline - (time.monotonic() - started)
    first_wait = compute_wait(first_error, 1, policy, rand)
    if first_wait >= remaining:
        _set_attempts(first_error, 1)
        raise first_error
    log.debug("bwasync: attempt 1 failed (%s); retrying in %.3f s", classify(first_error).value, first_wait)
    if sleep is None:
        sleep = asyncio.sleep
    await sleep(first_wait)

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        delay = compute_wait(exc or first_error, state.attempt_number + 1, policy, rand)
        log.debug(
            "bwasync: attempt %d failed (%s); retrying in %.3f s",
            state.attempt_number + 1,
            classify(exc).value if exc else "?",
            delay,
        )
        return delay

    retrying = AsyncRetrying(
        stop=stop_after_attempt(policy.max_attempts - 1)
        | stop_before_delay(max(0.0, policy.deadline - (time.monotonic() - started))),
        wait=wait,
        retry=retry_if_exception(lambda e: should_retry(e, policy)),
        sleep=sleep,
        reraise=True,
    )
    tries = 1
    try:
        async for step in retrying:
            with step:
                tries = 1 + step.retry_state.attempt_number
                result = await attempt()
    except BaseException as exc:
        _set_attempts(exc, tries)
        raise
    return result, tries


def _set_attempts(exc: BaseException, attempts: int) -> None:
    if isinstance(exc, APIError):
        exc.attempts = attempts
