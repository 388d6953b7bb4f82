# mypy: disallow-untyped-decorators=False
"""An HTTP app (FastAPI) that takes events in batches and from declarative subscriptions.

It declares one subscription itself, `GET /dapr/subscribe` with `bulkSubscribe` (as
Dapr's bulk-subscribe guide shows for apps without an SDK helper); the others come from
Subscription manifests in the sidecar's resources folder and reach these plain routes:

* `POST /batch`: Dapr's bulk body; each entry is recorded with its batch, and answered
  by its data's `verdict` (`RETRY` on its first delivery only, `DROP`, else `SUCCESS`);
* `POST /widgets`, `/gadgets`, `/fallback`, `/dead`: one event each, recorded.

Every event is appended to `$EVENTS_FILE` as one JSON line.

    APP_PORT=6003 EVENTS_FILE=/tmp/events.jsonl python bulk_http_app.py
"""

import json
import os
import threading
from collections import Counter
from typing import Annotated, Any

import uvicorn
from fastapi import Body, FastAPI

app = FastAPI()
lock = threading.Lock()
seen: Counter[str] = Counter()
events_file = os.environ["EVENTS_FILE"]


def record(line: dict[str, Any]) -> int:
    with lock:
        seen[line["id"]] += 1
        with open(events_file, "a", encoding="utf-8") as out:
            out.write(json.dumps(line) + "\n")
        return seen[line["id"]]


@app.get("/dapr/subscribe")
def subscribe() -> list[dict[str, Any]]:
    return [
        {
            "pubsubname": "pubsub",
            "topic": "bulk-programmatic",
            "route": "/batch",
            "bulkSubscribe": {"enabled": True, "maxMessagesCount": 5, "maxAwaitDurationMs": 600000},
        }
    ]


@app.post("/batch")
def batch(body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
    statuses = []
    for entry in body["entries"]:
        event = entry["event"]
        data = event.get("data") or {}
        line = {
            "route": "batch",
            "topic": body["topic"],
            "batch": body["id"],
            "size": len(body["entries"]),
            "type": body["type"],
            "contentType": entry["contentType"],
            "id": event["id"],
            "data": data,
        }
        deliveries = record(line)
        verdict = data.get("verdict", "SUCCESS") if isinstance(data, dict) else "SUCCESS"
        if verdict == "RETRY" and deliveries > 1:
            verdict = "SUCCESS"
        statuses.append({"entryId": entry["entryId"], "status": verdict})
    return {"statuses": statuses}


def single(route: str, event: dict[str, Any]) -> dict[str, str]:
    record({"route": route, "topic": event.get("topic"), "id": event["id"], "data": event.get("data")})
    return {"status": "SUCCESS"}


@app.post("/widgets")
def widgets(event: Annotated[dict[str, Any], Body()]) -> dict[str, str]:
    return single("widgets", event)


@app.post("/gadgets")
def gadgets(event: Annotated[dict[str, Any], Body()]) -> dict[str, str]:
    return single("gadgets", event)


@app.post("/fallback")
def fallback(event: Annotated[dict[str, Any], Body()]) -> dict[str, str]:
    return single("fallback", event)


@app.post("/dead")
def dead(event: Annotated[dict[str, Any], Body()]) -> dict[str, str]:
    return single("dead", event)


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ["APP_PORT"]), log_level="warning")
