"""Standing in for the kubelet, which this control plane does not have.

Given a pod the apiserver admitted (and the injector mutated), run its `ottava-sidecar`
container as a local process with exactly that container's args and env — resolving
downward-API fields and Secret references as the kubelet would — and the pod's
service-account identity, then probe it at the path and port its readiness probe names.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from kubernetes import client

from . import cluster as cluster_mod
from .credentials import service_account_kubeconfig

OTTAVA = str(Path(sys.executable).with_name("ottava"))
SIDECAR = "ottava-sidecar"


@dataclass
class PodSidecar:
    process: subprocess.Popen[bytes]
    log_path: Path
    container: dict[str, Any]
    env: dict[str, str]

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def probe_url(self, probe: str) -> str:
        get = self.container[probe]["httpGet"]
        return f"http://127.0.0.1:{get['port']}{get['path']}"

    def port(self, name: str) -> int:
        return int(next(p["containerPort"] for p in self.container["ports"] if p["name"] == name))

    def stop(self) -> int:
        return cluster_mod.terminate(self.process)


def sidecar_container(pod: client.V1Pod) -> client.V1Container | None:
    """The injected sidecar: a native sidecar (an init container with restartPolicy: Always)
    on Kubernetes 1.29 and later, a regular container before; None when not injected."""
    spec = pod.spec
    return next((c for c in [*(spec.init_containers or []), *spec.containers] if c.name == SIDECAR), None)


def _resolve_env(pod: dict[str, Any], container: dict[str, Any], core: client.CoreV1Api) -> dict[str, str]:
    metadata = pod["metadata"]
    env: dict[str, str] = {}
    for item in container.get("env") or []:
        source = item.get("valueFrom")
        if source is None:
            env[item["name"]] = item.get("value", "")
        elif "fieldRef" in source:
            path = source["fieldRef"]["fieldPath"]
            env[item["name"]] = {"metadata.name": metadata["name"], "metadata.namespace": metadata["namespace"]}[path]
        elif "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            secret = core.read_namespaced_secret(ref["name"], metadata["namespace"])
            env[item["name"]] = base64.b64decode(secret.data[ref["key"]]).decode()
        else:
            raise NotImplementedError(f"env source {source} is not emulated")
    return env


def run_sidecar(
    pod: client.V1Pod, api: client.ApiClient, workdir: Path, *, wait_for: str = "readinessProbe"
) -> PodSidecar:
    """Start the pod's sidecar as the kubelet would, and wait until the named probe passes.

    Out of a pod there is no projected token for the sidecar to prove itself with, so it
    gets no workload certificate: it runs with `--disable-mtls`, and so must its peers.
    """
    document = api.sanitize_for_serialization(pod)
    spec = document["spec"]
    container = next(c for c in [*spec.get("initContainers", []), *spec["containers"]] if c["name"] == SIDECAR)
    core = client.CoreV1Api(api)
    env = _resolve_env(document, container, core)
    namespace = document["metadata"]["namespace"]
    service_account = document["spec"].get("serviceAccountName") or "default"
    kubeconfig = service_account_kubeconfig(api, namespace, service_account, workdir / f"{service_account}.kubeconfig")
    log_path = workdir / f"{document['metadata']['name']}-sidecar.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [OTTAVA, *container["args"], "--disable-mtls"],
            env={
                "PATH": os.environ["PATH"],
                "HOME": os.environ.get("HOME", "/root"),
                **env,
                "KUBECONFIG": str(kubeconfig),
            },
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    sidecar = PodSidecar(process, log_path, container, env)

    def ready() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"the sidecar exited with {process.returncode}:\n{sidecar.log()}")
        return httpx.get(sidecar.probe_url(wait_for), timeout=2).status_code == 200

    try:
        cluster_mod.poll(ready, timeout=60, what=f"the sidecar's {wait_for} to pass")
    except Exception:
        sidecar.stop()
        raise
    return sidecar
