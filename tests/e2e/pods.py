"""Pods on the real node, as the tests look at them: readiness, containers, events, processes.

The node's pods sit on the cluster's bridge (198.18.254.0/24), which the test process
reaches directly, so a test talks to an app in a pod over the pod's IP, as another pod
would. Waiting is always polling with a deadline (`cluster.poll`), never sleeping.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterable
from typing import Any

import httpx
from kubernetes import client

from . import cluster as cluster_mod

SIDECAR = "ottava-sidecar"


def deployment_pods(kube: client.ApiClient, namespace: str, app: str) -> list[client.V1Pod]:
    """The pods of a Deployment (label `app=<name>`), not being deleted, oldest first."""
    return deployment_pods_by_selector(kube, namespace, f"app={app}")


def deployment_pods_by_selector(kube: client.ApiClient, namespace: str, selector: str) -> list[client.V1Pod]:
    pods = client.CoreV1Api(kube).list_namespaced_pod(namespace, label_selector=selector).items
    alive = [p for p in pods if p.metadata.deletion_timestamp is None]
    return sorted(alive, key=lambda p: str(p.metadata.creation_timestamp))


def is_ready(pod: client.V1Pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def wait_ready(
    kube: client.ApiClient, namespace: str, app: str, count: int, *, timeout: float = 120
) -> list[client.V1Pod]:
    """Wait until `count` pods of the Deployment are Ready; fail naming what each pod is waiting for."""

    def ready() -> list[client.V1Pod] | None:
        pods = deployment_pods(kube, namespace, app)
        good = [p for p in pods if is_ready(p)]
        return good if len(good) == count and len(pods) == count else None

    try:
        return cluster_mod.poll(ready, timeout=timeout, what=f"{count} Ready pod(s) of {namespace}/{app}")
    except TimeoutError as err:
        raise TimeoutError(f"{err}\n{describe(deployment_pods(kube, namespace, app))}") from None


def describe(pods: Iterable[client.V1Pod]) -> str:
    """One line per container: what a user sees in `kubectl get pods` and `describe`, for failures."""
    lines = []
    for pod in pods:
        for status in all_container_statuses(pod):
            state = status.state
            detail = (
                f"waiting {state.waiting.reason}: {state.waiting.message}"
                if state.waiting
                else f"terminated {state.terminated.reason}"
                if state.terminated
                else "running"
            )
            lines.append(
                f"{pod.metadata.name}/{status.name}: ready={status.ready} restarts={status.restart_count} {detail}"
            )
            if status.name == "ottava-sidecar" and not status.ready and pod.status.pod_ip:
                lines.append(f"  readiness: {_readiness_body(pod)}")
    return "\n".join(lines)


def _readiness_body(pod: client.V1Pod) -> str:
    """What the sidecar's readiness endpoint says (why it is not ready), as the kubelet sees it."""
    try:
        return sidecar_readiness(pod).text[:2000]
    except httpx.HTTPError as err:
        return f"not answered: {err!r}"


def all_container_statuses(pod: client.V1Pod) -> list[client.V1ContainerStatus]:
    """Init containers (a native sidecar is one) and app containers."""
    return [*(pod.status.init_container_statuses or []), *(pod.status.container_statuses or [])]


def name(pod: client.V1Pod) -> str:
    return str(pod.metadata.name)


def container_status(pod: client.V1Pod, name: str) -> client.V1ContainerStatus:
    return next(s for s in all_container_statuses(pod) if s.name == name)


def ready_counts(pod: client.V1Pod) -> tuple[int, int]:
    """`kubectl get pods`' READY column: running containers ready / containers, a native sidecar included."""
    statuses = [
        *(s for s in pod.status.init_container_statuses or [] if _is_sidecar_spec(pod, s.name)),
        *(pod.status.container_statuses or []),
    ]
    return sum(1 for s in statuses if s.ready), len(statuses)


def _is_sidecar_spec(pod: client.V1Pod, name: str) -> bool:
    return any(c.name == name and c.restart_policy == "Always" for c in pod.spec.init_containers or [])


def events(kube: client.ApiClient, namespace: str, pod_name: str) -> list[client.CoreV1Event]:
    selector = f"involvedObject.kind=Pod,involvedObject.name={pod_name}"
    return list(client.CoreV1Api(kube).list_namespaced_event(namespace, field_selector=selector).items)


def app_url(pod: client.V1Pod, path: str, port: int = 8000) -> str:
    return f"http://{pod.status.pod_ip}:{port}{path}"


def call_app(pod: client.V1Pod, method: str, path: str, *, body: bytes = b"", timeout: float = 10) -> Any:
    """Call the app in the pod over the bridge; its JSON answer, or an AssertionError with what it said."""
    response = httpx.request(method, app_url(pod, path), content=body, timeout=timeout)
    assert response.status_code == 200, (
        f"{method} {path} on {pod.metadata.name}: {response.status_code} {response.text}"
    )
    return response.json()


def sidecar_readiness(pod: client.V1Pod) -> httpx.Response:
    """The sidecar's readiness endpoint, where the kubelet probes it (the pod's IP)."""
    return httpx.get(f"http://{pod.status.pod_ip}:3500/actuator/health/readiness", timeout=5)


def signal_container(pod: client.V1Pod, container: str, signum: signal.Signals) -> int:
    """Send a signal to a container's main process from the node, as an OOM or a hang would act on it.

    The container's cgroup (under the node's `kubepods` hierarchy) names its processes;
    the one whose parent is outside the cgroup is the container's first process.
    """
    container_id = container_status(pod, container).container_id.split("://", 1)[1]
    pids = _cgroup_pids(container_id)
    if not pids:
        raise AssertionError(f"no process of container {container} ({container_id}) found in the node's cgroups")
    first = min(pids, key=_start_time)
    os.kill(first, signum)
    return first


def _cgroup_pids(container_id: str) -> list[int]:
    root = "/sys/fs/cgroup/pids/kubepods"
    for directory, _, files in os.walk(root):
        if directory.endswith(container_id) and "cgroup.procs" in files:
            with open(os.path.join(directory, "cgroup.procs")) as procs:
                return [int(line) for line in procs if line.strip()]
    return []


def _start_time(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rsplit(") ", 1)[1].split()[19])
