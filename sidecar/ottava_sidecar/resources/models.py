"""Pydantic models of the `Component`, `Configuration` and `Subscription` resources.

The schema follows Dapr's, so a Dapr manifest ports by changing `apiVersion` only.
Field descriptions are user documentation: they end up in the CRDs, where
`kubectl explain component.spec` shows them.
"""

import re
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema, field_validator, model_validator

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|us|µs|ns|h|m|s)")
_DURATION_UNITS = {
    "h": 3600.0,
    "m": 60.0,
    "s": 1.0,
    "ms": 1e-3,
    "us": 1e-6,
    "µs": 1e-6,
    "ns": 1e-9,
}
DURATION_PATTERN = r"^(\d+(\.\d+)?(ms|us|µs|ns|h|m|s))+$"


def parse_duration(text: str) -> timedelta:
    """Parse a Go-style duration ("5s", "1m30s", "250ms"), the format Dapr manifests use."""
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"{text!r} is not a duration such as '5s', '1m30s' or '250ms'")
    seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART.findall(text))
    return timedelta(seconds=seconds)


def _check_duration(text: str) -> str:
    parse_duration(text)
    return text


# A Go-style duration string: validated with a readable message, and carried into the
# CRD's schema as a pattern so the apiserver refuses bad ones too.
Duration = Annotated[
    str, AfterValidator(_check_duration), WithJsonSchema({"type": "string", "pattern": DURATION_PATTERN})
]


# Each model's validator is built when the model is first used, not at import: a sidecar
# that never reads a Configuration does not pay for building its dozen models.
class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, defer_build=True)


class ObjectMeta(BaseModel):
    """The part of Kubernetes object metadata that Ottava reads; the rest is kept as is."""

    model_config = ConfigDict(extra="allow", defer_build=True)

    name: Annotated[
        str,
        Field(
            min_length=1,
            max_length=253,
            pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
            description="Name of the resource; apps address a component by this name.",
        ),
    ]
    namespace: str | None = Field(default=None, description="Namespace of the resource.")


class SecretKeyRef(_Model):
    """A value taken from a secret: a Kubernetes Secret, or the component's secret store."""

    name: str = Field(min_length=1, description="Name of the secret.")
    key: str = Field(default="", description="Key inside the secret; defaults to the secret's name.")


# YAML reads `value: 6379` and `value: true` as a number and a boolean; Dapr accepts both, so
# the schema (and the CRD) admits any scalar and `MetadataItem._scalar_to_string` converts it.
_ScalarValue = Annotated[str, WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "number"}, {"type": "boolean"}]})]


class MetadataItem(_Model):
    """One setting of a component; exactly one of `value` and `secretKeyRef` is set."""

    name: str = Field(min_length=1, description="Name of the setting, as the component type documents it.")
    value: _ScalarValue | None = Field(
        default=None, description="Literal value; numbers and booleans are read as strings."
    )
    secret_key_ref: SecretKeyRef | None = Field(
        default=None,
        alias="secretKeyRef",
        description="Take the value from a secret instead of writing it here.",
    )

    @field_validator("value", mode="before")
    @classmethod
    def _scalar_to_string(cls, value: Any) -> Any:
        # YAML turns `value: 6379` and `value: true` into int and bool; Dapr reads them as strings.
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int | float):
            return str(value)
        return value

    @model_validator(mode="after")
    def _one_source(self) -> "MetadataItem":
        if self.value is not None and self.secret_key_ref is not None:
            raise ValueError(f"metadata {self.name!r}: set either 'value' or 'secretKeyRef', not both")
        return self


