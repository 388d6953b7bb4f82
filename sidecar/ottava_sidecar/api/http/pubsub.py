"""Dapr's HTTP publish routes, translated onto `api.pubsub.PubSubApi`.

`POST /v1.0/publish/{pubsub}/{topic}` answers 204 with the broker's message id in the
`message-id` header; the bulk route answers one `message-id: <entry id>=<message id>`
header per published entry.
"""

import json
from typing import Any

from aiohttp import web
from multidict import CIMultiDict
from pydantic import Field, model_validator

from ottava_sidecar.api.http import bodies, routing
from ottava_sidecar.api.http.routing import Route, query_metadata
from ottava_sidecar.api.pubsub import MESSAGE_ID, BulkEntry, PubSubApi
from ottava_sidecar.messaging.cloudevents import is_json_type


class _BulkEntry(bodies.RequestBody):
    entry_id: str = Field(alias="entryId")
    event: bodies.FiniteJson = None
    content_type: str = Field(default="", alias="contentType")
    metadata: bodies.Metadata = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _keys_in_any_case(cls, value: Any) -> Any:
        """Dapr decodes an entry with Go's encoding/json, which matches keys in any case (a
        later key overwriting an earlier one): the JavaScript SDK sends `entryID`."""
        if not isinstance(value, dict):
            return value
        return {_BULK_ENTRY_KEYS.get(str(key).lower(), key): item for key, item in value.items()}

    def payload(self) -> bytes:
        if isinstance(self.event, str) and not is_json_type(self.content_type):
            return self.event.encode()
        return json.dumps(self.event, separators=(",", ":"), ensure_ascii=False).encode()


_BULK: bodies.Body[list[_BulkEntry]] = bodies.Body(
    list[_BulkEntry], "a JSON array of {entryId, event, contentType, metadata}"
)
_BULK_ENTRY_KEYS = {name.lower(): name for name in ("entryId", "event", "contentType", "metadata")}


class PubSubHttpApi:
    def __init__(self, pubsub: PubSubApi) -> None:
        self.pubsub = pubsub

    def routes(self) -> list[Route]:
        return [
            Route(
                "POST",
                f"/v1.0/publish/{{pubsubname}}/{{topic:{routing.ANY_TEXT}}}",
                self.publish,
                "pubsub",
                "PublishEvent",
            ),
            *(
                Route(
                    "POST",
                    f"/{version}/publish/bulk/{{pubsubname}}/{{topic:{routing.ANY_TEXT}}}",
                    self.bulk,
                    "pubsub",
                    name,
                    body=_BULK,
                )
                for version, name in (("v1.0-alpha1", "BulkPublishEventAlpha1"), ("v1.0", "BulkPublishEvent"))
            ),
        ]

    async def publish(self, request: web.Request) -> web.Response:
        message_id = await self.pubsub.publish(
            request.match_info["pubsubname"],
            request.match_info["topic"],
            await request.read(),
            request.headers.get("Content-Type", "") or "application/json",
            query_metadata(request),
        )
        return web.Response(status=204, headers={MESSAGE_ID: message_id})

    async def bulk(self, request: web.Request) -> web.Response:
        entries = _BULK.parse(await request.read())
        result = await self.pubsub.bulk_publish(
            request.match_info["pubsubname"],
            request.match_info["topic"],
            [BulkEntry(e.entry_id, e.payload(), e.content_type or "application/json", e.metadata) for e in entries],
            query_metadata(request),
        )
        headers = CIMultiDict(result.message_id_metadata())
        if not result.failed:
            return web.Response(status=204, headers=headers)
        body: dict[str, Any] = {
            "failedEntries": [{"entryId": entry, "error": error} for entry, error in result.failed.items()],
            "errorCode": "ERR_PUBSUB_PUBLISH_MESSAGE",
        }
        return web.json_response(body, status=500, headers=headers)
