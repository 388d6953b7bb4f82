"""The components `ottava run` loads when no resources folder is given (DESIGN.md)."""

from ottava_sidecar import contract
from ottava_sidecar.resources.models import Component


def default_components() -> list[Component]:
    return [
        _component(contract.DEFAULT_STATE_STORE, "state.in-memory"),
        _component(contract.DEFAULT_PUBSUB, "pubsub.in-memory"),
        _component(contract.DEFAULT_LOCK_STORE, "lock.in-memory"),
        _component(contract.DEFAULT_CONFIGURATION_STORE, "configuration.in-memory"),
        _component(contract.DEFAULT_SEQUENCER, "sequencer.in-memory"),
        # The sidecar's environment as secrets, as `dapr init` sets up for local runs.
        _component(contract.DEFAULT_SECRET_STORE, "secretstores.local.env"),
    ]


def _component(name: str, type_name: str) -> Component:
    return Component.model_validate(
        {
            "apiVersion": contract.GROUP_VERSION,
            "kind": "Component",
            "metadata": {"name": name},
            "spec": {"type": type_name},
        }
    )