class ComponentSpec(_Model):
    """What backend serves a building block, and how to reach it."""

    type: str = Field(
        pattern=r"^[a-z]+\.[a-z0-9][a-z0-9.\-]*$",
        description="Building block and implementation, such as 'state.redis' or 'lock.in-memory'.",
    )
    version: str = Field(default="v1", pattern=r"^v\d+$", description="Version of the component type.")
    init_timeout: Duration = Field(
        default="5s",
        alias="initTimeout",
        description="How long the component may take to initialise, as a duration ('5s').",
    )
    ignore_errors: bool = Field(
        default=False,
        alias="ignoreErrors",
        description="When true, a component that fails to initialise does not make the sidecar unready.",
    )
    metadata: list[MetadataItem] = Field(default_factory=list, description="Settings of the component type.")

    @field_validator("metadata")
    @classmethod
    def _unique_names(cls, items: list[MetadataItem]) -> list[MetadataItem]:
        seen: set[str] = set()
        for item in items:
            if item.name in seen:
                raise ValueError(f"metadata {item.name!r} is set more than once")
            seen.add(item.name)
        return items

    @property
    def building_block(self) -> str:
        return self.type.split(".", 1)[0]

    @property
    def init_timeout_seconds(self) -> float:
        return parse_duration(self.init_timeout).total_seconds()


class ComponentAuth(_Model):
    secret_store: str = Field(
        default="",
        alias="secretStore",
        description="Secret store that resolves this component's secretKeyRef values; "
        "empty means Kubernetes Secrets in a cluster.",
    )


