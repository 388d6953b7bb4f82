"""Which policies apply to a call: the sidecar's Resiliency resources, merged as Dapr merges them.

Every resource in scope of the app adds its named policies and its targets (a later one,
by name, wins a name both define). A target named in `targets` gets exactly the policies
it names. A target that no resource names gets Dapr's default policies, when a resource
defines them under Dapr's reserved names: `Default<Level>{Retry,Timeout,CircuitBreaker}Policy`,
from the most specific level to the least (for a state store's outbound calls:
`DefaultStatestoreComponentOutboundRetryPolicy`, then `DefaultComponentOutboundRetryPolicy`,
`DefaultComponentRetryPolicy`, `DefaultRetryPolicy`).

A target's `Resilience`, with its breaker's state, is made on its first call and kept until the
resources change (live, in a cluster): then every breaker starts closed again.
"""

import logging

from ottava_sidecar.resiliency.policy import Breaker, Resilience, Retry
from ottava_sidecar.resources.models import parse_duration
from ottava_sidecar.resources.resiliency import (
    CircuitBreakerPolicy,
    PolicyNames,
    Resiliency,
    RetryPolicy,
)

log = logging.getLogger(__name__)

# Dapr's names for each building block's components in its default policy names.
COMPONENT_TYPES = {
    "state": "Statestore",
    "pubsub": "Pubsub",
    "bindings": "Binding",
    "secretstores": "Secretstore",
    "lock": "Lock",
    "configuration": "Configuration",
}


class Provider:
    """The policies of one app's sidecar, from the Resiliency resources in its scope."""

    def __init__(self, app_id: str, resources: list[Resiliency] | None = None) -> None:
        self.app_id = app_id
        self._resources: dict[str, Resiliency] = {}
        self._policies: dict[tuple[str, ...], Resilience | None] = {}
        self._resources = {r.name: r for r in resources or [] if r.in_scope(app_id)}
        self._rebuild(first=True)

    @property
    def names(self) -> list[str]:
        """The resources applied, by name."""
        return sorted(self._resources)

    def replace(self, resources: list[Resiliency]) -> None:
        """Apply exactly `resources` (those in scope); unchanged ones keep their breakers' state."""
        in_scope = {r.name: r for r in resources if r.in_scope(self.app_id)}
        if in_scope == self._resources:
            return
        self._resources = in_scope
        self._rebuild()

    def upsert(self, resource: Resiliency) -> None:
        if resource.in_scope(self.app_id):
            self._resources[resource.name] = resource
        else:
            self._resources.pop(resource.name, None)
        self._rebuild()

    def remove(self, name: str) -> None:
        if self._resources.pop(name, None) is not None:
            self._rebuild()

    def _rebuild(self, *, first: bool = False) -> None:
        self._timeouts: dict[str, float] = {}
        self._retries: dict[str, RetryPolicy] = {}
        self._breakers: dict[str, CircuitBreakerPolicy] = {}
        self._apps: dict[str, PolicyNames] = {}
        self._outbound: dict[str, PolicyNames] = {}
        self._inbound: dict[str, PolicyNames] = {}
        for name in sorted(self._resources):
            spec = self._resources[name].spec
            self._timeouts.update({k: parse_duration(v).total_seconds() for k, v in spec.policies.timeouts.items()})
            self._retries.update(spec.policies.retries)
            self._breakers.update(spec.policies.circuit_breakers)
            self._apps.update(spec.targets.apps)
            for component, target in spec.targets.components.items():
                if target.outbound is not None:
                    self._outbound[component] = target.outbound
                if target.inbound is not None:
                    self._inbound[component] = target.inbound
        self._policies = {}
        if self._resources or not first:
            log.info("resiliency policies of %s applied: %s", self.app_id, ", ".join(self.names) or "none")

    @property
    def empty(self) -> bool:
        return not self._resources

    def app(self, app_id: str) -> Resilience | None:
        """The policies of service invocation calls to `app_id`; None when there are none."""
        return self._policy(("app", app_id), f"app:{app_id}", self._apps.get(app_id), ["App"])

    def outbound(self, component: str, building_block: str) -> Resilience | None:
        """The policies of the sidecar's calls to component `component` (of `building_block`)."""
        return self._component(component, building_block, "Outbound", self._outbound.get(component))

    def inbound(self, component: str, building_block: str) -> Resilience | None:
        """The policies of deliveries from component `component` to the app."""
        return self._component(component, building_block, "Inbound", self._inbound.get(component))

    def _component(
        self, name: str, building_block: str, direction: str, named: PolicyNames | None
    ) -> Resilience | None:
        levels = [f"Component{direction}", "Component"]
        if building_block in COMPONENT_TYPES:
            levels.insert(0, f"{COMPONENT_TYPES[building_block]}Component{direction}")
        return self._policy(("component", name, direction), f"component:{name}:{direction.lower()}", named, levels)

    def _policy(
        self, key: tuple[str, ...], target: str, named: PolicyNames | None, levels: list[str]
    ) -> Resilience | None:
        if not self._resources:
            return None
        if key in self._policies:
            return self._policies[key]
        timeout, retry, breaker = (
            (named.timeout, named.retry, named.circuit_breaker) if named is not None else self._defaults(levels)
        )
        policy: Resilience | None = None
        if timeout or retry or breaker:
            policy = Resilience(target)
            if timeout in self._timeouts:
                policy.timeout, policy.timeout_name = self._timeouts[timeout], timeout
            if retry in self._retries:
                policy.retry = Retry(retry, self._retries[retry])
            if breaker in self._breakers:
                policy.breaker = Breaker(breaker, self._breakers[breaker], target)
        self._policies[key] = policy
        return policy

    def _defaults(self, levels: list[str]) -> tuple[str, str, str]:
        def first(template: str, defined: dict[str, object]) -> str:
            for level in [*levels, ""]:
                name = template % level
                if name in defined:
                    return name
            return ""

        return (
            first("Default%sTimeoutPolicy", dict(self._timeouts)),
            first("Default%sRetryPolicy", dict(self._retries)),
            first("Default%sCircuitBreakerPolicy", dict(self._breakers)),
        )
