"""The operator run out of cluster, for the tests that must reach into its process.

Ottava itself is installed in the cluster (`incluster.py`: the image, `helm install`, the
operator's pods). A test that signals an operator, reads its log as it happens or calls
its webhook port directly (leader election) stops the in-cluster replicas and runs
`ottava operator` here instead, with exactly the chart's ServiceAccount credentials (not
admin). Also: `apiserver_down`, which stops and restarts kube-apiserver around a block.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
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
IDENTITY_PORT_OFFSET = 2
STATE = cluster_mod.STATE_DIR / "ottava"
OTTAVA = str(Path(sys.executable).with_name("ottava"))


@dataclass
class Operator:
    process: subprocess.Popen[bytes]
    log_path: Path
    webhook_port: int = WEBHOOK_PORT
    liveness_port: int = LIVENESS_PORT

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        cluster_mod.terminate(self.process)


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def start_operator(
    cluster: cluster_mod.Cluster,
    api: client.ApiClient,
    *,
    log_level: str = "info",
    webhook_port: int = WEBHOOK_PORT,
    liveness_port: int = LIVENESS_PORT,
) -> Operator:
    """Run `ottava operator` as the chart's ServiceAccount; return once its webhook serves.

    The chart's `webhook.url` names the default ports; an operator on other ports is a
    second replica (it serves admission to whoever calls those ports, and takes part in
    the leader election).
    """
    operator = launch_operator(api, log_level=log_level, webhook_port=webhook_port, liveness_port=liveness_port)
    wait_serving(operator, api)
    if webhook_port == WEBHOOK_PORT:
        (STATE / "operator.pid").write_text(str(operator.process.pid))
    return operator


def launch_operator(
    api: client.ApiClient,
    *,
    log_level: str = "info",
    webhook_port: int = WEBHOOK_PORT,
    liveness_port: int = LIVENESS_PORT,
) -> Operator:
    """Start `ottava operator` without waiting for it (see `wait_serving`)."""
    STATE.mkdir(parents=True, exist_ok=True)
    if not _port_free(webhook_port):
        raise RuntimeError(f"port {webhook_port} is taken: is an operator already running (make e2e-down)?")
    suffix = "" if webhook_port == WEBHOOK_PORT else f"-{webhook_port}"
    kubeconfig = service_account_kubeconfig(api, NAMESPACE, OPERATOR_SA, STATE / "operator.kubeconfig")
    log_path = STATE / f"operator{suffix}.log"
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
                str(webhook_port),
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
                str(liveness_port),
                # The signer: beside the webhook port, so that two replicas here do not collide.
                "--identity-port",
                str(webhook_port + IDENTITY_PORT_OFFSET),
                "--cert-dir",
                str(STATE / f"webhook-cert{suffix}"),
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
    return Operator(process, log_path, webhook_port, liveness_port)


def wait_serving(operator: Operator, api: client.ApiClient) -> None:
    """Wait until the operator's webhook and liveness ports serve and the caBundle is patched."""
    admission = client.AdmissionregistrationV1Api(api)
    process = operator.process

    def serving() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"the operator exited with {process.returncode}:\n{operator.log()}")
        configuration = admission.read_validating_webhook_configuration(f"{RELEASE}-validator")
        bundled = all(w.client_config.ca_bundle for w in configuration.webhooks)
        return (
            bundled
            and not _port_free(operator.webhook_port)
            and httpx.get(f"http://127.0.0.1:{operator.liveness_port}/healthz").is_success
        )

    try:
        cluster_mod.poll(serving, timeout=90, what="the operator's webhook to serve with a patched caBundle")
    except Exception:
        operator.stop()
        raise


def _exited(pid: int) -> bool:
    """Gone, or a zombie its parent has not reaped yet (it no longer serves either way)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except (FileNotFoundError, IndexError):
        return True


@contextlib.contextmanager
def apiserver_down(cluster: cluster_mod.Cluster) -> Iterator[None]:
    """Stop kube-apiserver for the duration of the block, then start it again, same flags.

    etcd keeps running, so the restarted apiserver serves the same objects and
    resourceVersions, as after a control-plane upgrade or crash in a real cluster.
    """
    pid_file = cluster_mod.STATE_DIR / "pids" / "kube-apiserver"
    pid = int(pid_file.read_text())
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    os.kill(pid, signal.SIGTERM)
    # With watches open (the operator's, a sidecar's) it exits only when its HTTP server's
    # 60 s shutdown deadline passes ("Failed to shutdown server: context deadline
    # exceeded"): a 60 s wait here raced that deadline.
    cluster_mod.poll(lambda: _exited(pid), timeout=120, what="kube-apiserver to exit")
    try:
        yield
    finally:
        # Started through a shell that exits at once, as cluster.sh starts it: the apiserver
        # is then nobody's child here and outlives the test session, like the original.
        log = cluster_mod.STATE_DIR / "logs" / "kube-apiserver.log"
        started = subprocess.run(
            ["bash", "-c", 'setsid "$@" >>"$LOG" 2>&1 </dev/null & echo $!', "restart", *(a.decode() for a in argv)],
            env={**os.environ, "LOG": str(log)},
            capture_output=True,
            text=True,
            check=True,
        )
        pid_file.write_text(started.stdout.strip())

        def ready() -> bool:
            return "ok" in cluster.kubectl("get", "--raw", "/readyz")

        cluster_mod.poll(ready, timeout=120, what="the restarted kube-apiserver to be ready")
