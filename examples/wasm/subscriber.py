# mypy: disallow-untyped-decorators=False
"""The app beside the counter function: it subscribes to `visited` on `pubsub`.

    .venv/bin/ottava run --app-id web --app-port 6005 --resources-path examples/wasm/resources \\
        -- .venv/bin/python examples/wasm/subscriber.py

Each event is printed, and appended as a JSON line to $EVENTS_FILE when it is set.
"""

import json
import os
import sys
from typing import Annotated, Any

import uvicorn
from dapr.ext.fastapi import DaprApp
from fastapi import Body, FastAPI

app = FastAPI()
dapr_app = DaprApp(app)


@dapr_app.subscribe(pubsub="pubsub", topic="visited")
def visited(event: Annotated[dict[str, Any], Body()]) -> dict[str, str]:
    line = json.dumps({"id": event.get("id"), "data": event.get("data")})
    print(f"visited: {line}", file=sys.stderr, flush=True)
    if os.environ.get("EVENTS_FILE"):
        with open(os.environ["EVENTS_FILE"], "a", encoding="utf-8") as out:
            out.write(line + "\n")
    return {"status": "SUCCESS"}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ["APP_PORT"]), log_level="warning")
