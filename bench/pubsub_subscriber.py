# mypy: disallow-untyped-decorators=False
"""The benchmark's subscriber: a Dapr SDK gRPC app that counts events and notes when the last one came.

APP_PORT=… BENCH_EVENTS=10000 BENCH_DONE_FILE=/tmp/done python pubsub_subscriber.py
"""

import os
import threading
import time

from cloudevents.sdk.event import v1
from dapr.ext.grpc import App

app = App()
expected = int(os.environ["BENCH_EVENTS"])
done_file = os.environ["BENCH_DONE_FILE"]
lock = threading.Lock()
count = 0


@app.subscribe(pubsub_name="pubsub", topic="bench")
def on_event(event: v1.Event) -> None:
    global count
    with lock:
        count += 1
        if count == expected:
            # CLOCK_MONOTONIC is system-wide on Linux: the publisher compares against its own reading.
            with open(done_file, "w", encoding="utf-8") as out:
                out.write(f"{count} {time.monotonic()}\n")


if __name__ == "__main__":
    app.run(int(os.environ["APP_PORT"]), listen_address="127.0.0.1")
