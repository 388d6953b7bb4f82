"""Standalone `ottava run --config FILE`: a Configuration manifest applied as `dapr run --config` does.

Real sidecars, started as users start them, and the calls an app makes: secret scopes
hide what they should over HTTP and gRPC (one of the issue's acceptance checks is that
`defaultAccess: deny` hides `HOME`), API allow/deny lists from the same file take
effect, and a bad or missing file stops start-up naming the file and field.
"""

import contextlib
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from dapr.proto.runtime.v1 import dapr_pb2_grpc, secret_pb2, state_pb2

from tests.conftest import OTTAVA, SECRET_ENV, SidecarFactory, SidecarProcess

PORTS = ["--grpc-port", "0", "--http-port", "0", "--metrics-port", "0", "--internal-grpc-port", "0"]
(OTHER_SECRET, OTHER_VALUE), *_ = SECRET_ENV.items()


def configuration(tmp_path: Path, spec: str, name: str = "strict") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        f"apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: {name}\nspec:\n{spec}",
        encoding="utf-8",
    )
    return path


@contextlib.contextmanager
def dapr(sidecar: SidecarProcess) -> Iterator[dapr_pb2_grpc.DaprStub]:
    with grpc.insecure_channel(sidecar.grpc_address) as channel:
        yield dapr_pb2_grpc.DaprStub(channel)


