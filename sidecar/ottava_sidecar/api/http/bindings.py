"""Dapr's HTTP output binding route, translated onto `api.bindings.BindingsApi`.

`POST /v1.0/bindings/{name}` with `{"data": …, "metadata": {…}, "operation": "…"}`. The
binding gets `data` as bytes: a JSON string as its text (so `"data": "Hello"` writes
`Hello`), any other JSON value as its compact JSON text. The answer is the binding's
data (200), with each metadata entry as a `metadata.<name>` header, as Dapr answers;
204 when the binding answered nothing.
"""

import json

from aiohttp import web
from pydantic import Field

from ottava_sidecar.api.bindings import BindingsApi
from ottava_sidecar.api.http import bodies
from ottava_sidecar.api.http.routing import METADATA_PREFIX, Route, no_content


class _InvokeBody(bodies.RequestBody):
    data: bodies.FiniteJson = None
    metadata: bodies.Metadata = Field(default_factory=dict)
    operation: str = ""

    def payload(self) -> bytes:
        if self.data is None:
            return b""
        if isinstance(self.data, str):
            return self.data.encode()
        return json.dumps(self.data, separators=(",", ":"), ensure_ascii=False).encode()


_BODY: bodies.Body[_InvokeBody] = bodies.Body(_InvokeBody, '{"data": ..., "metadata": {...}, "operation": "..."}')


def _content_type(data: bytes) -> str:
    try:
        json.loads(data)
    except ValueError:
        return "application/octet-stream"
    return "application/json"


def _header_safe(value: str) -> bool:
    return value.isprintable() and "\n" not in value and "\r" not in value


class BindingsHttpApi:
    def __init__(self, bindings: BindingsApi) -> None:
        self.bindings = bindings

    def routes(self) -> list[Route]:
        # Dapr takes POST and PUT alike.
        return [
            Route(method, "/v1.0/bindings/{name}", self.invoke, "bindings", "InvokeBinding", body=_BODY)
            for method in ("POST", "PUT")
        ]

    async def invoke(self, request: web.Request) -> web.Response:
        body = _BODY.parse(await request.read())
        answer = await self.bindings.invoke(request.match_info["name"], body.operation, body.payload(), body.metadata)
        headers = {f"{METADATA_PREFIX}{k}": v for k, v in answer.metadata.items() if _header_safe(v)}
        if not answer.data and not answer.metadata:
            return no_content()
        headers["Content-Type"] = _content_type(answer.data)
        return web.Response(status=200, body=answer.data, headers=headers)
