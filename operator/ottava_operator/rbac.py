"""The RBAC that sidecars need, per namespace, kept to the least.

Sidecars run under their pod's service account. In each namespace with Components, a
Role lets them read Components, Configurations, Subscriptions and TrafficRoutes and `get` exactly the Secrets those
Components reference (`resourceNames`), and a RoleBinding grants it to the namespace's
service accounts. The cluster's built-in components widen it only when a Component of
theirs exists: `secretstores.kubernetes` adds the Secrets in its `allowedSecrets` (or
`get` on every Secret when it names none), `configuration.kubernetes` adds
ConfigMaps (read, watch, and write for Save/Delete).

It is recomputed from all the namespace's Components whenever one
changes, so a Secret no Component references any more drops out.

Service invocation needs `list` and `watch` on EndpointSlices (sidecars resolve app ids
from the slices of each app's Service): in their own namespace through that Role, and in
the other namespaces that run Ottava apps through a second Role, `ottava-sidecar-peers`,
with only that rule, bound to the service accounts of those namespaces (`id.namespace`
calls). Namespaces without Ottava apps grant nothing to anyone.
"""

import asyncio
import logging
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from ottava_sidecar import contract

from ottava_operator.validation import referenced_secrets

log = logging.getLogger(__name__)

ROLE_NAME = "ottava-sidecar"
LABELS = {"app.kubernetes.io/part-of": "ottava", "app.kubernetes.io/component": "sidecar-rbac"}
PEER_ROLE_NAME = "ottava-sidecar-peers"
PEER_LABELS = {"app.kubernetes.io/part-of": "ottava", "app.kubernetes.io/component": "sidecar-peers"}
PEER_SELECTOR = ",".join(f"{k}={v}" for k, v in PEER_LABELS.items())
# Read-only, and only what name resolution watches: never `get` (one object by name is
# not how a sidecar resolves) and nothing else of the discovery group.
ENDPOINT_SLICES_RULE: dict[str, Any] = {
    "apiGroups": ["discovery.k8s.io"],
    "resources": ["endpointslices"],
    "verbs": ["list", "watch"],
}


