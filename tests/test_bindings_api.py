"""Output bindings through every wire API: Dapr's HTTP route, the Dapr SDK over gRPC, Layotto's stubs.

One sidecar with a `bindings.localstorage` component named `files`, as a user writes it.
"""

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from dapr.clients import DaprClient
from ottava_sidecar._gen.spec.proto.runtime.v1 import runtime_pb2 as layotto
from ottava_sidecar._gen.spec.proto.runtime.v1 import runtime_pb2_grpc as layotto_grpc

from tests.conftest import SidecarFactory, SidecarProcess
from tests.servers.process import free_port

FILES = """\
apiVersion: ottava.io/v1alpha1
kind: Component
metadata: {{name: files}}
spec:
  type: bindings.localstorage
  version: v1
  metadata:
  - {{name: rootPath, value: "{root}"}}
"""


BROKEN = """\
apiVersion: ottava.io/v1alpha1
kind: Component
metadata: {{name: broken}}
spec:
  type: bindings.redis
  version: v1
  ignoreErrors: true
  metadata:
  - {{name: redisHost, value: "127.0.0.1:{port}"}}
  - {{name: connectAttempts, value: "1"}}
"""


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("binding-root")


@pytest.fixture(scope="module")
def sidecar(root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SidecarProcess]:
    factory = SidecarFactory(tmp_path_factory.mktemp("bindings-sidecar"))
    resources = {"files.yaml": FILES.format(root=root), "broken.yaml": BROKEN.format(port=free_port())}
    started = factory.start("--app-id", "binder", resources=resources)
    yield started
    started.stop()
    factory.stop_all()


@pytest.fixture
def dapr_env(sidecar: SidecarProcess, monkeypatch: pytest.MonkeyPatch) -> SidecarProcess:
    monkeypatch.setenv("DAPR_GRPC_PORT", str(sidecar.grpc_port))
    monkeypatch.setenv("DAPR_HTTP_PORT", str(sidecar.http_port))
    return sidecar


def _invoke(sidecar: SidecarProcess, name: str, body: object) -> httpx.Response:
    return httpx.post(f"{sidecar.http_url}/v1.0/bindings/{name}", json=body)


def test_http_create_get_list_delete(sidecar: SidecarProcess, root: Path) -> None:
    name = f"notes/{uuid.uuid4().hex}.txt"
    created = _invoke(sidecar, "files", {"operation": "create", "data": "Hello, World", "metadata": {"fileName": name}})
    assert created.status_code == 200, created.text
    assert created.json() == {"fileName": name}
    assert (root / name).read_text() == "Hello, World"

    got = _invoke(sidecar, "files", {"operation": "get", "metadata": {"fileName": name}})
    assert (got.status_code, got.content) == (200, b"Hello, World")

    listed = _invoke(sidecar, "files", {"operation": "list", "metadata": {"fileName": "notes"}})
    assert name in listed.json()

    deleted = _invoke(sidecar, "files", {"operation": "delete", "metadata": {"fileName": name}})
    assert deleted.status_code == 204
    assert not (root / name).exists()


def test_http_create_without_a_name_picks_one(sidecar: SidecarProcess, root: Path) -> None:
    created = _invoke(sidecar, "files", {"operation": "create", "data": {"order": 7}})
    name = created.json()["fileName"]
    assert json.loads((root / name).read_text()) == {"order": 7}


@pytest.mark.parametrize("file_name", ["../escape.txt", "/etc/passwd", "a/../../escape.txt"])
def test_a_path_outside_the_root_is_refused(sidecar: SidecarProcess, root: Path, file_name: str) -> None:
    answer = _invoke(sidecar, "files", {"operation": "create", "data": "x", "metadata": {"fileName": file_name}})
    assert answer.status_code == 500
    body = answer.json()
    assert body["errorCode"] == "ERR_INVOKE_OUTPUT_BINDING"
    assert file_name in body["message"] and "rootPath" in body["message"]
    assert not (root.parent / "escape.txt").exists()


