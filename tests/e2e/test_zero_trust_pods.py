"""Zero trust in real pods: workload certificates from the operator's CA, mTLS between sidecars, access control.

Three annotated Deployments of the example app (Dapr Python SDK) run on the node:
`billing`, whose Configuration lets `checkout` call `GET /hello` and nothing else and
denies everyone else; `checkout`; and `guest`. The test calls the apps over their pod
IPs, as another pod would, and plays the attacker against billing's internal port from
the pod network: without a certificate, and with a real certificate of `guest` (obtained
from the operator with a token bound to a guest pod, as guest's sidecar obtains it)
while claiming to be `checkout`. Certificates here live 60 s (the e2e chart sets
`identity.workloadCertTTL`), so they rotate during the test while calls go on.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import yaml
from kubernetes import client
from ottava_sidecar import contract
from ottava_sidecar._gen.ottava.internal.v1 import invocation_pb2 as internal_pb
from ottava_sidecar._gen.ottava.internal.v1 import invocation_pb2_grpc as internal_grpc
from ottava_sidecar.identity.operator_ca import OperatorCa
from ottava_sidecar.identity.spiffe import SpiffeId, server_name
from ottava_sidecar.identity.workload import WorkloadIdentity

from . import cluster as cluster_mod
from . import incluster, pods
from .test_operator import apply
from .test_pods_journey import app_deployment

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

CONFIGURATION = {
    "apiVersion": "ottava.io/v1alpha1",
    "kind": "Configuration",
    "metadata": {"name": "billing-config"},
    "spec": {
        "accessControl": {
            "defaultAction": "deny",
            "trustDomain": "public",
            "policies": [
                {
                    "appId": "checkout",
                    "defaultAction": "deny",
                    "trustDomain": "public",
                    "namespace": "NAMESPACE",
                    "operations": [{"name": "/hello", "httpVerb": ["GET"], "action": "allow"}],
                }
            ],
        }
    },
}


def _deployments(namespace: str) -> str:
    configuration: dict[str, Any] = yaml.safe_load(yaml.safe_dump(CONFIGURATION))
    configuration["spec"]["accessControl"]["policies"][0]["namespace"] = namespace
    billing = app_deployment("billing", 1)
    billing["spec"]["template"]["metadata"]["annotations"][contract.ANNOTATION_CONFIG] = "billing-config"
    return yaml.safe_dump_all([configuration, billing, app_deployment("checkout", 1), app_deployment("guest", 1)])


def _env(pod: client.V1Pod, name: str) -> str:
    spec = pod.spec
    for container in [*(spec.init_containers or []), *spec.containers]:
        if container.name == contract.SIDECAR_CONTAINER_NAME:
            for item in container.env or []:
                if item.name == name:
                    return str(item.value)
    raise AssertionError(f"the injected sidecar of {pod.metadata.name} has no {name}")


def _internal(pod: client.V1Pod) -> str:
    return f"{pod.status.pod_ip}:{contract.INTERNAL_GRPC_PORT}"


def _call(target_app_id: str, forged_caller: str, method: str = "hello") -> internal_pb.CallLocalRequest:
    return internal_pb.CallLocalRequest(
        target_app_id=target_app_id,
        caller_app_id=forged_caller,
        method=method,
        http_verb="GET",
        headers=[internal_pb.Header(name="dapr-caller-app-id", values=[forged_caller])],
        timeout_seconds=10,
    )


def _renewals(pod: client.V1Pod) -> float:
    text = httpx.get(f"http://{pod.status.pod_ip}:{contract.METRICS_PORT}/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith('ottava_identity_certificate_renewals_total{outcome="success"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def _guest_identity(cluster: cluster_mod.Cluster, guest: client.V1Pod, tmp_path: Path) -> WorkloadIdentity:
    """What guest's sidecar holds: a certificate from the operator, for a token bound to the guest pod."""
    namespace, name, uid = str(guest.metadata.namespace), str(guest.metadata.name), str(guest.metadata.uid)
    token = cluster.kubectl(
        "create", "token", guest.spec.service_account_name or "default", "-n", namespace,
        "--audience", contract.IDENTITY_AUDIENCE, "--duration", "10m",
        "--bound-object-kind", "Pod", "--bound-object-name", name, "--bound-object-uid", uid,
    ).strip()  # fmt: skip
    token_file = tmp_path / "identity-token"
    token_file.write_text(token)
    source = OperatorCa(
        _env(guest, contract.ENV_IDENTITY_ENDPOINT),
        _env(guest, contract.ENV_IDENTITY_SERVER_NAME),
        _env(guest, contract.ENV_TRUST_ANCHORS).encode(),
        token_file,
    )
    identity = WorkloadIdentity(SpiffeId("public", namespace, "guest"), source)
    await identity.obtain()
    return identity


