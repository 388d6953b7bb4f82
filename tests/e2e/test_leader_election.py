"""Two operator replicas on the real apiserver: one leads, both admit, and handover.

The chart runs two replicas in pods (test_operator_pods.py deletes the leader's pod);
here the in-cluster replicas are scaled to 0 and two replicas run out of cluster as the
chart's ServiceAccount, on different webhook and liveness ports, so the test can reach
into each process: signal it, read its log, call its webhook port directly. They elect
their leader with kopf's peering, in the release's ClusterKopfPeering, exactly as two
pods do.
"""

from __future__ import annotations

import base64
import json
import signal
import ssl
import time
import uuid
from collections.abc import Iterator
from typing import Any, cast

import httpx
import pytest
import yaml
from cryptography import x509
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from . import cluster as cluster_mod
from . import incluster, ottava

pytestmark = pytest.mark.e2e

SECOND_WEBHOOK_PORT = 29444
SECOND_LIVENESS_PORT = 29081
# The operator's default --peering-lifetime: how long a killed leader's record stays valid.
PEERING_LIFETIME = 15


class Replicas:
    """The two out-of-cluster replicas by webhook port."""

    def __init__(self, first: ottava.Operator, cluster: cluster_mod.Cluster, kube: client.ApiClient) -> None:
        self.cluster, self.kube = cluster, kube
        self.first = first
        self.by_port: dict[int, ottava.Operator] = {first.webhook_port: first}

    def start_second(self) -> ottava.Operator:
        second = ottava.start_operator(
            self.cluster, self.kube, webhook_port=SECOND_WEBHOOK_PORT, liveness_port=SECOND_LIVENESS_PORT
        )
        self.by_port[SECOND_WEBHOOK_PORT] = second
        return second

    def restart(self, operator: ottava.Operator) -> None:
        """Start a stopped replica again on its ports, in the same object."""
        fresh = ottava.start_operator(
            self.cluster, self.kube, webhook_port=operator.webhook_port, liveness_port=operator.liveness_port
        )
        operator.process, operator.log_path = fresh.process, fresh.log_path

    def all(self) -> list[ottava.Operator]:
        return list(self.by_port.values())

    def close(self) -> None:
        for replica in self.all():
            replica.stop()


@pytest.fixture
def replicas(
    ottava_operator: incluster.InstalledOttava, cluster: cluster_mod.Cluster, kube: client.ApiClient
) -> Iterator[Replicas]:
    ottava_operator.stop()
    running = Replicas(ottava.start_operator(cluster, kube), cluster, kube)
    try:
        yield running
    finally:
        running.close()
        ottava_operator.start()


def log_lines(operator: ottava.Operator) -> list[dict[str, Any]]:
    lines = []
    for line in operator.log().splitlines():
        try:
            lines.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return lines


def role(operator: ottava.Operator) -> str | None:
    """What the replica last said it is: "leading", "standby", or None before it knows."""
    said = [
        line["msg"].split(":")[0] for line in log_lines(operator) if line["msg"].startswith(("leading:", "standby:"))
    ]
    return said[-1] if said else None


def reconciled(operator: ottava.Operator, namespace: str) -> bool:
    return any(
        line["msg"] == "sidecar RBAC reconciled" and line.get("namespace") == namespace for line in log_lines(operator)
    )


def the_leader(replicas: Replicas) -> tuple[ottava.Operator, ottava.Operator]:
    """(leader, standby), once each has said which it is."""

    def decided() -> tuple[ottava.Operator, ottava.Operator] | None:
        roles = {op.webhook_port: role(op) for op in replicas.all()}
        leading = [op for op in replicas.all() if roles[op.webhook_port] == "leading"]
        standing_by = [op for op in replicas.all() if roles[op.webhook_port] == "standby"]
        return (leading[0], standing_by[0]) if len(leading) == 1 and len(standing_by) == 1 else None

    pair: tuple[ottava.Operator, ottava.Operator] = cluster_mod.poll(
        decided, timeout=30, what="one replica to say it leads and the other that it stands by"
    )
    return pair


