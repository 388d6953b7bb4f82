"""The cluster's built-in components on the real control plane, under the sidecar's own Role.

`secretstores.kubernetes` and `configuration.kubernetes` run with the namespace's
`default` ServiceAccount token and exactly the Role the operator computes for their
Components — first directly, then inside a real `ottava run` sidecar that a Dapr SDK
client talks to.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from dapr.clients import DaprClient
from kubernetes import client
from ottava_sidecar.components import catalogue
from ottava_sidecar.components.configuration.base import ConfigurationItem, ConfigurationQuery, ConfigurationWatch
from ottava_sidecar.components.configuration.kubernetes import KubernetesConfigurationStore
from ottava_sidecar.components.errors import AccessDeniedError
from ottava_sidecar.components.secretstores.base import SecretNotFoundError
from ottava_sidecar.components.secretstores.kubernetes import KubernetesSecretStore

from tests.conftest import SidecarFactory
from tests.servers import kubernetes as kube_setup

from . import cluster as cluster_mod
from . import credentials, incluster

pytestmark = pytest.mark.e2e

NOTIFY_TIMEOUT = 10.0


@pytest.fixture
def sidecar_kubeconfig(kube: client.ApiClient, namespace: str, tmp_path: Path) -> Path:
    return credentials.service_account_kubeconfig(kube, namespace, "default", tmp_path / "sidecar.kubeconfig")


def grant(kube: client.ApiClient, namespace: str, *components: dict[str, Any]) -> None:
    """The Role the operator would give the namespace's sidecars for these Components."""
    rules = kube_setup.grant_operator_role(kube, namespace, list(components))
    for rule in rules:
        if rule["apiGroups"] == [""]:
            names = rule.get("resourceNames") or [""]
            kube_setup.wait_until_allowed(kube, namespace, rule["verbs"][0], rule["resources"][0], names[0])


def configmap(name: str, data: dict[str, str], **labels: str) -> client.V1ConfigMap:
    return client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name=name, labels={"ottava.io/config-store": "configstore", **labels}),
        data=data,
    )


class Components:
    def __init__(self, kubeconfig: Path, namespace: str) -> None:
        self.kubeconfig, self.namespace = kubeconfig, namespace
        self.opened: list[Any] = []

    async def create(self, type_name: str, name: str, app_id: str = "shop", **metadata: str) -> Any:
        settings = {"kubeconfigPath": str(self.kubeconfig), "namespace": self.namespace, **metadata}
        component = catalogue.lookup(type_name).create(name, settings, app_id=app_id)
        await component.init()
        self.opened.append(component)
        return component


@pytest.fixture
async def components(sidecar_kubeconfig: Path, namespace: str) -> AsyncIterator[Components]:
    made = Components(sidecar_kubeconfig, namespace)
    yield made
    for component in made.opened:
        await component.close()


async def next_batch(watch: ConfigurationWatch) -> list[ConfigurationItem]:
    return await asyncio.wait_for(anext(aiter(watch)), NOTIFY_TIMEOUT)


async def test_secret_store_reads_granted_secrets_and_names_the_role_for_others(
    kube: client.ApiClient, namespace: str, components: Components
) -> None:
    kube_setup.put_secret(kube, namespace, "db-auth", {"username": "shop", "password": "s3cr3t"})
    kube_setup.put_secret(kube, namespace, "payroll", {"iban": "never-to-be-read"})
    allow_listed = kube_setup.component("secretstores.kubernetes", {"allowedSecrets": "db-auth"})
    grant(kube, namespace, allow_listed)

    store = await components.create("secretstores.kubernetes", "vault", allowedSecrets="db-auth")
    assert isinstance(store, KubernetesSecretStore)
    assert await store.get("db-auth") == {"username": "shop", "password": "s3cr3t"}
    assert await store.bulk_get() == {"db-auth": {"username": "shop", "password": "s3cr3t"}}
    with pytest.raises(AccessDeniedError, match="'payroll' is not in allowedSecrets of secret store vault"):
        await store.get("payroll")

    # A store without an allow-list asks the apiserver, and the Role (db-auth only) refuses.
    unrestricted = await components.create("secretstores.kubernetes", "cluster-secrets")
    with pytest.raises(AccessDeniedError) as refused:
        await unrestricted.get("payroll")
    message = str(refused.value)
    assert "the sidecar's Role does not allow it to get Secret 'payroll'" in message
    assert f"namespace {namespace}" in message
    with pytest.raises(AccessDeniedError, match="does not allow it to list Secrets"):
        await unrestricted.bulk_get()

    kube_setup.delete_secret(kube, namespace, "db-auth")
    with pytest.raises(SecretNotFoundError, match="'db-auth' not found in secret store vault"):
        await store.get("db-auth")


