"""WebAssembly functions (`function.wasm`) invoked like apps, under `ottava run`.

One sidecar runs the WAT example of examples/wasm/echo and the misbehaving modules of
tests/wasm: a loop, a module that grows past its memory limit, a trap and a failure.
Each is called as a user would (Dapr HTTP, the Dapr SDK over gRPC, Layotto's stubs),
and each misbehaviour gives a clear error without disturbing the other calls.
"""

import concurrent.futures
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from dapr.clients import DaprClient
from dapr.clients.grpc.client import DaprGrpcClient
from google.protobuf import any_pb2
from ottava_sidecar._gen.spec.proto.runtime.v1 import runtime_pb2 as layotto
from ottava_sidecar._gen.spec.proto.runtime.v1 import runtime_pb2_grpc as layotto_grpc

from tests.conftest import SidecarFactory, SidecarProcess, run_ottava
from tests.messaging import ROOT, wait_for

MODULES = ROOT / "tests" / "wasm"
ECHO = ROOT / "examples" / "wasm" / "echo" / "echo.wat"


def function(name: str, path: Path, **metadata: str) -> str:
    lines = "".join(f'  - {{name: {key}, value: "{value}"}}\n' for key, value in metadata.items())
    return (
        "apiVersion: ottava.io/v1alpha1\nkind: Component\n"
        f"metadata: {{name: {name}}}\nspec:\n  type: function.wasm\n  version: v1\n  metadata:\n"
        f'  - {{name: path, value: "{path}"}}\n{lines}'
    )


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("wasm")


STORES = """\
apiVersion: ottava.io/v1alpha1
kind: Component
metadata: {name: statestore}
spec: {type: state.in-memory, version: v1}
---
apiVersion: ottava.io/v1alpha1
kind: Component
metadata: {name: configstore}
spec: {type: configuration.in-memory, version: v1}
"""


@pytest.fixture(scope="module")
def probe_module(folder: Path) -> Path:
    """tests/wasm/probe built with the example's import file, as a user builds a function (Go's cache makes it quick)."""
    build = folder / "probe-build"
    build.mkdir()
    shutil.copy(MODULES / "probe" / "main.go", build)
    shutil.copy(ROOT / "examples" / "wasm" / "counter" / "ottava.go", build)
    (build / "go.mod").write_text("module probe\n\ngo 1.26\n")
    env = {"GOOS": "wasip1", "GOARCH": "wasm", "GOTOOLCHAIN": "local"}
    subprocess.run(["go", "build", "-o", "probe.wasm", "."], cwd=build, env={**os.environ, **env}, check=True)
    return build / "probe.wasm"


@pytest.fixture(scope="module")
def sidecar(folder: Path, probe_module: Path) -> Iterator[SidecarProcess]:
    resources = folder / "resources"
    resources.mkdir()
    shutil.copy(ECHO, folder / "reloading.wat")
    (resources / "echo.yaml").write_text(function("echo", ECHO))
    (resources / "reloading.yaml").write_text(function("reloading", folder / "reloading.wat", reloadInterval="100ms"))
    shutil.copy(ECHO, folder / "breaking.wat")
    (resources / "breaking.yaml").write_text(function("breaking", folder / "breaking.wat", reloadInterval="100ms"))
    (resources / "loop.yaml").write_text(function("loop", MODULES / "loop.wat", timeLimit="100ms"))
    (resources / "slow.yaml").write_text(function("slow", MODULES / "loop.wat", timeLimit="3s"))
    (resources / "grow.yaml").write_text(function("grow", MODULES / "grow.wat", memoryLimitMiB="1"))
    (resources / "trap.yaml").write_text(function("trap", MODULES / "trap.wat"))
    (resources / "fail.yaml").write_text(function("fail", MODULES / "fail.wat"))
    (resources / "probe.yaml").write_text(function("probe", probe_module, memoryLimitMiB="16"))
    (resources / "stores.yaml").write_text(STORES)
    process = run_ottava(["--app-id", "host", "--resources-path", str(resources)], log_dir=folder)
    yield process
    process.stop()
    process.close()


