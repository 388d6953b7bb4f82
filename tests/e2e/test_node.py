"""The e2e cluster's node runs pods for real: containerd runs them, the kubelet probes them.

Each test is something a user of a cluster relies on: a pod gets Ready, it
reaches the apiserver the in-cluster way (the ``kubernetes`` Service's
ClusterIP, through kube-proxy), the kubelet's probes hit the container and a
failing one shows in ``kubectl describe``, ``kubectl logs``/``exec`` reach the
container through the kubelet, and an image archive loaded with
``cluster.sh load`` runs.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from . import cluster as cluster_mod
from .test_control_plane import pinned_version

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("ready_node")]


def container(name: str, image: str, args: list[str] | None = None, **kwargs: Any) -> client.V1Container:
    """A container of an image the node already has (it never pulls)."""
    return client.V1Container(name=name, image=image, image_pull_policy="Never", args=args, **kwargs)


def http_probe(path: str, port: int, **kwargs: Any) -> client.V1Probe:
    return client.V1Probe(
        http_get=client.V1HTTPGetAction(path=path, port=port), period_seconds=1, failure_threshold=1, **kwargs
    )


def create_pod(
    kube: client.ApiClient,
    namespace: str,
    name: str,
    containers: list[client.V1Container],
    labels: dict[str, str] | None = None,
) -> None:
    pod = client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, labels=labels),
        # podcheck and pause stop at SIGTERM; 1 s is only a bound.
        spec=client.V1PodSpec(containers=containers, termination_grace_period_seconds=1),
    )
    client.CoreV1Api(kube).create_namespaced_pod(namespace, pod)


def wait_ready(kube: client.ApiClient, namespace: str, name: str, timeout: float = 60) -> client.V1Pod:
    core = client.CoreV1Api(kube)

    def ready() -> client.V1Pod | None:
        pod = core.read_namespaced_pod(name, namespace)
        conditions = {c.type: c.status for c in pod.status.conditions or []}
        return pod if conditions.get("Ready") == "True" else None

    pod: client.V1Pod = cluster_mod.poll(ready, timeout=timeout, what=f"pod {namespace}/{name} to be Ready")
    return pod


def test_node_is_ready_at_its_bridge_address(cluster: cluster_mod.Cluster) -> None:
    node = json.loads(cluster.kubectl("get", "node", cluster_mod.NODE_NAME, "-o", "json"))
    conditions = {c["type"]: c["status"] for c in node["status"]["conditions"]}
    assert conditions["Ready"] == "True"
    addresses = {a["type"]: a["address"] for a in node["status"]["addresses"]}
    assert addresses["InternalIP"] == cluster_mod.NODE_IP
    info = node["status"]["nodeInfo"]
    assert info["kubeletVersion"] == pinned_version("k8s.io/kubernetes")
    assert info["containerRuntimeVersion"].startswith("containerd://")


def test_pod_of_the_pause_image_gets_ready(kube: client.ApiClient, namespace: str) -> None:
    create_pod(kube, namespace, "pause", [container("pause", cluster_mod.PAUSE_IMAGE)])
    pod = wait_ready(kube, namespace, "pause")
    assert pod.spec.node_name == cluster_mod.NODE_NAME
    # On the node's bridge, from the node's /24, not on the host's network.
    assert pod.status.pod_ip.startswith("198.18.254.")
    assert pod.status.pod_ip != cluster_mod.NODE_IP


def test_pod_reaches_the_apiserver_through_the_kubernetes_service(
    cluster: cluster_mod.Cluster, kube: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(kube)
    # The Service and its endpoint, published by the apiserver itself: the node address.
    service = core.read_namespaced_service("kubernetes", "default")
    assert service.spec.cluster_ip == cluster_mod.KUBERNETES_SERVICE_IP
    slices = client.DiscoveryV1Api(kube).list_namespaced_endpoint_slice(
        "default", label_selector="kubernetes.io/service-name=kubernetes"
    )
    assert [a for s in slices.items for e in s.endpoints for a in e.addresses] == [cluster_mod.NODE_IP]

    # podcheck is Ready only once its call through $KUBERNETES_SERVICE_HOST
    # (the ClusterIP, which only kube-proxy's rules lead to the apiserver)
    # succeeded with its ServiceAccount token.
    create_pod(
        kube,
        namespace,
        "in-cluster-client",
        [container("app", cluster_mod.PODCHECK_IMAGE, ["-apiserver"], readiness_probe=http_probe("/ready", 8080))],
    )
    wait_ready(kube, namespace, "in-cluster-client")
    log = cluster.kubectl("logs", "-n", namespace, "in-cluster-client")
    version = pinned_version("k8s.io/kubernetes")
    user = f"system:serviceaccount:{namespace}:default"
    assert f"apiserver: reached https://{cluster_mod.KUBERNETES_SERVICE_IP}:443 (kubernetes {version}) as {user}" in log


def test_kubelet_probes_hit_the_container(cluster: cluster_mod.Cluster, kube: client.ApiClient, namespace: str) -> None:
    create_pod(
        kube,
        namespace,
        "probed",
        [
            container(
                "app",
                cluster_mod.PODCHECK_IMAGE,
                ["-listen", ":8080"],
                readiness_probe=http_probe("/healthz", 8080),
                liveness_probe=http_probe("/healthz", 8080),
            ),
            # Never ready: its readiness probe gets a 503.
            container(
                "unready",
                cluster_mod.PODCHECK_IMAGE,
                ["-listen", ":8081"],
                readiness_probe=http_probe("/status/503", 8081),
            ),
            # Restarted by the kubelet: its liveness probe gets a 500.
            container(
                "unlive",
                cluster_mod.PODCHECK_IMAGE,
                ["-listen", ":8082"],
                liveness_probe=http_probe("/status/500", 8082),
            ),
        ],
    )
    core = client.CoreV1Api(kube)

    def restarted() -> bool:
        statuses = core.read_namespaced_pod("probed", namespace).status.container_statuses or []
        return any(s.name == "unlive" and s.restart_count >= 1 for s in statuses)

    cluster_mod.poll(restarted, timeout=60, what="the kubelet to restart the container whose liveness probe fails")

    # The probes come from the kubelet, at the node address, to the pod's address.
    log = cluster.kubectl("logs", "-n", namespace, "probed", "-c", "app")
    assert f"GET /healthz from {cluster_mod.NODE_IP}:" in log
    assert 'user-agent "kube-probe/1.' in log

    def described() -> str | None:
        text = cluster.kubectl("describe", "pod", "-n", namespace, "probed")
        failed = "Readiness probe failed: HTTP probe failed with statuscode: 503" in text
        return text if failed and "Liveness probe failed: HTTP probe failed with statuscode: 500" in text else None

    description = cluster_mod.poll(described, timeout=30, what="the failed probes' events")
    assert "Container unlive failed liveness probe, will be restarted" in description
    statuses = {s.name: s for s in core.read_namespaced_pod("probed", namespace).status.container_statuses}
    assert statuses["app"].ready
    assert not statuses["unready"].ready


def test_kubectl_exec_reaches_the_container(
    cluster: cluster_mod.Cluster, kube: client.ApiClient, namespace: str
) -> None:
    create_pod(kube, namespace, "exec", [container("app", cluster_mod.PODCHECK_IMAGE)])
    wait_ready(kube, namespace, "exec")
    # apiserver -> kubelet (at the node's InternalIP, certificate checked) -> containerd -> the container.
    with pytest.raises(subprocess.CalledProcessError) as usage:
        cluster.kubectl("exec", "-n", namespace, "exec", "--", "/podcheck", "-no-such-flag")
    assert "flag provided but not defined: -no-such-flag" in usage.value.stderr


def test_loaded_image_archive_runs(
    cluster: cluster_mod.Cluster, kube: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    # A new name for podcheck's image, as an archive like `make image` writes.
    skopeo = shutil.which("skopeo")
    assert skopeo, "cluster.sh up installs skopeo"
    source = cluster_mod.STATE_DIR / "node" / "images" / "podcheck.tar"
    archive = tmp_path / "loaded.tar"
    image = f"localhost/ottava-e2e/loaded:{namespace}"
    cluster_mod.run_tool(
        Path(skopeo),
        "--insecure-policy",
        "copy",
        "--quiet",
        f"docker-archive:{source}",
        f"docker-archive:{archive}:{image}",
    )
    out = cluster.load_images(archive)
    assert image in out
    create_pod(kube, namespace, "loaded", [container("app", image, readiness_probe=http_probe("/healthz", 8080))])
    pod = wait_ready(kube, namespace, "loaded")
    assert pod.status.container_statuses[0].image == image
