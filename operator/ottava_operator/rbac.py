"""The RBAC that sidecars need, per namespace, kept to the least.

Sidecars run under their pod's service account. In each namespace with Components, a
Role lets them read Components and Configurations and `get` exactly the Secrets those
Components reference (`resourceNames`), and a RoleBinding grants it to the namespace's
service accounts. It is recomputed from all the namespace's Components whenever one
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
    if secrets:
        # Never emit an empty resourceNames: that would mean every Secret.
        rules.append({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "resourceNames": secrets})
    return rules


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
