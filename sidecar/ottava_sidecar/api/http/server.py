"""The HTTP apps of a sidecar: the API app (port 3500) and the metrics app (port 9090)."""

import asyncio

import prometheus_client
from aiohttp import web
from prometheus_client import exposition

from ottava_sidecar import contract
from ottava_sidecar.api.apis import Apis
from ottava_sidecar.api.http import routing
from ottava_sidecar.api.http.actuator import Actuator
from ottava_sidecar.api.http.dapr import DaprHttpApi
from ottava_sidecar.api.http.invoke import InvokeHttpApi
from ottava_sidecar.api.http.pubsub import PubSubHttpApi

# Dapr's default limit on a request body (`--max-body-size 4Mi`); aiohttp's own is 1 MiB.
MAX_BODY_BYTES = 4 * 1024 * 1024


def build_api_app(apis: Apis, *, api_token: str | None) -> web.Application:
    """Dapr's HTTP API, the actuator and Dapr health; every non-health route needs `api_token` when set."""
    app = web.Application(middlewares=[routing.unmatched_as_json], client_max_size=MAX_BODY_BYTES)
    token = api_token.encode() if api_token else None
    routes = [
        *Actuator(apis.registry, apis.metadata).routes(),
        *DaprHttpApi(apis).routes(),
        *PubSubHttpApi(apis.pubsub).routes(),
        *InvokeHttpApi(apis.invocation).routes(),
    ]
    for route in routes:
        app.router.add_route(route.method, route.path, routing.serve(route, token))
    return app


def build_metrics_app() -> web.Application:
    """`GET /metrics` from prometheus_client's default registry."""
    app = web.Application()
    app.router.add_get(contract.METRICS_PATH, _metrics)
    return app


async def _metrics(request: web.Request) -> web.Response:
    encoder, content_type = exposition.choose_encoder(request.headers.get("Accept", ""))
    # Rendering every series is CPU work proportional to the registry; keep it off the loop.
    body = await asyncio.to_thread(encoder, prometheus_client.REGISTRY)
    response = web.Response(body=body, headers={"Content-Type": content_type})
    response.enable_compression()  # only when the scraper accepts it
    return response