def test_unknown_operation_names_the_supported_ones(sidecar: SidecarProcess) -> None:
    answer = _invoke(sidecar, "files", {"operation": "explode"})
    assert answer.status_code == 500
    assert answer.json() == {
        "errorCode": "ERR_INVOKE_OUTPUT_BINDING",
        "message": "binding files does not support operation 'explode' "
        "(supported operations: create, get, list, delete)",
    }


def test_unknown_binding_names_the_bindings_there_are(sidecar: SidecarProcess) -> None:
    answer = _invoke(sidecar, "nope", {"operation": "create"})
    assert answer.status_code == 500
    assert answer.json()["errorCode"] == "ERR_INVOKE_OUTPUT_BINDING"
    assert answer.json()["message"] == "output binding 'nope' is not found (output bindings: files)"


def test_a_binding_that_did_not_start_says_why(sidecar: SidecarProcess) -> None:
    answer = _invoke(sidecar, "broken", {"operation": "get", "metadata": {"key": "k"}})
    assert answer.status_code == 500
    body = answer.json()
    assert body["errorCode"] == "ERR_INVOKE_OUTPUT_BINDING"
    assert body["message"].startswith("output binding broken is not ready: ")
    assert "cannot connect to redis at 127.0.0.1:" in body["message"]


def test_put_is_taken_as_post(sidecar: SidecarProcess) -> None:
    answer = httpx.put(f"{sidecar.http_url}/v1.0/bindings/files", json={"operation": "list"})
    assert answer.status_code == 200


def test_a_missing_file_is_an_error_naming_it(sidecar: SidecarProcess) -> None:
    answer = _invoke(sidecar, "files", {"operation": "get", "metadata": {"fileName": "never-written"}})
    assert answer.status_code == 500
    assert "never-written" in answer.json()["message"]


def test_malformed_body_is_refused(sidecar: SidecarProcess) -> None:
    answer = httpx.post(f"{sidecar.http_url}/v1.0/bindings/files", content=b"{not json")
    assert answer.status_code == 400
    assert answer.json()["errorCode"] == "ERR_MALFORMED_REQUEST"


def test_dapr_sdk_invoke_binding(dapr_env: SidecarProcess, root: Path) -> None:
    name = f"sdk-{uuid.uuid4().hex}.bin"
    payload = bytes(range(256))
    with DaprClient() as client:
        created = client.invoke_binding("files", "create", payload, {"fileName": name})
        assert json.loads(created.data) == {"fileName": name}
        assert (root / name).read_bytes() == payload
        got = client.invoke_binding("files", "get", binding_metadata={"fileName": name})
        assert got.data == payload
        client.invoke_binding("files", "delete", binding_metadata={"fileName": name})
        with pytest.raises(grpc.RpcError) as refused:
            client.invoke_binding("files", "get", binding_metadata={"fileName": name})
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    assert name in str(refused.value.details())


def test_dapr_sdk_unknown_operation(dapr_env: SidecarProcess) -> None:
    with DaprClient() as client, pytest.raises(grpc.RpcError) as refused:
        client.invoke_binding("files", "explode")
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "supported operations: create, get, list, delete" in str(refused.value.details())


def test_layotto_invoke_binding(sidecar: SidecarProcess, root: Path) -> None:
    name = f"layotto-{uuid.uuid4().hex}.txt"
    with grpc.insecure_channel(sidecar.grpc_address) as channel:
        stub = layotto_grpc.RuntimeStub(channel)
        stub.InvokeBinding(
            layotto.InvokeBindingRequest(
                name="files", operation="create", data=b"from layotto", metadata={"fileName": name}
            )
        )
        got = stub.InvokeBinding(
            layotto.InvokeBindingRequest(name="files", operation="get", metadata={"fileName": name})
        )
        assert got.data == b"from layotto"
        with pytest.raises(grpc.RpcError) as refused:
            stub.InvokeBinding(
                layotto.InvokeBindingRequest(name="files", operation="get", metadata={"fileName": "../../x"})
            )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "leaves rootPath" in str(refused.value.details())
