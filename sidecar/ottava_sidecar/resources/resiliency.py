"""Pydantic model of the `Resiliency` resource: timeouts, retries and circuit breakers, and their targets.

The schema is Dapr's (`dapr.io/v1alpha1` Resiliency), so a Dapr manifest ports by changing
`apiVersion` only, and a standalone folder takes the Dapr one unchanged. What Dapr only
finds out when a sidecar loads the resource is refused here, at validation, naming the
field: a duration that does not parse, a `trip` expression that is not CEL over the
breaker's counts, status-code patterns out of range, and a target naming a policy that the
resource does not define.

`trip` is compiled with cel-python (`celpy`), a maintained implementation of Google's
Common Expression Language: the same language Dapr evaluates with cel-go.
"""

from functools import cache
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from ottava_sidecar.resources.models import Duration, ObjectMeta, _Model

# The breaker's counts that a `trip` expression reads (Dapr's names, from gobreaker's Counts).
TRIP_VARIABLES = ("requests", "totalSuccesses", "totalFailures", "consecutiveSuccesses", "consecutiveFailures")
# Dapr's own names for policies that apply without a target naming them: the built-in
# retries of sidecar-to-sidecar calls, and the Default<Kind>…Policy templates.
BUILT_IN_SERVICE_RETRIES = "DaprBuiltInServiceRetries"
_HTTP_CODES = (100, 599)
_GRPC_CODES = (0, 16)


@cache
def compile_trip(expression: str) -> Any:
    """A cel-python program for `expression`; ValueError saying why it is not a usable trip condition.

    The expression is tried once on zero counts, so a name that is not one of the counts,
    or a result that is not a boolean, is refused now rather than never tripping later.
    """
    import celpy  # imported when a Resiliency with a breaker is first read
    from celpy import celparser, celtypes, evaluation

    environment = celpy.Environment()
    try:
        program = environment.program(environment.compile(expression))
    except celparser.CELParseError as err:
        lines = str(err).rstrip().splitlines()
        where = f" at column {lines[-1].index('^') + 1}" if lines and lines[-1].strip() == "^" else ""
        raise ValueError(f"{expression!r} is not a CEL expression (syntax error{where})") from None
    try:
        result = program.evaluate({name: celtypes.IntType(0) for name in TRIP_VARIABLES})
    except evaluation.CELEvalError as err:
        reason = err.args[0] if err.args else err
        if "undeclared reference" in str(reason):
            reason = str(reason).split(" (in activation", 1)[0]
        raise ValueError(
            f"{expression!r} cannot be evaluated ({reason}); it may read {', '.join(TRIP_VARIABLES)}"
        ) from None
    if not isinstance(result, celtypes.BoolType):
        kind = type(result).__name__.removesuffix("Type").lower()
        raise ValueError(f"{expression!r} gives a value of type {kind}, not a boolean")
    return program


def parse_codes(patterns: str, valid: tuple[int, int]) -> list[tuple[int, int]]:
    """Dapr's code list ("500-599,404") as inclusive ranges; ValueError naming a bad item."""
    ranges: list[tuple[int, int]] = []
    for item in patterns.split(","):
        item = item.strip()
        if not item:
            continue
        start_text, _, end_text = item.partition("-")
        try:
            start, end = int(start_text), int(end_text or start_text)
        except ValueError:
            raise ValueError(f"{item!r} is not a code nor a range of codes such as '500-599'") from None
        for code in (start, end):
            if not valid[0] <= code <= valid[1]:
                raise ValueError(f"{item!r}: {code} is not a status code ({valid[0]}-{valid[1]})")
        if end < start:
            raise ValueError(f"{item!r}: the range ends before it starts")
        ranges.append((start, end))
    return ranges


class RetryMatching(_Model):
    """Which failures are retried; a list left out retries every failure of its kind (as Dapr)."""

    http_status_codes: str = Field(
        default="",
        alias="httpStatusCodes",
        description="HTTP statuses of the app's answer that are retried, such as '500-599,404'.",
    )
    grpc_status_codes: str = Field(
        default="",
        alias="gRPCStatusCodes",
        description="gRPC status codes (numbers, 1-16) that are retried, such as '1-4,14'.",
    )

    @field_validator("http_status_codes")
    @classmethod
    def _http(cls, value: str) -> str:
        parse_codes(value, _HTTP_CODES)
        return value

    @field_validator("grpc_status_codes")
    @classmethod
    def _grpc(cls, value: str) -> str:
        parse_codes(value, _GRPC_CODES)
        return value


class RetryPolicy(_Model):
    """How often, and how far apart, a failed operation is tried again."""

    policy: Literal["constant", "exponential"] = Field(
        default="constant", description="constant: every wait is `duration`; exponential: waits grow to `maxInterval`."
    )
    duration: Duration = Field(default="5s", description="Wait between tries of a constant policy (default 5s).")
    max_interval: Duration = Field(
        default="60s", alias="maxInterval", description="Longest wait of an exponential policy (default 60s)."
    )
    max_retries: int = Field(
        default=-1, ge=-1, alias="maxRetries", description="Tries after the first; -1 (the default) retries forever."
    )
    matching: RetryMatching | None = Field(default=None, description="Retry only failures with these status codes.")


