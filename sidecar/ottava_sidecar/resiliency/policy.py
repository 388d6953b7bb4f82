"""One target's policies at work: a timeout per try, retries with backoff, and a circuit breaker.

The order is Dapr's: the retry loop tries the operation through the breaker, and each try
has its own timeout. A breaker that is open (or half-open with its probes in flight)
refuses the try at once, and that refusal is final: it is not retried, so a call fails
fast instead of waiting out the backoff against a target known to be down.

What counts as a failure is the caller's to say (`Classify`): an exception, or a result
that is an error in disguise (the app's HTTP 503 answer). A failure carries the status
code a retry policy's `matching` looks at, when it has one.
"""

import asyncio
import dataclasses
import enum
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

from ottava_sidecar import backoff, metrics
from ottava_sidecar.resources.models import parse_duration
from ottava_sidecar.resources.resiliency import (
    TRIP_VARIABLES,
    CircuitBreakerPolicy,
    RetryPolicy,
    compile_trip,
    parse_codes,
)

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclasses.dataclass(frozen=True, slots=True)
class Failure:
    """A try that failed; `code` is its HTTP status (`http`) or gRPC status number, when it has one."""

    kind: str = ""  # "http", "grpc", or "" for a failure without a status code
    code: int = 0


# Says whether a finished try failed: (None, result) for success; for a result that is a failure,
# (Failure, result); an exception is classified by `on_error` (None: not a failure, raise it as is).
OnResult = Callable[[Any], Failure | None]
OnError = Callable[[BaseException], Failure | None]


class Refused(Exception):
    """The policy stopped the operation: a timeout, or an open circuit breaker. The message names which."""

    kind = ""


class TimedOut(Refused):
    kind = "timeout"
    failure = Failure("grpc", 4)  # as DEADLINE_EXCEEDED, for a retry policy's matching


class BreakerOpen(Refused):
    kind = "circuit-breaker"


class Retry:
    def __init__(self, name: str, spec: RetryPolicy) -> None:
        self.name = name
        self.max_retries = spec.max_retries
        self._exponential = spec.policy == "exponential"
        self._duration = parse_duration(spec.duration).total_seconds()
        self._max_interval = parse_duration(spec.max_interval).total_seconds()
        matching = spec.matching
        # None: that kind of code is always retried (Dapr: an empty list matches every code).
        self._http = parse_codes(matching.http_status_codes, (100, 599)) if matching else []
        self._grpc = parse_codes(matching.grpc_status_codes, (0, 16)) if matching else []

    def delays(self) -> Iterator[float]:
        if self._exponential:
            # Dapr's exponential backoff (dapr/kit retry): from 500ms, times 1.5, ±50%, up to maxInterval.
            cap = max(self._max_interval, 0.001)
            return backoff.Backoff(first=min(0.5, cap), cap=cap, factor=1.5, jitter=0.5).delays()
        return itertools.repeat(self._duration)

    def retries(self, failure: Failure) -> bool:
        ranges = self._http if failure.kind == "http" else self._grpc if failure.kind == "grpc" else []
        return not ranges or any(start <= failure.code <= end for start, end in ranges)

    def more(self, retried: int) -> bool:
        return self.max_retries < 0 or retried < self.max_retries


