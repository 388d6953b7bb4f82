"""The official Dapr JavaScript SDK (`@dapr/dapr`), unmodified, against `ottava run`.

Programs under tests/sdks/js/: `app.js`, a `DaprServer` app (HTTP or gRPC app protocol)
behind its own sidecar, and `client.js`, whose scenarios use `DaprClient` over HTTP or
gRPC and print what they saw. The SDK is installed once with `npm ci` outside the clone
(tests/sdks/js/install.sh), so a repeat run costs no npm at all.
"""

import json
import os
import queue
import shutil
import subprocess
import threading
import time
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
from tests.messaging import events, free_port, stop_all_gracefully, wait_for, wait_ready

JS = Path(__file__).resolve().parent / "sdks" / "js"
PROTOCOLS = ["http", "grpc"]
CLIENT_TIMEOUT = 60.0
# The SDK prefers these to the ports when set; a client is pointed at one sidecar by its ports.
ENDPOINT_VARIABLES = ("DAPR_HTTP_ENDPOINT", "DAPR_GRPC_ENDPOINT")


@pytest.fixture(scope="session")
def node_modules(request: pytest.FixtureRequest) -> Path:
    """The SDK's node_modules, installed on first use (progress on the terminal, live)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise AssertionError("the JavaScript SDK suite needs Node.js and npm on PATH (Debian: nodejs, npm)")
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        done = subprocess.run(
            ["bash", str(JS / "install.sh")], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, check=False
        )
    if done.returncode != 0:
        raise AssertionError(f"tests/sdks/js/install.sh failed with {done.returncode} (its output is above)")
    return Path(done.stdout.strip().splitlines()[-1])


@dataclass
class JsApps:
    """Two DaprServer apps (one per app protocol) and a caller sidecar for the clients."""

    caller: SidecarProcess
    apps: dict[str, SidecarProcess]  # app protocol → the app's sidecar
    app_ids: dict[str, str]
    events_files: dict[str, Path]


@pytest.fixture(scope="module")
def js(node_modules: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[JsApps]:
    folder = tmp_path_factory.mktemp("sdk-js")
    registry = folder / "registry"
    factory = SidecarFactory(folder)
    suffix = uuid.uuid4().hex[:6]
    apps: dict[str, SidecarProcess] = {}
    app_ids: dict[str, str] = {}
    events_files: dict[str, Path] = {}
    try:
        for protocol in PROTOCOLS:
            app_ids[protocol] = f"js-{protocol}-app-{suffix}"
            events_files[protocol] = folder / f"{protocol}-events.jsonl"
            apps[protocol] = factory.start(
                "--app-id",
                app_ids[protocol],
                "--app-port",
                str(free_port()),
                "--app-protocol",
                protocol,
                "--",
                "node",
                str(JS / "app.js"),
                protocol,
                env={
                    "EVENTS_FILE": str(events_files[protocol]),
                    "NODE_PATH": str(node_modules),
                    "OTTAVA_REGISTRY_DIR": str(registry),
                },
            )
        caller = factory.start(
            "--app-id", f"js-caller-{suffix}", env={**SECRET_ENV, "OTTAVA_REGISTRY_DIR": str(registry)}
        )
        for sidecar in apps.values():
            wait_ready(sidecar)  # UP once the DaprServer listens and its subscriptions are read
        yield JsApps(caller, apps, app_ids, events_files)
    finally:
        stop_all_gracefully(factory)
        factory.stop_all()


def _client_command(node_modules: Path, sidecar: SidecarProcess, protocol: str, scenario: str, args: Any) -> Any:
    env = {k: v for k, v in os.environ.items() if k not in ENDPOINT_VARIABLES}
    env.update(
        NODE_PATH=str(node_modules), DAPR_HTTP_PORT=str(sidecar.http_port), DAPR_GRPC_PORT=str(sidecar.grpc_port)
    )
    command = ["node", str(JS / "client.js"), protocol, scenario, json.dumps(args)]
    return command, env


def run_client(node_modules: Path, sidecar: SidecarProcess, protocol: str, scenario: str, **args: Any) -> Any:
    """Run one scenario of client.js with `DaprClient` over PROTOCOL; its RESULT, parsed."""
    command, env = _client_command(node_modules, sidecar, protocol, scenario, args)
    done = subprocess.run(
        command, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=CLIENT_TIMEOUT, check=False
    )
    return _result(f"client.js {protocol} {scenario}", done.returncode, done.stdout, done.stderr)


def _result(what: str, returncode: int, stdout: str, stderr: str) -> Any:
    results = [line.removeprefix("RESULT ") for line in stdout.splitlines() if line.startswith("RESULT ")]
    if returncode != 0 or len(results) != 1:
        raise AssertionError(f"{what} exited with {returncode}\n--- stdout\n{stdout}\n--- stderr\n{stderr}")
    return json.loads(results[0])


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_state_round_trip_with_etags(js: JsApps, node_modules: Path, protocol: str) -> None:
    key = unique("order")
    seen = run_client(node_modules, js.caller, protocol, "state_etag", store="statestore", key=key)
    assert seen["save"]["ok"], seen
    assert seen["first"] == {"qty": 1}
    assert seen["firstEtag"], "getBulk gave no ETag"
    assert seen["saveWithEtag"]["ok"], seen
    assert seen["secondEtag"] and seen["secondEtag"] != seen["firstEtag"]
    stale = seen["saveWithStaleEtag"]
    assert not stale["ok"] and "etag mismatch" in stale["error"], stale
    assert seen["afterStale"] == {"qty": 2}
    assert not seen["deleteWithStaleEtag"]["ok"] and "etag mismatch" in seen["deleteWithStaleEtag"]["error"]
    assert seen["deleteWithEtag"]["ok"], seen
    assert seen["afterDelete"] == ""  # both clients answer "" for a key that is not there


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_bulk_save_and_get(js: JsApps, node_modules: Path, protocol: str) -> None:
    keys = [unique("bulk-a"), unique("bulk-b")]
    missing = unique("missing")
    seen = run_client(node_modules, js.caller, protocol, "state_bulk", store="statestore", keys=keys, missing=missing)
    assert seen["save"]["ok"], seen
    items = {i["key"]: i for i in seen["items"]}
    assert [items[k]["data"] for k in keys] == [{"n": 1}, {"n": 2}]
    assert all(items[k]["etag"] for k in keys)
    # A missing key comes back without data: HTTP leaves it out, gRPC sends "".
    assert not items[missing]["data"] and not items[missing]["etag"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_transaction(js: JsApps, node_modules: Path, protocol: str) -> None:
    # Over HTTP the SDK sends `"metadata": null`, which Dapr reads as "no metadata".
    keep, drop, added = unique("keep"), unique("drop"), unique("added")
    seen = run_client(
        node_modules, js.caller, protocol, "state_transaction", store="statestore", keep=keep, drop=drop, added=added
    )
    assert seen["transaction"]["ok"], seen["transaction"]
    items = seen["items"]
    assert items[keep] == {"n": 10} and items[added] == {"n": 3}
    assert not items[drop]


@pytest.mark.parametrize("app_protocol", PROTOCOLS)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_publish_reaches_the_daprserver_app(js: JsApps, node_modules: Path, protocol: str, app_protocol: str) -> None:
    marker = unique("marker")
    sidecar = js.apps[app_protocol]  # the app's own sidecar: the in-memory broker is per sidecar
    seen = run_client(
        node_modules, sidecar, protocol, "publish", pubsub="pubsub", topic="orders", data={"marker": marker, "qty": 2}
    )
    assert seen["publish"]["ok"], seen
    delivered = wait_for(
        lambda: [e for e in events(js.events_files[app_protocol]) if e["data"].get("marker") == marker],
        f"the {app_protocol} DaprServer app to receive {marker}",
    )
    assert delivered == [{"topic": "orders", "data": {"marker": marker, "qty": 2}}]


@pytest.mark.parametrize("topic", ["orders", "batches"])  # batches: DaprServer's subscribeBulk
@pytest.mark.parametrize("app_protocol", PROTOCOLS)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_bulk_publish_reaches_the_daprserver_app(
    js: JsApps, node_modules: Path, protocol: str, app_protocol: str, topic: str
) -> None:
    markers = [unique("bulk-marker") for _ in range(3)]
    seen = run_client(
        node_modules,
        js.apps[app_protocol],
        protocol,
        "publish_bulk",
        pubsub="pubsub",
        topic=topic,
        messages=[{"marker": m} for m in markers],
    )
    assert seen["publishBulk"] == {"ok": True, "value": {"failedMessages": []}}, seen
    events_file = js.events_files[app_protocol]
    delivered = wait_for(
        lambda: got if len(got := _markers(events_file, topic, markers)) == len(markers) else None,
        f"the {app_protocol} DaprServer app to receive {markers} on {topic}",
    )
    assert sorted(delivered) == sorted(markers), events(events_file)[-5:]


def _markers(events_file: Path, topic: str, wanted: list[str]) -> list[str]:
    return [
        m
        for e in events(events_file)
        if e["topic"] == topic and isinstance(e["data"], dict) and (m := e["data"].get("marker")) in wanted
    ]


@pytest.mark.parametrize("app_protocol", PROTOCOLS)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_invocation_between_two_apps(js: JsApps, node_modules: Path, protocol: str, app_protocol: str) -> None:
    target = js.app_ids[app_protocol]
    seen = run_client(node_modules, js.caller, protocol, "invoke", appId=target, body={"qty": 3})
    assert seen["echo"] == {
        "ok": True,
        "value": {
            "app": target,
            "body": json.dumps({"qty": 3}, separators=(",", ":")),
            "contentType": "application/json",
        },
    }
    assert seen["whoami"] == {"ok": True, "value": {"app": target}}


@pytest.mark.parametrize("app_protocol", PROTOCOLS)
def test_a_daprserver_app_invokes_the_other_with_its_own_client(
    js: JsApps, node_modules: Path, app_protocol: str
) -> None:
    # The HTTP app's DaprServer client speaks HTTP to its sidecar, the gRPC app's gRPC.
    relay, other = js.app_ids[app_protocol], js.app_ids[next(p for p in PROTOCOLS if p != app_protocol)]
    seen = run_client(node_modules, js.caller, "http", "relay", appId=relay, to=other)
    assert seen["relay"] == {"ok": True, "value": {"app": relay, "relayed": {"app": other}}}


def test_configuration_get_over_grpc(js: JsApps, node_modules: Path) -> None:
    key = unique("greeting")
    _layotto_save(js.caller, key, "hello")
    seen = run_client(node_modules, js.caller, "grpc", "configuration_get", store="configstore", keys=[key])
    assert seen["get"]["ok"], seen
    assert seen["get"]["value"]["items"][key]["value"] == "hello"


def test_configuration_subscribe_over_grpc(js: JsApps, node_modules: Path, tmp_path: Path) -> None:
    key = unique("greeting")
    _layotto_save(js.caller, key, "hello")
    command, env = _client_command(
        node_modules,
        js.caller,
        "grpc",
        "configuration_subscribe",
        {"store": "configstore", "key": key, "until": "bonjour", "waitMs": 20000},
    )
    stderr_path = tmp_path / "client.stderr"
    with stderr_path.open("w", encoding="utf-8") as stderr_file:
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=stderr_file, stdin=subprocess.DEVNULL, text=True, env=env
        )
    lines: queue.Queue[str] = queue.Queue()
    stdout: list[str] = []

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            stdout.append(line)
            lines.put(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        _wait_line(lines, "SUBSCRIBED", deadline=time.monotonic() + CLIENT_TIMEOUT, process=process, log=stderr_path)
        # The SDK gives no sign that the sidecar holds the subscription yet: write until an
        # update arrives (each write a new value, so each one is a change).
        deadline = time.monotonic() + 20
        writes = 0
        while not any(line.startswith("UPDATE") for line in stdout):
            assert time.monotonic() < deadline, f"no configuration update reached the JS subscriber: {stdout}"
            writes += 1
            _layotto_save(js.caller, key, f"bonjour-{writes}")
            _wait_line(lines, "UPDATE", deadline=time.monotonic() + 0.5, process=process, log=None)
        process.wait(timeout=CLIENT_TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    reader.join(timeout=10)
    assert process.stdout is not None
    process.stdout.close()
    stderr = stderr_path.read_text(encoding="utf-8")
    seen = _result("client.js grpc configuration_subscribe", process.returncode, "".join(stdout), stderr)
    assert seen["subscribed"] == {"ok": True}
    assert seen["updates"][-1][key]["value"].startswith("bonjour-")


def _wait_line(
    lines: "queue.Queue[str]", prefix: str, *, deadline: float, process: subprocess.Popen[str], log: Path | None
) -> None:
    """Wait for a line starting with PREFIX; without it by the deadline, fail if LOG is given (stderr)."""
    while (left := deadline - time.monotonic()) > 0:
        try:
            if lines.get(timeout=left).startswith(prefix):
                return
        except queue.Empty:
            break
    if log is not None:
        process.kill()
        process.wait()
        raise AssertionError(f"client.js printed no {prefix} line; stderr:\n{log.read_text(encoding='utf-8')}")


def test_the_http_client_has_no_configuration_api(js: JsApps, node_modules: Path) -> None:
    # A quirk of the SDK, documented in docs/sdks.md: DaprClient over HTTP throws before
    # any request; use the gRPC client for configuration.
    seen = run_client(node_modules, js.caller, "http", "configuration_get", store="configstore", keys=["any"])
    assert seen["get"] == {"ok": False, "error": "HTTP is currently not supported.", "name": "HTTPNotSupportedError"}


def _layotto_save(sidecar: SidecarProcess, key: str, content: str) -> None:
    with grpc.insecure_channel(sidecar.grpc_address) as channel:
        layotto_grpc.RuntimeStub(channel).SaveConfiguration(
            layotto.SaveConfigurationRequest(
                store_name="configstore", items=[layotto.ConfigurationItem(key=key, content=content)]
            )
        )


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_lock_take_and_release(js: JsApps, node_modules: Path, protocol: str) -> None:
    seen = run_client(node_modules, js.caller, protocol, "lock", store="lockstore", resource=unique("invoice"))
    assert seen == {
        "lock": {"success": True},
        "lockTaken": {"success": False},
        "unlockByOther": {"status": 2},  # LockStatus.LockBelongsToOthers
        "unlock": {"status": 0},  # Success
        "unlockAgain": {"status": 1},  # LockDoesNotExist
        "relock": {"success": True},
    }


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_secret_from_the_environment_store(js: JsApps, node_modules: Path, protocol: str) -> None:
    (name, value), *_ = SECRET_ENV.items()
    seen = run_client(
        node_modules, js.caller, protocol, "secret", store="secretstore", name=name, missing="OTTAVA_NO_SUCH_SECRET"
    )
    assert seen["get"] == {"ok": True, "value": {name: value}}
    assert seen["fromBulk"] == {name: value}
    assert not seen["missing"]["ok"] and "OTTAVA_NO_SUCH_SECRET" in seen["missing"]["error"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_metadata_lists_the_components(js: JsApps, node_modules: Path, protocol: str) -> None:
    seen = run_client(node_modules, js.caller, protocol, "metadata", key="team", value=f"payments-{protocol}")
    assert seen["set"] == {"ok": True, "value": True}
    metadata = seen["metadata"]
    assert metadata["id"] == js.caller.ready_line.split("app_id=")[1].split()[0]
    components = {c["name"]: c["type"] for c in metadata["components"]}
    assert components == {
        "statestore": "state.in-memory",
        "pubsub": "pubsub.in-memory",
        "lockstore": "lock.in-memory",
        "configstore": "configuration.in-memory",
        "sequencer": "sequencer.in-memory",
        "secretstore": "secretstores.local.env",
    }
    capabilities = {c["name"]: set(c["capabilities"]) for c in metadata["components"]}
    assert capabilities["statestore"] == {"ETAG", "TRANSACTIONAL", "TTL"}
    assert metadata["extended"]["team"] == f"payments-{protocol}"


def test_daprserver_apps_subscriptions_are_listed(js: JsApps, node_modules: Path) -> None:
    # What DaprServer answered on /dapr/subscribe (HTTP) or ListTopicSubscriptions (gRPC).
    for protocol, sidecar in js.apps.items():
        seen = run_client(node_modules, sidecar, "http", "metadata", key="role", value="subscriber")
        topics = {(s["pubsubname"], s["topic"]) for s in seen["metadata"].get("subscriptions", [])}
        assert ("pubsub", "orders") in topics, f"{protocol} app: {seen['metadata']}"
