"""Dapr's HTTP API v1.0, translated onto Ottava's APIs (as `api.grpc.dapr` does for gRPC).

Status codes and bodies are Dapr's: 204 for writes and for a missing state key, JSON
for reads, `{"errorCode", "message"}` from `ApiError` for failures. State values
arrive as JSON and are stored as their JSON text, so a GET returns the JSON that was
saved (compact, keys in the order sent; Dapr's Go encoder sorts them).
"""

import asyncio
import base64
import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from ottava_sidecar.api import errors
from ottava_sidecar.api.apis import Apis
from ottava_sidecar.api.http import bodies, routing
from ottava_sidecar.api.http.routing import METADATA_PREFIX, Route, no_content, query_metadata
from ottava_sidecar.api.state import CHUNK, BulkItem, json_value, operations, parse_concurrency, parse_ttl
from ottava_sidecar.components.state.base import DeleteRequest, SetRequest

_JSON = "application/json"


def _set_request(store_name: str, entry: bodies.StateEntry, defaults: Mapping[str, str]) -> SetRequest:
    metadata = {**defaults, **entry.metadata}
    return SetRequest(
        key=entry.key,
        value=json_value(store_name, entry.key, entry.value),
        etag=entry.etag or None,
        concurrency=parse_concurrency(entry.options.concurrency),
        ttl_seconds=parse_ttl(metadata, entry.key),
        content_type=metadata.get("contentType") or _JSON,
    )


def _delete_request(entry: bodies.StateEntry) -> DeleteRequest:
    return DeleteRequest(entry.key, entry.etag or None, parse_concurrency(entry.options.concurrency))


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def _bulk_data(value: bytes) -> bytes:
    """A stored value as bulk get shows it, as JSON text: the value itself when it is JSON
    (sent as stored, not parsed and written again); text or base64 when saved raw over gRPC."""
    try:
        text = value.decode()
    except UnicodeDecodeError:
        return json.dumps(base64.b64encode(value).decode()).encode()
    try:
        json.loads(text, parse_constant=_not_json)
    except ValueError:
        return json.dumps(text, ensure_ascii=False).encode()
    return value


def _bulk_item(result: BulkItem) -> list[bytes]:
    """One item of the answer as pieces of JSON text (key, data, etag, metadata, error, as
    Dapr orders them); a value is one piece, never copied."""
    pieces = [json.dumps({"key": result.key}).encode()[:-1]]
    rest: dict[str, Any] = {}
    if result.item is not None:
        pieces += [b', "data": ', _bulk_data(result.item.value)]
        if result.item.etag:
            rest["etag"] = result.item.etag
        if result.item.metadata:
            rest["metadata"] = result.item.metadata
    if result.error:
        rest["error"] = result.error
    pieces.append(b", " + json.dumps(rest).encode()[1:] if rest else b"}")
    return pieces