class CircuitBreakerPolicy(_Model):
    """Stops calls to a failing target for a while, then lets probe calls through."""

    max_requests: int = Field(
        default=1, ge=0, alias="maxRequests", description="Calls let through while half-open (default 1; 0 means 1)."
    )
    interval: Duration = Field(
        default="0s", description="Period after which a closed breaker clears its counts; 0s (default) never."
    )
    timeout: Duration = Field(default="60s", description="How long the breaker stays open before half-open (60s).")
    trip: str = Field(
        default="consecutiveFailures > 5",
        description="CEL expression over requests, totalSuccesses, totalFailures, consecutiveSuccesses and "
        "consecutiveFailures; the breaker opens when it is true after a failure.",
    )

    @field_validator("trip")
    @classmethod
    def _cel(cls, trip: str) -> str:
        compile_trip(trip)
        return trip


class Policies(_Model):
    timeouts: dict[str, Duration] = Field(default_factory=dict, description="Named timeouts, as durations ('5s').")
    retries: dict[str, RetryPolicy] = Field(default_factory=dict, description="Named retry policies.")
    circuit_breakers: dict[str, CircuitBreakerPolicy] = Field(
        default_factory=dict, alias="circuitBreakers", description="Named circuit breakers."
    )


class PolicyNames(_Model):
    """The policies, by name, applied to one target."""

    timeout: str = Field(default="", description="Name of a timeout in policies.timeouts.")
    retry: str = Field(default="", description="Name of a retry policy in policies.retries.")
    circuit_breaker: str = Field(
        default="", alias="circuitBreaker", description="Name of a circuit breaker in policies.circuitBreakers."
    )
    circuit_breaker_cache_size: int | None = Field(
        default=None, ge=1, alias="circuitBreakerCacheSize", description="Accepted for Dapr compatibility; unused."
    )


class ComponentTarget(_Model):
    outbound: PolicyNames | None = Field(
        default=None, description="Calls from the sidecar to the component (state, lock, publish, bindings, …)."
    )
    inbound: PolicyNames | None = Field(
        default=None, description="Deliveries from the component to the app (pub/sub and input binding events)."
    )


class ActorTarget(PolicyNames):
    circuit_breaker_scope: str = Field(
        default="", alias="circuitBreakerScope", description="Accepted for Dapr compatibility; Ottava has no actors."
    )


class Targets(_Model):
    apps: dict[str, PolicyNames] = Field(default_factory=dict, description="Service invocation, by target app id.")
    components: dict[str, ComponentTarget] = Field(default_factory=dict, description="Components, by name.")
    actors: dict[str, ActorTarget] = Field(
        default_factory=dict, description="Accepted for Dapr compatibility; Ottava has no actors."
    )


class ResiliencySpec(_Model):
    policies: Policies = Field(default_factory=Policies, description="Named timeouts, retries and circuit breakers.")
    targets: Targets = Field(default_factory=Targets, description="Which policies apply to which apps and components.")

    @model_validator(mode="after")
    def _known_names(self) -> "ResiliencySpec":
        """Every policy a target names is defined; each one that is not is an error at its own field."""
        kinds = (
            ("timeout", "timeout", "timeouts", self.policies.timeouts),
            ("retry", "retry", "retries", self.policies.retries),
            ("circuit_breaker", "circuitBreaker", "circuitBreakers", self.policies.circuit_breakers),
        )
        problems: list[InitErrorDetails] = []
        for where, policies in self._all_targets():
            for attribute, field, section, defined in kinds:
                name = getattr(policies, attribute)
                if name and name not in defined:
                    known = ", ".join(sorted(defined)) or "none"
                    message = f"no {section} policy is named {name!r} (policies.{section} defines: {known})"
                    problems.append(
                        InitErrorDetails(
                            type=PydanticCustomError("unknown_policy", message),
                            loc=("targets", *where, field),
                            input=name,
                        )
                    )
        if problems:
            raise ValidationError.from_exception_data("ResiliencySpec", problems)
        return self

    def _all_targets(self) -> list[tuple[tuple[str, ...], PolicyNames]]:
        found: list[tuple[tuple[str, ...], PolicyNames]] = [(("apps", k), v) for k, v in self.targets.apps.items()]
        found += [(("actors", k), v) for k, v in self.targets.actors.items()]
        for name, component in self.targets.components.items():
            for direction in ("outbound", "inbound"):
                policies = getattr(component, direction)
                if policies is not None:
                    found.append((("components", name, direction), policies))
        return found


class Resiliency(_Model):
    """Timeouts, retries and circuit breakers for the calls of the apps in `scopes` (Dapr's Resiliency)."""

    api_version: Literal["ottava.io/v1alpha1", "dapr.io/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["Resiliency"]
    metadata: ObjectMeta
    version: str = Field(default="", description="Accepted as Dapr's examples write it (v1alpha1); unused.")
    spec: ResiliencySpec = Field(description="The policies, and the apps and components they apply to.")
    scopes: list[str] = Field(
        default_factory=list, description="App ids whose sidecars apply this resource; empty means every app."
    )

    @property
    def name(self) -> str:
        return self.metadata.name

    def in_scope(self, app_id: str) -> bool:
        return not self.scopes or app_id in self.scopes
