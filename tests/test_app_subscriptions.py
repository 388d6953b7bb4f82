"""What the app answers when asked for its subscriptions: used when it can be, named when it cannot.

Real apps in the test process (a stdlib HTTP server, a gRPC server) answer as the test
says; the sidecar is a real `ottava run --app-port`. A sidecar never waits for ever on
an answer it cannot use: it goes UP and names the problem in the readiness body.
"""

import json
import socket
import sys
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from dapr.proto.common.v1 import common_pb2
from dapr.proto.runtime.v1 import appcallback_pb2, appcallback_pb2_grpc
from google.protobuf import any_pb2, empty_pb2

from tests.conftest import SidecarFactory, SidecarProcess
from tests.messaging import free_port, readiness, wait_for

HTTP_PUBSUB_PREFIX = "app subscriptions: "


class HttpApp:
    """An HTTP app whose answer to GET /dapr/subscribe the test sets, recording the events POSTed to it."""

    def __init__(self) -> None:
        self.status = 200
        self.body: bytes = b"[]"
        self.events: list[tuple[str, dict[str, Any]]] = []
        app = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != "/dapr/subscribe":
                    self.send_error(404)
                    return
                self.send_response(app.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(app.body)))
                self.end_headers()
                self.wfile.write(app.body)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                app.events.append((self.path, json.loads(self.rfile.read(length))))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port: int = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def answer(self, status: int, body: Any) -> None:
        self.status, self.body = status, body if isinstance(body, bytes) else json.dumps(body).encode()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def http_app() -> Iterator[HttpApp]:
    app = HttpApp()
    yield app
    app.close()


def start_sidecar(sidecars: SidecarFactory, port: int, protocol: str, tmp_path: Path) -> SidecarProcess:
    return sidecars.start(
        "--app-id",
        f"subs-{protocol}",
        "--app-port",
        str(port),
        "--app-protocol",
        protocol,
        env={"OTTAVA_REGISTRY_DIR": str(tmp_path / "registry")},
    )


def wait_up(sidecar: SidecarProcess) -> dict[str, Any]:
    body: dict[str, Any] = wait_for(
        lambda: (b := readiness(sidecar))["status"] == "UP" and b, f"{sidecar.ready_line} to be UP"
    )
    assert httpx.get(f"{sidecar.http_url}/actuator/health/readiness").status_code == 200
    return body


def subscribed(sidecar: SidecarProcess) -> list[tuple[str, str]]:
    info = httpx.get(f"{sidecar.http_url}/actuator/info").json()
    return sorted((s["pubsubname"], s["topic"]) for s in info["subscriptions"])


def test_an_object_instead_of_a_list_is_named_and_the_sidecar_goes_up(
    sidecars: SidecarFactory, http_app: HttpApp, tmp_path: Path
) -> None:
    http_app.answer(200, {"pubsubname": "pubsub", "topic": "orders", "route": "/orders"})
    sidecar = start_sidecar(sidecars, http_app.port, "http", tmp_path)
    body = wait_up(sidecar)
    problem = body["components"]["app-subscriptions"]
    assert problem["status"] == "UP"
    assert "GET /dapr/subscribe answered a JSON object, not a list of subscriptions" in problem["details"]["reason"]
    assert body["components"]["app"]["status"] == "UP"
    assert subscribed(sidecar) == []
    assert "answered a JSON object, not a list" in sidecar.log()


def test_bad_items_are_named_and_the_good_ones_delivered(
    sidecars: SidecarFactory, http_app: HttpApp, tmp_path: Path
) -> None:
    http_app.answer(
        200,
        [
            {"pubsubname": "pubsub", "topic": "orders", "route": "/orders"},
            {"pubsubname": "pubsub", "topic": ["not", "a", "string"], "route": "/list"},
            {
                "pubsubname": "pubsub",
                "topic": "rules",
                "routes": {"rules": [{"match": "event.type ===", "path": "/x"}]},
            },
            {"pubsubname": "pubsub", "route": "/no-topic"},
            {"pubsubname": "pubsub", "topic": "metadata", "metadata": ["rawPayload"]},
        ],
    )
    sidecar = start_sidecar(sidecars, http_app.port, "http", tmp_path)
    reason = wait_up(sidecar)["components"]["app-subscriptions"]["details"]["reason"]
    assert "item 1 (subscription to pubsub/['not', 'a', 'string']) ignored: topic:" in reason
    assert "subscription to pubsub/rules ignored:" in reason and "event.type ===" in reason
    assert "item 3 (subscription to pubsub/?) ignored: topic: Field required" in reason
    assert "item 4 (subscription to pubsub/metadata) ignored: metadata:" in reason
    assert subscribed(sidecar) == [("pubsub", "orders")]

    published = httpx.post(f"{sidecar.http_url}/v1.0/publish/pubsub/orders", json={"id": 7})
    assert published.status_code == 204, published.text
    path, event = wait_for(lambda: http_app.events[0] if http_app.events else None, "the event at /orders")
    assert path == "/orders" and event["data"] == {"id": 7}