class DaprHttpApi:
    def __init__(self, apis: Apis) -> None:
        self.state = apis.state
        self.configuration = apis.configuration
        self.lock = apis.lock
        self.secrets = apis.secrets
        self.metadata = apis.metadata

    def routes(self) -> list[Route]:
        state = "/v1.0/state/{storeName}"
        return [
            # Fixed paths before `{key}`: a key that looks like "bulk" is reached by GET/DELETE only.
            Route("POST", f"{state}/bulk", self.get_bulk_state, "state", "GetBulkState", body=bodies.BULK_GET),
            Route(
                "POST",
                f"{state}/transaction",
                self.execute_state_transaction,
                "state",
                "ExecuteStateTransaction",
                body=bodies.TRANSACTION,
            ),
            Route("POST", state, self.save_state, "state", "SaveState", body=bodies.SAVE_STATE),
            Route("GET", state + f"/{{key:{routing.ANY_TEXT}}}", self.get_state, "state", "GetState"),
            Route("DELETE", state + f"/{{key:{routing.ANY_TEXT}}}", self.delete_state, "state", "DeleteState"),
            *(
                route
                for version in ("v1.0", "v1.0-alpha1")
                for route in (
                    Route(
                        "GET",
                        f"/{version}/configuration/{{storeName}}",
                        self.get_configuration,
                        "configuration",
                        "GetConfiguration",
                    ),
                    Route(
                        "GET",
                        f"/{version}/configuration/{{storeName}}/subscribe",
                        self.subscribe_configuration,
                        "configuration",
                        "SubscribeConfiguration",
                    ),
                    Route(
                        "GET",
                        f"/{version}/configuration/{{storeName}}/{{subscribeId}}/unsubscribe",
                        self.subscribe_configuration,
                        "configuration",
                        "UnsubscribeConfiguration",
                    ),
                )
            ),
            *(
                Route(method, "/v1.0-alpha1/state/{storeName}/query", self.query_state, "state", "QueryStateAlpha1")
                for method in ("POST", "PUT")
            ),
            Route(
                "POST", "/v1.0-alpha1/lock/{storeName}", self.try_lock, "lock", "TryLockAlpha1", body=bodies.TRY_LOCK
            ),
            Route("POST", "/v1.0-alpha1/unlock/{storeName}", self.unlock, "lock", "UnlockAlpha1", body=bodies.UNLOCK),
            Route("GET", "/v1.0/secrets/{storeName}/bulk", self.get_bulk_secret, "secrets", "GetBulkSecret"),
            Route("GET", "/v1.0/secrets/{storeName}/{name}", self.get_secret, "secrets", "GetSecret"),
            Route("GET", "/v1.0/metadata", self.get_metadata, "metadata", "GetMetadata"),
            Route("PUT", "/v1.0/metadata/{key}", self.set_metadata, "metadata", "SetMetadata"),
            Route("POST", "/v1.0/shutdown", self.shutdown, "lifecycle", "Shutdown"),
        ]

    # --- state ---------------------------------------------------------------------

    async def get_state(self, request: web.Request) -> web.Response:
        item = await self.state.get(request.match_info["storeName"], request.match_info["key"])
        if item is None:
            return no_content()
        headers = {f"{METADATA_PREFIX}{name}": value for name, value in item.metadata.items()}
        headers["Content-Type"] = item.content_type or "application/octet-stream"
        if item.etag:
            headers["ETag"] = item.etag
        return web.Response(body=item.value, headers=headers)

    async def save_state(self, request: web.Request) -> web.Response:
        entries = bodies.SAVE_STATE.parse(await request.read())
        defaults = query_metadata(request)
        store_name = request.match_info["storeName"]
        await self.state.save(store_name, [_set_request(store_name, e, defaults) for e in entries])
        return no_content()

    async def delete_state(self, request: web.Request) -> web.Response:
        delete = DeleteRequest(
            request.match_info["key"],
            request.headers.get("If-Match") or None,
            parse_concurrency(request.query.get("concurrency", "")),
        )
        await self.state.delete(request.match_info["storeName"], [delete])
        return no_content()

    async def get_bulk_state(self, request: web.Request) -> web.Response:
        body = bodies.BULK_GET.parse(await request.read())
        results = await self.state.bulk_get(request.match_info["storeName"], body.keys)
        # Joined a chunk at a time, handing the loop back in between: one join of a
        # 300k-item answer's two million pieces alone held the event loop for 80 ms.
        chunks = [b"["]
        pieces: list[bytes] = []
        for index, result in enumerate(results):
            if index:
                pieces.append(b", ")
                if index % CHUNK == 0:
                    chunks.append(b"".join(pieces))
                    pieces = []
                    await asyncio.sleep(0)
            pieces += _bulk_item(result)
        chunks += [b"".join(pieces), b"]"]
        return web.Response(body=b"".join(chunks), content_type=_JSON)

    async def execute_state_transaction(self, request: web.Request) -> web.Response:
        body = bodies.TRANSACTION.parse(await request.read())
        items = ((op.operation, op.request) for op in body.operations)
        store_name = request.match_info["storeName"]
        await self.state.transact(
            store_name, operations(items, lambda e: _set_request(store_name, e, {}), _delete_request)
        )
        return no_content()

    async def query_state(self, request: web.Request) -> web.Response:
        """The body is the query itself; the answer is Dapr's `{"results": [...], "token": ...}`."""
        page = await self.state.query(request.match_info["storeName"], await request.read())
        results = []
        for item in page.items:
            entry = json.dumps({"key": item.key}).encode()[:-1] + b', "data": ' + _bulk_data(item.value)
            results.append(entry + (b', "etag": ' + json.dumps(item.etag).encode() if item.etag else b"") + b"}")
        token = b', "token": ' + json.dumps(page.token).encode() if page.token else b""
        return web.Response(body=b'{"results": [' + b", ".join(results) + b"]" + token + b"}", content_type=_JSON)

    # --- configuration -------------------------------------------------------------

    async def get_configuration(self, request: web.Request) -> web.Response:
        query = self.configuration.dapr_query(request.query.getall("key", []), query_metadata(request))
        items = await self.configuration.get(request.match_info["storeName"], query)
        return web.json_response(
            {item.key: {"value": item.content, "version": item.version, "metadata": item.metadata} for item in items}
        )

    async def subscribe_configuration(self, request: web.Request) -> web.Response:
        # Over HTTP, Dapr delivers changes by calling the app back, which needs the app channel.
        raise errors.unimplemented(
            f"{request.method} {request.path} is not implemented yet: configuration updates over HTTP "
            "need the app channel; use the gRPC SubscribeConfiguration instead"
        )

    # --- lock ----------------------------------------------------------------------

    async def try_lock(self, request: web.Request) -> web.Response:
        body = bodies.TRY_LOCK.parse(await request.read())
        success = await self.lock.try_lock(
            request.match_info["storeName"], body.resource_id, body.lock_owner, body.expiry_in_seconds
        )
        return web.json_response({"success": success})

    async def unlock(self, request: web.Request) -> web.Response:
        body = bodies.UNLOCK.parse(await request.read())
        status = await self.lock.unlock(request.match_info["storeName"], body.resource_id, body.lock_owner)
        return web.json_response({"status": int(status)})

    # --- secrets -------------------------------------------------------------------

    async def get_secret(self, request: web.Request) -> web.Response:
        secret = await self.secrets.get(request.match_info["storeName"], request.match_info["name"])
        return web.json_response(secret)

    async def get_bulk_secret(self, request: web.Request) -> web.Response:
        return web.json_response(await self.secrets.bulk_get(request.match_info["storeName"]))

    # --- metadata and lifecycle ----------------------------------------------------

    async def get_metadata(self, request: web.Request) -> web.Response:
        app = self.metadata.app
        connection: dict[str, Any] = {"protocol": app.protocol, "channelAddress": app.address}
        if app.port:  # Dapr leaves the port out when no app port is configured
            connection["port"] = app.port
        return web.json_response(
            {
                "id": self.metadata.app_id,
                "runtimeVersion": self.metadata.version,
                "enabledFeatures": [],
                "actors": [],
                "components": self.metadata.components(),
                "extended": self.metadata.extended,
                "subscriptions": [s.describe() for s in self.metadata.subscriptions()],
                "httpEndpoints": [],
                "appConnectionProperties": connection,
            }
        )

    async def set_metadata(self, request: web.Request) -> web.Response:
        try:
            value = (await request.read()).decode()
        except UnicodeDecodeError:
            raise errors.invalid_argument(
                f"metadata value of {request.match_info['key']!r} is not UTF-8 text"
            ) from None
        self.metadata.set(request.match_info["key"], value)
        return no_content()

    async def shutdown(self, request: web.Request) -> web.Response:
        # Answer first, then stop: the caller gets its reply before the server drains.
        asyncio.get_running_loop().call_soon(self.metadata.request_shutdown)
        return no_content()
