"""Issue 5: the whole user journey on the real control plane, as a user would do it.

`helm install`, `kubectl apply` Components (one referencing a Secret) and a Configuration,
an annotated Deployment; the controller-manager makes the pod, the webhook injects the
sidecar; the sidecar runs with the admitted pod's args, env and service account (see
`kubelet.py`), and a Dapr SDK client uses it. Then the wiring changes under it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import grpc
import httpx
import pytest
import yaml
from dapr.clients import DaprClient
from kubernetes import client
from ottava_sidecar._gen.spec.proto.runtime.v1 import runtime_pb2, runtime_pb2_grpc

from . import cluster as cluster_mod
from . import incluster, kubelet, ottava
from .test_operator import apply, deployment, pod_of

pytestmark = pytest.mark.e2e


def component(name: str, type_: str, metadata: Mapping[str, object] | None = None, **extra: object) -> str:
    items = [{"name": k, **(v if isinstance(v, dict) else {"value": str(v)})} for k, v in (metadata or {}).items()]
    body = {"apiVersion": "ottava.io/v1alpha1", "kind": "Component", "metadata": {"name": name}}
    return yaml.safe_dump({**body, "spec": {"type": type_, "version": "v1", "metadata": items}, **extra})


CONFIGURATION = """
apiVersion: ottava.io/v1alpha1
kind: Configuration
metadata: {name: journey}
spec:
  api:
    denied: [{name: lock}]
  secrets:
    scopes:
    - {storeName: secretstore, defaultAccess: deny, allowedSecrets: [shop-secrets]}
