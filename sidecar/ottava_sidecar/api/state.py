"""What the state calls mean, for every wire API."""

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from ottava_sidecar.api import errors
from ottava_sidecar.components.errors import ComponentError, ETagInvalidError, ETagMismatchError, NotSupportedError
from ottava_sidecar.components.registry import LookupFailure, Registry
from ottava_sidecar.components.state.base import (
    Concurrency,
    DeleteRequest,
    Operation,
    SetRequest,
    StateItem,
    StateStore,
)

TTL_METADATA = "ttlInSeconds"

Item = TypeVar("Item")  # a transaction operation's item, in the wire's own type


@dataclass(slots=True)
class BulkItem:
    key: str
    item: StateItem | None
    error: str = ""


def parse_ttl(metadata: Mapping[str, str]) -> int | None:
    raw = metadata.get(TTL_METADATA)
    if raw is None or raw == "":
        return None
    try:
        ttl = int(raw)
    except ValueError:
        raise errors.invalid_argument(f"metadata {TTL_METADATA}={raw!r} is not a whole number of seconds") from None
    if ttl < -1:
        raise errors.invalid_argument(f"metadata {TTL_METADATA}={ttl} must be -1 (never expire) or more")
    return None if ttl == -1 else ttl


def parse_concurrency(text: str) -> Concurrency:
    """From Dapr's HTTP option ("first-write"/"last-write"; empty means last-write)."""
    if text in ("", Concurrency.LAST_WRITE.value):
        return Concurrency.LAST_WRITE
    if text == Concurrency.FIRST_WRITE.value:
        return Concurrency.FIRST_WRITE
    raise errors.invalid_argument(f"concurrency {text!r} is not 'first-write' or 'last-write'")


def operations(
    items: Iterable[tuple[str, Item]],
    upsert: Callable[[Item], SetRequest],
    delete: Callable[[Item], DeleteRequest],
) -> list[Operation]:
    """A transaction's `(operation type, item)` pairs, each item read by the wire's `upsert` or `delete`.

    Every wire names the types as Dapr does, and answers any other with Dapr's error code.
    """
    result: list[Operation] = []
    for operation, item in items:
        if operation == "upsert":
            result.append(upsert(item))
        elif operation == "delete":
            result.append(delete(item))
        else:
            raise errors.invalid_argument(
                f"operation type {operation!r} is not 'upsert' or 'delete'", "ERR_NOT_SUPPORTED_STATE_OPERATION"
            )
    return result


class StateApi:
    def __init__(self, registry: Registry) -> None:
        self._registry = registry

    def store(self, name: str) -> StateStore[Any]:
        if not name:
            raise errors.invalid_argument("state store name is empty", "ERR_STATE_STORE_NOT_FOUND")
        try:
            return self._registry.lookup("state", name, StateStore)
        except LookupFailure as failure:
            raise errors.from_lookup(failure) from None

    @staticmethod
    def _key(store: StateStore[Any], key: str) -> str:
        if not key:
            raise errors.invalid_argument(f"key is empty (state store {store.name})")
        try:
            return store.keys.qualify(key)
        except ValueError as err:
            raise errors.invalid_argument(f"{err} (state store {store.name})") from None

    async def get(self, store_name: str, key: str) -> StateItem | None:
        store = self.store(store_name)
        stored_key = self._key(store, key)
        try:
            item = await store.get(stored_key)
        except ComponentError as err:
            raise errors.internal(f"fail to get {key} from state store {store.name}: {err}", "ERR_STATE_GET") from None
        if item is not None:
            item.key = key
        return item

    async def bulk_get(self, store_name: str, keys: Sequence[str]) -> list[BulkItem]:
        store = self.store(store_name)
        stored = [self._key(store, key) for key in keys]
        try:
            items = await store.bulk_get(stored)
        except ComponentError as err:
            return [BulkItem(key, None, str(err)) for key in keys]
        for key, item in zip(keys, items, strict=True):
            if item is not None:
                item.key = key
        return [BulkItem(key, item) for key, item in zip(keys, items, strict=True)]

    async def save(self, store_name: str, requests: Sequence[SetRequest]) -> None:
        store = self.store(store_name)
        for request in requests:
            app_key, request.key = request.key, self._key(store, request.key)
            try:
                await store.set(request)
            except ComponentError as err:
                raise _write_error(store, "saving", app_key, err) from None

    async def delete(self, store_name: str, requests: Sequence[DeleteRequest]) -> None:
        store = self.store(store_name)
        for request in requests:
            app_key, request.key = request.key, self._key(store, request.key)
            try:
                await store.delete(request)
            except ComponentError as err:
                raise _write_error(store, "deleting", app_key, err) from None

    async def transact(self, store_name: str, operations: Sequence[Operation]) -> None:
        store = self.store(store_name)
        for op in operations:
            op.key = self._key(store, op.key)
        try:
            await store.transact(operations)
        except NotSupportedError as err:
            raise errors.failed_precondition(str(err), "ERR_STATE_STORE_NOT_SUPPORTED") from None
        except ComponentError as err:
            raise _write_error(store, "executing a transaction in", "", err) from None


def _write_error(store: StateStore[Any], verb: str, key: str, err: ComponentError) -> errors.ApiError:
    """Dapr's mapping: ETag mismatch → ABORTED (HTTP 409), invalid ETag → INVALID_ARGUMENT."""
    where = f"key {key} in state store {store.name}" if key else f"state store {store.name}"
    message = f"failed {verb} {where}: {err}"
    code = {"saving": "ERR_STATE_SAVE", "deleting": "ERR_STATE_DELETE"}.get(verb, "ERR_STATE_TRANSACTION")
    if isinstance(err, ETagMismatchError):
        message = f"failed {verb} {where}: possible etag mismatch. error from state store: {err}"
        return errors.aborted(message, code)
    if isinstance(err, ETagInvalidError):
        return errors.invalid_argument(message, code)
    return errors.internal(message, code)