def test_null_fields_in_the_answer_are_fields_not_given(
    sidecars: SidecarFactory, http_app: HttpApp, tmp_path: Path
) -> None:
    """As Dapr's Go decoder reads them; Jackson (the Java SDK's apps) writes every unset field as null."""
    http_app.answer(
        200,
        [
            {
                "pubsubname": "pubsub",
                "topic": "orders",
                "route": "/orders",
                "routes": None,
                "metadata": None,
                "deadLetterTopic": None,
                "bulkSubscribe": None,
            },
            {"pubsubname": "pubsub", "topic": "rules", "route": None, "routes": {"rules": None, "default": "/rules"}},
        ],
    )
    sidecar = start_sidecar(sidecars, http_app.port, "http", tmp_path)
    body = wait_up(sidecar)
    assert "app-subscriptions" not in body["components"], body
    assert subscribed(sidecar) == [("pubsub", "orders"), ("pubsub", "rules")]
    published = httpx.post(f"{sidecar.http_url}/v1.0/publish/pubsub/rules", json={"id": 8})
    assert published.status_code == 204, published.text
    path, event = wait_for(lambda: http_app.events[0] if http_app.events else None, "the event at /rules")
    assert path == "/rules" and event["data"] == {"id": 8}


@pytest.mark.parametrize("status", [404, 405, 501])
def test_an_app_without_subscriptions_is_ready(
    sidecars: SidecarFactory, http_app: HttpApp, tmp_path: Path, status: int
) -> None:
    http_app.answer(status, b"no such route")
    sidecar = start_sidecar(sidecars, http_app.port, "http", tmp_path)
    body = wait_up(sidecar)
    assert "app-subscriptions" not in body["components"]
    assert subscribed(sidecar) == []


def test_an_error_answer_is_named_and_the_sidecar_goes_up(
    sidecars: SidecarFactory, http_app: HttpApp, tmp_path: Path
) -> None:
    http_app.answer(500, b"Traceback: KeyError 'topic'")
    sidecar = start_sidecar(sidecars, http_app.port, "http", tmp_path)
    reason = wait_up(sidecar)["components"]["app-subscriptions"]["details"]["reason"]
    assert "GET /dapr/subscribe answered 500, not 200" in reason and "KeyError" in reason


def test_an_app_not_ready_yet_is_asked_again_and_readiness_says_why(
    sidecars: SidecarFactory, http_app: HttpApp, tmp_path: Path
) -> None:
    http_app.answer(503, b"warming up")
    sidecar = start_sidecar(sidecars, http_app.port, "http", tmp_path)
    app = wait_for(
        lambda: "answered 503" in (b := readiness(sidecar))["components"]["app"]["details"].get("reason", "") and b,
        "readiness to name the 503",
    )["components"]["app"]
    assert app["status"] == "INIT" and "retrying" in app["details"]["reason"]
    assert httpx.get(f"{sidecar.http_url}/actuator/health/readiness").status_code == 503

    http_app.answer(200, [{"pubsubname": "pubsub", "topic": "orders", "route": "/orders"}])
    body = wait_up(sidecar)
    assert "app-subscriptions" not in body["components"]
    assert subscribed(sidecar) == [("pubsub", "orders")]