"""


@pytest.fixture
def dapr_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # What the injector gives the app container; the sidecar listens on the pod's ports.
    monkeypatch.setenv("DAPR_GRPC_PORT", "50001")
    monkeypatch.setenv("DAPR_HTTP_PORT", "3500")


def readiness(sidecar: kubelet.PodSidecar) -> httpx.Response:
    return httpx.get(sidecar.probe_url("readinessProbe"), timeout=5)


@pytest.fixture
def journey(
    ottava_operator: incluster.InstalledOttava,
    cluster: cluster_mod.Cluster,
    kube: client.ApiClient,
    restricted_namespace: str,
    tmp_path: Path,
    dapr_env: None,
) -> Iterator[tuple[str, kubelet.PodSidecar]]:
    ns = restricted_namespace
    cluster.kubectl(
        "create",
        "secret",
        "generic",
        "shop-secrets",
        "-n",
        ns,
        "--from-literal=prefix=shop",
        "--from-literal=api-key=s3cr3t",
    )
    cluster.kubectl("create", "secret", "generic", "other-secrets", "-n", ns, "--from-literal=token=nope")
    manifests = [
        component(
            "statestore", "state.in-memory", {"keyPrefix": {"secretKeyRef": {"name": "shop-secrets", "key": "prefix"}}}
        ),
        component("configstore", "configuration.in-memory"),
        component("secretstore", "secretstores.kubernetes"),
        component("lockstore", "lock.in-memory"),
        CONFIGURATION,
    ]
    for manifest in manifests:
        result = apply(cluster, ns, manifest)
        assert result.returncode == 0, result.stderr
    annotations = {"ottava.io/enabled": "true", "ottava.io/app-id": "journey", "ottava.io/config": "journey"}
    assert apply(cluster, ns, deployment("journey", annotations)).returncode == 0
    pod = pod_of(kube, ns, "journey")
    assert kubelet.sidecar_container(pod) is not None
    sidecar = kubelet.run_sidecar(pod, kube, tmp_path)
    yield ns, sidecar
    sidecar.stop()


def test_the_journey(journey: tuple[str, kubelet.PodSidecar], cluster: cluster_mod.Cluster) -> None:
    ns, sidecar = journey
    body = readiness(sidecar).json()
    assert body["status"] == "UP", body
    assert body["components"]["statestore"]["status"] == "UP"

    with DaprClient() as dapr:
        # State, configuration and a secret through the sidecar, with the pod's wiring.
        dapr.save_state("statestore", "order-1", "shipped")
        assert dapr.get_state("statestore", "order-1").data == b"shipped"
        with grpc.insecure_channel("127.0.0.1:50001") as channel:
            runtime_pb2_grpc.RuntimeStub(channel).SaveConfiguration(
                runtime_pb2.SaveConfigurationRequest(
                    store_name="configstore", items=[runtime_pb2.ConfigurationItem(key="color", content="blue")]
                )
            )
        assert dapr.get_configuration("configstore", ["color"]).items["color"].value == "blue"
        assert dapr.get_secret("secretstore", "shop-secrets").secret["api-key"] == "s3cr3t"

        # The Configuration is honoured: secret scopes and the API deny list.
        with pytest.raises(grpc.RpcError) as scoped:
            dapr.get_secret("secretstore", "other-secrets")
        assert scoped.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.RpcError) as denied:
            dapr.try_lock("lockstore", "r", "me", 10)
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "lock API" in str(denied.value.details())

        # Edit the Component while calls run: the new wiring is used within 2 s, no call fails.
        failures: list[str] = []
        calls = 0
        stop = threading.Event()

        def keep_calling() -> None:
            nonlocal calls
            with DaprClient() as caller:
                while not stop.is_set():
                    try:
                        caller.save_state("statestore", "busy", "x")
                        caller.get_state("statestore", "busy")
                    except grpc.RpcError as err:
                        failures.append(str(err))
                    calls += 1

        worker = threading.Thread(target=keep_calling)
        worker.start()
        try:
            db = f"/tmp/ottava-journey-{ns}.db"
            edited = apply(cluster, ns, component("statestore", "state.sqlite", {"databasePath": db}))
            assert edited.returncode == 0, edited.stderr
            started = time.monotonic()

            def switched() -> bool:
                return {c.name: c.type for c in dapr.get_metadata().registered_components}.get(
                    "statestore"
                ) == "state.sqlite"

            cluster_mod.poll(switched, timeout=10, what="the sidecar to use the edited statestore")
            took = time.monotonic() - started
        finally:
            stop.set()
            worker.join(timeout=30)
        assert took <= 2.0, f"the edited Component took {took:.2f}s to take effect"
        assert calls > 0
        assert failures == [], f"{len(failures)} of {calls} calls failed during the switch: {failures[:3]}"
        assert dapr.get_state("statestore", "order-1").data == b"", "the new store must be the one answering"

        # Delete it: calls fail with an error naming it.
        cluster.kubectl("delete", "component", "statestore", "-n", ns)

        def gone() -> str | None:
            try:
                dapr.get_state("statestore", "order-1")
            except grpc.RpcError as err:
                return str(err.details())
            return None

        assert "statestore" in cluster_mod.poll(gone, timeout=10, what="calls to the deleted statestore to fail")

    # Break a Component: readiness goes DOWN naming it.
    broken = component("vault", "secretstores.local.file", {"secretsFile": "/nonexistent/secrets.json"})
    assert apply(cluster, ns, broken).returncode == 0

    def down() -> dict[str, object] | None:
        response = readiness(sidecar)
        document: dict[str, object] = response.json()
        return document if response.status_code == 503 and document["status"] == "DOWN" else None

    body = cluster_mod.poll(down, timeout=15, what="readiness to go DOWN for the broken Component")
    assert body["components"]["vault"]["status"] == "DOWN"
    assert "/nonexistent/secrets.json" in body["components"]["vault"]["details"]["reason"]
    assert httpx.get(sidecar.probe_url("livenessProbe")).status_code == 200


def test_sidecar_reports_a_secret_its_role_does_not_grant(
    ottava_operator: incluster.InstalledOttava,
    cluster: cluster_mod.Cluster,
    kube: client.ApiClient,
    namespace: str,
    tmp_path: Path,
) -> None:
    cluster.kubectl("create", "secret", "generic", "db", "-n", namespace, "--from-literal=prefix=p")
    ref = {"keyPrefix": {"secretKeyRef": {"name": "db", "key": "prefix"}}}
    assert apply(cluster, namespace, component("statestore", "state.in-memory", ref)).returncode == 0
    rbac = client.RbacAuthorizationV1Api(kube)
    cluster_mod.poll(
        lambda: any(r.resources == ["secrets"] for r in rbac.read_namespaced_role("ottava-sidecar", namespace).rules),
        timeout=30,
        what="the operator to grant the Secret",
    )
    annotations = {"ottava.io/enabled": "true"}
    assert apply(cluster, namespace, deployment("noaccess", annotations)).returncode == 0
    pod = pod_of(kube, namespace, "noaccess")
    # Take the grant away with the operator stopped (it would restore it), as a
    # mistaken edit or a Role managed by hand would leave it.
    ottava_operator.stop()
    sidecar: kubelet.PodSidecar | None = None
    try:
        role = rbac.read_namespaced_role("ottava-sidecar", namespace)
        role.rules = [r for r in role.rules if r.resources != ["secrets"]]
        rbac.replace_namespaced_role("ottava-sidecar", namespace, role)
        sidecar = kubelet.run_sidecar(pod, kube, tmp_path, wait_for="livenessProbe")

        def reported() -> dict[str, object] | None:
            assert sidecar is not None
            response = readiness(sidecar)
            document: dict[str, object] = response.json()
            return document if response.status_code == 503 and document["status"] == "DOWN" else None

        body = cluster_mod.poll(reported, timeout=30, what="readiness to report the missing Secret grant")
        reason = body["components"]["statestore"]["details"]["reason"]
        assert "Secret" in reason and "db" in reason and "Role does not grant" in reason
        assert "Traceback" not in sidecar.log()
        assert "Role does not grant" in sidecar.log()
    finally:
        if sidecar is not None:
            sidecar.stop()
        ottava_operator.start()


def test_sidecar_survives_an_apiserver_restart(
    ottava_operator: incluster.InstalledOttava,
    cluster: cluster_mod.Cluster,
    kube: client.ApiClient,
    namespace: str,
    tmp_path: Path,
    dapr_env: None,
) -> None:
    assert apply(cluster, namespace, component("statestore", "state.in-memory")).returncode == 0
    assert apply(cluster, namespace, deployment("resilient", {"ottava.io/enabled": "true"})).returncode == 0
    pod = pod_of(kube, namespace, "resilient")
    sidecar = kubelet.run_sidecar(pod, kube, tmp_path)
    try:
        with ottava.apiserver_down(cluster):
            # Live and serving with the wiring it has, while the apiserver is gone.
            assert httpx.get(sidecar.probe_url("livenessProbe")).status_code == 200
            with DaprClient() as dapr:
                dapr.save_state("statestore", "k", "v")
                assert dapr.get_state("statestore", "k").data == b"v"
        # After the restart, a change is picked up (the watch resumed).
        assert apply(cluster, namespace, component("later", "lock.in-memory")).returncode == 0
        with DaprClient() as dapr:

            def picked_up() -> bool:
                return "later" in {c.name for c in dapr.get_metadata().registered_components}

            cluster_mod.poll(picked_up, timeout=60, what="a Component applied after the restart to load")
    finally:
        sidecar.stop()
