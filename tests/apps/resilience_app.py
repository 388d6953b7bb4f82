# mypy: disallow-untyped-decorators=False
"""An HTTP app that fails on purpose, for the Resiliency tests: it counts every request it gets.

* `POST /flaky/{key}`: 503 for the first two requests of each key, then 200;
* `POST /slow`: answers after 2 s;
* `POST /breaker`: 500 while failing is switched on (`POST /failing/on`, `/failing/off`), else 200;
* `GET /hits/{route}`: how many requests `route` (flaky, slow, breaker) has had.

    APP_PORT=6002 python resilience_app.py
"""

import asyncio
import os
from collections import Counter

import uvicorn
from fastapi import FastAPI, Response

app = FastAPI()
hits: Counter[str] = Counter()
flaky_keys: Counter[str] = Counter()
failing = {"on": False}


@app.post("/flaky/{key}")
async def flaky(key: str) -> Response:
    hits["flaky"] += 1
    flaky_keys[key] += 1
    if flaky_keys[key] <= 2:
        return Response(f"failure {flaky_keys[key]} of 2", status_code=503)
    return Response(f"answered on request {flaky_keys[key]}")


@app.post("/slow")
async def slow() -> Response:
    hits["slow"] += 1
    await asyncio.sleep(2)
    return Response("slow answer")


@app.post("/failing/{state}")
async def switch(state: str) -> Response:
    failing["on"] = state == "on"
    return Response(state)


@app.post("/breaker")
async def breaker() -> Response:
    hits["breaker"] += 1
    return Response("down", status_code=500) if failing["on"] else Response("up")


@app.get("/hits/{route}")
async def count(route: str) -> dict[str, int]:
    return {"hits": hits[route]}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ["APP_PORT"]), log_level="warning")
