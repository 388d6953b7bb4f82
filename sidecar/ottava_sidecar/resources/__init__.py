"""Ottava's Kubernetes resources: the `Component`, `Configuration`, `Subscription` and `TrafficRoute` models.

The models are the one source of truth: the sidecar validates manifests with them,
`make crds` renders the CRDs from them, and the operator's admission webhook imports them.
"""

from ottava_sidecar.resources.models import (
    Component,
    ComponentSpec,
    Configuration,
    ConfigurationSpec,
    DeclarativeSubscription,
    MetadataItem,
    ObjectMeta,
    SecretKeyRef,
    TrafficRoute,
    parse_duration,
)

__all__ = [
    "Component",
    "ComponentSpec",
    "Configuration",
    "ConfigurationSpec",
    "DeclarativeSubscription",
    "MetadataItem",
    "ObjectMeta",
    "SecretKeyRef",
    "TrafficRoute",
    "parse_duration",
]