class GrpcApp(appcallback_pb2_grpc.AppCallbackServicer):
    """A gRPC app whose ListTopicSubscriptions fails as the test says, or lists one bad rule."""

    def __init__(self, code: grpc.StatusCode | None) -> None:
        self.code = code

    def ListTopicSubscriptions(
        self, request: empty_pb2.Empty, context: grpc.ServicerContext
    ) -> appcallback_pb2.ListTopicSubscriptionsResponse:
        if self.code is not None:
            context.abort(self.code, "the subscription table is not loaded")
        rules = appcallback_pb2.TopicRoutes(rules=[appcallback_pb2.TopicRule(match="event.type ==", path="/x")])
        return appcallback_pb2.ListTopicSubscriptionsResponse(
            subscriptions=[
                appcallback_pb2.TopicSubscription(pubsub_name="pubsub", topic="orders"),
                appcallback_pb2.TopicSubscription(pubsub_name="pubsub", topic="rules", routes=rules),
            ]
        )


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (grpc.StatusCode.INTERNAL, "failed ListTopicSubscriptions: INTERNAL: the subscription table is not loaded"),
        (None, "ListTopicSubscriptions: subscription to pubsub/rules ignored:"),
    ],
)
def test_grpc_list_topic_subscriptions_problems_are_named(
    sidecars: SidecarFactory, tmp_path: Path, code: grpc.StatusCode | None, expected: str
) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    appcallback_pb2_grpc.add_AppCallbackServicer_to_server(GrpcApp(code), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        sidecar = start_sidecar(sidecars, port, "grpc", tmp_path)
        reason = wait_up(sidecar)["components"]["app-subscriptions"]["details"]["reason"]
        assert expected in reason
        assert subscribed(sidecar) == ([] if code else [("pubsub", "orders")])
    finally:
        server.stop(None)


PLAIN_APP = """
import http.server, sys, time
from pathlib import Path

class Handler(http.server.BaseHTTPRequestHandler):
    # POST only: `GET /dapr/subscribe` is answered 501 by http.server itself.
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body) + 5))
        self.end_headers()
        self.wfile.write(b"echo:" + body)

server = http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
opened = Path(sys.argv[2] + ".tmp")
opened.write_text(repr(time.monotonic()))  # the port is open (listening) from here
opened.replace(sys.argv[2])
server.serve_forever()
"""


def test_a_plain_http_app_without_a_get_handler_is_ready_within_2s_of_its_port_opening(
    sidecars: SidecarFactory, tmp_path: Path
) -> None:
    """Python's http.server with only `do_POST`: no programmatic subscriptions, and no waiting for them."""
    script, opened_file = tmp_path / "app.py", tmp_path / "opened"
    script.write_text(PLAIN_APP, encoding="utf-8")
    port = free_port()
    sidecar = sidecars.start(
        "--app-id",
        "plain",
        "--app-port",
        str(port),
        "--",
        sys.executable,
        str(script),
        str(port),
        str(opened_file),
        env={"OTTAVA_REGISTRY_DIR": str(tmp_path / "registry")},
    )
    written: str = wait_for(lambda: opened_file.read_text() if opened_file.exists() else None, "the app's port")
    opened = float(written)
    deadline = opened + 2.0

    def ready_and_reachable() -> httpx.Response | None:
        if readiness(sidecar)["status"] != "UP":
            return None
        answer = httpx.post(f"{sidecar.http_url}/v1.0/invoke/plain/method/echo", content=b"hi")
        return answer if answer.status_code == 200 else None

    answer = wait_for(
        ready_and_reachable,
        "readiness UP and an invocation answered, 2 s after the app's port opened",
        timeout=max(0.0, deadline - time.monotonic()),
    )
    assert answer.text == "echo:hi"
    assert "app-subscriptions" not in readiness(sidecar)["components"]
    assert subscribed(sidecar) == []
    log = sidecar.log()
    assert log.count("GET /dapr/subscribe answered 501: the app declares no subscriptions") == 1, log


class _InvokeOnly(appcallback_pb2_grpc.AppCallbackServicer):
    """A gRPC app that serves OnInvoke only: ListTopicSubscriptions answers UNIMPLEMENTED (the generated default)."""

    def OnInvoke(self, request: common_pb2.InvokeRequest, context: grpc.ServicerContext) -> common_pb2.InvokeResponse:
        return common_pb2.InvokeResponse(
            data=any_pb2.Any(value=b"echo:" + request.data.value), content_type="text/plain"
        )


def test_a_grpc_app_without_list_topic_subscriptions_is_ready(sidecars: SidecarFactory, tmp_path: Path) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    appcallback_pb2_grpc.add_AppCallbackServicer_to_server(_InvokeOnly(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        sidecar = start_sidecar(sidecars, port, "grpc", tmp_path)
        body = wait_up(sidecar)
        assert "app-subscriptions" not in body["components"]
        assert subscribed(sidecar) == []
        answer = httpx.post(f"{sidecar.http_url}/v1.0/invoke/subs-grpc/method/echo", content=b"hi")
        assert (answer.status_code, answer.text) == (200, "echo:hi")
        assert sidecar.log().count("ListTopicSubscriptions is UNIMPLEMENTED") == 1, sidecar.log()
    finally:
        server.stop(None)


def test_an_app_that_drops_the_connection_is_asked_again_and_readiness_says_why(
    sidecars: SidecarFactory, tmp_path: Path
) -> None:
    """A transport failure (the port accepts, then closes without an answer) keeps the sidecar INIT, retrying."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def drop_every_connection() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            connection.close()

    thread = threading.Thread(target=drop_every_connection, daemon=True)
    thread.start()
    try:
        sidecar = start_sidecar(sidecars, listener.getsockname()[1], "http", tmp_path)
        app = wait_for(
            lambda: "(attempt 2)" in (b := readiness(sidecar))["components"]["app"]["details"].get("reason", "") and b,
            "readiness to name the second attempt",
        )["components"]["app"]
        assert app["status"] == "INIT"
        assert "reading subscriptions failed (attempt 2), retrying:" in app["details"]["reason"]
        assert "is not reachable" in app["details"]["reason"]
        assert httpx.get(f"{sidecar.http_url}/actuator/health/readiness").status_code == 503
    finally:
        stop.set()
        thread.join()
        listener.close()
