# mypy: disallow-untyped-decorators=False
"""An HTTP app written with FastAPI and the Dapr SDK's `dapr.ext.fastapi.DaprApp`.

Subscribes to the same topics as `grpc_app.py`, answering with Dapr's HTTP statuses
(`{"status": "RETRY"}`, `{"status": "DROP"}`, an exception → 500), and serves
`/echo/...` for every verb, answering with what it received.

    APP_PORT=6002 EVENTS_FILE=/tmp/events.jsonl python http_app.py
"""

import json
import os
import threading
from collections import Counter
from typing import Annotated, Any

import uvicorn
from dapr.ext.fastapi import DaprApp
from fastapi import Body, FastAPI, Request, Response

app = FastAPI()
dapr_app = DaprApp(app)
lock = threading.Lock()
seen: Counter[str] = Counter()
events_file = os.environ["EVENTS_FILE"]


def record(topic: str, event: dict[str, Any]) -> int:
    with lock:
        seen[event["id"]] += 1
        with open(events_file, "a", encoding="utf-8") as out:
            out.write(json.dumps({"topic": topic, "id": event["id"], "data": event.get("data")}) + "\n")
        return seen[event["id"]]


@dapr_app.subscribe(pubsub="pubsub", topic="orders")
def orders(event: Annotated[dict[str, Any], Body()]) -> dict[str, str]:
    record("orders", event)
    return {"status": "SUCCESS"}


@dapr_app.subscribe(pubsub="pubsub", topic="flaky")
def flaky(event: Annotated[dict[str, Any], Body()]) -> dict[str, str]:
    return {"status": "RETRY" if record("flaky", event) <= 2 else "SUCCESS"}


@dapr_app.subscribe(pubsub="pubsub", topic="poison", dead_letter_topic="poison-dead")
def poison(event: Annotated[dict[str, Any], Body()]) -> dict[str, str]:
    record("poison", event)
    return {"status": "DROP"}


@dapr_app.subscribe(pubsub="pubsub", topic="poison-dead")
def poison_dead(event: Annotated[dict[str, Any], Body()]) -> None:
    record("poison-dead", event)


@dapr_app.subscribe(pubsub="pubsub", topic="raises")
def raises(event: Annotated[dict[str, Any], Body()]) -> None:
    if record("raises", event) == 1:
        raise RuntimeError("the first delivery fails")


@app.api_route("/echo/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
async def echo(rest: str, request: Request) -> Response:
    body = {
        "method": request.method,
        "path": request.url.path,
        "query": request.url.query,
        "headers": dict(request.headers),
        "body": (await request.body()).decode(),
    }
    return Response(
        json.dumps(body),
        status_code=int(request.headers.get("x-answer-status", "200")),
        media_type="application/json",
        headers={"x-echoed": "yes"},
    )


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ["APP_PORT"]), log_level="warning")