class State(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


class Breaker:
    """A circuit breaker as gobreaker (Dapr's) runs one: closed, open for `timeout`, then half-open.

    Closed, it counts calls; a failure after which `trip` is true opens it. Open, every
    call is refused until `timeout` has passed. Half-open, `maxRequests` calls go through:
    as many successes in a row close it, one failure opens it again.
    """

    def __init__(self, name: str, spec: CircuitBreakerPolicy, target: str) -> None:
        self.name = name
        self.target = target
        self.trip = spec.trip
        self._program = compile_trip(spec.trip)
        self.max_requests = spec.max_requests or 1
        self.interval = parse_duration(spec.interval).total_seconds()
        self.timeout = parse_duration(spec.timeout).total_seconds()
        self.state = State.CLOSED
        self._counts = dict.fromkeys(TRIP_VARIABLES, 0)
        self._until = 0.0  # open: when it turns half-open; closed with an interval: when counts clear
        self._in_flight = 0
        if self.interval > 0:
            self._until = time.monotonic() + self.interval

    def _set(self, state: State) -> None:
        previous, self.state = self.state, state
        self._counts = dict.fromkeys(TRIP_VARIABLES, 0)
        self._in_flight = 0
        now = time.monotonic()
        self._until = now + self.timeout if state is State.OPEN else now + self.interval if self.interval > 0 else 0.0
        log.info("circuit breaker %r of %s changed from %s to %s", self.name, self.target, previous.value, state.value)
        metrics.RESILIENCY_BREAKER_CHANGES.labels(self.target, self.name, state.value).inc()

    def enter(self) -> None:
        """Let a call through, or raise `BreakerOpen`."""
        now = time.monotonic()
        if self.state is State.OPEN and now >= self._until:
            self._set(State.HALF_OPEN)
        elif self.state is State.CLOSED and self._until and now >= self._until:
            self._counts = dict.fromkeys(TRIP_VARIABLES, 0)
            self._until = now + self.interval
        if self.state is State.OPEN:
            raise BreakerOpen(f"circuit breaker {self.name!r} is open (it tripped on {self.trip!r})")
        if self.state is State.HALF_OPEN:
            if self._in_flight >= self.max_requests:
                raise BreakerOpen(f"circuit breaker {self.name!r} is half-open and its probe calls are in flight")
            self._in_flight += 1
        self._counts["requests"] += 1

    def abandoned(self) -> None:
        """A call let through was cancelled: its half-open probe slot is free again."""
        if self.state is State.HALF_OPEN and self._in_flight > 0:
            self._in_flight -= 1

    def succeeded(self) -> None:
        counts = self._counts
        counts["totalSuccesses"] += 1
        counts["consecutiveSuccesses"] += 1
        counts["consecutiveFailures"] = 0
        if self.state is State.HALF_OPEN and counts["consecutiveSuccesses"] >= self.max_requests:
            self._set(State.CLOSED)

    def failed(self) -> None:
        if self.state is State.HALF_OPEN:
            self._set(State.OPEN)
            return
        counts = self._counts
        counts["totalFailures"] += 1
        counts["consecutiveFailures"] += 1
        counts["consecutiveSuccesses"] = 0
        if self.state is State.CLOSED and self._tripped():
            self._set(State.OPEN)

    def _tripped(self) -> bool:
        from celpy import celtypes
        from celpy.evaluation import CELEvalError

        try:
            result = self._program.evaluate({k: celtypes.IntType(v) for k, v in self._counts.items()})
        except CELEvalError:  # as Dapr: an expression that cannot be evaluated does not trip
            return False
        return result is True or (isinstance(result, celtypes.BoolType) and bool(result))


@dataclasses.dataclass(slots=True)
class Resilience:
    """The policies that apply to one target (`target` names it in logs, errors and metrics)."""

    target: str
    timeout: float = 0.0
    timeout_name: str = ""
    retry: Retry | None = None
    breaker: Breaker | None = None

    async def run(self, operation: Callable[[], Awaitable[T]], *, on_result: OnResult, on_error: OnError) -> T:
        """`operation`'s result once a try succeeds, or the last try's result or error; `Refused`
        when a timeout or the breaker stopped the last try."""
        delays = self.retry.delays() if self.retry else None
        retried = 0
        while True:
            result, error, failure = await self._judged(operation, on_result, on_error)
            if failure is None:
                return result  # type: ignore[no-any-return]
            if self.retry is None or delays is None or not self.retry.more(retried) or not self.retry.retries(failure):
                if error is not None:
                    raise error
                return result  # type: ignore[no-any-return]
            retried += 1
            metrics.RESILIENCY_RETRIES.labels(self.target, self.retry.name).inc()
            log.info("retrying %s (retry %d of policy %r): %s", self.target, retried, self.retry.name, error or failure)
            await asyncio.sleep(next(delays))

    async def _judged(
        self, operation: Callable[[], Awaitable[T]], on_result: OnResult, on_error: OnError
    ) -> tuple[Any, BaseException | None, Failure | None]:
        """One try through the breaker: (result, error, failure), failure None for a success.
        An error that is not the target's failure is raised as is."""
        breaker = self.breaker
        if breaker is not None:
            breaker.enter()  # BreakerOpen: final, never retried
        try:
            result = await self._try(operation)
        except asyncio.CancelledError:
            if breaker is not None:
                breaker.abandoned()  # the caller went away: no verdict on the target
            raise
        except Exception as err:
            failure = err.failure if isinstance(err, TimedOut) else on_error(err)
            if failure is None:
                if breaker is not None:
                    breaker.succeeded()  # the caller's mistake, not the target's failure
                raise
            if breaker is not None:
                breaker.failed()
            return None, err, failure
        failure = on_result(result)
        if breaker is not None and failure is None:
            breaker.succeeded()
        elif breaker is not None:
            breaker.failed()
        return result, None, failure

    async def _try(self, operation: Callable[[], Awaitable[T]]) -> T:
        if not self.timeout:
            return await operation()
        try:
            async with asyncio.timeout(self.timeout) as scope:
                return await operation()
        except TimeoutError:
            if not scope.expired():
                raise
        metrics.RESILIENCY_TIMEOUTS.labels(self.target, self.timeout_name).inc()
        raise TimedOut(f"timed out after {self.timeout:g}s (timeout policy {self.timeout_name!r})")
