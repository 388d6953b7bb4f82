"""What operators watch: Prometheus metrics per API method and status, and component status."""

import os

import grpc
import httpx
import pytest
from dapr.clients import DaprClient
from dapr.proto.runtime.v1 import dapr_pb2_grpc, state_pb2
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import SidecarFactory, SidecarProcess


def sample(metrics_text: str, metric: str, **labels: str) -> float:
    for family in text_string_to_metric_families(metrics_text):
        for s in family.samples:
            if s.name == metric and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


def test_grpc_calls_are_counted_per_method_and_status(default_sidecar: SidecarProcess) -> None:
    labels = {"protocol": "grpc", "api": "state", "method": "GetState"}
    before = httpx.get(f"{default_sidecar.metrics_url}/metrics").text
    with grpc.insecure_channel(default_sidecar.grpc_address) as channel:
        stub = dapr_pb2_grpc.DaprStub(channel)
        stub.GetState(state_pb2.GetStateRequest(store_name="statestore", key="metrics-key"))
        with pytest.raises(grpc.RpcError):
            stub.GetState(state_pb2.GetStateRequest(store_name="nosuchstore", key="k"))
    after = httpx.get(f"{default_sidecar.metrics_url}/metrics").text

    ok = "ottava_api_requests_total"
    assert sample(after, ok, **labels, status="OK") == sample(before, ok, **labels, status="OK") + 1
    assert (
        sample(after, ok, **labels, status="INVALID_ARGUMENT")
        == sample(before, ok, **labels, status="INVALID_ARGUMENT") + 1
    )
    assert sample(after, "ottava_api_request_duration_seconds_count", **labels, status="OK") >= 1
    assert sample(after, "ottava_component_initialized", name="statestore", type="state.in-memory") == 1


def test_api_token_is_enforced_on_grpc(sidecars: SidecarFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    sidecar = sidecars.start(env={"DAPR_API_TOKEN": "let-me-in"})
    with grpc.insecure_channel(sidecar.grpc_address) as channel:
        stub = dapr_pb2_grpc.DaprStub(channel)
        request = state_pb2.GetStateRequest(store_name="statestore", key="k")
        with pytest.raises(grpc.RpcError) as denied:
            stub.GetState(request)
        assert denied.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError):
            stub.GetState(request, metadata=[("dapr-api-token", "wrong")])
        stub.GetState(request, metadata=[("dapr-api-token", "let-me-in")])

    # The SDK sends the token from its environment, as it would under `ottava run --`.
    monkeypatch.setenv("DAPR_GRPC_PORT", str(sidecar.grpc_port))
    monkeypatch.setenv("DAPR_HTTP_PORT", str(sidecar.http_port))
    monkeypatch.setenv("DAPR_API_TOKEN", "let-me-in")
    assert os.environ["DAPR_API_TOKEN"] == "let-me-in"
    with DaprClient() as client:
        client.save_state("statestore", "k", "v")
        assert client.get_state("statestore", "k").data == b"v"
