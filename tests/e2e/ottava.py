"""Ottava installed on the e2e control plane the way the README tells users: `helm install`.

There is no kubelet, so the operator's pod is admitted but never runs; the operator
runs here as a process instead, with exactly its chart's ServiceAccount credentials
(not admin), and the apiserver reaches its webhook through the chart's `webhook.url`
on loopback. `python -m tests.e2e.ottava up|down` is what `make e2e-up`/`e2e-down` run.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from kubernetes import client

from . import cluster as cluster_mod
from .credentials import service_account_kubeconfig

REPO = cluster_mod.REPO
CHART = REPO / "charts" / "ottava"
RELEASE = "ottava"
NAMESPACE = "ottava-system"
OPERATOR_SA = f"{RELEASE}-operator"
WEBHOOK_PORT = 29443
LIVENESS_PORT = 29080
STATE = cluster_mod.STATE_DIR / "ottava"
OTTAVA = str(Path(sys.executable).with_name("ottava"))


@dataclass
class Operator:
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def install(cluster: cluster_mod.Cluster) -> None:
    """`helm upgrade --install` the chart (idempotent), webhooks pointed at the local operator."""
    helm = cluster.bin_dir / "helm"
    cluster_mod.run_tool(
        helm,
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
        f"webhook.url=https://127.0.0.1:{WEBHOOK_PORT}",
        "--wait=false",
        timeout=300,
    )


def start_operator(cluster: cluster_mod.Cluster, api: client.ApiClient, *, log_level: str = "info") -> Operator:
    """Run `ottava operator` as the chart's ServiceAccount; return once its webhook serves."""
    STATE.mkdir(parents=True, exist_ok=True)
    if not _port_free(WEBHOOK_PORT):
        raise RuntimeError(f"port {WEBHOOK_PORT} is taken: is an operator already running (make e2e-down)?")
    kubeconfig = service_account_kubeconfig(api, NAMESPACE, OPERATOR_SA, STATE / "operator.kubeconfig")
    log_path = STATE / "operator.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [
                OTTAVA,
                "operator",
                "--namespace",
                NAMESPACE,
                "--webhook-address",
                "127.0.0.1",
                "--webhook-port",
                str(WEBHOOK_PORT),
                "--webhook-host",
                "127.0.0.1",
                "--service-name",
                f"{RELEASE}-webhook",
                "--cert-secret",
                f"{RELEASE}-webhook-tls",
                "--mutating-webhook",
                f"{RELEASE}-sidecar-injector",
                "--validating-webhook",
                f"{RELEASE}-validator",
                "--liveness-port",
                str(LIVENESS_PORT),
                "--cert-dir",
                str(STATE / "webhook-cert"),
                "--log-level",
                log_level,
                "--log-format",
                "json",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "KUBECONFIG": str(kubeconfig)},
        )
    operator = Operator(process, log_path)
    admission = client.AdmissionregistrationV1Api(api)

    def serving() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"the operator exited with {process.returncode}:\n{operator.log()}")
        configuration = admission.read_validating_webhook_configuration(f"{RELEASE}-validator")
        bundled = all(w.client_config.ca_bundle for w in configuration.webhooks)
        return (
            bundled
            and not _port_free(WEBHOOK_PORT)
            and httpx.get(f"http://127.0.0.1:{LIVENESS_PORT}/healthz").is_success
        )

    try:
        cluster_mod.poll(serving, timeout=90, what="the operator's webhook to serve with a patched caBundle")
    except Exception:
        operator.stop()
        raise
    (STATE / "operator.pid").write_text(str(process.pid))
    return operator


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "up"
    echo = cluster_mod.stderr_echo
    if command == "up":
        cluster = cluster_mod.ensure_up(echo)
        echo(f"[e2e] helm install {RELEASE} into {NAMESPACE}")
        install(cluster)
        api = cluster.new_api_client()
        echo("[e2e] starting the operator with the chart's ServiceAccount credentials")
        operator = start_operator(cluster, api)
        echo(f"[e2e] Ottava is installed; operator pid {operator.process.pid}, log {operator.log_path}")
        echo(f"[e2e] try it: export KUBECONFIG={cluster.kubeconfig}; kubectl get components -A")
        return 0
    if command == "down":
        pid_file = STATE / "operator.pid"
        if pid_file.exists():
            pid = int(pid_file.read_text())
            echo(f"[e2e] stopping the operator (pid {pid})")
            try:
                os.kill(pid, signal.SIGTERM)
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    os.kill(pid, 0)
                    time.sleep(0.2)
            except ProcessLookupError:
                pass
            pid_file.unlink()
        cluster_mod.ensure_down(echo)
        return 0
    echo(f"usage: python -m tests.e2e.ottava up|down (got {command!r})")
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
