"""A small shop app written with the official Dapr Python SDK, unmodified, run beside Ottava.

It talks to its sidecar only through the SDK (which finds it through the `DAPR_GRPC_PORT`
and `DAPR_HTTP_PORT` variables the injector sets) and serves a few HTTP routes on
`APP_PORT` (default 8000):

* for you (curl the pod's IP): `PUT/GET /state/<key>` saves and reads state,
  `POST /publish/<topic>` publishes the request body, `GET /invoke/<app-id>/<method>`
  invokes another app by its app id and returns its answer; to try resiliency policies
  ([resiliency](../../../docs/resiliency.md)), `PUT /failing` with a status code (`500`)
  makes `/hello` answer with it until it is set back to `0` (`500 2`: the next 2 answers
  only), and `PUT /delay` with seconds (`2`) makes `/hello` answer that late;
  `GET /sidecar/<path>` is `GET <path>` on the sidecar's HTTP API, from inside the pod
  (which alone it answers), with the request's `x-` headers, answering what it answered;
* for the sidecar: `GET /dapr/subscribe` (this app subscribes to `SUBSCRIBE_TOPIC` when
  it is set), `POST /events/<topic>` (deliveries), and `GET /hello`, the method other apps
  invoke, which says which app, version (`APP_VERSION`) and pod answered;
* `GET /received` lists the events this pod was delivered.

Only the standard library and the Dapr SDK, so its image stays small.
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.request
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from dapr.clients import DaprClient

APP_PORT = int(os.environ.get("APP_PORT", "8000"))
STATE_STORE = os.environ.get("STATE_STORE", "statestore")
PUBSUB = os.environ.get("PUBSUB", "pubsub")
SUBSCRIBE_TOPIC = os.environ.get("SUBSCRIBE_TOPIC", "")
POD_NAME = os.environ.get("POD_NAME", "")
APP_ID = os.environ.get("APP_ID", "")
APP_VERSION = os.environ.get("APP_VERSION", "")
DAPR_HTTP_PORT = os.environ.get("DAPR_HTTP_PORT", "3500")

received: list[Any] = []
received_lock = threading.Lock()
failing = 0  # the status /hello answers with, when not 0 (PUT /failing)
failures_left = -1  # how many answers fail before /hello answers again (-1: until PUT /failing 0)
delay = 0.0  # seconds /hello waits before answering (PUT /delay)
dapr = DaprClient()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        print(f"{self.address_string()} {format % args}", flush=True)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, document: Any) -> None:
        payload = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _hello(self) -> None:
        global failing, failures_left
        if delay:
            time.sleep(delay)
        answer = {"app": APP_ID, "version": APP_VERSION, "pod": POD_NAME}
        status = failing
        if failing and failures_left > 0:
            failures_left -= 1
            if failures_left == 0:
                failing = 0
        self._send(status or HTTPStatus.OK, {**answer, "error": "failing, as asked"} if status else answer)

    def _sidecar(self, path: str) -> None:
        """GET `path` on the sidecar's HTTP API and answer exactly what it answered."""
        query = self.path.partition("?")[2]
        url = f"http://127.0.0.1:{DAPR_HTTP_PORT}{path}" + (f"?{query}" if query else "")
        headers = {k: v for k, v in self.headers.items() if k.lower().startswith("x-")}
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=60) as answer:
                status, payload, kind = answer.status, answer.read(), answer.headers.get("Content-Type")
        except urllib.error.HTTPError as err:
            status, payload, kind = err.code, err.read(), err.headers.get("Content-Type")
        self.send_response(status)
        self.send_header("Content-Type", kind or "application/octet-stream")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _parts(self) -> list[str]:
        return [p for p in self.path.split("?", 1)[0].split("/") if p]

    def do_GET(self) -> None:
        parts = self._parts()
        try:
            if parts == ["dapr", "subscribe"]:
                topics = [{"pubsubname": PUBSUB, "topic": SUBSCRIBE_TOPIC, "route": f"/events/{SUBSCRIBE_TOPIC}"}]
                self._send(HTTPStatus.OK, topics if SUBSCRIBE_TOPIC else [])
            elif parts == ["hello"]:
                self._hello()
            elif parts and parts[0] == "sidecar":
                self._sidecar("/" + "/".join(parts[1:]))
            elif parts == ["received"]:
                with received_lock:
                    self._send(HTTPStatus.OK, list(received))
            elif len(parts) == 2 and parts[0] == "state":
                item = dapr.get_state(STATE_STORE, parts[1])
                self._send(HTTPStatus.OK, {"key": parts[1], "value": item.data.decode(), "etag": item.etag})
            elif len(parts) == 3 and parts[0] == "invoke":
                answer = dapr.invoke_method(parts[1], parts[2], http_verb="GET")
                self._send(HTTPStatus.OK, json.loads(answer.data or b"null"))
            else:
                self._send(HTTPStatus.NOT_FOUND, {"error": f"no route GET {self.path}"})
        except Exception as err:  # the caller sees what the sidecar said
            self._send(HTTPStatus.BAD_GATEWAY, {"error": f"{type(err).__name__}: {err}"})

    def do_PUT(self) -> None:
        parts = self._parts()
        body = self._body()
        try:
            if len(parts) == 2 and parts[0] == "state":
                dapr.save_state(STATE_STORE, parts[1], body)
                self._send(HTTPStatus.OK, {"saved": parts[1]})
            elif parts == ["failing"]:
                global failing, failures_left
                words = (body.decode() or "0").split()
                failing, failures_left = int(words[0]), int(words[1]) if len(words) > 1 else -1
                self._send(HTTPStatus.OK, {"failing": failing, "times": failures_left})
            elif parts == ["delay"]:
                global delay
                delay = float(body or b"0")
                self._send(HTTPStatus.OK, {"delay": delay})
            else:
                self._send(HTTPStatus.NOT_FOUND, {"error": f"no route PUT {self.path}"})
        except Exception as err:
            self._send(HTTPStatus.BAD_GATEWAY, {"error": f"{type(err).__name__}: {err}"})

    def do_POST(self) -> None:
        parts = self._parts()
        body = self._body()
        try:
            if len(parts) == 2 and parts[0] == "publish":
                dapr.publish_event(PUBSUB, parts[1], body, data_content_type="application/json")
                self._send(HTTPStatus.OK, {"published": parts[1]})
            elif len(parts) == 2 and parts[0] == "events":
                event = json.loads(body or b"{}")
                with received_lock:
                    received.append(event.get("data"))
                self._send(HTTPStatus.OK, {"status": "SUCCESS"})
            elif parts == ["hello"]:
                self._hello()
            else:
                self._send(HTTPStatus.NOT_FOUND, {"error": f"no route POST {self.path}"})
        except Exception as err:
            self._send(HTTPStatus.BAD_GATEWAY, {"error": f"{type(err).__name__}: {err}"})


def main() -> None:
    server = ThreadingHTTPServer(("0.0.0.0", APP_PORT), Handler)
    print(f"app {APP_ID or '?'} ({POD_NAME or '?'}) listening on :{APP_PORT}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