def grpc_failure(call: Callable[[Any], Any], request: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as failed:
        call(request)
    return failed.value


def test_without_config_the_default_store_serves_home(default_sidecar: SidecarProcess) -> None:
    # The contrast for the tests below: the environment store serves the whole environment.
    response = httpx.get(f"{default_sidecar.http_url}/v1.0/secrets/secretstore/HOME")
    assert response.status_code == 200, response.text
    assert response.json() == {"HOME": os.environ["HOME"]}


def test_default_access_deny_hides_home(sidecars: SidecarFactory, tmp_path: Path) -> None:
    path = configuration(tmp_path, "  secrets:\n    scopes:\n    - {storeName: secretstore, defaultAccess: deny}\n")
    sidecar = sidecars.start("--config", str(path), env=SECRET_ENV)
    scope = "denied by Configuration strict, secrets.scopes[0] (storeName secretstore): defaultAccess is deny"

    response = httpx.get(f"{sidecar.http_url}/v1.0/secrets/secretstore/HOME")
    assert response.status_code == 403, response.text
    assert response.json()["errorCode"] == "ERR_PERMISSION_DENIED"
    assert response.json()["message"] == f"access to secret 'HOME' of secret store secretstore is {scope}"
    assert httpx.get(f"{sidecar.http_url}/v1.0/secrets/secretstore/bulk").json() == {}

    with dapr(sidecar) as stub:
        refused = grpc_failure(stub.GetSecret, secret_pb2.GetSecretRequest(store_name="secretstore", key="HOME"))
        assert refused.code() == grpc.StatusCode.PERMISSION_DENIED
        assert scope in (refused.details() or "")
        assert dict(stub.GetBulkSecret(secret_pb2.GetBulkSecretRequest(store_name="secretstore")).data) == {}


def test_allowed_secrets_serve_only_those_and_api_lists_apply(sidecars: SidecarFactory, tmp_path: Path) -> None:
    spec = (
        "  secrets:\n    scopes:\n    - {storeName: secretstore, defaultAccess: deny, allowedSecrets: [HOME]}\n"
        "  api:\n    denied: [{name: state}]\n"
    )
    sidecar = sidecars.start("--config", str(configuration(tmp_path, spec, "narrow")), env=SECRET_ENV)
    with httpx.Client(base_url=sidecar.http_url) as http, dapr(sidecar) as stub:
        check_narrow_configuration(http, stub)


def check_narrow_configuration(http: httpx.Client, stub: dapr_pb2_grpc.DaprStub) -> None:
    assert http.get("/v1.0/secrets/secretstore/HOME").json() == {"HOME": os.environ["HOME"]}
    other = http.get(f"/v1.0/secrets/secretstore/{OTHER_SECRET}")
    assert other.status_code == 403
    assert other.json()["message"].endswith("secrets.scopes[0] (storeName secretstore): it is not in allowedSecrets")
    assert http.get("/v1.0/secrets/secretstore/bulk").json() == {"HOME": {"HOME": os.environ["HOME"]}}
    bulk = stub.GetBulkSecret(secret_pb2.GetBulkSecretRequest(store_name="secretstore")).data
    assert {name: dict(values.secrets) for name, values in bulk.items()} == {"HOME": {"HOME": os.environ["HOME"]}}

    # The API deny list of the same file: state is refused over both protocols.
    state = http.get("/v1.0/state/statestore/k")
    assert state.status_code == 403
    assert "the state API is not allowed over http by Configuration narrow" in state.json()["message"]
    refused = grpc_failure(stub.GetState, state_pb2.GetStateRequest(store_name="statestore", key="k"))
    assert refused.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "Configuration narrow" in (refused.details() or "")

    assert http.get("/actuator/info").json()["configuration"] == "narrow"


def test_the_api_tokens_are_never_secrets(sidecars: SidecarFactory) -> None:
    sidecar = sidecars.start(env={"DAPR_API_TOKEN": "api-token-value", "APP_API_TOKEN": "app-token-value"})
    with httpx.Client(base_url=sidecar.http_url, headers={"dapr-api-token": "api-token-value"}) as http:
        for name in ("DAPR_API_TOKEN", "APP_API_TOKEN"):
            response = http.get(f"/v1.0/secrets/secretstore/{name}")
            assert response.status_code == 404, response.text
            assert f"secret '{name}' not found in secret store secretstore" in response.json()["message"]
        bulk = http.get("/v1.0/secrets/secretstore/bulk").json()
    assert "HOME" in bulk
    assert {"DAPR_API_TOKEN", "APP_API_TOKEN"} & set(bulk) == set()
    assert "api-token-value" not in str(bulk)


def run_failing(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [OTTAVA, "run", *PORTS, *args], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )


@pytest.mark.parametrize(
    ("case", "text", "problem"),
    [
        (
            "unknown action",
            "kind: Configuration\napiVersion: dapr.io/v1alpha1\nmetadata: {name: acl}\nspec:\n  accessControl:\n"
            "    policies:\n    - appId: checkout\n      operations: [{name: /admin, action: permit}]\n",
            "document 1 (Configuration 'acl'): spec.accessControl.policies.0.operations.0.action: "
            "Input should be 'allow' or 'deny'",
        ),
        (
            "unknown field",
            "kind: Configuration\napiVersion: ottava.io/v1alpha1\nmetadata: {name: typo}\nspec:\n  secret: {}\n",
            "spec.secret: unknown field",
        ),
        (
            "duplicate policy",
            "kind: Configuration\napiVersion: ottava.io/v1alpha1\nmetadata: {name: dup}\nspec:\n  accessControl:\n"
            "    policies: [{appId: a}, {appId: a}]\n",
            "spec.accessControl.policies: Value error, policies[1] names the same caller as policies[0]",
        ),
        (
            "a Component",
            "kind: Component\napiVersion: dapr.io/v1alpha1\nmetadata: {name: s}\nspec: {type: state.in-memory}\n",
            "kind is 'Component', --config takes a Configuration",
        ),
        ("not YAML", "kind: [Configuration\n", "not valid YAML"),
        ("wrong apiVersion", "kind: Configuration\napiVersion: v1\nmetadata: {name: x}\n", "apiVersion: Input should"),
    ],
)
def test_a_bad_config_file_stops_start_up_naming_the_file_and_field(
    case: str, text: str, problem: str, tmp_path: Path
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    result = run_failing("--config", str(path))
    assert result.returncode == 2, result.stderr
    assert f"ottava: invalid --config: {path}" in result.stderr
    assert problem in result.stderr
    assert "ottava sidecar" not in result.stdout  # it never became ready


def test_a_missing_config_file_stops_start_up_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "appconfig"
    result = run_failing("--config", str(path))
    assert result.returncode == 2
    assert f"{path}: no such file (in standalone mode --config names a Configuration manifest file)" in result.stderr
