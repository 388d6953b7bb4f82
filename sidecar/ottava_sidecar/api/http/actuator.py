"""Health and info routes: the actuator's (Kubernetes probes) and Dapr's `/v1.0/healthz`.

None of them needs the API token, and liveness never looks at a backend: a slow or
broken store must make the pod unready, not get it restarted.
"""

from aiohttp import web

from ottava_sidecar import contract
from ottava_sidecar.api.http.routing import Route, error_body, no_content
from ottava_sidecar.api.metadata import MetadataApi
from ottava_sidecar.components import health
from ottava_sidecar.components.registry import Registry, Status


class Actuator:
    def __init__(self, registry: Registry, metadata: MetadataApi) -> None:
        self.registry = registry
        self.metadata = metadata

    def routes(self) -> list[Route]:
        return [
            Route("GET", contract.LIVENESS_PATH, self.liveness, "health", "Liveness", public=True),
            Route("GET", contract.READINESS_PATH, self.readiness, "health", "Readiness", public=True),
            Route("GET", contract.INFO_PATH, self.info, "health", "Info", public=True),
            Route("GET", contract.DAPR_HEALTHZ_PATH, self.healthz, "health", "Healthz", public=True),
            Route(
                "GET",
                contract.DAPR_OUTBOUND_HEALTHZ_PATH,
                self.healthz_outbound,
                "health",
                "HealthzOutbound",
                public=True,
            ),
        ]

    async def liveness(self, request: web.Request) -> web.Response:
        return web.json_response({"status": Status.UP.value})

    async def readiness(self, request: web.Request) -> web.Response:
        body = health.readiness_body(self.registry)
        return web.json_response(body, status=200 if body["status"] == Status.UP.value else 503)

    async def info(self, request: web.Request) -> web.Response:
        return web.json_response(self.metadata.info())

    async def healthz(self, request: web.Request) -> web.Response:
        status = health.overall(self.registry)
        if status is Status.UP:
            return no_content()
        return error_body(500, "ERR_HEALTH_NOT_READY", f"ottava is not ready: readiness is {status.value}")

    async def healthz_outbound(self, request: web.Request) -> web.Response:
        if self.registry.loaded:
            return no_content()
        return error_body(500, "ERR_OUTBOUND_HEALTH_NOT_READY", "ottava is not ready: components are still loading")
