"""Retry policy as pure functions, and the tenacity shell driven with a fake sleep."""

from __future__ import annotations

import time

import pytest

from bwasync import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    RateLimitError,
    RetryPolicy,
    ServerError,
    UnexpectedResponseError,
    ValidationError,
)
from bwasync._exceptions import status_error_class
from bwasync._retry import FailureKind, classify, compute_wait, retry_after_failure, should_retry

DEFAULT = RetryPolicy()
AT_LEAST_ONCE = RetryPolicy(retry_ambiguous=True)


def status(code: int, retry_after: float | None = None) -> APIStatusError:
    cls = status_error_class(code)
    if cls is RateLimitError:
        return RateLimitError(status_code=code, retry_after=retry_after)
    return cls(status_code=code)


@pytest.mark.parametrize(
    ("exc", "kind", "retried", "retried_at_least_once"),
    [
        (status(400), FailureKind.FINAL, False, False),
        (status(401), FailureKind.FINAL, False, False),
        (status(403), FailureKind.FINAL, False, False),
        (status(404), FailureKind.FINAL, False, False),
        (status(405), FailureKind.FINAL, False, False),
        (status(415), FailureKind.FINAL, False, False),
        (status(429), FailureKind.RATE_LIMITED, True, True),
        (status(500), FailureKind.SERVER, True, True),
        (status(502), FailureKind.SERVER, True, True),
        (status(503), FailureKind.SERVER, True, True),
        (status(504), FailureKind.SERVER, True, True),
        (APIConnectionError("refused", request_sent=False), FailureKind.NOT_SENT, True, True),
        (APITimeoutError("connect timeout", request_sent=False), FailureKind.NOT_SENT, True, True),
        (APIConnectionError("dropped", request_sent=True), FailureKind.AMBIGUOUS, False, True),
        (APITimeoutError("read timeout", request_sent=True), FailureKind.AMBIGUOUS, False, True),
        (UnexpectedResponseError("garbage 202"), FailureKind.AMBIGUOUS, False, True),
        (ValidationError([]), FailureKind.FINAL, False, False),
        (RuntimeError("bug"), FailureKind.FINAL, False, False),
    ],
)
def test_classification(exc: Exception, kind: FailureKind, retried: bool, retried_at_least_once: bool) -> None:
    assert classify(exc) is kind
    assert should_retry(exc, DEFAULT) is retried
    assert should_retry(exc, AT_LEAST_ONCE) is retried_at_least_once


def test_wait_is_exponential_with_full_jitter_and_capped() -> None:
    policy = RetryPolicy(initial_delay=0.5, max_delay=8.0)
    err = status(503)
    assert [compute_wait(err, n, policy, lambda: 1.0) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    assert compute_wait(err, 3, policy, lambda: 0.0) == 0.0
    assert compute_wait(err, 3, policy, lambda: 0.25) == 0.5


def test_retry_after_is_honoured_and_capped() -> None:
    policy = RetryPolicy(initial_delay=0.5, max_retry_after=60.0)
    assert compute_wait(status(429, retry_after=7), 1, policy, lambda: 1.0) == 7.0
    assert compute_wait(status(429, retry_after=300), 1, policy, lambda: 1.0) == 60.0
    # backoff longer than Retry-After wins
    assert compute_wait(status(429, retry_after=0.1), 4, policy, lambda: 1.0) == 4.0
    assert compute_wait(status(429), 1, policy, lambda: 1.0) == 0.5


def test_policy_validation_and_copy() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(initial_delay=-1)
    p = DEFAULT.with_(max_attempts=9)
    assert p.max_attempts == 9 and DEFAULT.max_attempts != 9


class Script:
    """An attempt function failing with the given errors, then succeeding."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


class FakeSleep:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


async def test_retries_until_success_and_counts_attempts() -> None:
    script, sleep = Script(status(500)), FakeSleep()
    result, attempts = await retry_after_failure(
        script, status(503), RetryPolicy(max_attempts=4), started=time.monotonic(), rand=lambda: 1.0, sleep=sleep
    )
    assert (result, attempts) == ("ok", 3)
    assert script.calls == 2
    assert sleep.waits == [0.5, 1.0]


async def test_gives_up_after_max_attempts_with_attempts_on_the_error() -> None:
    script, sleep = Script(status(500), status(502), status(503), status(504)), FakeSleep()
    with pytest.raises(ServerError) as info:
        await retry_after_failure(
            script, status(500), RetryPolicy(max_attempts=3), started=time.monotonic(), rand=lambda: 1.0, sleep=sleep
        )
    assert info.value.attempts == 3
    assert info.value.status_code == 502
    assert script.calls == 2


async def test_final_errors_are_not_retried() -> None:
    script, sleep = Script(), FakeSleep()
    err = status(400)
    with pytest.raises(APIStatusError) as info:
        await retry_after_failure(script, err, DEFAULT, started=time.monotonic(), sleep=sleep)
    assert info.value is err and err.attempts == 1
    assert script.calls == 0 and sleep.waits == []


async def test_ambiguous_not_retried_by_default_but_retried_at_least_once() -> None:
    err = APITimeoutError("read timeout", request_sent=True)
    script, sleep = Script(), FakeSleep()
    with pytest.raises(APITimeoutError):
        await retry_after_failure(script, err, DEFAULT, started=time.monotonic(), sleep=sleep)
    assert script.calls == 0
    result, attempts = await retry_after_failure(
        script, err, AT_LEAST_ONCE, started=time.monotonic(), sleep=sleep, rand=lambda: 0.0
    )
    assert (result, attempts) == ("ok", 2)


async def test_a_later_final_error_stops_retrying() -> None:
    script, sleep = Script(status(403)), FakeSleep()
    with pytest.raises(APIStatusError) as info:
        await retry_after_failure(script, status(503), DEFAULT, started=time.monotonic(), sleep=sleep, rand=lambda: 0)
    assert info.value.status_code == 403
    assert info.value.attempts == 2


async def test_deadline_stops_retries() -> None:
    script, sleep = Script(status(503), status(503), status(503)), FakeSleep()
    # The first wait (0.5 s) does not fit in what is left of a 0.2 s deadline.
    with pytest.raises(ServerError) as info:
        await retry_after_failure(
            script,
            status(503),
            RetryPolicy(deadline=0.2, max_attempts=10),
            started=time.monotonic(),
            rand=lambda: 1.0,
            sleep=sleep,
        )
    assert info.value.attempts == 1
    assert script.calls == 0


async def test_retry_after_waits_before_the_retry() -> None:
    script, sleep = Script(), FakeSleep()
    _result, attempts = await retry_after_failure(
        script, status(429, retry_after=3), DEFAULT, started=time.monotonic(), rand=lambda: 0.0, sleep=sleep
    )
    assert sleep.waits == [3.0]
    assert attempts == 2
