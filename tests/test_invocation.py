"""Service invocation between two sidecars: app A (this test, with the Dapr SDK) → A's sidecar → B's sidecar → app B."""

import asyncio
import json
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from dapr.clients import DaprClient
from dapr.clients.grpc.client import DaprGrpcClient
from google.protobuf import any_pb2
from ottava_sidecar._gen.spec.proto.runtime.v1 import runtime_pb2 as layotto
from ottava_sidecar._gen.spec.proto.runtime.v1 import runtime_pb2_grpc as layotto_grpc

from tests.conftest import SidecarFactory, SidecarProcess
from tests.messaging import ROOT, start_with_app, stop_all_gracefully, wait_ready


@dataclass
class Pair:
    caller: SidecarProcess  # app A's sidecar: A is this test
    http_app: str  # app ids of the targets
    grpc_app: str
    registry: Path


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    folder = tmp_path_factory.mktemp("invocation")
    registry = folder / "registry"
    factory = SidecarFactory(folder)
    suffix = uuid.uuid4().hex[:6]
    http_app, grpc_app = f"orders-{suffix}", f"stock-{suffix}"
    try:
        for app_id, protocol in ((http_app, "http"), (grpc_app, "grpc")):
            target = start_with_app(
                factory, app_id, protocol, f"{protocol}_app.py", events_file=folder / "events", registry_dir=registry
            )
            wait_ready(target)
        caller = factory.start(
            "--app-id",
            f"checkout-{suffix}",
            "--invocation-filter",
            "tests.apps.filters:AddTenantHeader",
            "--invocation-filter",
            "tests.apps.filters:RefuseForbidden",
            env={"OTTAVA_REGISTRY_DIR": str(registry), "PYTHONPATH": str(ROOT)},
        )
        yield Pair(caller, http_app, grpc_app, registry)
    finally:
        stop_all_gracefully(factory)
        factory.stop_all()


@pytest.fixture
def client(pair: Pair, monkeypatch: pytest.MonkeyPatch) -> Iterator[DaprClient]:
    monkeypatch.setenv("DAPR_GRPC_PORT", str(pair.caller.grpc_port))
    monkeypatch.setenv("DAPR_HTTP_PORT", str(pair.caller.http_port))
    with DaprClient() as dapr:
        yield dapr
    # The SDK's sync HTTP invocation sets a new event loop of its own on each call and never
    # closes it; close the last one so it is not reported as leaked later.
    policy = asyncio.get_event_loop_policy()
    try:
        leaked = policy.get_event_loop()
    except RuntimeError:  # none is set
        return
    leaked.close()
    policy.set_event_loop(None)


def test_sdk_http_invocation_keeps_body_headers_verb_and_query(pair: Pair, client: DaprClient) -> None:
    response = client.invoke_method(
        pair.http_app,
        "echo/orders/42",
        data='{"qty": 3}',
        content_type="application/json",
        http_verb="PUT",
        http_querystring=(("a", "1"), ("b", "two words")),
        metadata=(("x-request-id", "r-1"),),
    )
    assert response.status_code == 200
    echoed: dict[str, Any] = response.json()
    assert echoed["method"] == "PUT" and echoed["path"] == "/echo/orders/42"
    assert echoed["query"] == "a=1&b=two+words"
    assert json.loads(echoed["body"]) == {"qty": 3}
    assert echoed["headers"]["content-type"] == "application/json"
    assert echoed["headers"]["x-request-id"] == "r-1"
    assert echoed["headers"]["dapr-caller-app-id"] == pair.caller.ready_line.split("app_id=")[1].split()[0]
    assert echoed["headers"]["x-tenant"] == "acme"  # added by the caller's filter
    assert response.headers["x-echoed"] == ["yes"]  # the app's response headers come back (the SDK lists values)


@pytest.mark.parametrize("verb", ["GET", "POST", "PUT", "PATCH", "DELETE"])
def test_every_verb_and_the_app_status_pass_through(pair: Pair, verb: str) -> None:
    url = f"{pair.caller.http_url}/v1.0/invoke/{pair.http_app}/method/echo/x"
    response = httpx.request(verb, url, params={"q": "1"}, headers={"x-answer-status": "201"}, content=b"body")
    assert response.status_code == 201
    assert response.headers["x-echoed"] == "yes" and response.headers["x-filtered"] == "after"
    echoed = response.json()
    assert echoed["method"] == verb and echoed["query"] == "q=1"
    assert echoed["body"] == "body"


