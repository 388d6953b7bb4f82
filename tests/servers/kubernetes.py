"""A namespace on the e2e control plane where sidecars hold exactly the operator's Role.

The cluster's built-in components (`secretstores.kubernetes`, `configuration.kubernetes`)
talk to a real kube-apiserver here, under a ServiceAccount's token and the Role that the
operator computes for their Components (`ottava_operator.rbac.role_rules`), never as
admin — so a rule the operator forgets to grant fails these tests.
"""

import base64
import json
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from ottava_operator import rbac

from tests.e2e import cluster as cluster_mod
from tests.e2e import credentials

SERVICE_ACCOUNT = "default"
# The conformance suites' secret store serves these (one never created: a missing Secret).
CONFORMANCE_SECRETS = "db-password,api-key,no-such-secret"
CONFORMANCE_COMPONENTS: list[tuple[str, dict[str, str]]] = [
    ("secretstores.kubernetes", {"allowedSecrets": CONFORMANCE_SECRETS}),
    ("configuration.kubernetes", {}),
]
# The first test to need the control plane may pay for building it (see tests/e2e/conftest.py).
COLD_START_TIMEOUT = 3600


@dataclass
class KubernetesNamespace:
    cluster: cluster_mod.Cluster
    admin: client.ApiClient
    name: str
    kubeconfig: Path  # the namespace's `default` ServiceAccount, as a pod would have it

    def put_secret(self, name: str, data: dict[str, str]) -> None:
        put_secret(self.admin, self.name, name, data)

    def delete_secret(self, name: str) -> None:
        delete_secret(self.admin, self.name, name)


def put_secret(admin: client.ApiClient, namespace: str, name: str, data: dict[str, str]) -> None:
    """Create or replace a Secret, as `kubectl apply` would (admin credentials)."""
    core = client.CoreV1Api(admin)
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    body = client.V1Secret(metadata=client.V1ObjectMeta(name=name), data=encoded)
    try:
        core.create_namespaced_secret(namespace, body)
    except ApiException as err:
        if err.status != 409:
            raise
        core.replace_namespaced_secret(name, namespace, body)


def delete_secret(admin: client.ApiClient, namespace: str, name: str) -> None:
    try:
        client.CoreV1Api(admin).delete_namespaced_secret(name, namespace)
    except ApiException as err:
        if err.status != 404:
            raise


def unreachable_kubeconfig(port: int) -> str:
    """A kubeconfig naming an apiserver on a loopback port where nothing listens."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "nowhere", "cluster": {"server": f"https://127.0.0.1:{port}", "insecure-skip-tls-verify": True}}
        ],
        "users": [{"name": "nobody", "user": {"token": "not-a-token"}}],
        "contexts": [{"name": "nowhere", "context": {"cluster": "nowhere", "user": "nobody", "namespace": "nowhere"}}],
        "current-context": "nowhere",
    }
    with tempfile.NamedTemporaryFile("w", suffix=".kubeconfig", delete=False) as file:
        json.dump(config, file)
    return file.name


def component(type_name: str, metadata: dict[str, str] | None = None) -> dict[str, Any]:
    """A Component as the operator sees it when computing the sidecar Role."""
    return {
        "apiVersion": "ottava.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": type_name.replace(".", "-")},
        "spec": {
            "type": type_name,
            "version": "v1",
            "metadata": [{"name": k, "value": v} for k, v in (metadata or {}).items()],
        },
    }


def grant_operator_role(
    admin: client.ApiClient, namespace: str, components: list[dict[str, Any]], *, name: str = rbac.ROLE_NAME
) -> list[dict[str, Any]]:
    """Create the Role and RoleBinding the operator would create for `components`."""
    rules = rbac.role_rules(components)
    role: Any = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": name},
        "rules": rules,
    }
    binding: Any = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [
            {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Group",
                "name": f"system:serviceaccounts:{namespace}",
            }
        ],
    }
    api = client.RbacAuthorizationV1Api(admin)
    api.create_namespaced_role(namespace, role)
    api.create_namespaced_role_binding(namespace, binding)
    return rules


def wait_until_allowed(admin: client.ApiClient, namespace: str, verb: str, resource: str, name: str = "") -> None:
    """The RBAC authorizer learns of new Roles through an informer: wait (with a deadline) until it does."""
    user = f"system:serviceaccount:{namespace}:{SERVICE_ACCOUNT}"
    review: Any = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": user,
            "groups": ["system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"],
            "resourceAttributes": {"namespace": namespace, "verb": verb, "resource": resource, "name": name},
        },
    }
    api = client.AuthorizationV1Api(admin)
    cluster_mod.poll(
        lambda: api.create_subject_access_review(review).status.allowed,
        timeout=30,
        what=f"{user} to be allowed to {verb} {resource}",
    )


def open_namespace(
    running: cluster_mod.Cluster, folder: Path, components: list[dict[str, Any]]
) -> Iterator[KubernetesNamespace]:
    """A fresh namespace with the operator's Role for `components`; deleted afterwards."""
    admin = running.new_api_client()
    core = client.CoreV1Api(admin)
    name = f"conformance-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    try:
        cluster_mod.poll(
            lambda: core.read_namespaced_service_account(SERVICE_ACCOUNT, name),
            timeout=60,
            what=f"ServiceAccount {name}/{SERVICE_ACCOUNT}",
        )
        rules = grant_operator_role(admin, name, components)
        for rule in rules:
            if rule["apiGroups"] == [""]:
                names = rule.get("resourceNames") or [""]
                wait_until_allowed(admin, name, rule["verbs"][0], rule["resources"][0], names[0])
        kubeconfig = credentials.service_account_kubeconfig(admin, name, SERVICE_ACCOUNT, folder / f"{name}.kubeconfig")
        yield KubernetesNamespace(running, admin, name, kubeconfig)
    finally:
        core.delete_namespace(name)
        admin.close()
