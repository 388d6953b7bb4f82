"""`bindings.redis`: Dapr's Redis output binding; the request's `key` is the Redis key.

create: `SET key data` (with `ttlInSeconds` in the request metadata, `SET … EX`); get:
the value, empty when the key does not exist; delete: `DEL key`. Keys are used as
sent, without the app-id prefix of state stores, as Dapr's binding does.
"""

from ottava_sidecar.components.backends.redis import RedisConnection, RedisMetadata
from ottava_sidecar.components.bindings.base import (
    BindingMetadata,
    BindingRequest,
    BindingRequestError,
    BindingResponse,
    OutputBinding,
)
from ottava_sidecar.components.registration import register

KEY = "key"
TTL = "ttlInSeconds"


class RedisBindingMetadata(RedisMetadata, BindingMetadata):
    pass


@register("bindings.redis", RedisBindingMetadata)
class RedisBinding(OutputBinding[RedisBindingMetadata]):
    """Redis keys: create (SET, with ttlInSeconds), get and delete the request's `key`."""

    operations = ("create", "get", "delete")

    def __init__(self, name: str, settings: RedisBindingMetadata, *, app_id: str) -> None:
        super().__init__(name, settings, app_id=app_id)
        self.redis = RedisConnection(settings, f"binding {name}")

    async def init(self) -> None:
        await self.redis.open()

    async def close(self) -> None:
        await self.redis.close()

    async def invoke(self, request: BindingRequest) -> BindingResponse:
        key = request.metadata.get(KEY, "")
        if not key:
            raise BindingRequestError(f"binding {self.name}: operation {request.operation} needs metadata {KEY}")
        client = self.redis.client
        with self.redis.errors(f"{request.operation} of key {key!r}"):
            if request.operation == "create":
                await client.set(key, request.data, ex=_ttl(request, self.name))
                return BindingResponse()
            if request.operation == "get":
                value = await client.get(key)
                if value is None:
                    return BindingResponse()
                return BindingResponse(value if isinstance(value, bytes) else str(value).encode())
            await client.delete(key)
            return BindingResponse()


def _ttl(request: BindingRequest, name: str) -> int | None:
    text = request.metadata.get(TTL, "")
    if not text:
        return None
    try:
        seconds = int(text)
    except ValueError:
        raise BindingRequestError(f"binding {name}: metadata {TTL}={text!r} is not a whole number of seconds") from None
    if seconds <= 0:
        raise BindingRequestError(f"binding {name}: metadata {TTL}={text!r} must be above 0")
    return seconds