async def test_configuration_items_come_from_configmap_labels(
    kube: client.ApiClient, namespace: str, components: Components
) -> None:
    core = client.CoreV1Api(kube)
    grant(kube, namespace, kube_setup.component("configuration.kubernetes"))
    group = {"ottava.io/config-group": "checkout", "ottava.io/config-label": "prod"}
    core.create_namespaced_config_map(namespace, configmap("shared", {"timeout": "30s", "retries": "3"}, **group))
    core.create_namespaced_config_map(
        namespace, configmap("shop-own", {"timeout": "10s"}, **group, **{"ottava.io/app-id": "shop"})
    )
    core.create_namespaced_config_map(
        namespace,
        configmap("shop-staging", {"timeout": "1s"}, **{**group, "ottava.io/config-label": "staging"}),
    )
    core.create_namespaced_config_map(namespace, configmap("defaults", {"colour": "blue"}))
    core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="not-configuration"), data={"colour": "red"})
    )

    store = await components.create("configuration.kubernetes", "configstore")
    assert isinstance(store, KubernetesConfigurationStore)

    def summary(items: list[ConfigurationItem]) -> dict[str, tuple[str, str, str]]:
        return {i.key: (i.content, i.group, i.label) for i in items}

    # The app's own ConfigMap overrides the shared one; the shared one fills the rest.
    assert summary(await store.get(ConfigurationQuery("shop", "checkout", "prod"))) == {
        "timeout": ("10s", "checkout", "prod"),
        "retries": ("3", "checkout", "prod"),
    }
    assert summary(await store.get(ConfigurationQuery("cart", "checkout", "prod"))) == {
        "timeout": ("30s", "checkout", "prod"),
        "retries": ("3", "checkout", "prod"),
    }
    assert summary(await store.get(ConfigurationQuery("shop", "checkout", "staging", ("timeout",)))) == {
        "timeout": ("1s", "checkout", "staging")
    }
    # No group/label labels: the defaults. A ConfigMap without the store label is not configuration.
    assert summary(await store.get(ConfigurationQuery("shop"))) == {"colour": ("blue", "default", "default")}

    # Saves land in the app's own ConfigMap, which kubectl shows like any other.
    await store.save("shop", [ConfigurationItem("retries", "5", "checkout", "prod", tags={"by": "app"})])
    assert core.read_namespaced_config_map("shop-own", namespace).data == {"timeout": "10s", "retries": "5"}
    assert core.read_namespaced_config_map("shared", namespace).data == {"timeout": "30s", "retries": "3"}
    (retries,) = await store.get(ConfigurationQuery("shop", "checkout", "prod", ("retries",)))
    assert (retries.content, retries.tags) == ("5", {"by": "app"})


async def test_subscription_follows_configmap_edits_and_deletion(
    kube: client.ApiClient, namespace: str, components: Components
) -> None:
    core = client.CoreV1Api(kube)
    grant(kube, namespace, kube_setup.component("configuration.kubernetes"))
    labels = {"ottava.io/app-id": "shop", "ottava.io/config-group": "checkout"}
    core.create_namespaced_config_map(namespace, configmap("flags", {"dark-mode": "off", "beta": "no"}, **labels))
    store = await components.create("configuration.kubernetes", "configstore")
    watch = await store.subscribe(ConfigurationQuery("shop", "checkout"))
    try:
        # A user edits the ConfigMap (kubectl edit): only the changed key is reported.
        edited = core.read_namespaced_config_map("flags", namespace)
        edited.data["dark-mode"] = "on"
        core.replace_namespaced_config_map("flags", namespace, edited)
        (change,) = await next_batch(watch)
        assert (change.key, change.content, change.group, change.deleted) == ("dark-mode", "on", "checkout", False)

        # … and deletes it: every key it held is reported deleted, with empty content.
        core.delete_namespaced_config_map("flags", namespace)
        removed = await next_batch(watch)
        assert sorted((i.key, i.content, i.deleted) for i in removed) == [
            ("beta", "", True),
            ("dark-mode", "", True),
        ]
        assert await store.get(ConfigurationQuery("shop", "checkout")) == []
    finally:
        watch.close()