def test_sdk_grpc_invocation_reaches_http_and_grpc_apps(pair: Pair, client: DaprClient) -> None:
    with pytest.warns(DeprecationWarning, match="deprecated"):
        to_http = DaprGrpcClient.invoke_method(
            client,
            pair.http_app,
            "echo/grpc",
            data=b"hello",
            content_type="text/plain",
            http_verb="POST",
            http_querystring=(("k", "v"),),
        )
    echoed = json.loads(to_http.data)
    assert echoed["method"] == "POST" and echoed["query"] == "k=v" and echoed["body"] == "hello"

    with pytest.warns(DeprecationWarning, match="deprecated"):
        to_grpc = DaprGrpcClient.invoke_method(
            client,
            pair.grpc_app,
            "echo",
            data=b'{"sku": 1}',
            content_type="application/json",
            metadata=(("x-request-id", "r-2"),),
        )
    echoed = json.loads(to_grpc.data)
    assert json.loads(echoed["data"]) == {"sku": 1} and echoed["content_type"] == "application/json"
    assert echoed["metadata"]["x-request-id"] == "r-2" and echoed["metadata"]["x-tenant"] == "acme"


def test_layotto_invoke_service(pair: Pair) -> None:
    with grpc.insecure_channel(pair.caller.grpc_address) as channel:
        answer = layotto_grpc.RuntimeStub(channel).InvokeService(
            layotto.InvokeServiceRequest(
                id=pair.http_app,
                message=layotto.CommonInvokeRequest(
                    method="echo/layotto",
                    data=any_pb2.Any(value=b"from layotto"),
                    content_type="text/plain",
                    http_extension=layotto.HTTPExtension(verb=layotto.HTTPExtension.POST, querystring="z=9"),
                ),
            )
        )
    echoed = json.loads(answer.data.value)
    assert echoed["body"] == "from layotto" and echoed["query"] == "z=9"


def test_unknown_app_id_is_named(pair: Pair, client: DaprClient) -> None:
    response = httpx.post(f"{pair.caller.http_url}/v1.0/invoke/nosuch-app/method/echo")
    assert response.status_code == 404
    assert response.json()["errorCode"] == "ERR_DIRECT_INVOKE" and "nosuch-app" in response.json()["message"]
    with grpc.insecure_channel(pair.caller.grpc_address) as channel, pytest.raises(grpc.RpcError) as err:
        layotto_grpc.RuntimeStub(channel).InvokeService(
            layotto.InvokeServiceRequest(id="nosuch-app", message=layotto.CommonInvokeRequest(method="m"))
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND and "nosuch-app" in str(err.value.details())
    with pytest.warns(DeprecationWarning, match="deprecated"), pytest.raises(grpc.RpcError) as sdk_err:
        DaprGrpcClient.invoke_method(client, "nosuch-app", "echo", data=b"")
    assert "nosuch-app" in str(sdk_err.value.details())


def test_a_filter_can_refuse_a_call(pair: Pair) -> None:
    response = httpx.post(f"{pair.caller.http_url}/v1.0/invoke/{pair.http_app}/method/forbidden/thing")
    assert response.status_code == 403 and "RefuseForbidden" in response.json()["message"]


def test_a_target_app_that_is_down_fails_fast_naming_it(pair: Pair, sidecars: SidecarFactory) -> None:
    down = f"down-{uuid.uuid4().hex[:6]}"
    start_with_app(sidecars, down, "http", None, events_file=pair.registry / "unused", registry_dir=pair.registry)
    started = time.monotonic()
    response = httpx.post(f"{pair.caller.http_url}/v1.0/invoke/{down}/method/echo", timeout=30)
    assert time.monotonic() - started < 10
    assert response.status_code == 503 and down in response.json()["message"]


def test_a_target_app_that_hangs_times_out_naming_it(pair: Pair, sidecars: SidecarFactory) -> None:
    hung = f"hung-{uuid.uuid4().hex[:6]}"
    with socket.socket() as listener:  # accepts connections (the kernel does), never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        port = listener.getsockname()[1]
        sidecars.start(
            "--app-id",
            hung,
            "--app-port",
            str(port),
            "--app-timeout",
            "1",
            env={"OTTAVA_REGISTRY_DIR": str(pair.registry)},
        )
        started = time.monotonic()
        response = httpx.post(f"{pair.caller.http_url}/v1.0/invoke/{hung}/method/echo", timeout=30)
        assert time.monotonic() - started < 10
    assert response.status_code == 504 and hung in response.json()["message"]
    sidecars.stop_all()


def test_a_bad_filter_reference_stops_start_up(sidecars: SidecarFactory) -> None:
    sidecar = sidecars.start("--invocation-filter", "nosuch.module:Filter", wait=False)
    assert sidecar.process.wait(timeout=30) == 2
    assert "nosuch.module:Filter" in sidecar.log()
