# mypy: disallow-untyped-decorators=False
"""A gRPC app written with the Dapr SDK's `dapr.ext.grpc.App`, as a Dapr user writes one.

Subscribes to topics whose handlers answer in each way a subscriber can, and serves an
`echo` method for service invocation. Every delivery is appended to `$EVENTS_FILE` as one
JSON line, so the test sees exactly what the app saw (duplicates included).

    APP_PORT=6001 EVENTS_FILE=/tmp/events.jsonl python grpc_app.py
"""

import json
import os
import threading
from collections import Counter

from cloudevents.sdk.event import v1
from dapr.clients.grpc._request import InvokeMethodRequest
from dapr.clients.grpc._response import InvokeMethodResponse, TopicEventResponse
from dapr.ext.grpc import App

app = App()
lock = threading.Lock()
seen: Counter[str] = Counter()
events_file = os.environ["EVENTS_FILE"]


def record(topic: str, event: v1.Event) -> int:
    """Log the delivery; how many times this event id has been delivered so far."""
    data = event.Data()
    with lock:
        seen[event.EventID()] += 1
        with open(events_file, "a", encoding="utf-8") as out:
            line = {"topic": topic, "id": event.EventID(), "data": data.decode() if isinstance(data, bytes) else data}
            out.write(json.dumps(line) + "\n")
        return seen[event.EventID()]


@app.subscribe(pubsub_name="pubsub", topic="orders")
def orders(event: v1.Event) -> None:
    record("orders", event)


@app.subscribe(pubsub_name="pubsub", topic="flaky")
def flaky(event: v1.Event) -> TopicEventResponse:
    if record("flaky", event) <= 2:
        return TopicEventResponse("retry")
    return TopicEventResponse("success")


@app.subscribe(pubsub_name="pubsub", topic="poison", dead_letter_topic="poison-dead")
def poison(event: v1.Event) -> TopicEventResponse:
    record("poison", event)
    return TopicEventResponse("drop")


@app.subscribe(pubsub_name="pubsub", topic="poison-dead")
def poison_dead(event: v1.Event) -> None:
    record("poison-dead", event)


@app.subscribe(pubsub_name="pubsub", topic="raises")
def raises(event: v1.Event) -> None:
    if record("raises", event) == 1:
        raise RuntimeError("the first delivery fails")


@app.method(name="echo")
def echo(request: InvokeMethodRequest) -> InvokeMethodResponse:
    body = {
        "data": request.data.decode(),
        "content_type": request.content_type,
        "metadata": {k: v[0] if isinstance(v, list) else v for k, v in request.metadata.items()},
    }
    return InvokeMethodResponse(json.dumps(body).encode(), "application/json")


if __name__ == "__main__":
    app.run(int(os.environ["APP_PORT"]), listen_address="127.0.0.1")