def resources(namespace: str) -> dict[str, str]:
    def component(name: str, type_name: str, metadata: dict[str, str]) -> str:
        return yaml.safe_dump(
            {
                "apiVersion": "ottava.io/v1alpha1",
                "kind": "Component",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {
                    "type": type_name,
                    "version": "v1",
                    "metadata": [{"name": k, "value": v} for k, v in metadata.items()],
                },
            }
        )

    return {
        "secrets.yaml": component("kubernetes", "secretstores.kubernetes", {"allowedSecrets": "db-auth"}),
        "configuration.yaml": component("configstore", "configuration.kubernetes", {}),
    }


def test_an_ottava_run_sidecar_serves_secrets_and_configuration_from_the_cluster(
    kube: client.ApiClient,
    namespace: str,
    sidecar_kubeconfig: Path,
    sidecars: SidecarFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kube_setup.put_secret(kube, namespace, "db-auth", {"password": "s3cr3t"})
    kube_setup.put_secret(kube, namespace, "payroll", {"iban": "never-to-be-read"})
    core = client.CoreV1Api(kube)
    core.create_namespaced_config_map(namespace, configmap("settings", {"currency": "EUR"}))
    prod = {"ottava.io/config-group": "checkout", "ottava.io/config-label": "prod"}
    core.create_namespaced_config_map(namespace, configmap("checkout-prod", {"timeout": "30s"}, **prod))
    grant(
        kube,
        namespace,
        kube_setup.component("secretstores.kubernetes", {"allowedSecrets": "db-auth"}),
        kube_setup.component("configuration.kubernetes"),
    )

    sidecar = sidecars.start(
        "--app-id",
        "shop",
        resources=resources(namespace),
        env={"KUBECONFIG": str(sidecar_kubeconfig), "NAMESPACE": namespace},
    )
    assert sidecar.status == "UP", sidecar.log()
    monkeypatch.setenv("DAPR_GRPC_PORT", str(sidecar.grpc_port))
    monkeypatch.setenv("DAPR_HTTP_PORT", str(sidecar.http_port))
    with DaprClient() as dapr:
        assert dapr.get_secret("kubernetes", "db-auth").secret == {"password": "s3cr3t"}
        with pytest.raises(grpc.RpcError) as refused:
            dapr.get_secret("kubernetes", "payroll")
        details = str(refused.value.details())
        assert "payroll" in details and "allowedSecrets" in details

        config = dapr.get_configuration("configstore", ["currency"])
        assert config.items["currency"].value == "EUR"
        checkout = dapr.get_configuration("configstore", ["timeout"], {"group": "checkout", "label": "prod"})
        assert checkout.items["timeout"].value == "30s"


def test_the_operator_grants_sidecars_what_the_cluster_components_need(
    ottava_operator: incluster.InstalledOttava, cluster: cluster_mod.Cluster, kube: client.ApiClient, namespace: str
) -> None:
    """The operator (as its chart's ServiceAccount) may hand these rules out: Kubernetes
    refuses a Role granting more than its creator holds."""
    manifests = [
        kube_setup.component("configuration.kubernetes"),
        kube_setup.component("secretstores.kubernetes", {"allowedSecrets": "db-auth,api-key"}),
    ]
    cluster.kubectl("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump_all(manifests))
    rbac = client.RbacAuthorizationV1Api(kube)

    def rules() -> dict[str, tuple[list[str], list[str]]] | None:
        role = rbac.read_namespaced_role("ottava-sidecar", namespace)
        found = {r.resources[0]: (sorted(r.verbs), sorted(r.resource_names or [])) for r in role.rules}
        return found if {"configmaps", "secrets"} <= found.keys() else None

    granted = cluster_mod.poll(rules, timeout=30, what="the sidecar Role to grant ConfigMaps and the allowed Secrets")
    assert granted["secrets"] == (["get"], ["api-key", "db-auth"])
    assert granted["configmaps"][0] == sorted(["get", "list", "watch", "create", "update", "patch", "delete"])
