# mypy: disallow-untyped-decorators=False
"""An HTTP app (FastAPI) that receives input binding events on `POST /<binding>`, as Dapr delivers them.

`/ticks` answers 200; `/flaky` answers 500 to the first two deliveries of each event;
`/elsewhere` receives the binding whose `route` metadata points there. Every delivery is
appended to `$EVENTS_FILE` as one JSON line: `{"binding", "data", "metadata"}`, the
metadata being the request's headers.
"""

import json
import os
import threading
from collections import Counter

import uvicorn
from fastapi import FastAPI, Request, Response

app = FastAPI()
lock = threading.Lock()
seen: Counter[str] = Counter()
events_file = os.environ["EVENTS_FILE"]


async def record(binding: str, request: Request) -> int:
    return write(binding, (await request.body()).decode(), dict(request.headers))


def write(binding: str, body: str, headers: dict[str, str]) -> int:
    with lock:
        with open(events_file, "a", encoding="utf-8") as out:
            out.write(json.dumps({"binding": binding, "data": body, "metadata": headers}) + "\n")
        key = binding + headers.get("readtimeutc", body)
        seen[key] += 1
        return seen[key]


@app.post("/ticks")
async def ticks(request: Request) -> Response:
    await record("ticks", request)
    return Response(status_code=200)


@app.post("/flaky")
async def flaky(request: Request) -> Response:
    if await record("flaky", request) <= 2:
        return Response("not yet", status_code=500)
    return Response(status_code=200)


@app.post("/elsewhere")
async def elsewhere(request: Request) -> Response:
    await record("routed", request)
    return Response(status_code=200)


@app.post("/queue")
async def queue(request: Request) -> Response:
    await record("queue", request)
    return Response(status_code=200)


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ["APP_PORT"]), log_level="warning")
