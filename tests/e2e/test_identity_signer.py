"""Workload identity on the real cluster: the operator's signer, called as a sidecar calls it.

Ottava is installed with the chart (the operator in pods). An injected pod of a
Deployment annotated `ottava.io/enabled` gets the signer's address, name and trust
bundle in its sidecar's environment; the test mints that pod's bound token for audience
`ottava.io/identity` with `kubectl create token` (what the kubelet projects into the
sidecar's volume) and calls `POST /v1/sign` over HTTPS at that address, verifying the
signer against that bundle under that name, as the sidecar does.
"""

from __future__ import annotations

import base64
import json
import ssl
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from ottava_sidecar.identity import certs
from ottava_sidecar.identity.spiffe import SpiffeId
from ottava_sidecar.resources.models import parse_duration

from . import cluster as cluster_mod
from . import incluster
from .credentials import service_account_kubeconfig
from .test_operator import apply, component, deployment, pod_of

pytestmark = pytest.mark.e2e

CA_SECRET = "ottava-identity-ca"


def sidecar_env(pod: client.V1Pod) -> dict[str, str]:
    containers = [*(pod.spec.init_containers or []), *pod.spec.containers]
    sidecar = next(c for c in containers if c.name == "ottava-sidecar")
    return {e.name: e.value for e in sidecar.env or [] if e.value is not None}


def create_token(cluster: cluster_mod.Cluster, namespace: str, pod: client.V1Pod, *, audience: str | None) -> str:
    """A token bound to `pod`, as the kubelet projects it (`kubectl create token`)."""
    args = ["create", "token", pod.spec.service_account_name or "default", "-n", namespace]
    args += ["--bound-object-kind", "Pod", "--bound-object-name", pod.metadata.name]
    args += ["--bound-object-uid", pod.metadata.uid, "--duration", "10m"]
    if audience is not None:
        args += ["--audience", audience]
    return cluster.kubectl(*args).strip()


class SignerClient:
    """Calls the signer at the address injected into the sidecar, verifying it as the sidecar does."""

    def __init__(self, env: dict[str, str]) -> None:
        self.url = env["OTTAVA_IDENTITY_ENDPOINT"] + "/v1/sign"
        self.server_name = env["OTTAVA_IDENTITY_SERVER_NAME"]
        self.context = ssl.create_default_context(cadata=env["OTTAVA_TRUST_ANCHORS"])

    def sign(self, token: str, app_id: str, key: Any = None) -> httpx.Response:
        csr = certs.new_request(key or certs.new_key(), SpiffeId("public", "any", app_id)).decode()
        with httpx.Client(verify=self.context, timeout=30) as http:
            return http.post(
                self.url,
                headers={"Authorization": f"Bearer {token}"},
                json={"csr": csr, "appId": app_id},
                # The address is an IP; the certificate is verified for the Service's name.
                extensions={"sni_hostname": self.server_name},
            )


