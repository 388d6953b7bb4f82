"""Ottava installed in the e2e cluster the way a platform team installs it.

The `ottava/ottava` image and the example app's image are built here (`image/build.sh`,
cached), imported into the node's containerd (`e2e/cluster.sh load`), and the chart is
installed with `helm install`: the operator runs as the chart's Deployment, in pods, and
the apiserver reaches its webhooks through the chart's Service.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from ottava_sidecar import __version__

from . import cluster as cluster_mod
from . import pods

REPO = cluster_mod.REPO
CHART = REPO / "charts" / "ottava"
IMAGE_TOOL = REPO / "image" / "build.sh"
EXAMPLE = REPO / "examples" / "kubernetes"
RELEASE = "ottava"
NAMESPACE = "ottava-system"
OPERATOR_DEPLOYMENT = f"{RELEASE}-operator"
IMAGE = f"ottava/ottava:{__version__}"
APP_IMAGE = f"localhost/ottava-example-app:{__version__}"
OPERATOR_SELECTOR = f"app.kubernetes.io/name=ottava,app.kubernetes.io/instance={RELEASE}"
WORKLOAD_CERT_TTL = "60s"


def _run(argv: list[str], echo: Callable[[str], None], what: str) -> str:
    """Run a build step, echoing its progress; its last line of output is returned (a path)."""
    echo(f"[e2e] {what}")
    proc = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False, timeout=1800)
    for line in proc.stderr.splitlines():
        echo(line)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc.stdout.strip().splitlines()[-1]


def build_and_load_images(echo: Callable[[str], None] = print) -> None:
    """Build (or take from the cache) Ottava's image and the example app's, and import both into the node."""
    ottava = _run([str(IMAGE_TOOL), "ottava"], echo, f"building {IMAGE} (cached after the first time)")
    app_archive = cluster_mod.STATE_DIR / "images" / "example-app.image.tar"
    app_archive.parent.mkdir(parents=True, exist_ok=True)
    app = _run(
        [str(IMAGE_TOOL), "app", APP_IMAGE, str(EXAMPLE / "app"), str(app_archive), "--main", "app.py"],
        echo,
        f"building {APP_IMAGE}",
    )
    _run([str(cluster_mod.CLUSTER_SCRIPT), "load", ottava, app], echo, "importing both images into the node")


def install(cluster: cluster_mod.Cluster, *, replicas: int = 2) -> None:
    """`helm upgrade --install` the chart from the imported image and wait for the operator's pods.

    `helm upgrade` leaves CRDs alone, so a cluster kept from an older run gets the chart's
    current ones first, as the docs tell users to do on upgrade.
    """
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CHART / "crds"))
    cluster_mod.run_tool(
        cluster.bin_dir / "helm",
        "--kubeconfig",
        str(cluster.kubeconfig),
        "upgrade",
        "--install",
        RELEASE,
        str(CHART),
        "--namespace",
        NAMESPACE,
        "--create-namespace",
        "--set",
        f"operator.replicas={replicas}",
        # Short-lived certificates, so that the tests see sidecars renew them under load.
        "--set",
        f"identity.workloadCertTTL={WORKLOAD_CERT_TTL}",
        "--wait",
        "--timeout",
        "5m",
        timeout=360,
    )


@dataclass
class InstalledOttava:
    cluster: cluster_mod.Cluster
    kube: client.ApiClient

    def operator_pods(self) -> list[client.V1Pod]:
        return pods.deployment_pods_by_selector(self.kube, NAMESPACE, OPERATOR_SELECTOR)

    def wait_serving(self, timeout: float = 180) -> None:
        """Both webhooks answer through the Service: a bad Component is refused by the validator."""
        bad = yaml.safe_dump(
            {
                "apiVersion": "ottava.io/v1alpha1",
                "kind": "Component",
                "metadata": {"name": "probe", "namespace": "default"},
                "spec": {"type": "state.nosuchdb", "version": "v1"},
            }
        )

        def refused() -> bool:
            kubectl = [str(self.cluster.bin_dir / "kubectl"), "--kubeconfig", str(self.cluster.kubeconfig)]
            proc = subprocess.run(
                [*kubectl, "apply", "--dry-run=server", "-f", "-"],
                input=bad,
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            return proc.returncode != 0 and "state.nosuchdb" in proc.stderr

        cluster_mod.poll(refused, timeout=timeout, what="the operator's webhooks to serve through the Service")

    def scale_operator(self, replicas: int) -> None:
        self.cluster.kubectl("scale", "deployment", OPERATOR_DEPLOYMENT, "-n", NAMESPACE, f"--replicas={replicas}")
        if replicas == 0:
            # Gone for good, not merely terminating: a pod in its preStop sleep still serves the webhooks.
            core = client.CoreV1Api(self.kube)
            cluster_mod.poll(
                lambda: not core.list_namespaced_pod(NAMESPACE, label_selector=OPERATOR_SELECTOR).items,
                timeout=90,
                what="the operator's pods to be gone",
            )
            return
        self.cluster.kubectl("rollout", "status", "deployment", OPERATOR_DEPLOYMENT, "-n", NAMESPACE, "--timeout=180s")
        self.wait_serving()

    def log(self) -> str:
        """The logs of the operator's pods, one after the other (`kubectl logs`)."""
        return "\n".join(
            self.cluster.kubectl("logs", "-n", NAMESPACE, pods.name(p), "--tail=-1") for p in self.operator_pods()
        )

    def stop(self) -> None:
        """No operator at all: its pods are deleted (the Deployment scaled to 0)."""
        self.scale_operator(0)

    def start(self, replicas: int = 2) -> None:
        self.scale_operator(replicas)

    def leader(self, among: list[client.V1Pod] | None = None) -> client.V1Pod | None:
        """The operator pod that last said it leads (each replica logs `leading:` or `standby:`)."""
        for pod in among if among is not None else self.operator_pods():
            said = [
                line
                for line in self.cluster.kubectl("logs", "-n", NAMESPACE, pods.name(pod), "--tail=-1").splitlines()
                if '"leading:' in line or '"standby:' in line
            ]
            if said and '"leading:' in said[-1]:
                return pod
        return None


