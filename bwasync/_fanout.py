"""Fan-out: many sends in flight on one session, streamed, one result per input.

``send_many`` runs a pool of at most ``concurrency`` workers that pull inputs only when they are
free, so memory does not grow with the input (a million-message generator is never turned into a
million tasks). The pool grows as inputs come: a worker that pulls an input starts the next one,
so a run never has more workers than inputs plus one (``concurrency=100_000`` for ten messages
makes eleven tasks, not a hundred thousand). Each input that was pulled yields exactly one
:class:`SendResult`.

Stopping early::

    async with client.send_many(requests) as results:
        async for result in results:
            if result.error:
                break            # leaving the block stops the run in order
    results.unconsumed           # results produced but not yielded (in flight at the stop...)

Leaving the block (or ``await results.aclose()``) stops pulling inputs, reports inputs that were
pulled but had not left as ``NOT_SENT``, and lets requests already on the wire finish (cancelling
them would make their fate unknown). If the consumer is *cancelled*, everything is cancelled at
once and a request that was on the wire is reported ``AMBIGUOUS``. Either way no task is left
running. Inputs never pulled from the caller's iterator were not sent and are not reported.

``concurrency`` counts the inputs a run is working on (waiting for the limiter or on the wire).
An input waiting out a retry backoff or a ``Retry-After`` gives its place back while it sleeps,
and a spare worker (at most ``RETRY_SLEEPERS_PER_SLOT`` per place) takes the next input meanwhile,
so sleepers never throttle the run. The client's own ``concurrency`` caps the requests actually
on the wire across every run and single send (the pipeline's gate, see ``_pipeline.py``).
"""

from __future__ import annotations

import asyncio
import collections
import enum
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from types import TracebackType
from typing import Any

import msgspec

from ._constants import RETRY_SLEEPERS_PER_SLOT
from ._exceptions import APIError, BwasyncError, SendCancelledError, ValidationError
from ._models import Message, MessageRequest, coerce_request
from ._pipeline import IDLE, SENDING, Gate, Pipeline, Slot
from ._segments import total_segments

__all__ = [
    "BeforeSend",
    "Outcome",
    "SendResult",
    "SendStream",
    "SendSummary",
    "send_one",
]

#: ``before_send(index, request)``: awaited right before an input's first attempt leaves, after
#: the rate limiter admitted it. If it raises, the input is reported NOT_SENT with that error.
BeforeSend = Callable[[int, MessageRequest], Awaitable[None]]
RequestLike = MessageRequest | Mapping[str, Any]


class Outcome(enum.StrEnum):
    """How a send ended."""

    #: Bandwidth answered 202: the message is queued for delivery.
    ACCEPTED = "accepted"
    #: The message was certainly not sent (invalid, refused, retries exhausted before sending...).
    NOT_SENT = "not_sent"
    #: The message may or may not have been sent (the answer was lost). Do not resend blindly.
    AMBIGUOUS = "ambiguous"


#: ``Outcome.ACCEPTED`` as a module constant, read once per result: on Python 3.11 ``EnumType``
#: defines ``__getattr__``, so a member read off its class takes the slow, unspecialised
#: attribute path (~1,000 instructions, as much as building the result).
_ACCEPTED = Outcome.ACCEPTED


# Tracked by the collector (not gc=False, unlike the models): a failed result holds its
# exception, whose traceback holds frames whose locals may hold the result again.
class SendResult(msgspec.Struct, kw_only=True):
    """The one result of one input of ``send_many``."""

    #: Position of the input in the iterable given to ``send_many``.
    index: int
    outcome: Outcome
    #: The validated request (None when the input itself was invalid).
    request: MessageRequest | None = None
    #: Bandwidth's answer when accepted.
    message: Message | None = None
    #: The exception that ended the send, when it was not accepted.
    error: BaseException | None = None
    #: Attempts made (0 when the input was invalid or never left).
    attempts: int = 0
    #: Round trip of the latest attempt: seconds from its request leaving to its answer (or
    #: failure). Rate-limit pacing and retry backoff are not included; 0.0 if nothing left.
    latency: float = 0.0

    @property
    def ok(self) -> bool:
        return self.outcome is _ACCEPTED


class SendSummary(msgspec.Struct, kw_only=True):
    """Totals of a finished run."""

    total: int = 0
    accepted: int = 0
    not_sent: int = 0
    ambiguous: int = 0
    attempts: int = 0
    segments: int = 0
    elapsed: float = 0.0

    @property
    def rate(self) -> float:
        """Accepted messages per second."""
        return self.accepted / self.elapsed if self.elapsed > 0 else 0.0

    def add(self, result: SendResult) -> None:
        self.total += 1
        self.attempts += result.attempts
        if result.outcome is _ACCEPTED:
            self.accepted += 1
            if result.message is not None and result.message.segment_count is not None:
                self.segments += total_segments(result.message.segment_count, len(result.message.to))
        elif result.outcome is Outcome.NOT_SENT:
            self.not_sent += 1
        else:
            self.ambiguous += 1


