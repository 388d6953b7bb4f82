"""What operators watch: Prometheus metrics per API method and status, and component status."""

import json
import os
from pathlib import Path

import grpc
import httpx
import pytest
from dapr.clients import DaprClient
from dapr.proto.runtime.v1 import actors_pb2, dapr_pb2_grpc, state_pb2
from ottava_sidecar._gen.spec.proto.runtime.v1 import runtime_pb2 as layotto_pb
from ottava_sidecar._gen.spec.proto.runtime.v1 import runtime_pb2_grpc as layotto_grpc
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import SidecarFactory, SidecarProcess
from tests.messaging import wait_for


def sample(metrics_text: str, metric: str, **labels: str) -> float:
    for family in text_string_to_metric_families(metrics_text):
        for s in family.samples:
            if s.name == metric and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


def test_grpc_calls_are_counted_per_method_and_status(default_sidecar: SidecarProcess) -> None:
    labels = {"protocol": "grpc", "api": "state", "method": "GetState", "surface": "dapr"}  # not Layotto's GetState
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


def scrape(sidecar: SidecarProcess) -> str:
    return httpx.get(f"{sidecar.metrics_url}/metrics").text


def test_dapr_and_layotto_calls_land_on_their_own_surface(default_sidecar: SidecarProcess) -> None:
    labels = {"protocol": "grpc", "api": "state", "method": "GetState", "status": "OK"}
    latency = {"kind": "state", "component": "statestore", "operation": "get", "success": "true"}
    before = scrape(default_sidecar)
    with grpc.insecure_channel(default_sidecar.grpc_address) as channel:
        dapr_pb2_grpc.DaprStub(channel).GetState(state_pb2.GetStateRequest(store_name="statestore", key="k"))
        layotto = layotto_grpc.RuntimeStub(channel)
        layotto.GetState(layotto_pb.GetStateRequest(store_name="statestore", key="k"))
        layotto.GetState(layotto_pb.GetStateRequest(store_name="statestore", key="k"))
    after = scrape(default_sidecar)

    requests = "ottava_api_requests_total"
    for surface, calls in (("dapr", 1), ("layotto", 2)):
        grown = sample(after, requests, **labels, surface=surface) - sample(before, requests, **labels, surface=surface)
        assert grown == calls, surface
    # Each call asked the store once: its latency histogram has a sample per call.
    histogram = "ottava_component_operation_duration_seconds_count"
    assert sample(after, histogram, **latency) - sample(before, histogram, **latency) == 3


def test_unimplemented_calls_are_counted(default_sidecar: SidecarProcess) -> None:
    before = scrape(default_sidecar)
    with grpc.insecure_channel(default_sidecar.grpc_address) as channel:
        with pytest.raises(grpc.RpcError) as known:  # a Dapr method Ottava does not serve
            dapr_pb2_grpc.DaprStub(channel).GetActorState(actors_pb2.GetActorStateRequest(actor_type="cart"))
        assert known.value.code() == grpc.StatusCode.UNIMPLEMENTED
        with pytest.raises(grpc.RpcError) as unknown:  # a method of no service at all
            channel.unary_unary("/no.such.Service/Call", request_serializer=None, response_deserializer=None)(b"")
        assert unknown.value.code() == grpc.StatusCode.UNIMPLEMENTED
    after = scrape(default_sidecar)

    refused = "ottava_api_refused_total"
    for surface in ("dapr", "unknown"):
        labels = {"protocol": "grpc", "surface": surface, "reason": "unimplemented"}
        assert sample(after, refused, **labels) == sample(before, refused, **labels) + 1, surface


def test_token_and_policy_refusals_are_counted_by_reason(sidecars: SidecarFactory, tmp_path: Path) -> None:
    config = tmp_path / "narrow.yaml"
    config.write_text(
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: narrow\n"
        "spec:\n  api:\n    denied: [{name: state, protocol: grpc}]\n",
        encoding="utf-8",
    )
    sidecar = sidecars.start("--config", str(config), env={"DAPR_API_TOKEN": "let-me-in"})
    token = [("dapr-api-token", "let-me-in")]
    with grpc.insecure_channel(sidecar.grpc_address) as channel:
        dapr = dapr_pb2_grpc.DaprStub(channel)
        for metadata in ([], [("dapr-api-token", "wrong")]):
            with pytest.raises(grpc.RpcError) as denied:
                dapr.GetState(state_pb2.GetStateRequest(store_name="statestore", key="k"), metadata=metadata)
            assert denied.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as denied:
            layotto_grpc.RuntimeStub(channel).GetState(layotto_pb.GetStateRequest(store_name="statestore", key="k"))
        assert denied.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as refused:  # with the token, but state is denied over gRPC
            dapr.GetState(state_pb2.GetStateRequest(store_name="statestore", key="k"), metadata=token)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert httpx.get(f"{sidecar.http_url}/v1.0/state/statestore/k").status_code == 401
    after = scrape(sidecar)

    refused_total = "ottava_api_refused_total"
    assert sample(after, refused_total, protocol="grpc", surface="dapr", reason="api-token") == 2
    assert sample(after, refused_total, protocol="grpc", surface="layotto", reason="api-token") == 1
    assert sample(after, refused_total, protocol="http", surface="dapr", reason="api-token") == 1
    assert sample(after, refused_total, protocol="grpc", surface="dapr", reason="api-access-policy") == 1


def test_pubsub_results_are_counted_per_topic(sidecars: SidecarFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    sidecar = sidecars.start("--app-id", "metrics-pubsub")
    monkeypatch.setenv("DAPR_GRPC_PORT", str(sidecar.grpc_port))
    monkeypatch.setenv("DAPR_HTTP_PORT", str(sidecar.http_port))
    settled = "ottava_pubsub_settled_total"

    def counted(topic: str, result: str) -> float:
        return sample(scrape(sidecar), settled, pubsub="pubsub", topic=topic, result=result)

    with DaprClient() as client:
        kept = client.subscribe(pubsub_name="pubsub", topic="orders", dead_letter_topic="orders-dead")
        try:
            for n in range(3):
                client.publish_event("pubsub", "orders", json.dumps({"n": n}), data_content_type="application/json")
            kept.respond_retry(kept.next_message())
            kept.respond_success(kept.next_message())  # the retried one, again
            kept.respond_drop(kept.next_message())  # moved to orders-dead
            kept.respond_drop(kept.next_message())
            # The last answer is settled before the stream closes (closing would hand it back).
            wait_for(lambda: counted("orders", "dead_lettered") == 2, "both drops to reach the dead-letter topic")
        finally:
            kept.close()
        lost = client.subscribe(pubsub_name="pubsub", topic="audit")  # no dead-letter topic
        try:
            client.publish_event("pubsub", "audit", "x")
            lost.respond_drop(lost.next_message())
            wait_for(lambda: counted("audit", "dropped") == 1, "the drop to be counted")
        finally:
            lost.close()

    text = scrape(sidecar)
    assert sample(text, settled, pubsub="pubsub", topic="orders", result="delivered") == 1
    assert sample(text, settled, pubsub="pubsub", topic="orders", result="retried") == 1
    assert sample(text, settled, pubsub="pubsub", topic="audit", result="dead_lettered") == 0
    published = {"kind": "pubsub", "component": "pubsub", "operation": "publish", "success": "true"}
    # The app's 4 publishes (moving to the dead-letter topic is not an API call).
    assert sample(text, "ottava_component_operation_duration_seconds_count", **published) == 4