def ensure_installed(
    cluster: cluster_mod.Cluster, kube: client.ApiClient, echo: Callable[[str], None]
) -> InstalledOttava:
    """Images built and loaded, the chart installed, both webhooks serving through the Service."""
    build_and_load_images(echo)
    echo(f"[e2e] helm upgrade --install {RELEASE} into {NAMESPACE} (the operator runs in the cluster)")
    install(cluster)
    installed = InstalledOttava(cluster, kube)
    installed.wait_serving()
    return installed


def main(argv: list[str]) -> int:
    """`make e2e-up` / `make e2e-down`: the cluster with Ottava installed, for people to try."""
    command = argv[0] if argv else "up"
    echo = cluster_mod.stderr_echo
    if command == "up":
        cluster = cluster_mod.ensure_up(echo)
        kube = cluster.new_api_client()
        ensure_installed(cluster, kube, echo)
        echo(f"[e2e] Ottava is installed: kubectl get pods -n {NAMESPACE}")
        echo(f"[e2e] try it: source {cluster_mod.STATE_DIR / 'env'} && kubectl apply -f examples/kubernetes/")
        return 0
    if command == "down":
        cluster_mod.down(echo)
        return 0
    echo(f"usage: python -m tests.e2e.incluster up|down (got {command!r})")
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))


def example_deployment(name: str, replicas: int) -> dict[str, Any]:
    """The example's Deployment (examples/kubernetes/apps.yaml) under another name and app id."""
    documents = list(yaml.safe_load_all((EXAMPLE / "apps.yaml").read_text()))
    document: dict[str, Any] = copy.deepcopy(next(d for d in documents if d["kind"] == "Deployment"))
    document["metadata"]["name"] = name
    document["spec"]["replicas"] = replicas
    document["spec"]["selector"]["matchLabels"] = {"app": name}
    template = document["spec"]["template"]
    template["metadata"]["labels"] = {"app": name}
    template["metadata"]["annotations"]["ottava.io/app-id"] = name
    env = template["spec"]["containers"][0]["env"]
    for item in env:
        if item["name"] == "APP_ID":
            item["value"] = name
    return document


def example_manifests() -> list[Path]:
    return sorted(EXAMPLE.glob("*.yaml"))