class Component(_Model):
    """A building block's backend, wired by name (Dapr's Component schema)."""

    api_version: Literal["ottava.io/v1alpha1", "dapr.io/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["Component"]
    metadata: ObjectMeta
    spec: ComponentSpec
    scopes: list[str] = Field(
        default_factory=list,
        description="App ids that may load this component; empty means every app.",
    )
    auth: ComponentAuth | None = Field(default=None, description="How secretKeyRef values are resolved.")

    @property
    def name(self) -> str:
        return self.metadata.name

    def in_scope(self, app_id: str) -> bool:
        return not self.scopes or app_id in self.scopes


# --- Configuration ---------------------------------------------------------------------


class ApiRule(_Model):
    name: str = Field(
        min_length=1,
        description="API name: state, pubsub, configuration, lock, sequencer, secrets, …",
    )
    version: str = Field(default="", description="API version such as 'v1.0' or 'v1.0-alpha1'; empty = any.")
    protocol: Literal["", "grpc", "http"] = Field(default="", description="grpc, http, or empty for both.")


class ApiAccess(_Model):
    allowed: list[ApiRule] | None = Field(default=None, description="Only these APIs are served; unset means all.")
    denied: list[ApiRule] = Field(default_factory=list, description="These APIs answer PERMISSION_DENIED.")


class AppHealthCheck(_Model):
    enabled: bool = Field(default=False, description="Whether the sidecar probes the app's health.")
    path: str = Field(default="/healthz", description="HTTP path probed on the app.")
    probe_interval: Duration = Field(
        default="5s",
        alias="probeInterval",
        description="Time between probes, as a duration ('5s').",
    )
    probe_timeout: Duration = Field(
        default="500ms",
        alias="probeTimeout",
        description="How long a probe may take before it counts as failed, as a duration.",
    )
    threshold: int = Field(default=3, ge=1, description="Failures in a row before the app is unhealthy.")


class OtelExporter(_Model):
    endpoint_address: str = Field(alias="endpointAddress", description="host:port of the OTLP collector.")
    protocol: Literal["grpc", "http"] = Field(default="grpc", description="OTLP transport.")
    is_secure: bool = Field(default=False, alias="isSecure", description="Reach the collector over TLS.")


class ZipkinExporter(_Model):
    endpoint_address: str = Field(
        alias="endpointAddress",
        description="URL of the Zipkin collector's span API, e.g. http://zipkin:9411/api/v2/spans.",
    )


class Tracing(_Model):
    sampling_rate: str = Field(
        default="0",
        alias="samplingRate",
        pattern=r"^(0(\.\d+)?|1(\.0+)?)$",
        description="Fraction of new traces sampled, from '0' (tracing off) to '1' (every call).",
    )
    otel: OtelExporter | None = Field(default=None, description="Export traces over OTLP.")
    zipkin: ZipkinExporter | None = Field(default=None, description="Export traces to Zipkin (JSON v2).")
    stdout: bool = Field(default=False, description="Also write each span to standard output, as JSON.")


class MetricSpec(_Model):
    enabled: bool = Field(default=True, description="Serve Prometheus metrics.")


class LoggingSpec(_Model):
    level: Literal["debug", "info", "warn", "error"] = Field(default="info", description="Lowest level that is logged.")


class FeatureSwitch(_Model):
    name: str = Field(min_length=1, description="Name of the feature.")
    enabled: bool = Field(description="Whether the feature is on.")


class SecretScope(_Model):
    store_name: str = Field(alias="storeName", min_length=1, description="Secret store these rules apply to.")
    default_access: Literal["allow", "deny"] = Field(
        default="allow", alias="defaultAccess", description="Access to secrets not listed below."
    )
    allowed_secrets: list[str] = Field(
        default_factory=list, alias="allowedSecrets", description="Secrets the app may read."
    )
    denied_secrets: list[str] = Field(
        default_factory=list, alias="deniedSecrets", description="Secrets the app may not read."
    )


class SecretsSpec(_Model):
    scopes: list[SecretScope] = Field(default_factory=list, description="Access rules, one entry per secret store.")


_TRUST_DOMAIN = r"^[a-z0-9._-]{1,255}$"
_POLICY_ACTION = Literal["allow", "deny"]
# The verbs of Dapr's HTTPExtension, the only ones a call can carry.
HTTP_VERBS = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")


class AppOperation(_Model):
    """One operation of the callee app and what a caller may do with it."""

    name: str = Field(
        min_length=1,
        description="Method path such as '/orders' or '/orders/*' (a leading '/' is added when missing); "
        "'*' matches within one path segment, a last segment '*' or '**' also matches the path without it, "
        "and a segment '**' matches any number of segments. Matched without regard to case over HTTP.",
    )
    http_verb: list[str] = Field(
        default_factory=lambda: ["*"],
        alias="httpVerb",
        description="HTTP verbs this rule covers ('*' for all); calls made over gRPC have no verb and "
        "match any rule of their operation.",
    )
    action: _POLICY_ACTION = Field(description="allow or deny.")

    @field_validator("name")
    @classmethod
    def _path(cls, name: str) -> str:
        if not name.strip():
            raise ValueError("an operation name cannot be blank")
        if any(c.isspace() for c in name):
            raise ValueError(f"operation name {name!r} contains white space")
        return name

    @field_validator("http_verb")
    @classmethod
    def _verbs(cls, verbs: list[str]) -> list[str]:
        if not verbs:
            raise ValueError("httpVerb is empty: list the verbs this rule covers, or leave it out for '*' (all)")
        for verb in verbs:
            if verb != "*" and verb.upper() not in HTTP_VERBS:
                raise ValueError(f"{verb!r} is not an HTTP verb ({', '.join(HTTP_VERBS)}) nor '*'")
        return verbs


class AppPolicy(_Model):
    """What one calling app may do: its default, and rules per operation."""

    app_id: str = Field(alias="appId", min_length=1, description="The calling app's id.")
    default_action: _POLICY_ACTION | None = Field(
        default=None,
        alias="defaultAction",
        description="For this caller's operations that no rule below names; unset means the global defaultAction.",
    )
    trust_domain: str = Field(
        default="public",
        alias="trustDomain",
        pattern=_TRUST_DOMAIN,
        description="The caller's trust domain.",
    )
    namespace: str = Field(default="default", min_length=1, description="The caller's namespace.")
    operations: list[AppOperation] = Field(
        default_factory=list,
        description="Rules per operation; the first whose name and verb match the call decides.",
    )


class AccessControl(_Model):
    """Which apps may invoke this app, enforced by its sidecar on the caller's certified identity."""

    default_action: _POLICY_ACTION | None = Field(
        default=None,
        alias="defaultAction",
        description="For callers that no policy names, and callers without a verified identity. Unset: deny "
        "when policies are listed, allow when none are (as Dapr).",
    )
    trust_domain: str = Field(
        default="public",
        alias="trustDomain",
        pattern=_TRUST_DOMAIN,
        description="This app's trust domain, the first part of its SPIFFE ID.",
    )
    policies: list[AppPolicy] = Field(default_factory=list, description="One entry per calling app.")

    @field_validator("policies")
    @classmethod
    def _one_per_caller(cls, policies: list[AppPolicy]) -> list[AppPolicy]:
        seen: dict[tuple[str, str, str], int] = {}
        for index, policy in enumerate(policies):
            key = (policy.app_id, policy.namespace, policy.trust_domain)
            if key in seen:
                raise ValueError(
                    f"policies[{index}] names the same caller as policies[{seen[key]}] (appId {policy.app_id}, "
                    f"namespace {policy.namespace}, trustDomain {policy.trust_domain}): merge their operations "
                    "into one policy"
                )
            seen[key] = index
        return policies

    @property
    def effective_default_action(self) -> Literal["allow", "deny"]:
        """The global default: as written, else deny when policies are listed (Dapr's rule), else allow."""
        if self.default_action is not None:
            return self.default_action
        return "deny" if self.policies else "allow"


class ConfigurationSpec(_Model):
    """Runtime settings of the sidecars that name this Configuration (`ottava.io/config`)."""

    api: ApiAccess | None = Field(default=None, description="Which APIs the app may call.")
    app_health_check: AppHealthCheck | None = Field(
        default=None, alias="appHealthCheck", description="Probing of the app by its sidecar."
    )
    tracing: Tracing | None = Field(default=None, description="Distributed tracing of API calls.")
    metric: MetricSpec | None = Field(default=None, description="Prometheus metrics of the sidecar.")
    logging: LoggingSpec | None = Field(default=None, description="Logging of the sidecar.")
    features: list[FeatureSwitch] = Field(default_factory=list, description="Feature switches.")
    secrets: SecretsSpec | None = Field(default=None, description="Which secrets the app may read.")
    access_control: AccessControl | None = Field(
        default=None, alias="accessControl", description="Which apps may invoke this one, and which operations."
    )


class Configuration(_Model):
    """Per-app runtime settings of the sidecar."""

    api_version: Literal["ottava.io/v1alpha1", "dapr.io/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["Configuration"]
    metadata: ObjectMeta
    spec: ConfigurationSpec = Field(default_factory=ConfigurationSpec)


# --- Subscription ----------------------------------------------------------------------


class SubscriptionRule(_Model):
    """One routing rule: events that match go to `path`."""

    match: str = Field(
        default="",
        description="CEL expression over the CloudEvent, such as 'event.type == \"widget\"'; empty makes the "
        "rule the default route.",
    )
    path: str = Field(min_length=1, description="App route (HTTP path, or the gRPC event's path) of matching events.")


class SubscriptionRoutes(_Model):
    """Where the events go: the first rule that matches, else the default."""

    rules: list[SubscriptionRule] = Field(default_factory=list, description="Routing rules, tried in order.")
    default: str = Field(default="", description="Route of the events no rule matches.")


class BulkSubscribe(_Model):
    """Delivery in batches: one call to the app carries several events, each answered on its own."""

    enabled: bool = Field(default=False, description="Deliver this subscription's events in batches.")
    max_messages_count: int = Field(
        default=100, ge=1, alias="maxMessagesCount", description="Most events in one batch (Dapr's default: 100)."
    )
    max_await_duration_ms: int = Field(
        default=1000,
        ge=0,
        alias="maxAwaitDurationMs",
        description="Longest a batch waits to fill up, in milliseconds, before it goes out (default 1000).",
    )


class DeclarativeSubscriptionSpec(_Model):
    """A topic the app receives, declared outside its code (Dapr's Subscription, v2alpha1 schema)."""

    pubsubname: str = Field(min_length=1, description="Name of the pub/sub component.")
    topic: str = Field(min_length=1, description="Topic to subscribe to.")
    routes: SubscriptionRoutes | None = Field(default=None, description="Routing rules and the default route.")
    route: str = Field(default="", description="The one route of every event (Dapr's v1alpha1 spelling).")
    metadata: dict[str, str] = Field(
        default_factory=dict, description="Subscription options for the broker, such as maxDeliveryAttempts."
    )
    dead_letter_topic: str = Field(
        default="", alias="deadLetterTopic", description="Topic that gets the events the app drops or gives up on."
    )
    bulk_subscribe: BulkSubscribe | None = Field(
        default=None, alias="bulkSubscribe", description="Deliver the events in batches."
    )

    @field_validator("metadata", mode="before")
    @classmethod
    def _scalars_to_strings(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        # YAML reads `maxDeliveryAttempts: 3` as a number; Dapr's map is of strings.
        return {
            k: ("true" if v else "false") if isinstance(v, bool) else str(v) if isinstance(v, int | float) else v
            for k, v in value.items()
        }

    @model_validator(mode="after")
    def _routed(self) -> "DeclarativeSubscriptionSpec":
        routes = self.routes or SubscriptionRoutes()
        if not self.route and not routes.default and not routes.rules:
            raise ValueError("no route: set routes.default or routes.rules (or route, as dapr.io/v1alpha1 does)")
        if self.route and routes.default:
            raise ValueError("both route and routes.default are set: keep one")
        return self


class DeclarativeSubscription(_Model):
    """A declarative subscription (Dapr's `Subscription`): the sidecar delivers the topic to its app."""

    api_version: Literal["ottava.io/v1alpha1", "dapr.io/v1alpha1", "dapr.io/v2alpha1"] = Field(alias="apiVersion")
    kind: Literal["Subscription"]
    metadata: ObjectMeta
    spec: DeclarativeSubscriptionSpec
    scopes: list[str] = Field(
        default_factory=list, description="App ids that receive this subscription's events; empty means every app."
    )

    @property
    def name(self) -> str:
        return self.metadata.name

    def in_scope(self, app_id: str) -> bool:
        return not self.scopes or app_id in self.scopes


# --- TrafficRoute ----------------------------------------------------------------------

# A version is a pod label's value (`ottava.io/app-version`): at most 63 characters,
# letters, digits, '-', '_' and '.', starting and ending with a letter or digit.
VERSION_PATTERN = r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
_HEADER_NAME = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$"


class HeaderMatch(_Model):
    """How one header's value must look; exactly one of `exact`, `prefix` and `regex`."""

    exact: str | None = Field(default=None, description="The value, exactly.")
    prefix: str | None = Field(default=None, description="The value starts with this.")
    regex: str | None = Field(
        default=None, description="A regular expression (Python syntax) that the whole value matches."
    )

    @model_validator(mode="after")
    def _one_way(self) -> "HeaderMatch":
        given = [name for name in ("exact", "prefix", "regex") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"set exactly one of exact, prefix and regex (found {', '.join(given) or 'none'})")
        if self.regex is not None:
            try:
                re.compile(self.regex)
            except re.error as err:
                raise ValueError(f"regex {self.regex!r} is not a regular expression: {err}") from None
        return self


class RouteMatch(_Model):
    """Which calls a rule takes: all of its conditions hold (a rule without `match` takes every call)."""

    headers: dict[str, HeaderMatch] = Field(
        default_factory=dict,
        description="Headers of the call (names without regard to case) and how each value must look.",
    )
    caller_app_id: str | None = Field(
        default=None, alias="callerAppId", min_length=1, description="The calling app's id."
    )

    @field_validator("headers")
    @classmethod
    def _header_names(cls, headers: dict[str, HeaderMatch]) -> dict[str, HeaderMatch]:
        for name in headers:
            if not re.match(_HEADER_NAME, name):
                raise ValueError(f"{name!r} is not a header name")
        lowered = [name.lower() for name in headers]
        twice = sorted({n for n in lowered if lowered.count(n) > 1})
        if twice:
            raise ValueError(
                f"header(s) {', '.join(twice)} named more than once (names are matched without regard to case)"
            )
        return headers


class RouteDestination(_Model):
    """A version of the target app and the share of the rule's calls it gets."""

    version: str = Field(
        pattern=VERSION_PATTERN, description="The version (pod label or `ottava run --app-version`) of the target app."
    )
    weight: int = Field(
        default=100,
        ge=0,
        le=100,
        description="Percent of the rule's calls sent to this version; a rule's weights add up to 100 "
        "(a single destination's may be left out).",
    )


class FaultDelay(_Model):
    """Hold a share of the calls before they are sent."""

    fixed_delay: Duration = Field(alias="fixedDelay", description="How long, as a duration ('2s', '250ms').")
    percent: float = Field(default=100, gt=0, le=100, description="Percent of the rule's calls delayed.")

    @property
    def seconds(self) -> float:
        return parse_duration(self.fixed_delay).total_seconds()


class FaultAbort(_Model):
    """Fail a share of the calls in the caller's sidecar, without sending them."""

    http_status: int = Field(
        default=503,
        alias="httpStatus",
        ge=400,
        le=599,
        description="The HTTP status the caller gets (gRPC callers get its gRPC code, 503 → UNAVAILABLE).",
    )
    percent: float = Field(default=100, gt=0, le=100, description="Percent of the rule's calls aborted.")


class RouteFault(_Model):
    """Faults injected into the rule's calls, to test how callers cope; a delay, an abort, or both."""

    delay: FaultDelay | None = Field(default=None, description="Delay a share of the calls.")
    abort: FaultAbort | None = Field(default=None, description="Abort a share of the calls.")

    @model_validator(mode="after")
    def _something(self) -> "RouteFault":
        if self.delay is None and self.abort is None:
            raise ValueError("a fault sets delay, abort or both")
        return self


class RouteRule(_Model):
    """One rule: the calls it matches, the versions they go to, the faults they meet."""

    match: RouteMatch | None = Field(default=None, description="Which calls the rule takes; unset: every call.")
    destinations: list[RouteDestination] = Field(
        default_factory=list,
        description="Versions and their weights; left out (with a fault set), the calls go to every version.",
    )
    fault: RouteFault | None = Field(default=None, description="Faults injected into the rule's calls.")

    @model_validator(mode="after")
    def _routes_somewhere(self) -> "RouteRule":
        if not self.destinations:
            if self.fault is None:
                raise ValueError(
                    "the rule names no destination: list destinations (version, weight), or set a fault "
                    "(its calls then go to every version)"
                )
            return self
        versions = [d.version for d in self.destinations]
        twice = sorted({v for v in versions if versions.count(v) > 1})
        if twice:
            raise ValueError(f"destinations name version(s) {', '.join(twice)} more than once")
        total = sum(d.weight for d in self.destinations)
        if total != 100:
            weights = " + ".join(f"{d.version}={d.weight}" for d in self.destinations)
            raise ValueError(f"the destinations' weights add up to {total} ({weights}), not 100")
        return self


class TrafficRouteSpec(_Model):
    """How the calls to one app (the resource's name) are spread over its versions."""

    rules: list[RouteRule] = Field(
        default_factory=list,
        description="Tried in order; the first that matches a call decides. Calls no rule matches go to every version.",
    )


class TrafficRoute(_Model):
    """Routing of the calls to an app between its versions, applied by the callers' sidecars.

    Named after the target app id, as callers name it (`billing`, or `billing.other-namespace`).
    """

    api_version: Literal["ottava.io/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["TrafficRoute"]
    metadata: ObjectMeta
    spec: TrafficRouteSpec = Field(default_factory=TrafficRouteSpec)

    @property
    def name(self) -> str:
        return self.metadata.name
