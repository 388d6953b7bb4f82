"""The official Dapr Go SDK (github.com/dapr/go-sdk), unmodified, against `ottava run`.

The programs are in tests/sdks/go/ (one binary, built once and cached outside the clone
by its build.sh): an app on `service/grpc` and one on `service/http`, each behind its own
sidecar, and a client whose checks each print what the SDK observed as JSON lines. The
client talks to a third sidecar on the standalone defaults, and invokes the two apps
through it: client → its sidecar → the app's sidecar → the Go app.
"""

import functools
import json
import os
import queue
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from dapr.proto.common.v1 import common_pb2
from dapr.proto.runtime.v1.appcallback_pb2_grpc import AppCallbackStub
from ottava_sidecar._gen.spec.proto.runtime.v1 import runtime_pb2 as layotto
from ottava_sidecar._gen.spec.proto.runtime.v1 import runtime_pb2_grpc as layotto_grpc

from tests.conftest import SECRET_ENV, SidecarFactory, SidecarProcess
from tests.messaging import events, free_port, stop_all_gracefully, wait_for, wait_ready

BUILD_SCRIPT = Path(__file__).resolve().parent / "sdks" / "go" / "build.sh"
CLIENT_TIMEOUT = 90.0


@functools.cache
def binary() -> Path:
    """Build the suite's programs (or find them in the cache) and return the binary's path.

    The first build on a machine downloads the SDK's modules and compiles them (about a
    minute on 2 cores); later ones only print the cached path.
    """
    proc = subprocess.run(
        [str(BUILD_SCRIPT)], capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False, timeout=1800
    )
    for line in proc.stderr.splitlines():
        print(f"[sdk-go] {line}", flush=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{BUILD_SCRIPT} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return Path(proc.stdout.strip().splitlines()[-1])


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


@dataclass
class GoApp:
    kind: str  # "grpc" (service/grpc) or "http" (service/http)
    app_id: str
    sidecar: SidecarProcess
    events_file: Path

    def deliveries(self, route: str, marker: str) -> list[dict[str, Any]]:
        """What the app's handler of `route` got of the events published with `marker`."""
        return [
            e
            for e in events(self.events_file)
            if e["route"] == route and isinstance(e["data"], dict) and e["data"].get("marker") == marker
        ]

    def wait_for_deliveries(self, route: str, marker: str, count: int) -> list[dict[str, Any]]:
        def enough() -> list[dict[str, Any]] | None:
            found = self.deliveries(route, marker)
            return found if len(found) >= count else None

        return wait_for(enough, f"{count} deliveries at {route} of the {self.kind} app", timeout=30)


@dataclass
class World:
    client_sidecar: SidecarProcess  # the sidecar the Go client talks to (defaults, no app)
    client_app_id: str
    apps: dict[str, GoApp]
    registry: Path
    log_dir: Path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    folder = tmp_path_factory.mktemp("sdk-go")
    registry = folder / "registry"
    binary()
    factory = SidecarFactory(folder)
    suffix = uuid.uuid4().hex[:6]
    try:
        apps = {kind: start_go_app(factory, kind, f"go-{kind}-{suffix}", registry) for kind in ("grpc", "http")}
        for app in apps.values():
            wait_ready(app.sidecar)  # UP once the Go app listens and its subscriptions are read
        client_app_id = f"go-client-{suffix}"
        client_sidecar = factory.start(
            "--app-id", client_app_id, env={**SECRET_ENV, "OTTAVA_REGISTRY_DIR": str(registry)}
        )
        yield World(client_sidecar, client_app_id, apps, registry, folder)
    finally:
        stop_all_gracefully(factory)
        factory.stop_all()


def start_go_app(
    factory: SidecarFactory, kind: str, app_id: str, registry: Path, resources: dict[str, str] | None = None
) -> GoApp:
    """`ottava run --app-id ID --app-port P --app-protocol KIND -- dapr-sdk-go KIND-app`, as a user runs it."""
    events_file = factory.log_dir / f"{app_id}-events.jsonl"
    sidecar = factory.start(
        *("--app-id", app_id, "--app-port", str(free_port()), "--app-protocol", kind),
        *("--", str(binary()), f"{kind}-app"),
        resources=resources,
        env={"EVENTS_FILE": str(events_file), "OTTAVA_REGISTRY_DIR": str(registry)},
    )
    return GoApp(kind, app_id, sidecar, events_file)


@pytest.fixture
def go_sidecars(tmp_path: Path) -> Iterator[SidecarFactory]:
    """Sidecars of one test, stopped with SIGTERM, which `ottava run` passes on to its Go app.

    (conftest's `sidecars` kills them, which would leave their apps running.)
    """
    factory = SidecarFactory(tmp_path)
    try:
        yield factory
    finally:
        stop_all_gracefully(factory)
        factory.stop_all()


def client_env(sidecar: SidecarProcess, extra: dict[str, str] | None = None) -> dict[str, str]:
    """What `ottava run -- APP` gives an app: the Go SDK dials $DAPR_GRPC_ENDPOINT, else the port."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAPR_")}
    env["DAPR_GRPC_PORT"] = str(sidecar.grpc_port)
    env["DAPR_HTTP_PORT"] = str(sidecar.http_port)
    return {**env, **(extra or {})}


def run_client(sidecar: SidecarProcess, check: str, *args: str) -> dict[str, Any]:
    """Run one check of the Go client against `sidecar`; what it observed, as one dict."""
    proc = subprocess.run(
        [str(binary()), "client", check, *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env=client_env(sidecar),
        timeout=CLIENT_TIMEOUT,
        check=False,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise AssertionError(
            f"Go client check {check!r} exited with {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    observed: dict[str, Any] = json.loads(lines[-1])
    print(f"Go client check {check}: {json.dumps(observed, indent=1)}")  # shown when an assertion fails
    return observed


# --- state --------------------------------------------------------------------------------


def test_state_etags_and_first_write(world: World) -> None:
    got = run_client(world.client_sidecar, "state-etag", unique("order"))
    assert got["save"] == ""
    assert got["first"]["value"] == '{"qty":1}'
    assert got["first"]["etag"]
    assert got["save_with_etag"] == ""
    assert got["second"]["value"] == '{"qty":2}'
    assert got["second"]["etag"] not in ("", got["first"]["etag"])

    assert "code = Aborted" in got["save_with_stale_etag"]
    assert "etag mismatch" in got["save_with_stale_etag"]
    assert got["after_stale_save"]["value"] == '{"qty":2}'
    assert "code = Aborted" in got["delete_with_stale_etag"]
    assert got["delete_with_etag"] == ""
    assert got["after_delete"] == {"value": "", "etag": ""}

    assert got["first_write"] == ""
    assert "code = Aborted" in got["second_first_write"]
    assert got["after_first_write"]["value"] == "a"


def test_state_bulk(world: World) -> None:
    prefix = unique("bulk")
    got = run_client(world.client_sidecar, "state-bulk", prefix)
    assert got["save_bulk"] == ""
    items = got["get_bulk"]
    assert {k: v["value"] for k, v in items.items()} == {
        f"{prefix}-a": "1",
        f"{prefix}-b": "2",
        f"{prefix}-c": '{"three":3}',
        f"{prefix}-missing": "",
    }
    assert all(items[f"{prefix}-{k}"]["etag"] for k in "abc")
    assert all(item["error"] == "" for item in items.values())
    assert got["delete_bulk"] == ""
    assert {k: v["value"] for k, v in got["after_delete"].items()} == {
        f"{prefix}-a": "",
        f"{prefix}-b": "",
        f"{prefix}-c": '{"three":3}',
    }


def test_state_transaction_is_all_or_nothing(world: World) -> None:
    prefix = unique("tx")
    got = run_client(world.client_sidecar, "state-transaction", prefix)
    assert got["seed"] == ""
    assert got["transaction"] == ""
    assert {k: v["value"] for k, v in got["after"].items()} == {f"{prefix}-a": "", f"{prefix}-b": "new"}
    assert "code = Aborted" in got["stale_transaction"]
    assert {k: v["value"] for k, v in got["after_stale"].items()} == {f"{prefix}-a": "", f"{prefix}-b": "new"}


# --- pub/sub --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["grpc", "http"])
def test_publish_reaches_the_go_app(world: World, kind: str) -> None:
    """PublishEvent and PublishEvents (bulk) to the app's sidecar reach the Go app's handler."""
    app = world.apps[kind]
    marker = unique("orders")
    got = run_client(app.sidecar, "publish", "orders", marker)
    assert got == {"publish": "", "publish_events": "", "publish_events_failed": 0}
    delivered = app.wait_for_deliveries("/orders", marker, 3)
    assert sorted(e["data"]["n"] for e in delivered) == [1, 2, 3]
    assert {e["pubsub"] for e in delivered} == {"pubsub"}
    assert {e["content_type"] for e in delivered} == {"application/json"}
    assert {e["topic"] for e in delivered} == {"orders"}
    assert len({e["id"] for e in delivered}) == 3


@pytest.mark.parametrize("kind", ["grpc", "http"])
def test_a_retry_from_the_go_app_redelivers(world: World, kind: str) -> None:
    """The handler's (true, err): RETRY over HTTP, a gRPC error over gRPC; both mean "again"."""
    app = world.apps[kind]
    marker = unique("flaky")
    got = run_client(app.sidecar, "publish", "flaky", marker)
    assert got["publish"] == ""
    seen = app.wait_for_deliveries("/flaky", marker, 6)  # each of the three events twice
    by_event: dict[str, list[int]] = {}
    for e in seen:
        by_event.setdefault(e["id"], []).append(e["delivery"])
    assert sorted(by_event.values()) == [[1, 2]] * 3


@pytest.mark.parametrize("kind", ["grpc", "http"])
def test_routing_rules_declared_with_the_go_sdk(world: World, kind: str) -> None:
    """A Subscription's Match (CEL) routes to its handler; the rest take the default route."""
    app = world.apps[kind]
    marker = unique("routed")
    assert run_client(app.sidecar, "publish", "routed", marker)["publish_events"] == ""
    big = app.wait_for_deliveries("/routed-big", marker, 1)
    default = app.wait_for_deliveries("/routed", marker, 2)
    assert [e["data"]["n"] for e in big] == [3]
    assert sorted(e["data"]["n"] for e in default) == [1, 2]


@pytest.mark.parametrize("kind", ["grpc", "http"])
def test_a_drop_from_the_go_app_goes_to_the_dead_letter_topic(world: World, kind: str) -> None:
    app = world.apps[kind]
    marker = unique("poison")
    assert run_client(app.sidecar, "publish", "poison", marker)["publish_events"] == ""
    dead = app.wait_for_deliveries("/poison-dead", marker, 3)
    dropped = app.deliveries("/poison", marker)
    assert sorted(e["data"]["n"] for e in dead) == [1, 2, 3]
    assert {e["id"] for e in dead} == {e["id"] for e in dropped}
    assert [e["delivery"] for e in dropped] == [1, 1, 1], "a dropped event is not delivered again"


BULK_ORDERS = """
apiVersion: ottava.io/v1alpha1
kind: Component
metadata: {name: pubsub}
spec: {type: pubsub.in-memory}
---
apiVersion: dapr.io/v2alpha1
kind: Subscription
metadata: {name: orders-in-bulk}
spec:
  pubsubname: pubsub
  topic: orders
  routes: {default: /orders}
  bulkSubscribe: {enabled: true, maxMessagesCount: 10, maxAwaitDurationMs: 100}
"""


def test_a_declared_bulk_subscription_reaches_a_service_grpc_app_one_by_one(
    go_sidecars: SidecarFactory, tmp_path: Path
) -> None:
    """service/grpc has no bulk handler (OnBulkTopicEvent is UNIMPLEMENTED): the sidecar falls back to OnTopicEvent."""
    app = start_go_app(go_sidecars, "grpc", unique("go-bulk"), tmp_path / "registry", {"pubsub.yaml": BULK_ORDERS})
    wait_ready(app.sidecar)
    info = httpx.get(f"{app.sidecar.http_url}/actuator/info").json()
    orders = next(sub for sub in info["subscriptions"] if sub["topic"] == "orders")
    assert orders["bulkSubscribe"]["enabled"], orders
    marker = unique("bulk")
    got = run_client(app.sidecar, "publish", "orders", marker)
    assert got == {"publish": "", "publish_events": "", "publish_events_failed": 0}
    delivered = app.wait_for_deliveries("/orders", marker, 3)
    assert sorted(e["data"]["n"] for e in delivered) == [1, 2, 3]
    assert {e["delivery"] for e in delivered} == {1}


def test_streaming_subscription(world: World) -> None:
    topic, marker = unique("stream"), unique("m")
    got = run_client(world.client_sidecar, "stream", topic, marker)
    assert got["subscribe"] == ""
    assert got["publish"] == ""
    first, second = got["deliveries"]
    assert first["data"] == {"marker": marker}
    assert first["topic"] == topic
    assert second["id"] == first["id"], "the event the client asked to retry came again"
    assert got["retry"] == ""
    assert got["success"] == ""
    assert got["close"] == ""
    assert got["subscribe_with_handler"] == ""
    assert got["handled"] == {"topic": f"{topic}-handler", "data": {"marker": marker}}
    assert got["stop_handler"] == ""


# --- configuration, lock, secrets, metadata -----------------------------------------------------


class LineReader:
    """A running Go client whose JSON lines the test reads as they come, with a deadline."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)

    def next_json(self, timeout: float = 30.0) -> dict[str, Any]:
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"the Go client printed nothing more within {timeout}s: {self.seen}") from None
            self.seen.append(line)
            if line.startswith("{"):
                observed: dict[str, Any] = json.loads(line)
                return observed


def save_configuration(sidecar: SidecarProcess, key: str, content: str) -> None:
    """The in-memory configuration store is written through Layotto's API (Dapr's has no write)."""
    with grpc.insecure_channel(sidecar.grpc_address) as channel:
        layotto_grpc.RuntimeStub(channel).SaveConfiguration(
            layotto.SaveConfigurationRequest(
                store_name="configstore", items=[layotto.ConfigurationItem(key=key, content=content)]
            )
        )


def test_configuration_get_and_subscribe(world: World) -> None:
    key = unique("greeting")
    save_configuration(world.client_sidecar, key, "hello")
    process = subprocess.Popen(
        [str(binary()), "client", "configuration", key, "bonjour"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=client_env(world.client_sidecar),
    )
    try:
        reader = LineReader(process)
        assert reader.next_json() == {"get": {key: "hello"}, "get_error": ""}
        subscribed = reader.next_json()
        assert subscribed["subscribe_error"] == ""
        assert subscribed["subscribed"]
        save_configuration(world.client_sidecar, key, "bonjour")
        done = reader.next_json()
        assert done["updates"][-1] == "bonjour"
        assert done["unsubscribe"] == ""
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        assert process.stderr is not None
        print(process.stderr.read())
        process.stderr.close()
        assert process.stdout is not None
        process.stdout.close()


def test_lock_alpha(world: World) -> None:
    got = run_client(world.client_sidecar, "lock", unique("invoice"))
    assert got == {
        "lock_1": True,
        "lock_2": False,
        "unlock_2": "LOCK_BELONGS_TO_OTHERS",
        "unlock_1": "SUCCESS",
        "unlock_again": "LOCK_DOES_NOT_EXIST",
        "lock_2_after": True,
    }


def test_secrets(world: World) -> None:
    (name, value), *_ = SECRET_ENV.items()
    got = run_client(world.client_sidecar, "secrets", name, "OTTAVA_NO_SUCH_SECRET")
    assert got["get"] == {name: value}
    assert got["get_error"] == ""
    assert "code = NotFound" in got["missing_error"]
    assert "OTTAVA_NO_SUCH_SECRET" in got["missing_error"]
    assert got["bulk"] == {name: value}
    assert got["bulk_error"] == ""


def test_metadata(world: World) -> None:
    got = run_client(world.client_sidecar, "metadata", "team", "payments")
    assert got["set"] == ""
    assert got["id"] == world.client_app_id
    assert {name: c["type"] for name, c in got["components"].items()} == {
        "statestore": "state.in-memory",
        "pubsub": "pubsub.in-memory",
        "lockstore": "lock.in-memory",
        "configstore": "configuration.in-memory",
        "sequencer": "sequencer.in-memory",
        "secretstore": "secretstores.local.env",
    }
    assert set(got["components"]["statestore"]["capabilities"]) == {"ETAG", "TRANSACTIONAL", "TTL"}
    assert got["extended"]["team"] == "payments"


@pytest.mark.parametrize("kind", ["grpc", "http"])
def test_metadata_lists_the_go_apps_subscriptions(world: World, kind: str) -> None:
    got = run_client(world.apps[kind].sidecar, "metadata")
    assert got["id"] == world.apps[kind].app_id
    topics = {(s["pubsub"], s["topic"]) for s in got["subscriptions"]}
    assert topics == {("pubsub", t) for t in ("orders", "flaky", "routed", "poison", "poison-dead")}


# --- invocation ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["grpc", "http"])
def test_invocation_between_two_apps(world: World, kind: str) -> None:
    """Go client → its sidecar → the app's sidecar → the Go app (service/grpc or service/http)."""
    app = world.apps[kind]
    got = run_client(world.client_sidecar, "invoke", app.app_id)
    assert got["with_content"] == {
        "app": kind,
        "verb": "POST",
        "query": "tenant=acme",
        "content_type": "text/plain",
        "data": "hello from Go",
    }
    assert got["without_content"]["app"] == kind
    assert got["without_content"]["verb"] == "GET"
    assert got["without_content"]["data"] == ""
    custom = got["custom_content"]
    assert (custom["verb"], custom["content_type"]) == ("PUT", "application/json")
    assert json.loads(custom["data"]) == {"sku": "A-1", "qty": 2}
    assert "error" in got["fail"], "the app's error reached the caller as an error"
    assert f"{app.app_id}-nobody" in got["unknown_app"]["error"]


