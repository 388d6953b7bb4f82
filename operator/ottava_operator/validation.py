"""Validation of Components, Configurations, Subscriptions, TrafficRoutes and Resiliencies against the models and the catalogue.

Shared by the admission webhook (refusing bad manifests at `kubectl apply`) and the
status handlers (flagging bad ones that got in while the webhook was down).
"""

from typing import Any

from ottava_sidecar.components import catalogue
from ottava_sidecar.messaging.routing import RuleError
from ottava_sidecar.messaging.subscriptions import SubscriptionSpec
from ottava_sidecar.resources.manifests import describe_errors
from ottava_sidecar.resources.models import Component, Configuration, DeclarativeSubscription, TrafficRoute
from ottava_sidecar.resources.resiliency import Resiliency
from pydantic import ValidationError

# Fields the apiserver owns; the models describe what users write.
_SERVER_FIELDS = ("status",)


def _user_part(body: dict[str, Any]) -> dict[str, Any]:
    document = {k: v for k, v in body.items() if k not in _SERVER_FIELDS}
    document.setdefault("apiVersion", "ottava.io/v1alpha1")
    return document


def component_problems(body: dict[str, Any]) -> list[str]:
    """Every reason the Component is wrong, each naming its field; empty when valid."""
    try:
        component = Component.model_validate(_user_part(body))
    except ValidationError as err:
        return describe_errors(err).split("; ")
    try:
        component_type = catalogue.lookup(component.spec.type, component.spec.version)
    except catalogue.UnknownComponentTypeError as err:
        return [f"spec.type: {err}"]
    literal = {item.name: item.value for item in component.spec.metadata if item.value is not None}
    from_secrets = {item.name for item in component.spec.metadata if item.secret_key_ref is not None}
    return [f"spec.metadata.{problem}" for problem in component_type.check_declared(literal, from_secrets)]


def configuration_problems(body: dict[str, Any]) -> list[str]:
    try:
        Configuration.model_validate(_user_part(body))
    except ValidationError as err:
        return describe_errors(err).split("; ")
    return []


def subscription_problems(body: dict[str, Any]) -> list[str]:
    """Every reason the Subscription cannot be delivered: its schema, a routing rule outside the CEL subset."""
    try:
        subscription = DeclarativeSubscription.model_validate(_user_part(body))
    except ValidationError as err:
        return describe_errors(err).split("; ")
    try:
        SubscriptionSpec.declared(subscription)
    except RuleError as err:
        return [str(err).split(": ", 1)[-1]]
    return []


def traffic_route_problems(body: dict[str, Any]) -> list[str]:
    """Every reason the TrafficRoute cannot route: weights that do not add up to 100, percents out of
    range, a rule that names no destination, a header regex that does not compile, …"""
    try:
        TrafficRoute.model_validate(_user_part(body))
    except ValidationError as err:
        return describe_errors(err).split("; ")
    return []


def resiliency_problems(body: dict[str, Any]) -> list[str]:
    """Every reason the Resiliency is wrong: its schema, a `trip` that is not CEL over the breaker's
    counts, a target naming a policy the resource does not define."""
    try:
        Resiliency.model_validate(_user_part(body))
    except ValidationError as err:
        return describe_errors(err).split("; ")
    return []


def referenced_secrets(body: dict[str, Any]) -> set[str]:
    """Kubernetes Secrets a Component's sidecars must read: its secretKeyRefs, unless a
    secret store of its own resolves them."""
    if (body.get("auth") or {}).get("secretStore"):
        return set()
    return {
        ref["name"]
        for item in (body.get("spec") or {}).get("metadata") or []
        if isinstance(item, dict) and isinstance(ref := item.get("secretKeyRef"), dict) and ref.get("name")
    }
