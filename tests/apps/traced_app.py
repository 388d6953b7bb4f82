# mypy: disallow-untyped-decorators=False
"""An HTTP app that takes part in traces, as an instrumented user app does.

Every request it serves is a server span, the child of the `traceparent` its sidecar
sent, exported with the OpenTelemetry SDK over OTLP/HTTP to `OTLP_TRACES_URL`. It serves
`/echo/...` (answering with the headers it received) and subscribes to `traced` on
`pubsub` (recording each event and the headers of its delivery in `EVENTS_FILE`), and
to `traced-drop`, whose events it drops.

    APP_PORT=6002 EVENTS_FILE=/tmp/e.jsonl OTLP_TRACES_URL=http://127.0.0.1:4318/v1/traces python traced_app.py
"""

import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import uvicorn
from dapr.ext.fastapi import DaprApp
from fastapi import Body, FastAPI, Request, Response
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

app = FastAPI()
dapr_app = DaprApp(app)
lock = threading.Lock()
events_file = os.environ["EVENTS_FILE"]
provider = TracerProvider(resource=Resource.create({"service.name": os.environ.get("APP_NAME", "traced-app")}))
provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=os.environ["OTLP_TRACES_URL"], timeout=10)))
tracer = provider.get_tracer("tests.apps.traced_app")


@contextmanager
def served(name: str, request: Request) -> Iterator[None]:
    parent = TraceContextTextMapPropagator().extract(dict(request.headers))
    with tracer.start_as_current_span(name, context=parent, kind=SpanKind.SERVER):
        yield


@dapr_app.subscribe(pubsub="pubsub", topic="traced")
def traced(request: Request, event: Annotated[dict[str, Any], Body()]) -> dict[str, str]:
    with served("app handles traced", request), lock, open(events_file, "a", encoding="utf-8") as out:
        out.write(json.dumps({"id": event["id"], "event": event, "headers": dict(request.headers)}) + "\n")
    return {"status": "SUCCESS"}


@dapr_app.subscribe(pubsub="pubsub", topic="traced-drop")
async def traced_drop(request: Request) -> dict[str, str]:
    with served("app drops traced-drop", request):
        return {"status": "DROP"}


@app.api_route("/echo/{rest:path}", methods=["GET", "POST", "PUT", "DELETE"])
async def echo(rest: str, request: Request) -> Response:
    with served(f"app serves {request.method} /echo/{rest}", request):
        body = {"path": request.url.path, "headers": dict(request.headers)}
        return Response(json.dumps(body), media_type="application/json")


if __name__ == "__main__":
    try:
        uvicorn.run(app, host="127.0.0.1", port=int(os.environ["APP_PORT"]), log_level="warning")
    finally:
        provider.shutdown()
