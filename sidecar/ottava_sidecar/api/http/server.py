"""The HTTP apps of a sidecar: the API app (port 3500) and the metrics app (port 9090)."""

import asyncio

import prometheus_client
from aiohttp import web
from prometheus_client import exposition

from ottava_sidecar import contract, metrics
from ottava_sidecar.api.apis import Apis
from ottava_sidecar.api.http import routing
from ottava_sidecar.api.http.actuator import Actuator
from ottava_sidecar.api.http.bindings import BindingsHttpApi
from ottava_sidecar.api.http.dapr import DaprHttpApi
from ottava_sidecar.api.http.invoke import InvokeHttpApi
from ottava_sidecar.api.http.pubsub import PubSubHttpApi
from ottava_sidecar.limits import Limits


def build_api_app(apis: Apis, *, api_token: str | None, limits: Limits | None = None) -> web.Application:
    """Dapr's HTTP API, the actuator and Dapr health; every non-health route needs `api_token` when set.

    Bodies are capped at `limits.max_body_bytes` (Dapr's `--max-body-size`), and requests
    in flight at `limits.max_concurrent_calls` (`routing.RequestGuard`).
    """
    limits = limits or Limits()
    app = web.Application(middlewares=[routing.unmatched_as_json], client_max_size=limits.max_body_bytes)
    token = api_token.encode() if api_token else None
    guard = routing.RequestGuard(limits)
    for route in api_routes(apis):
        app.router.add_route(route.method, route.path, routing.serve(route, token, guard))
    return app


def api_routes(apis: Apis) -> list[routing.Route]:
    """Every route of the API app, in the order the router tries them."""
    return [
        *Actuator(apis.registry, apis.metadata).routes(),
        *DaprHttpApi(apis).routes(),
        *PubSubHttpApi(apis.pubsub).routes(),
        *InvokeHttpApi(apis.invocation).routes(),
        *BindingsHttpApi(apis.bindings).routes(),
    ]


def build_metrics_app() -> web.Application:
    """`GET /metrics` from prometheus_client's default registry."""
    metrics.define_all()  # every metric of the sidecar is served, zeros included
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