def invoke(sidecar: SidecarProcess, app_id: str, body: bytes = b"") -> httpx.Response:
    return httpx.post(f"{sidecar.http_url}/v1.0/invoke/{app_id}/method/run", content=body, timeout=30)


def test_a_function_answers_dapr_http_invocation(sidecar: SidecarProcess) -> None:
    answer = invoke(sidecar, "echo", b"world")
    assert answer.status_code == 200, answer.text
    assert answer.content == b"hello, world"
    assert answer.headers["content-type"].startswith("text/plain")


def test_a_function_answers_the_dapr_sdk_and_layotto_over_grpc(
    sidecar: SidecarProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DAPR_GRPC_PORT", str(sidecar.grpc_port))
    monkeypatch.setenv("DAPR_HTTP_PORT", str(sidecar.http_port))
    with DaprClient() as client, pytest.warns(DeprecationWarning, match="deprecated"):
        answer = DaprGrpcClient.invoke_method(client, "echo", "greet", data=b"dapr", http_verb="POST")
    assert answer.data == b"hello, dapr"
    with grpc.insecure_channel(sidecar.grpc_address) as channel:
        reply = layotto_grpc.RuntimeStub(channel).InvokeService(
            layotto.InvokeServiceRequest(
                id="echo", message=layotto.CommonInvokeRequest(method="greet", data=any_pb2.Any(value=b"layotto"))
            )
        )
        with pytest.raises(grpc.RpcError) as failed:
            layotto_grpc.RuntimeStub(channel).InvokeService(
                layotto.InvokeServiceRequest(id="loop", message=layotto.CommonInvokeRequest(method="spin"))
            )
    assert reply.data.value == b"hello, layotto"
    assert failed.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert failed.value.details() == "function loop exceeded its 100 ms time limit and was stopped"


def test_a_looping_function_is_stopped_at_its_limit_while_other_calls_succeed(sidecar: SidecarProcess) -> None:
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        loops = [pool.submit(invoke, sidecar, "loop") for _ in range(3)]
        echoes = [pool.submit(invoke, sidecar, "echo", f"call {i}".encode()) for i in range(40)]
        for i, echo in enumerate(echoes):
            answer = echo.result()
            assert answer.status_code == 200 and answer.content == f"hello, call {i}".encode()
        for loop in loops:
            answer = loop.result()
            assert answer.status_code == 504
            assert answer.json()["errorCode"] == "ERR_DIRECT_INVOKE"
            assert answer.json()["message"] == "function loop exceeded its 100 ms time limit and was stopped"


def test_memory_limit_trap_and_failure_give_clear_errors(sidecar: SidecarProcess) -> None:
    grow = invoke(sidecar, "grow")
    assert grow.status_code == 507
    assert "function grow exceeded its memory limit of 1 MiB" in grow.json()["message"]
    trap = invoke(sidecar, "trap")
    assert trap.status_code == 500
    assert trap.json()["message"] == "function trap trapped: wasm `unreachable` instruction executed"
    fail = invoke(sidecar, "fail")
    assert fail.status_code == 500
    assert fail.json()["message"] == "function fail failed on run with exit status 3: no such order"
    assert invoke(sidecar, "echo", b"after").content == b"hello, after"


def test_metrics_count_calls_errors_and_limit_hits(sidecar: SidecarProcess) -> None:
    invoke(sidecar, "trap")
    invoke(sidecar, "loop")
    text = httpx.get(f"{sidecar.metrics_url}/metrics", timeout=10).text
    assert 'ottava_function_calls_total{function="trap",outcome="trapped"}' in text
    assert 'ottava_function_limit_hits_total{function="loop",limit="time"}' in text
    assert 'ottava_function_call_seconds_count{function="echo"}' in text


def test_a_changed_module_is_reloaded_with_no_failed_call(
    sidecar: SidecarProcess, folder: Path, tmp_path: Path
) -> None:
    module = folder / "reloading.wat"
    staged = tmp_path / "reloading.wat"
    staged.write_text(module.read_text().replace('"hello, "', '"howdy, "'))
    done = threading.Event()

    def keep_calling() -> list[httpx.Response]:
        answers = []
        with httpx.Client(timeout=30) as client:
            while not done.is_set():
                answers.append(client.post(f"{sidecar.http_url}/v1.0/invoke/reloading/method/run", content=b"you"))
        return answers

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        callers = [pool.submit(keep_calling) for _ in range(4)]
        staged.replace(module)  # as an editor or a deployment swaps a file: rename over the old one
        try:
            wait_for(lambda: invoke(sidecar, "reloading", b"you").content == b"howdy, you", "the changed module")
        finally:
            done.set()
        answers = [answer for caller in callers for answer in caller.result()]
    assert answers and all(a.status_code == 200 for a in answers), {a.text for a in answers if a.status_code != 200}
    assert {a.content for a in answers} <= {b"hello, you", b"howdy, you"}
    text = httpx.get(f"{sidecar.metrics_url}/metrics", timeout=10).text
    assert 'ottava_function_reloads_total{function="reloading",result="reloaded"} 1.0' in text


def test_an_unreadable_module_makes_the_function_down_with_the_reason(sidecars: SidecarFactory, tmp_path: Path) -> None:
    missing = tmp_path / "missing.wasm"
    broken = tmp_path / "broken.wat"
    broken.write_text('(module (func (export "_start") (unknown-instruction)))')
    no_start = tmp_path / "library.wat"
    no_start.write_text('(module (memory (export "memory") 1) (func (export "add")))')
    unknown_import = tmp_path / "unknown-import.wat"
    unknown_import.write_text(
        '(module (import "ottava" "teleport" (func)) (memory (export "memory") 1) (func (export "_start")))'
    )
    process = sidecars.start(
        "--app-id",
        "host2",
        resources={
            "a.yaml": function("missing", missing),
            "b.yaml": function("broken", broken),
            "c.yaml": function("library", no_start),
            "d.yaml": function("teleporter", unknown_import),
        },
    )

    def reasons() -> dict[str, str] | None:
        try:
            body = httpx.get(f"{process.http_url}/actuator/health/readiness", timeout=5).json()
        except (httpx.HTTPError, ValueError):
            return None
        found = {n: c["details"].get("reason", "") for n, c in body["components"].items() if c["status"] == "DOWN"}
        return found if len(found) == 4 else None

    found = wait_for(reasons, "the four functions DOWN")
    assert f"cannot read its module {missing}" in found["missing"]
    assert f"module {broken} cannot be used" in found["broken"]
    assert found["library"].endswith(
        f"module {no_start} cannot be used: it exports no function '_start': build it as a WASI command (a main function)"
    )
    assert found["teleporter"].endswith(
        f"module {unknown_import} cannot be used: unknown import: `ottava::teleport` has not been defined"
    )
    answer = httpx.post(f"{process.http_url}/v1.0/invoke/library/method/add", timeout=10)
    assert answer.status_code == 503 and answer.json()["message"].startswith("function 'library' is not ready: ")


def test_other_sidecars_call_a_function_by_its_name(sidecars: SidecarFactory, tmp_path: Path) -> None:
    env = {"OTTAVA_REGISTRY_DIR": str(tmp_path / "registry")}
    resources = {
        "echo.yaml": function("echo-remote", ECHO),
        "loop.yaml": function("loop-remote", MODULES / "loop.wat", timeLimit="100ms"),
    }
    sidecars.start("--app-id", "runs-functions", resources=resources, env=env)
    caller = sidecars.start("--app-id", "calls-functions", env=env)  # mTLS between them, as by default
    answer = httpx.post(f"{caller.http_url}/v1.0/invoke/echo-remote/method/greet", content=b"peer", timeout=30)
    assert answer.status_code == 200 and answer.content == b"hello, peer"
    looped = httpx.post(f"{caller.http_url}/v1.0/invoke/loop-remote/method/spin", timeout=30)
    assert looped.status_code == 504
    assert looped.json() == {
        "errorCode": "ERR_DIRECT_INVOKE",
        "message": "function loop-remote exceeded its 100 ms time limit and was stopped",
    }


def call(sidecar: SidecarProcess, method: str, body: bytes = b"") -> str:
    answer = httpx.post(f"{sidecar.http_url}/v1.0/invoke/probe/method/{method}", content=body, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.text


def test_host_functions_reach_state_configuration_and_invocation(sidecar: SidecarProcess) -> None:
    assert call(sidecar, "state", b"probe-key") == "v1 true false"  # saved, read, deleted
    assert call(sidecar, "config", b"colour") == '"" false'
    with grpc.insecure_channel(sidecar.grpc_address) as channel:
        layotto_grpc.RuntimeStub(channel).SaveConfiguration(
            layotto.SaveConfigurationRequest(
                store_name="configstore", app_id="host", items=[layotto.ConfigurationItem(key="colour", content="teal")]
            )
        )
    assert call(sidecar, "config", b"colour") == '"teal" true'
    assert call(sidecar, "invoke", b"from a function") == "hello, from a function"
    assert call(sidecar, "error") == "state_get: state store nosuchstore is not found"


def test_a_function_reaches_no_file_no_network_and_only_its_own_environment(sidecar: SidecarProcess) -> None:
    lines = call(sidecar, "sandbox").splitlines()
    assert lines[:2] == ["file: true", "net: true"]
    assert lines[2] == (
        "env: OTTAVA_CALLER_APP_ID=host OTTAVA_CONTENT_TYPE= "
        "OTTAVA_FUNCTION=probe OTTAVA_HTTP_VERB=POST OTTAVA_METHOD=sandbox OTTAVA_QUERY="
    )
    assert lines[3] == "args: probe sandbox"


def test_a_go_function_that_outgrows_its_memory_limit_fails_clearly(sidecar: SidecarProcess) -> None:
    assert call(sidecar, "allocate", b"4") == "allocated 4 MiB"
    answer = httpx.post(f"{sidecar.http_url}/v1.0/invoke/probe/method/allocate", content=b"64", timeout=30)
    assert answer.status_code == 507
    assert answer.json()["message"].startswith(
        "function probe exceeded its memory limit of 16 MiB (it exited with status 2"
    )
    assert call(sidecar, "allocate", b"4") == "allocated 4 MiB"  # the next call has a fresh instance


def test_a_host_call_cut_at_the_time_limit_is_the_time_limit(sidecar: SidecarProcess) -> None:
    # The probe (1 s) invokes a function that loops for 3 s: the probe's wait ends at its own limit.
    answer = httpx.post(f"{sidecar.http_url}/v1.0/invoke/probe/method/invoke", content=b"@slow", timeout=30)
    assert answer.status_code == 504
    assert answer.json()["message"] == "function probe exceeded its 1 s time limit and was stopped"


def test_a_changed_module_that_does_not_compile_leaves_the_previous_one_serving(
    sidecar: SidecarProcess, folder: Path
) -> None:
    (folder / "breaking.new").write_text('(module (func (export "_start") (no-such-instruction)))')
    (folder / "breaking.new").replace(folder / "breaking.wat")
    failed = 'ottava_function_reloads_total{function="breaking",result="failed"} 1.0'
    wait_for(lambda: failed in httpx.get(f"{sidecar.metrics_url}/metrics", timeout=10).text, "the failed reload")
    assert invoke(sidecar, "breaking", b"still").content == b"hello, still"
    assert "function breaking: module" in sidecar.log() and "the previous module keeps serving" in sidecar.log()


@pytest.mark.parametrize(
    ("metadata", "problem"),
    [
        ({}, "exactly one of 'path' (a file) and 'configMap' (in a cluster)"),
        ({"path": "f.wasm", "configMap": "m"}, "exactly one of 'path' (a file) and 'configMap' (in a cluster)"),
        ({"path": "f.wasm", "configMapKey": "k"}, "'configMapKey' goes with 'configMap'"),
    ],
)
def test_a_function_names_its_module_one_way(metadata: dict[str, str], problem: str) -> None:
    from ottava_sidecar.components.functions.wasm import WasmMetadata
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        WasmMetadata.model_validate(metadata)
