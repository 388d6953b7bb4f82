"""The control plane of ``e2e/`` behaves like a real cluster where Ottava depends on it.

Each test is something a user of the cluster would notice: the version kubectl
reports, CRDs, controllers creating pods, Pod Security admission, and RBAC on a
ServiceAccount's credentials.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from . import cluster as cluster_mod
from . import credentials

pytestmark = pytest.mark.e2e


def pinned_version(module: str) -> str:
    """The version e2e/go.mod pins for ``module``, e.g. ``v1.36.3``: the one place of truth."""
    match = re.search(rf"^\s*{re.escape(module)} (v\S+)", (cluster_mod.E2E_DIR / "go.mod").read_text(), re.M)
    assert match, f"e2e/go.mod does not require {module}"
    return match.group(1)


def api_message(error: ApiException) -> str:
    """The human-readable message of an API error: what kubectl would print."""
    message: str = json.loads(error.body or "{}").get("message", "")
    return message


def test_kubectl_version_reports_the_pinned_release(cluster: cluster_mod.Cluster) -> None:
    versions = json.loads(cluster.kubectl("version", "-o", "json"))
    pinned = pinned_version("k8s.io/kubernetes")
    assert versions["serverVersion"]["gitVersion"] == pinned
    assert versions["clientVersion"]["gitVersion"] == pinned


def test_helm_is_the_pinned_release_and_reaches_the_cluster(cluster: cluster_mod.Cluster) -> None:
    helm = cluster.bin_dir / "helm"
    version = cluster_mod.run_tool(helm, "version", "--template", "{{.Version}}")
    assert version == pinned_version("helm.sh/helm/v4")
    releases = cluster_mod.run_tool(helm, "--kubeconfig", str(cluster.kubeconfig), "list", "-A", "-o", "json")
    assert isinstance(json.loads(releases), list)


CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.e2e.ottava.io}
spec:
  group: e2e.ottava.io
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [size]
            properties:
              size: {type: integer, minimum: 1}
"""


def test_crd_and_custom_resource_can_be_applied(cluster: cluster_mod.Cluster, namespace: str) -> None:
    cluster.kubectl("apply", "-f", "-", stdin=CRD)
    try:
        cluster.kubectl("wait", "--for=condition=Established", "crd/widgets.e2e.ottava.io", "--timeout=60s")
        widget = "apiVersion: e2e.ottava.io/v1\nkind: Widget\nmetadata: {name: gear}\nspec: {size: 3}\n"
        cluster.kubectl("apply", "-n", namespace, "-f", "-", stdin=widget)
        stored = json.loads(cluster.kubectl("get", "widget", "gear", "-n", namespace, "-o", "json"))
        assert stored["spec"] == {"size": 3}

        # The CRD's schema is enforced: a user gets the field and the reason.
        invalid = widget.replace("size: 3", "size: 0").replace("gear", "broken")
        with pytest.raises(subprocess.CalledProcessError) as rejected:
            cluster.kubectl("apply", "-n", namespace, "-f", "-", stdin=invalid)
        assert "spec.size" in rejected.value.stderr
        assert "should be greater than or equal to 1" in rejected.value.stderr
    finally:
        cluster.kubectl("delete", "crd", "widgets.e2e.ottava.io", "--wait=false")


def test_deployment_of_two_replicas_yields_two_pods(kube: client.ApiClient, namespace: str, ready_node: str) -> None:
    labels = {"app": "two-replicas"}
    deployment = client.V1Deployment(
        metadata=client.V1ObjectMeta(name="two-replicas"),
        spec=client.V1DeploymentSpec(
            replicas=2,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                # The node has this image (built and imported by cluster.sh up); it never pulls.
                spec=client.V1PodSpec(
                    containers=[
                        client.V1Container(name="app", image=cluster_mod.PAUSE_IMAGE, image_pull_policy="Never")
                    ],
                    termination_grace_period_seconds=1,
                ),
            ),
        ),
    )
    client.AppsV1Api(kube).create_namespaced_deployment(namespace, deployment)
    core = client.CoreV1Api(kube)

    def two_running_pods() -> list[Any] | None:
        pods = core.list_namespaced_pod(namespace, label_selector="app=two-replicas").items
        return pods if len(pods) == 2 and all(pod.status.phase == "Running" for pod in pods) else None

    pods = cluster_mod.poll(two_running_pods, timeout=60, what="the Deployment's 2 pods to run")
    # Created by the controllers (Deployment -> ReplicaSet -> Pods), not by us,
    # bound to the node by the scheduler and run there by the kubelet.
    owners = {ref.kind for pod in pods for ref in pod.metadata.owner_references or []}
    assert owners == {"ReplicaSet"}
    assert {pod.spec.node_name for pod in pods} == {ready_node}


