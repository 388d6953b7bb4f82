"""Interface of state stores.

Keys reaching a store are already prefixed (see `components.keys`); a store only stores.
ETag rules (those of Dapr's stores): an ETag, when sent, must match the stored item's;
with first-write concurrency and no ETag, the write succeeds only if the key is new.
"""

import enum
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, TypeVar

from ottava_sidecar import limits
from ottava_sidecar.components.base import ComponentInstance
from ottava_sidecar.components.errors import ComponentError, NotSupportedError
from ottava_sidecar.components.keys import KeyPrefixer, KeyPrefixMetadata, prefix_for


class Concurrency(enum.Enum):
    FIRST_WRITE = "first-write"
    LAST_WRITE = "last-write"


class Feature(enum.StrEnum):
    ETAG = "ETAG"
    TRANSACTIONAL = "TRANSACTIONAL"
    TTL = "TTL"


@dataclass(slots=True)
class StateItem:
    key: str
    value: bytes
    etag: str | None = None
    content_type: str = ""
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class SetRequest:
    key: str
    value: bytes
    etag: str | None = None
    concurrency: Concurrency = Concurrency.LAST_WRITE
    ttl_seconds: int | None = None
    content_type: str = ""


@dataclass(slots=True)
class DeleteRequest:
    key: str
    etag: str | None = None
    concurrency: Concurrency = Concurrency.LAST_WRITE


Operation = SetRequest | DeleteRequest


class InvalidOperationError(ComponentError):
    """An operation no store can carry out (a TTL out of range); nothing was written."""


def check_operations(operations: Sequence[Operation]) -> None:
    """Refuse the whole write, before touching the backend, when any operation is out of range.

    The API layer checks the same with messages that name the app's key; this guard keeps
    each store's own promise (all or nothing, no item it cannot read back) for any caller.
    """
    for op in operations:
        ttl = op.ttl_seconds if isinstance(op, SetRequest) else None
        if ttl is not None and not -1 <= ttl <= limits.MAX_TTL_SECONDS:
            raise InvalidOperationError(
                f"ttl of {ttl} seconds for key {op.key!r} is out of range (-1 to {limits.MAX_TTL_SECONDS})"
            )


class StateMetadata(KeyPrefixMetadata):
    pass


StateSettingsT = TypeVar("StateSettingsT", bound=StateMetadata)


class StateStore(ComponentInstance[StateSettingsT]):
    features: ClassVar[tuple[str, ...]] = ()

    def __init__(self, name: str, settings: StateSettingsT, *, app_id: str) -> None:
        super().__init__(name, settings, app_id=app_id)
        self.keys = KeyPrefixer(prefix_for(settings.key_prefix, app_id=app_id, component_name=name))

    async def get(self, key: str) -> StateItem | None:
        raise NotImplementedError

    async def bulk_get(self, keys: Sequence[str]) -> list[StateItem | None]:
        """The items in the order of `keys`; the API calls it with a bounded number of keys."""
        return [await self.get(key) for key in keys]

    async def set(self, request: SetRequest) -> None:
        raise NotImplementedError

    async def delete(self, request: DeleteRequest) -> None:
        raise NotImplementedError

    async def transact(self, operations: Sequence[Operation]) -> None:
        """Apply all operations or none: a failure of any (ETag, range, backend) writes nothing."""
        raise NotSupportedError(f"state store {self.name} does not support transactions")

    def scan(self, prefix: str) -> AsyncGenerator[Sequence[StateItem], None]:
        """Every live item whose stored key starts with `prefix`, a batch at a time, for queries.

        A store that can list its items implements it; `components.state.query` then
        evaluates Dapr's query language on what it yields, the same for every store.
        """
        raise NotSupportedError(f"state store {self.name} does not support querying")