def role_rules(components: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = [
        {
            "apiGroups": [contract.API_GROUP],
            "resources": ["components", "configurations", "subscriptions", "trafficroutes", "resiliencies"],
            "verbs": ["get", "list", "watch"],
        },
        dict(ENDPOINT_SLICES_RULE),
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
    functions = sorted({name for c in components if _type(c) == WASM_FUNCTION and (name := _value(c, "configMap"))})
    if functions:
        # A function's module, followed by a watch on that one ConfigMap (fieldSelector by name).
        rules.append(
            {
                "apiGroups": [""],
                "resources": ["configmaps"],
                "verbs": ["get", "list", "watch"],
                "resourceNames": functions,
            }
        )
    return rules


KUBERNETES_SECRET_STORE = "secretstores.kubernetes"
WASM_FUNCTION = "function.wasm"
KUBERNETES_CONFIGURATION_STORE = "configuration.kubernetes"


def _type(component: dict[str, Any]) -> str:
    return str((component.get("spec") or {}).get("type", ""))


def _value(component: dict[str, Any], field: str) -> str:
    """A metadata field's plain value (empty when absent or given by a secretKeyRef)."""
    for item in (component.get("spec") or {}).get("metadata") or []:
        if isinstance(item, dict) and item.get("name") == field and isinstance(item.get("value"), str):
            return str(item["value"])
    return ""


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


def peer_subjects(namespace: str, namespaces: set[str]) -> list[dict[str, Any]]:
    """Who may watch `namespace`'s EndpointSlices from elsewhere: the service accounts of the
    other namespaces that run Ottava apps (their own namespace is the main Role's)."""
    return [
        {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": f"system:serviceaccounts:{other}"}
        for other in sorted(namespaces - {namespace})
    ]


def _role(name: str, namespace: str, labels: dict[str, str], rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "rules": rules,
    }


def _binding(name: str, namespace: str, labels: dict[str, str], subjects: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": subjects,
    }


class SidecarRbac:
    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.custom = client.CustomObjectsApi(api)
        self.rbac = client.RbacAuthorizationV1Api(api)
        # Component events and app pods both reconcile a namespace; one at a time, so that
        # no write is based on a Role another one has just replaced.
        self._locks: dict[str, asyncio.Lock] = {}

    async def reconcile(self, namespace: str) -> list[dict[str, Any]]:
        async with self._locks.setdefault(namespace, asyncio.Lock()):
            return await self._reconcile(namespace)

    async def _reconcile(self, namespace: str) -> list[dict[str, Any]]:
        listed = await self.custom.list_namespaced_custom_object(
            contract.API_GROUP, contract.API_VERSION, namespace, "components"
        )
        components = [c for c in listed.get("items", []) if not (c.get("metadata") or {}).get("deletionTimestamp")]
        rules = role_rules(components)
        subjects = [
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": f"system:serviceaccounts:{namespace}"}
        ]
        await self._upsert_role(namespace, _role(ROLE_NAME, namespace, LABELS, rules))
        await self._upsert_binding(namespace, _binding(ROLE_NAME, namespace, LABELS, subjects))
        log.info("sidecar RBAC reconciled", extra={"namespace": namespace, "rules": len(rules)})
        return rules

    async def reconcile_peers(self, namespaces: set[str]) -> None:
        """In each namespace that runs Ottava apps, let the others' sidecars watch its
        EndpointSlices; remove that grant wherever it is no longer needed."""
        for namespace in sorted(namespaces):
            subjects = peer_subjects(namespace, namespaces)
            if not subjects:
                continue
            async with self._locks.setdefault(namespace, asyncio.Lock()):
                role = _role(PEER_ROLE_NAME, namespace, PEER_LABELS, [dict(ENDPOINT_SLICES_RULE)])
                try:
                    await self._upsert_role(namespace, role)
                    await self._upsert_binding(namespace, _binding(PEER_ROLE_NAME, namespace, PEER_LABELS, subjects))
                except ApiException as err:  # e.g. a namespace being deleted: the others still get theirs
                    log.warning(
                        "cannot write the sidecars' peer Role",
                        extra={"namespace": namespace, "status": err.status, "reason": err.reason},
                    )
        bindings = await self.rbac.list_role_binding_for_all_namespaces(label_selector=PEER_SELECTOR)
        roles = await self.rbac.list_role_for_all_namespaces(label_selector=PEER_SELECTOR)
        present = {b.metadata.namespace for b in bindings.items} | {r.metadata.namespace for r in roles.items}
        stale = {ns for ns in present if ns not in namespaces or not peer_subjects(ns, namespaces)}
        for namespace in sorted(stale):
            for delete in (self.rbac.delete_namespaced_role_binding, self.rbac.delete_namespaced_role):
                try:
                    await delete(PEER_ROLE_NAME, namespace)
                except ApiException as err:
                    if err.status != 404:
                        raise
        log.info("sidecar peer RBAC reconciled", extra={"namespaces": len(namespaces), "removed": len(stale)})

    async def _upsert_role(self, namespace: str, body: dict[str, Any]) -> None:
        await self._upsert(
            self.rbac.read_namespaced_role,
            self.rbac.create_namespaced_role,
            self.rbac.replace_namespaced_role,
            namespace,
            body,
        )

    async def _upsert_binding(self, namespace: str, body: dict[str, Any]) -> None:
        await self._upsert(
            self.rbac.read_namespaced_role_binding,
            self.rbac.create_namespaced_role_binding,
            self.rbac.replace_namespaced_role_binding,
            namespace,
            body,
        )

    async def _upsert(self, read: Any, create: Any, replace: Any, namespace: str, body: dict[str, Any]) -> None:
        name = body["metadata"]["name"]
        try:
            current = await read(name, namespace)
        except ApiException as err:
            if err.status != 404:
                raise
            await create(namespace, body)
            return
        document = self.api.sanitize_for_serialization(current)
        labels = (document.get("metadata") or {}).get("labels") or {}
        same = all(document.get(key) == body[key] for key in body if key not in ("apiVersion", "kind", "metadata"))
        if same and all(labels.get(k) == v for k, v in body["metadata"]["labels"].items()):
            return  # nothing to write: most reconciles change nothing
        body["metadata"]["resourceVersion"] = current.metadata.resource_version
        await replace(name, namespace, body)
