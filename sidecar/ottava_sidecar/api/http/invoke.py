"""Dapr's HTTP service invocation: `/v1.0/invoke/{app-id}/method/{method}`, every verb.

The verb, the query string (as sent, still encoded), the headers (less those of this
hop) and the body reach the target app unchanged; its answer (status, headers, body)
comes back unchanged too. Errors of the invocation itself (unknown app id, app down,
timeout) are Dapr's JSON error with `ERR_DIRECT_INVOKE`, naming the app.
"""

import json

from aiohttp import web
from multidict import CIMultiDict

from ottava_sidecar.api.http import routing
from ottava_sidecar.api.http.routing import Route
from ottava_sidecar.api.invocation import InvocationApi, forwarded_headers
from ottava_sidecar.appchannel.http import HOP_BY_HOP
from ottava_sidecar.invocation.messages import InvocationRequest

_NOT_RETURNED = HOP_BY_HOP | {"content-type", "date", "server"}


class InvokeHttpApi:
    def __init__(self, invocation: InvocationApi) -> None:
        self.invocation = invocation

    def routes(self) -> list[Route]:
        return [
            Route(
                "*",
                f"/v1.0/invoke/{{appId}}/method/{{method:{routing.ANY_TEXT_OR_NONE}}}",
                self.invoke,
                "invocation",
                "InvokeService",
            )
        ]

    async def invoke(self, request: web.Request) -> web.Response:
        app_id = request.match_info["appId"]
        # The method as sent (percent-encoding kept), so the app sees the path the caller wrote.
        method = request.rel_url.raw_path.split("/method/", 1)[1]
        call = InvocationRequest(
            method=method,
            data=await request.read(),
            content_type=request.headers.get("Content-Type", ""),
            verb=request.method,
            query=request.rel_url.raw_query_string,
            headers=forwarded_headers(list(request.headers.items())),
        )
        answer = await self.invocation.invoke(app_id, call)
        headers: CIMultiDict[str] = CIMultiDict((k, v) for k, v in answer.headers if k.lower() not in _NOT_RETURNED)
        body = answer.data
        content_type = answer.content_type
        if not answer.ok and not body and answer.message:
            # A gRPC app's error has no body: say what it was, as Dapr's JSON error.
            body = json.dumps({"errorCode": "ERR_DIRECT_INVOKE", "message": answer.message}).encode()
            content_type = "application/json"
        if content_type:
            headers["Content-Type"] = content_type
        return web.Response(status=answer.status, body=body, headers=headers)
