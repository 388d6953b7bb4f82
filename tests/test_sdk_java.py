"""The official Dapr Java SDK (`io.dapr:dapr-sdk`), unmodified, against `ottava run`.

Its programs are under tests/sdks/java/, built once by tests/sdks/java/build.sh (cached
outside the clone). `Client SCENARIO ARGS` is a Dapr user's client: it finds the sidecar
from $DAPR_HTTP_PORT/$DAPR_GRPC_PORT and prints what it observed as JSON lines. `App` is a
Dapr app written without Spring, the way the SDK's examples write one: grpc's
`ServerBuilder` serving the SDK's `AppCallbackGrpc` service, behind
`ottava run --app-protocol grpc -- java … App`.
"""

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from ottava_sidecar._gen.spec.proto.runtime.v1 import runtime_pb2 as layotto
from ottava_sidecar._gen.spec.proto.runtime.v1 import runtime_pb2_grpc as layotto_grpc

from tests.conftest import SECRET_ENV, SidecarFactory, SidecarProcess
from tests.messaging import ROOT, events, free_port, stop_all_gracefully, wait_for, wait_ready

BUILD = ROOT / "tests" / "sdks" / "java" / "build.sh"
CLIENT_TIMEOUT = 90.0


@dataclass(frozen=True)
class Java:
    command: list[str]  # `java -cp …`: add the main class and its arguments

    def main(self, name: str, *args: str) -> list[str]:
        return [*self.command, f"io.ottava.sdktest.{name}", *args]


@pytest.fixture(scope="session")
def java(request: pytest.FixtureRequest) -> Java:
    """The SDK programs, built by tests/sdks/java/build.sh on first use (about a minute), then cached."""
    capture = request.config.pluginmanager.getplugin("capturemanager")
    # The first build's progress belongs on the terminal as it happens.
    with capture.global_and_fixture_disabled():
        built = subprocess.run(
            [str(BUILD)], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, check=False, timeout=1200
        )
    assert built.returncode == 0, f"{BUILD} failed ({built.returncode}): {built.stdout}"
    folder = Path(built.stdout.strip().splitlines()[-1])
    java_home = os.environ.get("JAVA_HOME")
    executable = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
    assert executable, "no java on PATH (apt-get install default-jdk-headless)"
    classpath = f"{folder / 'sdk-tests.jar'}{os.pathsep}{folder / 'lib'}/*"
    return Java([executable, "-XX:TieredStopAtLevel=1", "-cp", classpath])


def sdk_env(sidecar: SidecarProcess) -> dict[str, str]:
    """What `ottava run -- APP` gives an app: the SDK finds the sidecar from it."""
    return {**os.environ, "DAPR_HTTP_PORT": str(sidecar.http_port), "DAPR_GRPC_PORT": str(sidecar.grpc_port)}


def run_client(java: Java, sidecar: SidecarProcess, scenario: str, *args: str) -> dict[str, Any]:
    """Run one scenario of the Java client; its result is its last stdout line."""
    try:
        done = subprocess.run(
            java.main("Client", scenario, *args),
            env=sdk_env(sidecar),
            capture_output=True,
            stdin=subprocess.DEVNULL,
            text=True,
            check=False,
            timeout=CLIENT_TIMEOUT,
        )
    except subprocess.TimeoutExpired as hung:
        output = f"{hung.output!s}\n{hung.stderr!s}"  # text, as the run was
        raise AssertionError(f"Java client {scenario} still running after {CLIENT_TIMEOUT}s:\n{output}") from None
    assert done.returncode == 0, f"Java client {scenario} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def unique(name: str) -> str:
    return f"java-{name}-{uuid.uuid4().hex[:8]}"


def test_state_round_trip_with_etags(java: Java, default_sidecar: SidecarProcess) -> None:
    got = run_client(java, default_sidecar, "state", unique("order"))
    (first, first_etag), (second, second_etag) = got["first"], got["second"]
    assert (first, second) == ("one", "two")
    assert first_etag and second_etag and first_etag != second_etag
    assert got["stale_save"]["code"] == "ABORTED", got
    assert "etag mismatch" in got["stale_save"]["message"]
    assert got["after_stale_save"] == "two"
    assert got["stale_delete"]["code"] == "ABORTED", got
    assert got["deleted"] == {"value": None, "etag": None}
    assert got["first_write_again"]["code"] == "ABORTED", got
    assert got["first_write_value"] == "a"


def test_bulk_save_and_transaction(java: Java, default_sidecar: SidecarProcess) -> None:
    prefix = unique("bulk")
    got = run_client(java, default_sidecar, "bulk", prefix)
    a, b, c = f"{prefix}-a", f"{prefix}-b", f"{prefix}-c"
    assert got["after_bulk_save"] == {a: "1", b: "2", c: None}
    assert got["after_transaction"] == {a: None, b: "2", c: "3"}


def test_streaming_subscription(java: Java, default_sidecar: SidecarProcess) -> None:
    marker = uuid.uuid4().hex
    got = run_client(java, default_sidecar, "stream", unique("stream"), marker)
    assert got["received"]["marker"] == marker
    assert got["received"]["n"] < got["published"]