# --- the client's wait for the sidecar ----------------------------------------------------------


def test_the_client_runs_behind_ottava_run(go_sidecars: SidecarFactory) -> None:
    """`ottava run -- CLIENT` starts the app once the sidecar listens: the SDK's short wait is never hit."""
    sidecar = go_sidecars.start(
        "--app-id", unique("go-cli"), "--", str(binary()), "client", "metadata", "launched", "by-ottava-run"
    )
    assert sidecar.process.wait(timeout=CLIENT_TIMEOUT) == 0, sidecar.log()
    assert sidecar.process.stdout is not None
    printed = [line for line in sidecar.process.stdout.read().splitlines() if line.startswith("{")]
    assert printed, f"the client printed nothing:\n{sidecar.log()}"
    got = json.loads(printed[-1])
    assert got["set"] == ""
    assert got["extended"]["launched"] == "by-ottava-run"


def test_the_client_gives_up_when_no_sidecar_listens() -> None:
    """dapr.NewClient blocks for $DAPR_CLIENT_TIMEOUT_SECONDS (5 by default), then fails naming the address."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAPR_")}
    proc = subprocess.run(
        [str(binary()), "client", "metadata"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env={**env, "DAPR_GRPC_PORT": str(port), "DAPR_CLIENT_TIMEOUT_SECONDS": "1"},
        timeout=CLIENT_TIMEOUT,
        check=False,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"error creating connection to '127.0.0.1:{port}'" in proc.stderr
    assert "context deadline exceeded" in proc.stderr


# --- the app's token (APP_API_TOKEN) --------------------------------------------------------


@pytest.mark.parametrize("kind", ["grpc", "http"])
def test_app_api_token_reaches_the_go_app(go_sidecars: SidecarFactory, tmp_path: Path, kind: str) -> None:
    """With APP_API_TOKEN set, the Go services refuse calls without it; the sidecar presents it, as Dapr's does."""
    registry = tmp_path / "registry"
    token = uuid.uuid4().hex
    app_id, app_port = unique(f"go-token-{kind}"), free_port()
    app = go_sidecars.start(
        *("--app-id", app_id, "--app-port", str(app_port), "--app-protocol", kind),
        *("--", str(binary()), f"{kind}-app"),  # the app inherits the sidecar's environment, token included
        env={"APP_API_TOKEN": token, "EVENTS_FILE": str(tmp_path / "events"), "OTTAVA_REGISTRY_DIR": str(registry)},
    )
    wait_ready(app)
    caller = go_sidecars.start("--app-id", unique("go-token-caller"), env={"OTTAVA_REGISTRY_DIR": str(registry)})
    got = run_client(caller, "invoke", app_id)
    assert got["with_content"].get("data") == "hello from Go", got["with_content"]
    assert got["custom_content"].get("verb") == "PUT", got["custom_content"]

    # The app does check: a call that reaches it without the token is refused (service/http
    # answers 203 "authentication failed.", service/grpc an error naming the missing key).
    if kind == "http":
        refused = httpx.post(f"http://127.0.0.1:{app_port}/echo", content=b"x")
        assert (refused.status_code, refused.text.strip()) == (203, "authentication failed.")
    else:
        with grpc.insecure_channel(f"127.0.0.1:{app_port}") as channel, pytest.raises(grpc.RpcError) as refused_call:
            AppCallbackStub(channel).OnInvoke(common_pb2.InvokeRequest(method="echo"))
        assert "app token key not exist" in str(refused_call.value.details())