def make_namespace(kube: client.ApiClient, prefix: str) -> str:
    name = f"e2e-{prefix}-{uuid.uuid4().hex[:6]}"
    client.CoreV1Api(kube).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    return name


def add_component(kube: client.ApiClient, namespace: str, name: str = "statestore") -> None:
    body = {
        "apiVersion": "ottava.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"type": "state.in-memory", "version": "v1", "metadata": []},
    }
    client.CustomObjectsApi(kube).create_namespaced_custom_object(
        "ottava.io", "v1alpha1", namespace, "components", body
    )


def status_ready(kube: client.ApiClient, namespace: str, name: str = "statestore") -> bool:
    component = cast(
        dict[str, Any],
        client.CustomObjectsApi(kube).get_namespaced_custom_object(
            "ottava.io", "v1alpha1", namespace, "components", name
        ),
    )
    conditions = (component.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def webhook_secret(kube: client.ApiClient) -> dict[str, bytes]:
    secret = client.CoreV1Api(kube).read_namespaced_secret(f"{ottava.RELEASE}-webhook-tls", ottava.NAMESPACE)
    return {key: base64.b64decode(value) for key, value in secret.data.items()}


def served_certificate(port: int) -> x509.Certificate:
    return x509.load_pem_x509_certificate(ssl.get_server_certificate(("127.0.0.1", port)).encode())


def admission_review(resource: dict[str, str], kind: dict[str, str], namespace: str, obj: dict[str, Any]) -> Any:
    request = {
        "uid": str(uuid.uuid4()),
        "kind": kind,
        "resource": resource,
        "requestKind": kind,
        "requestResource": resource,
        "namespace": namespace,
        "operation": "CREATE",
        "userInfo": {"username": "e2e"},
        "object": obj,
        "oldObject": None,
        "dryRun": True,
    }
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


def admit(port: int, path: str, review: Any, ca: bytes) -> dict[str, Any]:
    """POST an AdmissionReview as the apiserver does, trusting only the webhook's CA."""
    context = ssl.create_default_context(cadata=ca.decode())
    response = httpx.post(f"https://127.0.0.1:{port}/{path}", json=review, verify=context, timeout=10)
    response.raise_for_status()
    answer: dict[str, Any] = response.json()["response"]
    return answer


def test_replicas_starting_together_serve_one_certificate_whose_ca_is_in_the_ca_bundle(
    replicas: Replicas, kube: client.ApiClient
) -> None:
    # Both start at once with no Secret: they race to create it, and must end up with one.
    replicas.first.stop()
    try:
        client.CoreV1Api(kube).delete_namespaced_secret(f"{ottava.RELEASE}-webhook-tls", ottava.NAMESPACE)
    except ApiException as err:
        if err.status != 404:
            raise
    first = ottava.launch_operator(kube)
    second = ottava.launch_operator(kube, webhook_port=SECOND_WEBHOOK_PORT, liveness_port=SECOND_LIVENESS_PORT)
    replicas.first.process, replicas.first.log_path = first.process, first.log_path
    replicas.by_port[SECOND_WEBHOOK_PORT] = second
    ottava.wait_serving(replicas.first, kube)
    ottava.wait_serving(second, kube)

    material = webhook_secret(kube)
    in_secret = x509.load_pem_x509_certificate(material["tls.crt"])
    for port in (ottava.WEBHOOK_PORT, SECOND_WEBHOOK_PORT):
        assert served_certificate(port) == in_secret, f"port {port} serves a certificate not in the Secret"
    admission = client.AdmissionregistrationV1Api(kube)
    bundles = [
        w.client_config.ca_bundle
        for configuration in (
            admission.read_validating_webhook_configuration(f"{ottava.RELEASE}-validator"),
            admission.read_mutating_webhook_configuration(f"{ottava.RELEASE}-sidecar-injector"),
        )
        for w in configuration.webhooks
    ]
    assert {base64.b64decode(str(b)) for b in bundles} == {material["ca.crt"]}
    created = [
        op for op in replicas.all() if any(line["msg"] == "created the webhook certificate" for line in log_lines(op))
    ]
    assert len(created) == 1, "exactly one replica creates the Secret; the other adopts it"


def test_one_replica_leads_both_admit_and_a_stopped_leader_hands_over(
    replicas: Replicas, kube: client.ApiClient, namespace: str
) -> None:
    replicas.start_second()
    leader, standby = the_leader(replicas)

    # Only the leader does the watch-driven work.
    add_component(kube, namespace)
    cluster_mod.poll(lambda: status_ready(kube, namespace), timeout=30, what="the Component's status to be written")
    cluster_mod.poll(lambda: reconciled(leader, namespace), timeout=30, what="the leader to reconcile the RBAC")
    assert not reconciled(standby, namespace), "the standby reconciled RBAC while another replica leads"

    # Both answer admission, with the one certificate the caBundle trusts.
    ca = webhook_secret(kube)["ca.crt"]
    bad = {
        "apiVersion": "ottava.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": "bad", "namespace": namespace},
        "spec": {"type": "state.nosuchdb", "version": "v1"},
    }
    pod = yaml.safe_load(
        f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: web, namespace: {namespace}, annotations: {{ottava.io/enabled: "true"}}}}
        spec: {{containers: [{{name: app, image: example/web:1}}]}}
        """
    )
    components = {"group": "ottava.io", "version": "v1alpha1", "resource": "components"}
    pods = {"group": "", "version": "v1", "resource": "pods"}
    for replica in (leader, standby):
        denied = admit(
            replica.webhook_port,
            "validate-component",
            admission_review(
                components, {"group": "ottava.io", "version": "v1alpha1", "kind": "Component"}, namespace, bad
            ),
            ca,
        )
        assert denied["allowed"] is False and "state.nosuchdb" in denied["status"]["message"]
        injected = admit(
            replica.webhook_port,
            "inject-sidecar",
            admission_review(pods, {"group": "", "version": "v1", "kind": "Pod"}, namespace, pod),
            ca,
        )
        assert injected["allowed"] is True and injected["patchType"] == "JSONPatch"
        assert "ottava-sidecar" in base64.b64decode(injected["patch"]).decode()

    # Graceful stop (what deleting the leader's pod does): the standby takes over at once.
    stopped_at = time.monotonic()
    leader.process.send_signal(signal.SIGTERM)
    after_stop = make_namespace(kube, "after-sigterm")
    try:
        add_component(kube, after_stop)
        cluster_mod.poll(
            lambda: reconciled(standby, after_stop) and status_ready(kube, after_stop),
            timeout=15,
            what="the standby to take over within 15 s of the leader's SIGTERM",
            interval=0.1,
        )
        graceful = time.monotonic() - stopped_at
        leader.process.wait(timeout=30)
        assert role(standby) == "leading" or cluster_mod.poll(
            lambda: role(standby) == "leading", timeout=5, what="the new leader to say so"
        )

        # The stopped replica comes back as the younger one: it stands by, it does not preempt.
        replicas.restart(leader)
        new_leader, new_standby = the_leader(replicas)
        assert (new_leader, new_standby) == (standby, leader)

        # Hard death (SIGKILL: no goodbye): the record expires after the peering lifetime.
        killed_at = time.monotonic()
        new_leader.process.send_signal(signal.SIGKILL)
        new_leader.process.wait(timeout=10)
        after_kill = make_namespace(kube, "after-sigkill")
        try:
            add_component(kube, after_kill)
            cluster_mod.poll(
                lambda: reconciled(new_standby, after_kill),
                timeout=PEERING_LIFETIME + 5,
                what=f"the standby to take over within {PEERING_LIFETIME} s (+5) of the leader's SIGKILL",
                interval=0.1,
            )
            hard = time.monotonic() - killed_at
        finally:
            client.CoreV1Api(kube).delete_namespace(after_kill)
    finally:
        client.CoreV1Api(kube).delete_namespace(after_stop)
    print(f"\nhandover after SIGTERM: {graceful:.1f} s; after SIGKILL: {hard:.1f} s")