def test_configuration_get_and_subscribe(java: Java, default_sidecar: SidecarProcess) -> None:
    key = unique("greeting")
    _layotto_save(default_sidecar, key, "hello")
    client = subprocess.Popen(
        java.main("Client", "config", key, "bonjour"),
        env=sdk_env(default_sidecar),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert client.stdout is not None
        lines: list[dict[str, Any]] = []
        for line in client.stdout:
            lines.append(json.loads(line))
            if "subscription_id" in lines[-1] and len(lines) == 2:  # subscribed: now change the item
                _layotto_save(default_sidecar, key, "bonjour")
        code = client.wait(timeout=CLIENT_TIMEOUT)
        stderr = client.stderr.read() if client.stderr else ""
        assert code == 0, f"Java client config failed ({code}):\n{lines}\n{stderr}"
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
        for stream in (client.stdout, client.stderr):
            if stream:
                stream.close()
    assert lines[0] == {"get": "hello"}
    result = lines[-1]
    assert result["subscription_id"]
    assert result["seen"][-1] == "bonjour"
    assert result["unsubscribed"] is True


def _layotto_save(sidecar: SidecarProcess, key: str, content: str) -> None:
    with grpc.insecure_channel(sidecar.grpc_address) as channel:
        layotto_grpc.RuntimeStub(channel).SaveConfiguration(
            layotto.SaveConfigurationRequest(
                store_name="configstore", items=[layotto.ConfigurationItem(key=key, content=content)]
            )
        )


def test_lock_with_the_preview_client(java: Java, default_sidecar: SidecarProcess) -> None:
    got = run_client(java, default_sidecar, "lock", unique("invoice"))
    assert got == {
        "worker1_lock": True,
        "worker2_lock": False,
        "worker2_unlock": "LOCK_BELONG_TO_OTHERS",
        "worker1_unlock": "SUCCESS",
        "unlock_again": "LOCK_UNEXIST",
        "worker2_relock": True,
    }


def test_secrets(java: Java, default_sidecar: SidecarProcess) -> None:
    (name, value), *_ = SECRET_ENV.items()
    got = run_client(java, default_sidecar, "secret", name)
    assert got["secret"] == {name: value}
    assert got["missing"]["code"] == "NOT_FOUND", got
    assert "OTTAVA_NO_SUCH_SECRET" in got["missing"]["message"]
    assert got["bulk_has_it"] == {name: value}


def test_metadata(java: Java, default_sidecar: SidecarProcess) -> None:
    got = run_client(java, default_sidecar, "metadata")
    assert got["id"] == "quickstart"
    assert got["components"] == {
        "configstore": "configuration.in-memory",
        "lockstore": "lock.in-memory",
        "pubsub": "pubsub.in-memory",
        "secretstore": "secretstores.local.env",
        "sequencer": "sequencer.in-memory",
        "statestore": "state.in-memory",
    }
    assert set(got["capabilities"]["statestore"]) == {"ETAG", "TRANSACTIONAL", "TTL"}


@dataclass
class Apps:
    target: SidecarProcess  # the Java gRPC app's sidecar
    target_id: str
    caller: SidecarProcess  # the calling app's sidecar (the Java client is that app)
    events_file: Path


@pytest.fixture(scope="module")
def apps(java: Java, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Apps]:
    """The Java app behind its sidecar, and a caller's sidecar that resolves it (a shared local registry)."""
    folder = tmp_path_factory.mktemp("java-apps")
    factory = SidecarFactory(folder)
    registry = folder / "registry"
    events_file = folder / "events.jsonl"
    suffix = uuid.uuid4().hex[:6]
    target_id = f"java-stock-{suffix}"
    try:
        target = factory.start(
            "--app-id",
            target_id,
            "--app-port",
            str(free_port()),
            "--app-protocol",
            "grpc",
            "--",
            *java.main("App"),
            env={"EVENTS_FILE": str(events_file), "OTTAVA_REGISTRY_DIR": str(registry)},
        )
        wait_ready(target, timeout=60)  # UP once the app listens and its subscriptions are read
        caller = factory.start("--app-id", f"java-checkout-{suffix}", env={"OTTAVA_REGISTRY_DIR": str(registry)})
        yield Apps(target, target_id, caller, events_file)
    finally:
        stop_all_gracefully(factory)
        factory.stop_all()


def test_publish_and_delivery_to_a_java_app(java: Java, apps: Apps) -> None:
    marker = uuid.uuid4().hex
    assert run_client(java, apps.target, "publish", "orders", marker) == {"published": marker}
    delivered = wait_for(
        lambda: [e for e in events(apps.events_file) if marker in e["data"]], f"event {marker} at the Java app"
    )
    assert len(delivered) == 1
    event = delivered[0]
    assert (event["pubsub"], event["topic"]) == ("pubsub", "orders")
    assert json.loads(event["data"]) == {"marker": marker}
    assert event["data_content_type"] == "application/json"
    assert event["id"]


def test_invocation_between_two_apps(java: Java, apps: Apps) -> None:
    got = run_client(java, apps.caller, "invoke", apps.target_id)
    post = got["post"]
    assert (post["app_id"], post["method"], post["verb"]) == (apps.target_id, "echo", "POST")
    assert json.loads(post["body"]) == {"item": "coffee"}
    assert post["query"] == "size=large"
    assert post["content_type"] == "application/json"
    get = got["get"]
    assert (get["method"], get["verb"], get["body"]) == ("echo", "GET", "")
    unknown = got["unknown_app"]
    assert unknown["code"] == "ERR_DIRECT_INVOKE", got
    assert f"{apps.target_id}-nobody" in unknown["message"]
