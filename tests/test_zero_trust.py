"""Zero trust between standalone sidecars: mTLS from the local CA, caller ids from certificates, access control.

Three `ottava run` sidecars share a registry folder and a local CA, as one user's
sidecars on a laptop do: `billing` (an HTTP app behind it, and a `--config` with
`accessControl`), `checkout` (allowed some operations) and `guest` (named by no policy).
The test is the apps: it calls its own sidecars with the Dapr HTTP and gRPC APIs, and
plays an attacker against billing's internal port with raw gRPC.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
from dapr.proto.common.v1 import common_pb2
from dapr.proto.runtime.v1 import dapr_pb2_grpc, invoke_pb2
from ottava_sidecar._gen.ottava.internal.v1 import invocation_pb2 as internal_pb
from ottava_sidecar._gen.ottava.internal.v1 import invocation_pb2_grpc as internal_grpc
from ottava_sidecar.identity.spiffe import server_name

from tests import peers
from tests.conftest import SidecarFactory, SidecarProcess
from tests.messaging import start_with_app, stop_all_gracefully, wait_ready

POLICY = """\
apiVersion: ottava.io/v1alpha1
kind: Configuration
metadata:
  name: billing-config
spec:
  accessControl:
    defaultAction: deny
    trustDomain: public
    policies:
    - appId: {checkout}
      defaultAction: deny
      namespace: default
      operations:
      - name: /echo/orders/**
        httpVerb: [GET, POST]
        action: allow
      - name: /echo/admin/*
        httpVerb: ["*"]
        action: deny
    - appId: {mallory}
      defaultAction: allow
      namespace: default
"""


@dataclass
class Sidecars:
    billing: SidecarProcess
    checkout: SidecarProcess
    guest: SidecarProcess
    ids: dict[str, str]
    ca_dir: Path
    registry: Path

    @property
    def billing_internal(self) -> str:
        match = re.search(r"internal=\S+:(\d+)", self.billing.ready_line)
        assert match, self.billing.ready_line
        return f"127.0.0.1:{match[1]}"

    def invoke(self, caller: SidecarProcess, verb: str, method: str, **kwargs: object) -> httpx.Response:
        url = f"{caller.http_url}/v1.0/invoke/{self.ids['billing']}/method/{method}"
        return httpx.request(verb, url, timeout=10, **kwargs)  # type: ignore[arg-type]


def _ids() -> dict[str, str]:
    suffix = uuid.uuid4().hex[:6]
    return {name: f"{name}-{suffix}" for name in ("billing", "checkout", "guest", "mallory")}


@pytest.fixture(scope="module")
def sidecars(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sidecars]:
    folder = tmp_path_factory.mktemp("zero-trust")
    ca_dir = folder / "ca"
    ids = _ids()
    config = folder / "billing.yaml"
    config.write_text(POLICY.format(**ids))
    factory = SidecarFactory(folder)
    registry = folder / "registry"
    env = {"OTTAVA_CA_DIR": str(ca_dir), "OTTAVA_REGISTRY_DIR": str(registry)}
    try:
        billing = start_with_app(
            factory,
            ids["billing"],
            "http",
            "http_app.py",
            events_file=folder / "events",
            registry_dir=registry,
            args=("--config", str(config), "--workload-cert-ttl", "12s"),
            env=env,
        )
        wait_ready(billing)
        checkout = factory.start("--app-id", ids["checkout"], "--workload-cert-ttl", "12s", env=env)
        guest = factory.start("--app-id", ids["guest"], env=env)
        yield Sidecars(billing, checkout, guest, ids, ca_dir, registry)
    finally:
        stop_all_gracefully(factory)
        factory.stop_all()


def test_the_local_ca_is_private_to_the_user(sidecars: Sidecars) -> None:
    assert oct(sidecars.ca_dir.stat().st_mode & 0o777) == "0o700"
    assert oct((sidecars.ca_dir / "ca.key").stat().st_mode & 0o777) == "0o600"


def test_an_allowed_operation_answers_with_the_callers_certified_id(sidecars: Sidecars) -> None:
    answer = sidecars.invoke(
        sidecars.checkout, "POST", "echo/orders/7", content=b"{}", headers={"dapr-caller-app-id": "billing-admin"}
    )
    assert answer.status_code == 200, answer.text
    seen = answer.json()["headers"]
    assert seen["dapr-caller-app-id"] == sidecars.ids["checkout"]  # never the forged one
    assert "dapr-api-token" not in seen


def test_the_api_token_never_travels_to_the_callee(sidecars: Sidecars, tmp_path: Path) -> None:
    """A caller whose sidecar requires DAPR_API_TOKEN: the token stops at its own sidecar."""
    factory = SidecarFactory(tmp_path)
    env = {
        "OTTAVA_CA_DIR": str(sidecars.ca_dir),
        "OTTAVA_REGISTRY_DIR": str(sidecars.registry),
        "DAPR_API_TOKEN": "s3cret",
    }
    try:
        tokened = factory.start("--app-id", sidecars.ids["checkout"], env=env)
        headers = {"dapr-api-token": "s3cret"}
        answer = sidecars.invoke(tokened, "GET", "echo/orders/1", headers=headers)
        assert answer.status_code == 200, answer.text
        seen = answer.json()["headers"]
        assert "dapr-api-token" not in seen and seen["dapr-caller-app-id"] == sidecars.ids["checkout"]
    finally:
        factory.stop_all()


@pytest.mark.parametrize(
    ("verb", "method", "rule"),
    [
        ("DELETE", "echo/orders/7", "defaultAction"),  # no rule of checkout's policy covers DELETE
        ("GET", "echo/admin/users", "operations[1]"),  # denied by name, whatever the verb
        ("GET", "echo/reports", "defaultAction"),  # named by no rule
    ],
)
def test_denied_operations_answer_403_naming_the_rule(sidecars: Sidecars, verb: str, method: str, rule: str) -> None:
    answer = sidecars.invoke(sidecars.checkout, verb, method)
    assert answer.status_code == 403, answer.text
    message = answer.json()["message"]
    assert "billing-config" in message and rule in message and sidecars.ids["checkout"] in message


def test_a_caller_no_policy_names_gets_the_default_action(sidecars: Sidecars) -> None:
    answer = sidecars.invoke(sidecars.guest, "GET", "echo/orders/7")
    assert answer.status_code == 403, answer.text
    assert sidecars.ids["guest"] in answer.json()["message"]


def test_a_denial_over_grpc_is_permission_denied(sidecars: Sidecars) -> None:
    with grpc.insecure_channel(sidecars.checkout.grpc_address) as channel:
        stub = dapr_pb2_grpc.DaprStub(channel)
        request = invoke_pb2.InvokeServiceRequest(
            id=sidecars.ids["billing"],
            message=common_pb2.InvokeRequest(
                method="echo/admin/users", http_extension=common_pb2.HTTPExtension(verb=common_pb2.HTTPExtension.GET)
            ),
        )
        with pytest.raises(grpc.RpcError) as denied:
            stub.InvokeService(request, timeout=10)
    assert denied.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "operations[1]" in (denied.value.details() or "")


def test_denials_are_counted_by_caller(sidecars: Sidecars) -> None:
    sidecars.invoke(sidecars.guest, "GET", "echo/orders/1")
    metrics = httpx.get(f"{sidecars.billing.metrics_url}/metrics", timeout=10).text
    counted = [
        line
        for line in metrics.splitlines()
        if line.startswith("ottava_access_control_denials_total{") and sidecars.ids["guest"] in line
    ]
    assert counted and float(counted[0].rsplit(" ", 1)[1]) >= 1


def _internal_call(app_id: str, forged_caller: str) -> internal_pb.CallLocalRequest:
    return internal_pb.CallLocalRequest(
        target_app_id=app_id,
        caller_app_id=forged_caller,
        method="echo/orders/1",
        http_verb="GET",
        headers=[internal_pb.Header(name="dapr-caller-app-id", values=[forged_caller])],
        timeout_seconds=10,
    )


def test_a_plaintext_peer_is_refused(sidecars: Sidecars) -> None:
    with grpc.insecure_channel(sidecars.billing_internal) as channel:
        stub = internal_grpc.ServiceInvocationStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.CallLocal(_internal_call(sidecars.ids["billing"], "checkout"), timeout=5)
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE


def test_a_peer_without_a_certificate_is_refused(sidecars: Sidecars) -> None:
    roots = (sidecars.ca_dir / "ca.crt").read_bytes()
    credentials = grpc.ssl_channel_credentials(root_certificates=roots)
    name = server_name(sidecars.ids["billing"], "default")
    options = [("grpc.ssl_target_name_override", name)]
    with grpc.secure_channel(sidecars.billing_internal, credentials, options=options) as channel:
        stub = internal_grpc.ServiceInvocationStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.CallLocal(_internal_call(sidecars.ids["billing"], "checkout"), timeout=5)
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE


async def test_another_apps_certificate_forging_the_caller_is_known_by_its_real_id(sidecars: Sidecars) -> None:
    mallory = sidecars.ids["mallory"]
    async with await peers.channel(
        sidecars.billing_internal, sidecars.ids["billing"], mallory, sidecars.ca_dir
    ) as channel:
        stub = internal_grpc.ServiceInvocationStub(channel)
        forged = _internal_call(sidecars.ids["billing"], sidecars.ids["checkout"])
        answer = await stub.CallLocal(forged, timeout=10)
    assert answer.http_status == 200
    seen = json.loads(answer.data)["headers"]
    assert seen["dapr-caller-app-id"] == sidecars.ids["mallory"]


async def test_a_caller_checks_it_reached_the_app_it_meant(sidecars: Sidecars) -> None:
    """A sidecar that holds another app's certificate cannot pose as billing to a caller."""
    credentials = await peers.credentials(sidecars.ids["mallory"], sidecars.ca_dir)
    options = [("grpc.ssl_target_name_override", server_name(sidecars.ids["guest"], "default"))]
    async with grpc.aio.secure_channel(sidecars.billing_internal, credentials, options=options) as channel:
        stub = internal_grpc.ServiceInvocationStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.CallLocal(_internal_call(sidecars.ids["guest"], sidecars.ids["mallory"]), timeout=5)
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
    assert "Hostname Verification" in (refused.value.details() or "") or "verif" in (refused.value.details() or "")


def _renewals(sidecar: SidecarProcess) -> float:
    text = httpx.get(f"{sidecar.metrics_url}/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith('ottava_identity_certificate_renewals_total{outcome="success"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_certificates_rotate_under_continuous_invocation_with_no_failed_call(sidecars: Sidecars) -> None:
    """Both ends hold 12-second certificates, renewed every ~6 s; calls go on throughout."""
    start = {name: _renewals(s) for name, s in (("billing", sidecars.billing), ("checkout", sidecars.checkout))}
    failures: list[str] = []
    calls = 0
    deadline = time.monotonic() + 90
    with httpx.Client(timeout=10) as client:
        url = f"{sidecars.checkout.http_url}/v1.0/invoke/{sidecars.ids['billing']}/method/echo/orders/1"
        while time.monotonic() < deadline:
            answer = client.get(url)
            calls += 1
            if answer.status_code != 200:
                failures.append(f"{answer.status_code} {answer.text[:200]}")
            if calls % 20 == 0 and all(
                _renewals(s) >= start[name] + 3
                for name, s in (("billing", sidecars.billing), ("checkout", sidecars.checkout))
            ):
                break
    renewed = {
        name: _renewals(s) - start[name] for name, s in (("billing", sidecars.billing), ("checkout", sidecars.checkout))
    }
    assert all(count >= 3 for count in renewed.values()), f"renewals within 90 s: {renewed}"
    assert not failures, f"{len(failures)} of {calls} calls failed: {failures[:5]}"