log = logging.getLogger("bwasync")


def prepare(index: int, raw: RequestLike) -> MessageRequest | SendResult:
    """The input as a validated request, or its NOT_SENT result if it cannot be one."""
    try:
        return coerce_request(raw)
    except ValidationError as exc:
        return SendResult(index=index, outcome=Outcome.NOT_SENT, error=exc)
    except Exception as exc:  # a hostile input (a Mapping that raises, an unencodable subclass...)
        log.warning("bwasync: input %d could not be prepared: %s: %s", index, type(exc).__name__, exc)
        return SendResult(index=index, outcome=Outcome.NOT_SENT, error=exc)


def _hook(before_send: BeforeSend, index: int, request: MessageRequest) -> Callable[[], Awaitable[None]]:
    """``before_send`` bound to one input, as the pipeline calls it."""

    def before() -> Awaitable[None]:
        return before_send(index, request)

    return before


def failure(index: int, request: MessageRequest, slot: Slot, exc: BaseException) -> SendResult:
    """The result of a send that ended with ``exc``: NOT_SENT if nothing had left, AMBIGUOUS if
    the request may have. A cancellation gives a :class:`SendCancelledError` result."""
    if isinstance(exc, asyncio.CancelledError):
        maybe = slot.stage == SENDING or slot.maybe_sent
        return SendResult(
            index=index,
            outcome=Outcome.AMBIGUOUS if maybe else Outcome.NOT_SENT,
            request=request,
            error=SendCancelledError(
                "cancelled while the request was on the wire" if maybe else "stopped before sending",
                may_have_been_sent=maybe,
            ),
            latency=slot.latency(),
        )
    if isinstance(exc, BwasyncError):
        maybe = exc.may_have_been_sent or slot.maybe_sent
    else:
        # Not one of ours: a bug or a library failing unexpectedly. If it struck while the
        # request was on its way, the message may have left.
        log.warning("bwasync: input %d failed unexpectedly: %s: %s", index, type(exc).__name__, exc)
        maybe = slot.stage == SENDING or slot.maybe_sent
    return SendResult(
        index=index,
        outcome=Outcome.AMBIGUOUS if maybe else Outcome.NOT_SENT,
        request=request,
        error=exc,
        attempts=getattr(exc, "attempts", 1 if slot.stage == SENDING else 0),
        latency=slot.latency(),
    )


async def send_one(pipeline: Pipeline, index: int, raw: RequestLike, slot: Slot) -> SendResult:
    """Validate, send (rate-limited, retried) and report one input: never raises but on
    cancellation. (A ``send_many`` worker does the same inline, one coroutine less per input.)

    Whatever an input or an attempt raises becomes this input's result: an unexpected
    exception is the result's ``error`` (its type says what it was), NOT_SENT if nothing had
    left, AMBIGUOUS if the request may have.
    """
    request = prepare(index, raw)
    if isinstance(request, SendResult):
        return request
    try:
        message, attempts = await pipeline.send(request, slot)
    except Exception as exc:
        return failure(index, request, slot, exc)
    finally:
        slot.stage = IDLE
    return SendResult(
        index=index,
        outcome=_ACCEPTED,
        request=request,
        message=message,
        attempts=attempts,
        latency=time.monotonic() - slot.sent_at,  # Slot.latency(), inlined: a request left
    )