def test_the_signer_certifies_a_pods_own_app_id_and_nothing_else(
    ottava_operator: incluster.InstalledOttava, cluster: cluster_mod.Cluster, kube: client.ApiClient, namespace: str
) -> None:
    assert apply(cluster, namespace, deployment("orders", {"ottava.io/enabled": "true"})).returncode == 0
    pod = pod_of(kube, namespace, "orders")
    assert pod.metadata.labels["ottava.io/app-id"] == "orders"
    env = sidecar_env(pod)
    ca = client.CoreV1Api(kube).read_namespaced_secret(CA_SECRET, incluster.NAMESPACE)
    # The pod was handed the CA's trust bundle of the moment, and the Service's ClusterIP.
    assert env["OTTAVA_TRUST_ANCHORS"] == base64.b64decode(ca.data["ca.crt"]).decode()
    service_ip = client.CoreV1Api(kube).read_namespaced_service("ottava-webhook", incluster.NAMESPACE).spec.cluster_ip
    assert env["OTTAVA_IDENTITY_ENDPOINT"] == f"https://{service_ip}:9445"
    assert env["OTTAVA_IDENTITY_SERVER_NAME"] == "ottava-webhook.ottava-system.svc"
    signer = SignerClient(env)
    token = create_token(cluster, namespace, pod, audience="ottava.io/identity")

    # The pod's own app id: certified, with a chain that verifies against the bundle.
    key = certs.new_key()

    def certified() -> httpx.Response | None:
        # The signer may still be starting (a fresh install): 503 until the CA is read.
        response = signer.sign(token, "orders", key)
        assert response.status_code in (200, 503), response.text
        return response if response.status_code == 200 else None

    answer = cluster_mod.poll(certified, timeout=60, what="the signer to certify the pod")
    body = answer.json()
    expected = f"spiffe://public/ns/{namespace}/orders"
    assert body["spiffeId"] == expected
    chain = certs.load_certs(body["certificateChain"].encode())
    roots = certs.load_certs(body["trustBundle"].encode())
    assert body["trustBundle"] == env["OTTAVA_TRUST_ANCHORS"]
    assert any(_issued_by(chain[-1], root) for root in roots)
    leaf = certs.Leaf.read(body["certificateChain"].encode())
    assert str(leaf.identity) == expected
    assert chain[0].public_key().public_numbers() == key.public_key().public_numbers()
    # The chart's workloadCertTTL (the e2e install sets it), plus the minute the CA backdates it.
    ttl = parse_duration(incluster.WORKLOAD_CERT_TTL).total_seconds()
    assert ttl < (leaf.not_after - leaf.not_before).total_seconds() <= ttl + 120
    assert body["expiresAt"].startswith(f"{leaf.not_after:%Y-%m-%dT%H:%M:%S}")

    # Every replica serves the signer, with the CA they share (the Service picks one).
    replicas = [p for p in ottava_operator.operator_pods() if p.status.pod_ip]
    assert len(replicas) == 2
    for replica in replicas:
        direct = SignerClient({**env, "OTTAVA_IDENTITY_ENDPOINT": f"https://{replica.status.pod_ip}:9445"})
        response = direct.sign(token, "orders")
        assert response.status_code == 200, f"{replica.metadata.name}: {response.text}"
        assert response.json()["trustBundle"] == env["OTTAVA_TRUST_ANCHORS"]

    # The same pod claiming another app's id: refused, naming both.
    forged = signer.sign(token, "billing-admin")
    assert forged.status_code == 403, forged.text
    assert "'billing-admin'" in forged.json()["error"] and "'orders'" in forged.json()["error"]
    assert pod.metadata.name in forged.json()["error"]

    # The pod's token for the apiserver (the default audience) is not an identity token.
    apiserver_token = create_token(cluster, namespace, pod, audience=None)
    wrong_audience = signer.sign(apiserver_token, "orders")
    assert wrong_audience.status_code == 401, wrong_audience.text
    assert "ottava.io/identity" in wrong_audience.json()["error"]

    # The operator logged the issuance and the refusals.
    def logged() -> bool:
        text = ottava_operator.log()
        return expected in text and "billing-admin" in text

    cluster_mod.poll(logged, timeout=30, what="the operator to log the issuance and the refusal")

    # A token of a pod that is gone is worth nothing.
    core = client.CoreV1Api(kube)
    pod_name = str(pod.metadata.name)
    core.delete_namespaced_pod(pod_name, namespace, grace_period_seconds=0)

    def deleted() -> bool:
        try:
            core.read_namespaced_pod(pod_name, namespace)
        except ApiException as err:
            return err.status == 404
        return False

    cluster_mod.poll(deleted, timeout=60, what=f"pod {pod_name} to be gone")
    gone = signer.sign(token, "orders")
    assert gone.status_code in (401, 403), gone.text
    assert pod_name in gone.json()["error"] or "not accepted" in gone.json()["error"]


def _issued_by(cert: Any, issuer: Any) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except Exception:
        return False
    return True


def test_a_sidecars_service_account_cannot_read_the_ca_key(
    ottava_operator: incluster.InstalledOttava,
    cluster: cluster_mod.Cluster,
    kube: client.ApiClient,
    namespace: str,
    tmp_path: Path,
) -> None:
    # The widest grant a sidecar gets: a Kubernetes secret store without allowedSecrets
    # (`get` on every Secret of its namespace), and an injected app.
    assert apply(cluster, namespace, component("secrets", "secretstores.kubernetes")).returncode == 0
    assert apply(cluster, namespace, deployment("orders", {"ottava.io/enabled": "true"})).returncode == 0
    assert client.CoreV1Api(kube).read_namespaced_secret(CA_SECRET, incluster.NAMESPACE).data["tls.key"]
    client.CoreV1Api(kube).create_namespaced_secret(
        namespace,
        client.V1Secret(metadata=client.V1ObjectMeta(name="app-secret"), string_data={"password": "s3cret"}),
    )

    # Acting as the app namespace's ServiceAccount, with a real token of it.
    kubeconfig = service_account_kubeconfig(kube, namespace, "default", tmp_path / "sidecar.kubeconfig")
    as_sidecar = cluster.new_api_client(kubeconfig)
    try:
        core = client.CoreV1Api(as_sidecar)

        def reads_its_own_secrets() -> bool:
            # The operator writes the Role, then the RoleBinding: the grant is real once both are.
            try:
                return bool(core.read_namespaced_secret("app-secret", namespace).data["password"])
            except ApiException as err:
                if err.status != 403:
                    raise
                return False

        cluster_mod.poll(reads_its_own_secrets, timeout=60, what="the sidecars' grant of their namespace's Secrets")
        with pytest.raises(ApiException) as refused:
            core.read_namespaced_secret(CA_SECRET, incluster.NAMESPACE)
        assert refused.value.status == 403
        assert f'cannot get resource "secrets" in API group "" in the namespace "{incluster.NAMESPACE}"' in str(
            json.loads(refused.value.body or "{}")["message"]
        )
    finally:
        as_sidecar.close()