def test_zero_trust_between_pods(
    ottava_in_cluster: incluster.InstalledOttava,
    cluster: cluster_mod.Cluster,
    kube: client.ApiClient,
    restricted_namespace: str,
    tmp_path: Path,
) -> None:
    ns = restricted_namespace
    result = apply(cluster, ns, _deployments(ns))
    assert result.returncode == 0, result.stderr
    [billing] = pods.wait_ready(kube, ns, "billing", 1, timeout=120)
    [checkout] = pods.wait_ready(kube, ns, "checkout", 1, timeout=120)
    [guest] = pods.wait_ready(kube, ns, "guest", 1, timeout=120)

    # 1. Each sidecar holds its own SPIFFE ID, from the operator's CA.
    for pod, app in ((billing, "billing"), (checkout, "checkout")):
        identity = pods.sidecar_readiness(pod).json()["components"]["identity"]
        assert identity["status"] == "UP" and identity["details"]["reason"] == f"spiffe://public/ns/{ns}/{app}", (
            identity
        )

    # 2. Allowed: checkout GET /hello. Denied: any other operation, and any other caller.
    assert pods.call_app(checkout, "GET", "/invoke/billing/hello")["app"] == "billing"
    denied = httpx.get(pods.app_url(checkout, "/invoke/billing/received"), timeout=10)
    assert denied.status_code == 502 and "defaultAction" in denied.text and "checkout" in denied.text, denied.text
    refused = httpx.get(pods.app_url(guest, "/invoke/billing/hello"), timeout=10)
    assert refused.status_code == 502 and "guest" in refused.text, refused.text

    # 3. The pod network: no certificate, no call; plaintext, no call.
    with grpc.insecure_channel(_internal(billing)) as channel, pytest.raises(grpc.RpcError) as plaintext:
        internal_grpc.ServiceInvocationStub(channel).CallLocal(_call("billing", "checkout"), timeout=5)
    assert plaintext.value.code() is grpc.StatusCode.UNAVAILABLE
    anchors = _env(billing, contract.ENV_TRUST_ANCHORS).encode()
    options = [("grpc.ssl_target_name_override", server_name("billing", ns))]
    no_cert = grpc.ssl_channel_credentials(root_certificates=anchors)
    with (
        grpc.secure_channel(_internal(billing), no_cert, options=options) as channel,
        pytest.raises(grpc.RpcError) as certless,
    ):
        internal_grpc.ServiceInvocationStub(channel).CallLocal(_call("billing", "checkout"), timeout=5)
    assert certless.value.code() is grpc.StatusCode.UNAVAILABLE

    # 4. guest's real certificate, claiming to be checkout: known as guest, and denied as guest.
    async def as_guest_claiming_checkout() -> grpc.aio.AioRpcError:
        identity = await _guest_identity(cluster, guest, tmp_path)
        assert str(identity.identity) == f"spiffe://public/ns/{ns}/guest"
        async with grpc.aio.secure_channel(_internal(billing), identity.channel_credentials(), options=options) as ch:
            try:
                await internal_grpc.ServiceInvocationStub(ch).CallLocal(_call("billing", "checkout"), timeout=10)
            except grpc.aio.AioRpcError as err:
                return err
        raise AssertionError("billing served guest's forged call")

    forged = asyncio.run(as_guest_claiming_checkout())
    assert forged.code() is grpc.StatusCode.PERMISSION_DENIED, forged.details()
    assert "guest" in (forged.details() or "") and f"spiffe://public/ns/{ns}/guest" in (forged.details() or "")

    # 5. Certificates rotate during continuous invocation, with no failed call.
    keep_calling_through_renewals(checkout, billing)


def keep_calling_through_renewals(checkout: client.V1Pod, billing: client.V1Pod) -> None:
    start = {pods.name(p): _renewals(p) for p in (checkout, billing)}
    failures: list[str] = []
    calls = 0
    renewed = threading.Event()

    def watch() -> None:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not renewed.is_set():
            if all(_renewals(p) >= start[pods.name(p)] + 2 for p in (checkout, billing)):
                renewed.set()
                return
            renewed.wait(2)

    watcher = threading.Thread(target=watch)
    watcher.start()
    deadline = time.monotonic() + 250
    with httpx.Client(timeout=10) as http:
        while not renewed.is_set() and time.monotonic() < deadline:
            answer = http.get(pods.app_url(checkout, "/invoke/billing/hello"))
            calls += 1
            if answer.status_code != 200:
                failures.append(f"{answer.status_code} {answer.text[:300]}")
    renewed.set()
    watcher.join()
    counts = {pods.name(p): _renewals(p) - start[pods.name(p)] for p in (checkout, billing)}
    assert all(n >= 2 for n in counts.values()), f"renewals seen: {counts}"
    assert calls > 0 and not failures, f"{len(failures)} of {calls} calls failed: {failures[:3]}"
    print(f"[e2e] {calls} calls across {counts} certificate renewals, none failed")