class _Core:
    """The run's state, referenced by the workers. The public :class:`SendStream` wraps it so
    that dropping the stream (``break`` without ``async with``) lets it be finalised."""

    __slots__ = (
        "_async_it",
        "_before_send",
        "_closing",
        "_failure",
        "_getter",
        "_index",
        "_iterable",
        "_live",
        "_loop",
        "_max_results",
        "_max_workers",
        "_pipeline",
        "_places",
        "_pull_lock",
        "_results",
        "_room",
        "_slots",
        "_sync_it",
        "_tasks",
        "_unstarted",
        "done",
        "unconsumed",
    )

    def __init__(
        self,
        pipeline: Pipeline,
        requests: Iterable[RequestLike] | AsyncIterable[RequestLike],
        *,
        concurrency: int,
        before_send: BeforeSend | None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self._pipeline = pipeline
        self._iterable = requests
        # Workers beyond ``concurrency`` only ever run while others wait out a backoff.
        self._max_workers = concurrency * (1 + RETRY_SLEEPERS_PER_SLOT)
        # A place is one input being worked on; an input waiting out a backoff holds none.
        self._places = Gate(concurrency)
        self._before_send = before_send
        self._sync_it: Iterator[RequestLike] | None = None
        self._async_it: AsyncIterator[RequestLike] | None = None
        self._pull_lock: asyncio.Lock | None = None
        self._index = 0
        self._closing = False
        self._failure: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Results wait here for the consumer; at most _max_results before workers hold back.
        self._results: collections.deque[SendResult] = collections.deque()
        self._max_results = concurrency * 2
        self._getter: asyncio.Future[None] | None = None
        self._room: asyncio.Future[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._slots: list[Slot] = []
        self._live = 0
        #: Workers still to start as inputs come (see the module docstring).
        self._unstarted = concurrency - 1
        self.done = False
        self.unconsumed: list[SendResult] = []

    def start(self) -> None:
        if isinstance(self._iterable, AsyncIterable):
            self._async_it = aiter(self._iterable)
            self._pull_lock = asyncio.Lock()
        else:
            self._sync_it = iter(self._iterable)
        self._loop = asyncio.get_running_loop()
        self._spawn()  # the others start as inputs come

    def _spawn(self) -> None:
        assert self._loop is not None
        slot = Slot()
        self._live += 1
        self._slots.append(slot)
        self._tasks.append(self._loop.create_task(self._worker(slot)))

    async def _pull_async(self) -> tuple[int, RequestLike] | None:
        assert self._async_it is not None and self._pull_lock is not None
        async with self._pull_lock:  # an async iterator may not be advanced concurrently
            if self._closing:
                return None
            try:
                item = await anext(self._async_it)
            except StopAsyncIteration:
                return None
        index = self._index
        self._index += 1
        return index, item

    async def _wait_for_room(self) -> None:
        """Backpressure: a slow consumer holds the workers back instead of piling results up."""
        assert self._loop is not None
        while len(self._results) >= self._max_results and not self._closing:
            if self._room is None or self._room.done():
                self._room = self._loop.create_future()
            # Shielded: one waiting worker being cancelled must not cancel the others' wait.
            await asyncio.shield(self._room)

    async def _worker(self, slot: Slot) -> None:
        sync_it = self._sync_it
        pipeline, places = self._pipeline, self._places
        before_send, on_cancel = self._before_send, self.unconsumed.append
        results, max_results = self._results, self._max_results
        # The gate's queue of waiters (never replaced): tested once per input, without the
        # ``waiting`` property's call.
        place_waiters = places._waiters
        held = False

        async def backoff(delay: float) -> None:
            """Wait out a retry delay without holding a place; a spare worker uses it meanwhile."""
            nonlocal held
            places.release()
            held = False
            if not places.waiting and not self._closing and len(self._tasks) < self._max_workers:
                self._spawn()
            await asyncio.sleep(delay)
            await places.take()
            held = True

        try:
            while not self._closing:
                if not held:
                    if not places.try_take():
                        await places.take()
                    held = True
                    if self._closing:
                        break
                if sync_it is not None:
                    # The common case, kept free of an extra coroutine per input.
                    try:
                        item = next(sync_it)
                    except StopIteration:
                        break
                    except Exception as exc:  # the caller's iterator failed: stop, report it at the end
                        self._fail(exc)
                        break
                    index = self._index
                    self._index = index + 1
                else:
                    try:
                        pulled = await self._pull_async()
                    except Exception as exc:
                        self._fail(exc)
                        break
                    if pulled is None:
                        break
                    index, item = pulled
                if self._unstarted > 0 and not self._closing:  # an input came: the next gets a worker
                    self._unstarted -= 1
                    self._spawn()
                # send_one, inlined (one coroutine frame less per input); the pipeline's
                # send, split, so that a retry can give the place back while it sleeps.
                request: MessageRequest | None
                if type(item) is MessageRequest:
                    request = item
                else:
                    prepared = prepare(index, item)
                    if isinstance(prepared, SendResult):  # an invalid input: its result is ready
                        request, result = None, prepared
                    else:
                        request = prepared
                if request is not None:
                    try:
                        try:
                            before = None if before_send is None else _hook(before_send, index, request)
                            message = await pipeline.attempt(slot, request, before)
                            attempts = 1
                        except APIError as exc:
                            message, attempts = await pipeline.retry(exc, slot, backoff)
                    except asyncio.CancelledError as exc:
                        on_cancel(failure(index, request, slot, exc))
                        raise
                    except Exception as exc:
                        result = failure(index, request, slot, exc)
                    else:
                        result = SendResult(
                            index=index,
                            outcome=_ACCEPTED,
                            request=request,
                            message=message,
                            attempts=attempts,
                            latency=time.monotonic() - slot.sent_at,  # Slot.latency(), inlined
                        )
                    finally:
                        slot.stage = IDLE
                results.append(result)
                if self._getter is not None:
                    self._wake_consumer()
                # The place is kept for the next input unless someone waits for it (a send back
                # from its backoff, a spare worker) or the results are full: as if given back
                # and taken again, without the two calls per input.
                if place_waiters or len(results) >= max_results:
                    places.release()
                    held = False
                    if len(results) >= max_results:
                        await self._wait_for_room()
        finally:
            if held:
                places.release()
            self._live -= 1
            if self._live == 0:
                self.done = True
                self._wake_consumer()

    def _fail(self, exc: BaseException) -> None:
        self._failure = exc
        self._closing = True

    def _wake_consumer(self) -> None:
        getter = self._getter
        if getter is not None:
            self._getter = None
            if not getter.done():
                getter.set_result(None)

    def stop(self, *, cancel_in_flight: bool = False) -> None:
        """No new pulls; unsent inputs cancelled (reported in ``unconsumed``); (optionally)
        in-flight ones too. Does not wait: the workers end as their cancellations land."""
        self._closing = True
        if self._loop is None:
            return
        if self._room is not None and not self._room.done():
            self._room.set_result(None)  # blocked workers see _closing and stop
        for slot, task in zip(self._slots, self._tasks, strict=True):
            if cancel_in_flight or slot.stage != SENDING:
                task.cancel()

    async def close(self, *, cancel_in_flight: bool) -> None:
        """Stop in order (see :meth:`stop`), and wait for the requests left on the wire."""
        self.stop(cancel_in_flight=cancel_in_flight)
        if self._loop is None:
            self.done = True
            return
        try:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        except asyncio.CancelledError:
            # Cancelled while the sends on the wire finish (the consumer cancelled during an
            # orderly stop): gather cancelled every worker; each reports its input before the
            # run ends, so no result is lost and no task outlives the stop.
            await asyncio.wait(self._tasks)
            raise
        finally:
            self.unconsumed.extend(self._results)
            self._results.clear()
            self.unconsumed.sort(key=lambda r: r.index)

    def abandon(self) -> None:
        """The stream was dropped without being closed: cancel every worker (no await possible)."""
        self._closing = True
        for task in self._tasks:
            task.cancel()


class SendStream:
    """An async iterator of :class:`SendResult`, and an async context manager that stops it.

    Returned by :meth:`MessagingClient.send_many`.
    """

    __slots__ = ("_core",)

    def __init__(self, core: _Core) -> None:
        self._core = core

    def __aiter__(self) -> SendStream:
        return self

    async def __anext__(self) -> SendResult:
        core = self._core
        if core._loop is None:
            core.start()
        results = core._results
        while not results:
            if core.done:
                if core._failure is not None:
                    failure, core._failure = core._failure, None
                    raise failure
                raise StopAsyncIteration
            assert core._loop is not None
            getter = core._getter = core._loop.create_future()
            try:
                await getter
            finally:
                if core._getter is getter:
                    core._getter = None
        result = results.popleft()
        room = core._room
        if room is not None and len(results) < core._max_results and not room.done():
            room.set_result(None)
        return result

    async def __aenter__(self) -> SendStream:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        cancelled = exc_type is not None and issubclass(exc_type, asyncio.CancelledError)
        await self._core.close(cancel_in_flight=cancelled)

    def stop(self) -> None:
        """Stop taking inputs now, from anywhere (another task, a signal handler): inputs not on
        the wire are cancelled at once, not sent, and requests on the wire finish. The iteration
        goes on with those requests' results and then ends; every cancelled input's result is in
        :attr:`unconsumed` once the stream is closed (leaving the ``async with`` block).

        Without it, a stop decided elsewhere is seen only when the next result comes, which for
        inputs waiting on a slow ``rate`` may be long.
        """
        self._core.stop()

    async def aclose(self) -> None:
        """Stop the run in order (see the module docs); safe to call more than once."""
        await self._core.close(cancel_in_flight=False)

    @property
    def unconsumed(self) -> list[SendResult]:
        """Results produced but not yielded before the stream was closed, by index."""
        return self._core.unconsumed

    @property
    def done(self) -> bool:
        """Whether every worker has finished."""
        return self._core.done

    def __del__(self) -> None:
        core = self._core
        if not core.done:
            core.abandon()
