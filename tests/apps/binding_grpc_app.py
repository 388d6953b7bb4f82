# mypy: disallow-untyped-decorators=False
"""A gRPC app that receives input binding events with the Dapr SDK's `@app.binding`, as a Dapr user writes it.

`ticks` accepts every event; `flaky` raises for the first two deliveries of each event
(the sidecar must hand the same event over again). Every delivery is appended to
`$EVENTS_FILE` as one JSON line: `{"binding", "data", "metadata"}`.
"""

import json
import os
import threading
from collections import Counter

from dapr.clients.grpc._request import BindingRequest
from dapr.ext.grpc import App

app = App()
lock = threading.Lock()
seen: Counter[str] = Counter()
events_file = os.environ["EVENTS_FILE"]


def record(binding: str, request: BindingRequest) -> int:
    metadata = dict(request.binding_metadata)
    with lock:
        with open(events_file, "a", encoding="utf-8") as out:
            out.write(json.dumps({"binding": binding, "data": request.text(), "metadata": metadata}) + "\n")
        seen[binding + metadata.get("readTimeUTC", "")] += 1
        return seen[binding + metadata.get("readTimeUTC", "")]


@app.binding("ticks")
def ticks(request: BindingRequest) -> None:
    record("ticks", request)


@app.binding("flaky")
def flaky(request: BindingRequest) -> None:
    if record("flaky", request) <= 2:
        raise RuntimeError("not yet")


@app.binding("queue")
def queue(request: BindingRequest) -> None:
    record("queue", request)


if __name__ == "__main__":
    app.run(int(os.environ["APP_PORT"]), listen_address="127.0.0.1")
