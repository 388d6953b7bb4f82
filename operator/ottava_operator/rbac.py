"""The RBAC that sidecars need, per namespace, kept to the least.

Sidecars run under their pod's service account. In each namespace with Components, a
Role lets them read Components and Configurations and `get` exactly the Secrets those
Components reference (`resourceNames`), and a RoleBinding grants it to the namespace's
service accounts. The cluster's built-in components widen it only when a Component of
theirs exists: `secretstores.kubernetes` adds the Secrets in its `allowedSecrets` (or
`get` on every Secret when it names none), `configuration.kubernetes` adds
ConfigMaps (read, watch, and write for Save/Delete).

It is recomputed from all the namespace's Components whenever one
changes, so a Secret no Component references any more drops out.
"""

import logging
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from ottava_sidecar import contract

from ottava_operator.validation import referenced_secrets

log = logging.getLogger(__name__)

ROLE_NAME = "ottava-sidecar"
LABELS = {"app.kubernetes.io/part-of": "ottava", "app.kubernetes.io/component": "sidecar-rbac"}


def role_rules(components: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = [
        {
            "apiGroups": [contract.API_GROUP],
            "resources": ["components", "configurations"],
            "verbs": ["get", "list", "watch"],
        }
    ]
    secrets = sorted(set().union(*(referenced_secrets(c) for c in components)) if components else set())
    stores = [c for c in components if _type(c) == KUBERNETES_SECRET_STORE]
    allow_lists = [_allowed_secrets(c) for c in stores]
    if any(names is None for names in allow_lists):
        # A Kubernetes secret store without allowedSecrets may read any Secret of the
        # namespace by name: the administrator opted into that by creating it. Never
        # `list` (the operator does not hold it, and would not hand it out): bulk reads
        # need allowedSecrets, or a Role the administrator adds.
        rules.append({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]})
    else:
        secrets = sorted(set(secrets).union(*(names for names in allow_lists if names)))
        if secrets:
            # Never emit an empty resourceNames: that would mean every Secret.
            rules.append({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "resourceNames": secrets})
    if any(_type(c) == KUBERNETES_CONFIGURATION_STORE for c in components):
        # Read and follow the store's ConfigMaps, and write them for Save and Delete.
        rules.append(
            {
                "apiGroups": [""],
                "resources": ["configmaps"],
                "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"],
            }
        )
    return rules


KUBERNETES_SECRET_STORE = "secretstores.kubernetes"
KUBERNETES_CONFIGURATION_STORE = "configuration.kubernetes"


def _type(component: dict[str, Any]) -> str:
    return str((component.get("spec") or {}).get("type", ""))


def _allowed_secrets(component: dict[str, Any]) -> set[str] | None:
    """The Secret names in a Kubernetes secret store's `allowedSecrets`; None when it has none
    (every Secret). A list that comes from a secretKeyRef is unknown here: nothing is granted."""
    for item in (component.get("spec") or {}).get("metadata") or []:
        if isinstance(item, dict) and item.get("name") == "allowedSecrets":
            value = item.get("value")
            if not isinstance(value, str):
                return set()
            names = {name.strip() for name in value.split(",") if name.strip()}
            return names or None
    return None


class SidecarRbac:
    def __init__(self, api: client.ApiClient) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.rbac = client.RbacAuthorizationV1Api(api)

    async def reconcile(self, namespace: str) -> list[dict[str, Any]]:
        listed = await self.custom.list_namespaced_custom_object(
            contract.API_GROUP, contract.API_VERSION, namespace, "components"
        )
        components = [c for c in listed.get("items", []) if not (c.get("metadata") or {}).get("deletionTimestamp")]
        rules = role_rules(components)
        role = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": ROLE_NAME, "namespace": namespace, "labels": LABELS},
            "rules": rules,
        }
        binding = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": ROLE_NAME, "namespace": namespace, "labels": LABELS},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": ROLE_NAME},
            "subjects": [
                {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Group",
                    "name": f"system:serviceaccounts:{namespace}",
                }
            ],
        }
        await self._upsert(
            self.rbac.read_namespaced_role,
            self.rbac.create_namespaced_role,
            self.rbac.replace_namespaced_role,
            namespace,
            role,
        )
        await self._upsert(
            self.rbac.read_namespaced_role_binding,
            self.rbac.create_namespaced_role_binding,
            self.rbac.replace_namespaced_role_binding,
            namespace,
            binding,
        )
        log.info("sidecar RBAC reconciled", extra={"namespace": namespace, "rules": len(rules)})
        return rules

    @staticmethod
    async def _upsert(read: Any, create: Any, replace: Any, namespace: str, body: dict[str, Any]) -> None:
        name = body["metadata"]["name"]
        try:
            current = await read(name, namespace)
        except ApiException as err:
            if err.status != 404:
                raise
            await create(namespace, body)
            return
        body["metadata"]["resourceVersion"] = current.metadata.resource_version
        await replace(name, namespace, body)
