"""Issue 4 on the real control plane: install with Helm, apply Components, annotate a Deployment.

The operator runs with its chart's ServiceAccount credentials, and everything is driven
with kubectl as the README tells users.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from . import cluster as cluster_mod
from . import incluster, kubelet

pytestmark = pytest.mark.e2e


@pytest.fixture
def operator(ottava_operator: incluster.InstalledOttava) -> incluster.InstalledOttava:
    return ottava_operator


def apply(cluster: cluster_mod.Cluster, namespace: str, manifest: str) -> subprocess.CompletedProcess[str]:
    """`kubectl apply -f -` as a user runs it; the result, successful or not."""
    return subprocess.run(
        [
            str(cluster.bin_dir / "kubectl"),
            "--kubeconfig",
            str(cluster.kubeconfig),
            "apply",
            "-n",
            namespace,
            "-f",
            "-",
        ],
        input=manifest,
        capture_output=True,
        text=True,
        timeout=60,
    )


def component(name: str, type_: str, metadata: list[dict[str, Any]] | None = None) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "ottava.io/v1alpha1",
            "kind": "Component",
            "metadata": {"name": name},
            "spec": {"type": type_, "version": "v1", "metadata": metadata or []},
        }
    )


def deployment(name: str, annotations: dict[str, str]) -> str:
    restricted = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "runAsUser": 1000,
    }
    return yaml.safe_dump(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}, "annotations": annotations},
                    "spec": {
                        "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
                        # Never pulled (the node cannot pull): these pods are about admission.
                        "containers": [
                            {
                                "name": "app",
                                "image": f"example/{name}:1",
                                "imagePullPolicy": "Never",
                                "securityContext": restricted,
                            }
                        ],
                    },
                },
            },
        }
    )


def pod_of(kube: client.ApiClient, namespace: str, app: str) -> client.V1Pod:
    core = client.CoreV1Api(kube)

    def listed() -> client.V1Pod | None:
        pods = core.list_namespaced_pod(namespace, label_selector=f"app={app}").items
        return pods[0] if pods else None

    pod: client.V1Pod = cluster_mod.poll(listed, timeout=60, what=f"a pod of Deployment {namespace}/{app}")
    return pod


def test_valid_component_is_accepted_and_shows_ready(
    operator: incluster.InstalledOttava, cluster: cluster_mod.Cluster, namespace: str
) -> None:
    result = apply(cluster, namespace, component("statestore", "state.in-memory"))
    assert result.returncode == 0, result.stderr

    def ready() -> bool:
        out = cluster.kubectl("get", "components", "-n", namespace, "statestore", "--no-headers")
        return bool(re.search(r"^statestore\s+state\.in-memory\s+v1\s+True\s", out))

    cluster_mod.poll(ready, timeout=30, what="READY True in `kubectl get components`")


def test_bad_components_are_refused_naming_the_field(
    operator: incluster.InstalledOttava, cluster: cluster_mod.Cluster, namespace: str
) -> None:
    unknown = apply(cluster, namespace, component("bad", "state.nosuchdb"))
    assert unknown.returncode != 0
    assert "spec.type" in unknown.stderr and "state.nosuchdb" in unknown.stderr

    missing = apply(cluster, namespace, component("vault", "secretstores.local.file"))
    assert missing.returncode != 0
    assert "spec.metadata.secretsFile: required field is missing" in missing.stderr

    both = component("orders", "state.in-memory", [{"name": "keyPrefix", "value": "x", "secretKeyRef": {"name": "s"}}])
    refused = apply(cluster, namespace, both)
    assert refused.returncode != 0
    assert "secretKeyRef" in refused.stderr


def test_annotated_deployment_gets_the_sidecar_in_a_restricted_namespace(
    operator: incluster.InstalledOttava, cluster: cluster_mod.Cluster, kube: client.ApiClient, restricted_namespace: str
) -> None:
    annotations = {"ottava.io/enabled": "true", "ottava.io/app-port": "8080", "ottava.io/config": "tracing"}
    result = apply(cluster, restricted_namespace, deployment("checkout", annotations))
    assert result.returncode == 0, result.stderr
    pod = pod_of(kube, restricted_namespace, "checkout")

    assert pod.metadata.labels["ottava.io/sidecar-injected"] == "true"
    assert pod.metadata.labels["ottava.io/app-id"] == "checkout"
    containers = {c.name: c for c in pod.spec.containers}
    # The control plane is 1.36: the sidecar is native, the first init container, and the
    # kubelet starts the app only once its startupProbe passes.
    assert [c.name for c in pod.spec.init_containers] == ["ottava-sidecar"]
    assert list(containers) == ["app"]
    sidecar = pod.spec.init_containers[0]
    assert sidecar.restart_policy == "Always"
    assert sidecar.startup_probe.http_get.path == "/actuator/health/liveness"
    assert sidecar.readiness_probe.http_get.path == "/actuator/health/readiness"
    assert sidecar.liveness_probe.http_get.path == "/actuator/health/liveness"
    assert sidecar.readiness_probe.http_get.port == 3500
    env = {e.name: e for e in sidecar.env}
    assert env["OTTAVA_APP_ID"].value == "checkout"
    assert env["OTTAVA_APP_PORT"].value == "8080"
    assert env["OTTAVA_CONFIG"].value == "tracing"
    assert env["POD_NAME"].value_from.field_ref.field_path == "metadata.name"
    assert env["NAMESPACE"].value_from.field_ref.field_path == "metadata.namespace"
    app_env = {e.name: e.value for e in containers["app"].env}
    assert app_env == {"DAPR_GRPC_PORT": "50001", "DAPR_HTTP_PORT": "3500", "OTTAVA_GRPC_PORT": "50001"}


def test_pod_without_the_annotation_is_untouched_and_never_sent_to_the_injector(
    operator: incluster.InstalledOttava, cluster: cluster_mod.Cluster, kube: client.ApiClient, namespace: str
) -> None:
    result = apply(cluster, namespace, deployment("plain", {"team": "web"}))
    assert result.returncode == 0, result.stderr
    pod = pod_of(kube, namespace, "plain")
    assert [c.name for c in pod.spec.containers] == ["app"]
    assert kubelet.sidecar_container(pod) is None
    assert "ottava.io/sidecar-injected" not in (pod.metadata.labels or {})
    # The CEL matchCondition keeps the apiserver from calling the webhook at all: the
    # operator logs every call it gets, and none names this namespace.
    calls = [json.loads(line) for line in operator.log().splitlines() if '"injector called"' in line]
    assert calls, "the operator logged no injector call at all; the earlier test should have made one"
    assert not [c for c in calls if c.get("namespace") == namespace]


def test_bad_annotation_is_a_warning_and_an_event_not_a_denial(
    operator: incluster.InstalledOttava, cluster: cluster_mod.Cluster, kube: client.ApiClient, namespace: str
) -> None:
    annotations = {"ottava.io/enabled": "true", "ottava.io/app-port": "eighty"}
    assert apply(cluster, namespace, deployment("typo", annotations)).returncode == 0
    pod = pod_of(kube, namespace, "typo")
    assert kubelet.sidecar_container(pod) is not None

    def event() -> str | None:
        events = client.CoreV1Api(kube).list_namespaced_event(namespace).items
        return next((e.message for e in events if e.reason == "BadOttavaAnnotation"), None)

    message = cluster_mod.poll(event, timeout=30, what="a BadOttavaAnnotation Event")
    assert "ottava.io/app-port='eighty'" in message


def test_role_follows_the_secrets_components_reference(
    operator: incluster.InstalledOttava, cluster: cluster_mod.Cluster, kube: client.ApiClient, namespace: str
) -> None:
    ref = [{"name": "keyPrefix", "secretKeyRef": {"name": "prefix-secret", "key": "prefix"}}]
    assert apply(cluster, namespace, component("statestore", "state.in-memory", ref)).returncode == 0
    rbac = client.RbacAuthorizationV1Api(kube)

    def secret_rule() -> list[str] | None:
        role = rbac.read_namespaced_role("ottava-sidecar", namespace)
        for rule in role.rules:
            if rule.resources == ["secrets"]:
                return list(rule.resource_names or [])
        return None

    assert cluster_mod.poll(secret_rule, timeout=30, what="the sidecar Role to grant the Secret") == ["prefix-secret"]
    cluster.kubectl("delete", "component", "statestore", "-n", namespace)
    cluster_mod.poll(lambda: secret_rule() is None, timeout=30, what="the Secret to leave the sidecar Role")


def test_chart_lints_and_renders_manifests_the_apiserver_accepts(cluster: cluster_mod.Cluster, tmp_path: Path) -> None:
    helm = cluster.bin_dir / "helm"
    lint = cluster_mod.run_tool(helm, "lint", str(incluster.CHART), "--strict")
    assert "0 chart(s) failed" in lint
    rendered = cluster_mod.run_tool(helm, "template", "lint-check", str(incluster.CHART), "--namespace", "lint-check")
    # Server-side dry run: every object is checked against the apiserver's own schemas.
    out = cluster.kubectl(
        "apply", "--dry-run=server", "-f", "-", stdin=rendered.replace("namespace: lint-check", "namespace: default")
    )
    assert "deployment.apps/lint-check-ottava-operator created (server dry run)" in out
    bad = subprocess.run(
        [str(helm), "template", "x", str(incluster.CHART), "--set", "webhook.failurePolicy=Sometimes"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode != 0
    assert "failurePolicy" in bad.stderr


def test_with_the_operator_stopped_pods_are_still_created_without_sidecar(
    operator: incluster.InstalledOttava, cluster: cluster_mod.Cluster, kube: client.ApiClient, namespace: str
) -> None:
    operator.stop()
    try:
        annotations = {"ottava.io/enabled": "true"}
        assert apply(cluster, namespace, deployment("failopen", annotations)).returncode == 0
        pod = pod_of(kube, namespace, "failopen")
        assert [c.name for c in pod.spec.containers] == ["app"]
        assert kubelet.sidecar_container(pod) is None
    finally:
        # The session's other tests need it back.
        operator.start()
