"""Traffic routing between the versions of an app: the caller's side of `TrafficRoute`.

A `TrafficRoute` is named after the app id it routes (as callers name it). Its rules are
tried in order and the first whose `match` holds decides the call: its `destinations`
pick a version by weight, its `fault` may delay the call or abort it. A call that no rule
matches (or whose target has no TrafficRoute) goes to every version, as if there were
none. The routes are replaced whole, live, by whoever follows them (the resources folder
standalone, the cluster's TrafficRoutes in a pod); a call uses the rules of the moment
it starts.

Which endpoint serves which version is name resolution's business (`Address.version`):
the router only says which version a call goes to.
"""

import asyncio
import logging
import random
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import grpc

from ottava_sidecar import metrics
from ottava_sidecar.invocation.messages import InvocationRequest, grpc_code_for_http
from ottava_sidecar.invocation.resolution import Address
from ottava_sidecar.resources.models import HeaderMatch, RouteRule, TrafficRoute

log = logging.getLogger(__name__)


class Injected(Exception):
    """A fault a rule injected: the call ends here with `code` (and, over HTTP, `http_status`)."""

    def __init__(self, code: grpc.StatusCode, message: str, http_status: int) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.http_status = http_status


@dataclass(frozen=True)
class _Header:
    name: str  # lower case, as requests carry them
    exact: str | None
    prefix: str | None
    regex: re.Pattern[str] | None

    @classmethod
    def of(cls, name: str, match: HeaderMatch) -> "_Header":
        regex = re.compile(match.regex) if match.regex is not None else None
        return cls(name.lower(), match.exact, match.prefix, regex)

    def holds(self, value: str | None) -> bool:
        if value is None:
            return False
        if self.exact is not None:
            return value == self.exact
        if self.prefix is not None:
            return value.startswith(self.prefix)
        return self.regex is not None and self.regex.fullmatch(value) is not None


@dataclass(frozen=True)
class _Rule:
    where: str  # "TrafficRoute billing, rule 2", for messages
    headers: tuple[_Header, ...]
    caller_app_id: str | None
    versions: tuple[str, ...]
    cumulative: tuple[int, ...]  # running sum of the weights, for a weighted pick
    delay_seconds: float
    delay_percent: float
    abort_status: int | None
    abort_percent: float

    @classmethod
    def of(cls, route: str, index: int, rule: RouteRule) -> "_Rule":
        match = rule.match
        sums, total = [], 0
        for destination in rule.destinations:
            total += destination.weight
            sums.append(total)
        delay = rule.fault.delay if rule.fault else None
        abort = rule.fault.abort if rule.fault else None
        return cls(
            where=f"TrafficRoute {route}, rule {index}",
            headers=tuple(_Header.of(n, m) for n, m in (match.headers.items() if match else ())),
            caller_app_id=match.caller_app_id if match else None,
            versions=tuple(d.version for d in rule.destinations),
            cumulative=tuple(sums),
            delay_seconds=delay.seconds if delay else 0.0,
            delay_percent=delay.percent if delay else 0.0,
            abort_status=abort.http_status if abort else None,
            abort_percent=abort.percent if abort else 0.0,
        )

    def matches(self, request: InvocationRequest) -> bool:
        if self.caller_app_id is not None and request.caller_app_id != self.caller_app_id:
            return False
        return all(header.holds(request.header(header.name)) for header in self.headers)


@dataclass(frozen=True)
class Decision:
    """What the rule that matched a call says of it."""

    where: str
    version: str | None  # None: any version
    delay_seconds: float  # 0: not delayed
    abort_status: int | None  # the HTTP status of an injected abort; None: not aborted


class TrafficRouter:
    """The TrafficRoutes this sidecar applies to its calls, by target app id."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rules: dict[str, tuple[_Rule, ...]] = {}
        self._random = rng or random.Random()
        self._described: list[dict[str, Any]] = []

    def set_routes(self, routes: Iterable[TrafficRoute], source: str) -> None:
        """Apply these routes from now on, in place of all the previous ones."""
        routes = list(routes)
        rules = {
            route.name: tuple(_Rule.of(route.name, i, rule) for i, rule in enumerate(route.spec.rules))
            for route in routes
        }
        if rules != self._rules:
            log.info("traffic routes applied", extra={"source": source, "routes": sorted(rules)})
        self._rules = rules
        self._described = [
            {"appId": route.name, "source": source, "spec": route.spec.model_dump(by_alias=True, exclude_none=True)}
            for route in sorted(routes, key=lambda r: r.name)
        ]

    def describe(self) -> list[dict[str, Any]]:
        """The routes in force, as the info endpoint shows them."""
        return self._described

    @property
    def routed_apps(self) -> list[str]:
        return sorted(self._rules)

    def decide(self, target: str, request: InvocationRequest) -> Decision | None:
        """The decision of the first rule of `target`'s route that matches the call; None when none does."""
        for rule in self._rules.get(target, ()):
            if rule.matches(request):
                return Decision(
                    rule.where,
                    self._pick(rule),
                    rule.delay_seconds if self._chance(rule.delay_percent) else 0.0,
                    rule.abort_status if self._chance(rule.abort_percent) else None,
                )
        return None

    def _pick(self, rule: _Rule) -> str | None:
        if not rule.versions:
            return None
        point = self._random.randrange(100)
        for version, bound in zip(rule.versions, rule.cumulative, strict=True):
            if point < bound:
                return version
        return rule.versions[-1]

    def _chance(self, percent: float) -> bool:
        return percent > 0 and self._random.random() * 100 < percent

    async def route(
        self, target: str, request: InvocationRequest, deadline: float, timeout_seconds: float
    ) -> str | None:
        """The version `target`'s call goes to (None: any), after the delay its rule injects;
        `Injected` when its rule aborts it, or delays it past its `deadline` (monotonic)."""
        decision = self.decide(target, request)
        if decision is None:
            return None
        if decision.delay_seconds:
            metrics.INVOCATION_FAULTS.labels(target, "delay").inc()
            remaining = deadline - time.monotonic()
            if decision.delay_seconds >= remaining:
                await asyncio.sleep(max(0.0, remaining))
                raise Injected(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    f"app {target!r} did not answer {request.method} within {timeout_seconds:g}s: {decision.where} "
                    f"injects a delay of {decision.delay_seconds:g}s",
                    504,
                )
            await asyncio.sleep(decision.delay_seconds)
        if decision.abort_status is not None:
            metrics.INVOCATION_FAULTS.labels(target, "abort").inc()
            status = decision.abort_status
            raise Injected(
                grpc_code_for_http(status),
                f"call of {request.method} on app {target!r} aborted with HTTP {status} by fault injection "
                f"({decision.where})",
                status,
            )
        return decision.version


def count(target: str, address: Address, code: grpc.StatusCode) -> None:
    """One call sent to `address` (of the version it serves), with its outcome."""
    metrics.INVOCATION_VERSIONS.labels(target, address.version, code.name).inc()
