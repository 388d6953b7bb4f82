# mypy: disallow-untyped-decorators=False
"""A gRPC app written with the Dapr SDK's `dapr.ext.grpc.App`, that declarative and bulk
subscriptions reach.

The SDK routes an event by its path: a declarative subscription whose route is `widgets`
reaches the `widgets` handler, whatever its topic, and so does a batch (the SDK answers
`OnBulkTopicEvent` by calling the handler once per entry). A server interceptor, passed
to the SDK's `App` as `grpc.server` accepts one, records which AppCallback method each call
from the sidecar was, so the test tells batches from single events.

Every event and every call is appended to `$EVENTS_FILE` as one JSON line.

    APP_PORT=6004 EVENTS_FILE=/tmp/events.jsonl python bulk_grpc_app.py
"""

import json
import os
import threading
from collections.abc import Callable
from concurrent import futures
from typing import Any

import grpc
from cloudevents.sdk.event import v1
from dapr.ext.grpc import App

lock = threading.Lock()
events_file = os.environ["EVENTS_FILE"]


def write(line: dict[str, Any]) -> None:
    with lock, open(events_file, "a", encoding="utf-8") as out:
        out.write(json.dumps(line) + "\n")


class CallRecorder(grpc.ServerInterceptor):  # type: ignore[type-arg]
    def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Any], details: grpc.HandlerCallDetails
    ) -> Any:
        write({"call": details.method.rsplit("/", 1)[-1]})
        return continuation(details)


app = App(thread_pool=futures.ThreadPoolExecutor(max_workers=10), interceptors=[CallRecorder()])


def record(route: str, event: v1.Event) -> None:
    data = event.Data()
    text = data.decode() if isinstance(data, bytes) else str(data)
    write({"route": route, "topic": event.Subject(), "id": event.EventID(), "data": json.loads(text)})


@app.subscribe(pubsub_name="pubsub", topic="widgets")
def widgets(event: v1.Event) -> None:
    record("widgets", event)


@app.subscribe(pubsub_name="pubsub", topic="gadgets")
def gadgets(event: v1.Event) -> None:
    record("gadgets", event)


if __name__ == "__main__":
    app.run(int(os.environ["APP_PORT"]), listen_address="127.0.0.1")