def privileged_pod(name: str) -> client.V1Pod:
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1PodSpec(
            containers=[
                client.V1Container(
                    name="app",
                    image="ottava-e2e/app:unused",
                    security_context=client.V1SecurityContext(privileged=True),
                )
            ]
        ),
    )


def restricted_pod(name: str) -> client.V1Pod:
    """A pod that meets the "restricted" Pod Security Standard."""
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1PodSpec(
            security_context=client.V1PodSecurityContext(
                run_as_non_root=True, seccomp_profile=client.V1SeccompProfile(type="RuntimeDefault")
            ),
            containers=[
                client.V1Container(
                    name="app",
                    image="ottava-e2e/app:unused",
                    security_context=client.V1SecurityContext(
                        allow_privilege_escalation=False, capabilities=client.V1Capabilities(drop=["ALL"])
                    ),
                )
            ],
        ),
    )


def test_restricted_namespace_rejects_a_privileged_pod(kube: client.ApiClient, restricted_namespace: str) -> None:
    core = client.CoreV1Api(kube)
    with pytest.raises(ApiException) as rejected:
        core.create_namespaced_pod(restricted_namespace, privileged_pod("privileged"))
    assert rejected.value.status == 403
    message = api_message(rejected.value)
    assert 'violates PodSecurity "restricted:latest"' in message
    assert 'privileged (container "app" must not set securityContext.privileged=true)' in message

    # The same namespace admits a pod that meets the standard: the rejection
    # above is Pod Security at work, not a namespace that refuses everything.
    core.create_namespaced_pod(restricted_namespace, restricted_pod("compliant"))
    assert core.read_namespaced_pod("compliant", restricted_namespace).metadata.name == "compliant"


def test_service_account_kubeconfig_gets_only_what_its_role_grants(
    cluster: cluster_mod.Cluster, kube: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    core = client.CoreV1Api(kube)
    rbac = client.RbacAuthorizationV1Api(kube)
    core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="reader"))
    )
    rbac.create_namespaced_role(
        namespace,
        client.V1Role(
            metadata=client.V1ObjectMeta(name="configmap-reader"),
            rules=[client.V1PolicyRule(api_groups=[""], resources=["configmaps"], verbs=["get", "list"])],
        ),
    )
    rbac.create_namespaced_role_binding(
        namespace,
        client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name="reader-reads-configmaps"),
            role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name="configmap-reader"),
            subjects=[client.RbacV1Subject(kind="ServiceAccount", name="reader", namespace=namespace)],
        ),
    )
    core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="settings"), data={"colour": "blue"})
    )
    kubeconfig = credentials.service_account_kubeconfig(kube, namespace, "reader", tmp_path / "reader.kubeconfig")

    # What the Role grants works (polled: the RBAC authorizer sees new roles
    # through an informer, a moment after they are stored).
    whoami = json.loads(cluster.kubectl("auth", "whoami", "-o", "json", kubeconfig=kubeconfig))
    assert whoami["status"]["userInfo"]["username"] == f"system:serviceaccount:{namespace}:reader"
    cluster_mod.poll(
        lambda: cluster.kubectl("get", "configmap", "settings", "-o", "name", kubeconfig=kubeconfig),
        timeout=30,
        what="the Role to allow reading configmaps",
    )

    # What it does not grant is denied, through the Python client as through kubectl.
    sa_api = cluster.new_api_client(kubeconfig)
    try:
        sa_core = client.CoreV1Api(sa_api)
        assert sa_core.read_namespaced_config_map("settings", namespace).data == {"colour": "blue"}
        assert "settings" in {cm.metadata.name for cm in sa_core.list_namespaced_config_map(namespace).items}
        with pytest.raises(ApiException) as denied:
            sa_core.create_namespaced_config_map(
                namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="nope"), data={"a": "b"})
            )
        assert denied.value.status == 403
        assert 'cannot create resource "configmaps"' in api_message(denied.value)
        with pytest.raises(ApiException) as denied_secrets:
            sa_core.list_namespaced_secret(namespace)
        assert denied_secrets.value.status == 403
    finally:
        sa_api.close()
    with pytest.raises(subprocess.CalledProcessError) as kubectl_denied:
        cluster.kubectl("get", "pods", kubeconfig=kubeconfig)
    assert 'cannot list resource "pods"' in kubectl_denied.value.stderr
