"""What the state calls mean, for every wire API.

Every request is checked here, whole, before anything is written: keys, TTLs (Dapr's
int32 `ttlInSeconds`, -1 meaning "never expire"), and, for JSON values, that every
number is finite. A bulk save writes item by item, as Dapr's does, but only once every
item has passed; a transaction is handed to the store, which applies all or nothing.
A bulk read stops, with an error naming `max_bulk_response_bytes`, as soon as its
answer would exceed that limit, and reads each distinct key once.
"""

import asyncio
import contextlib
import json
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from ottava_sidecar import limits
from ottava_sidecar.api import errors
from ottava_sidecar.components.errors import ComponentError, ETagInvalidError, ETagMismatchError, NotSupportedError
from ottava_sidecar.components.registry import LookupFailure, Registry
from ottava_sidecar.components.state import query as state_query
from ottava_sidecar.components.state.base import (
    Concurrency,
    DeleteRequest,
    InvalidOperationError,
    Operation,
    SetRequest,
    StateItem,
    StateStore,
)
from ottava_sidecar.metrics import ComponentCalls

TTL_METADATA = "ttlInSeconds"
# As Go's strconv.ParseInt reads it (Dapr's parser): an optional sign, then ASCII digits.
_CALLS = ComponentCalls("state")  # latency of each store's operations
_WHOLE_NUMBER = re.compile(r"[+-]?[0-9]{1,20}")
# Items written, or keys read, between two returns to the event loop, so one large
# request never holds up every other call of the sidecar for long.
CHUNK = 500
# A bulk read starts with a few keys and then reads as many at a time as the room left
# under the limit holds, judged by the items read so far: it never holds much more
# than the limit in memory, whatever the size of the values.
_FIRST_READ = 1
# Bytes counted per item on top of its key, value, ETag and metadata: the framing of
# the answer (JSON punctuation, protobuf tags).
_ITEM_OVERHEAD = 32

Item = TypeVar("Item")  # a transaction operation's item, in the wire's own type
W = TypeVar("W", SetRequest, DeleteRequest)  # a write of one item


@dataclass(slots=True)
class BulkItem:
    key: str
    item: StateItem | None
    error: str = ""


# An item read, kept as a tuple of plain values (value, etag, content type, metadata
# pairs) until a wire writes it: the garbage collector stops tracking such tuples (not
# objects, nor tuples holding a dict), so a read of many keys does not lengthen every
# collection of the process, which would stall the event loop for all other calls.
_Found = tuple[bytes, str | None, str, tuple[tuple[str, str], ...]]


@dataclass(slots=True)
class BulkAnswer:
    """A bulk read's items in the order asked, each made only as a wire writes it."""

    keys: Sequence[str]
    found: Mapping[str, _Found | None]
    error: str = ""  # a backend failure, reported on every item as Dapr does

    def __len__(self) -> int:
        return len(self.keys)

    def __iter__(self) -> Iterator[BulkItem]:
        for key in self.keys:
            found = self.found.get(key)
            item = None if found is None else StateItem(key, found[0], found[1], found[2], dict(found[3]))
            yield BulkItem(key, item, self.error)


def parse_ttl(metadata: Mapping[str, str], key: str = "") -> int | None:
    """The `ttlInSeconds` of an item's metadata, as sent; `StateApi` checks its range."""
    raw = metadata.get(TTL_METADATA)
    if raw is None or raw == "":
        return None
    if not _WHOLE_NUMBER.fullmatch(raw):
        where = f" of key {key!r}" if key else ""
        raise errors.invalid_argument(f"metadata {TTL_METADATA}={raw!r}{where} is not a whole number of seconds")
    return int(raw)


def json_value(store_name: str, key: str, value: Any) -> bytes:
    """A JSON value as stored (its compact text); NaN and Infinity, which JSON has no words for, are refused."""
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    except ValueError:
        raise errors.invalid_argument(
            f"value of key {key!r} in state store {store_name} holds NaN or Infinity, which is not JSON"
            " (numbers must be finite)"
        ) from None


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
    def __init__(self, registry: Registry, *, max_bulk_response_bytes: int | None = None) -> None:
        self._registry = registry
        self.max_bulk_response_bytes = (
            limits.Limits().max_bulk_response_bytes if max_bulk_response_bytes is None else max_bulk_response_bytes
        )

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
        started = time.perf_counter()
        try:
            item = await store.get(stored_key)
        except ComponentError as err:
            _CALLS.observe(store.name, "get", started, False)
            raise errors.internal(f"fail to get {key} from state store {store.name}: {err}", "ERR_STATE_GET") from None
        _CALLS.observe(store.name, "get", started)
        if item is not None:
            item.key = key
        return item

    @staticmethod
    def _check_ttl(store: StateStore[Any], key: str, request: SetRequest) -> None:
        ttl = request.ttl_seconds
        if ttl is None:
            return
        if not -1 <= ttl <= limits.MAX_TTL_SECONDS:
            raise errors.invalid_argument(
                f"metadata {TTL_METADATA}={ttl} of key {key!r} in state store {store.name} is out of range:"
                f" -1 (never expire), 0 (expire at once) up to {limits.MAX_TTL_SECONDS} seconds"
            )
        if ttl == -1:
            request.ttl_seconds = None

    def _check(self, store: StateStore[Any], operations: Sequence[Operation]) -> list[str]:
        """Checks every operation and gives it its stored key; the app's keys, for messages."""
        app_keys = []
        for op in operations:
            app_key, op.key = op.key, self._key(store, op.key)
            if isinstance(op, SetRequest):
                self._check_ttl(store, app_key, op)
            app_keys.append(app_key)
        return app_keys

    async def bulk_get(self, store_name: str, keys: Sequence[str]) -> BulkAnswer:
        store = self.store(store_name)
        stored, repeated = await self._distinct(store, keys)
        try:
            found = await self._read(store, stored, repeated, len(keys))
        except ComponentError as err:
            return BulkAnswer(keys, {}, str(err))
        return BulkAnswer(keys, found)

    async def _distinct(self, store: StateStore[Any], keys: Sequence[str]) -> tuple[dict[str, str], dict[str, int]]:
        """Each distinct key once, in order, with its stored key; how often the repeated ones are named."""
        stored: dict[str, str] = {}
        repeated: dict[str, int] = {}
        for start in range(0, len(keys), CHUNK):
            if start:
                await asyncio.sleep(0)
            for key in keys[start : start + CHUNK]:
                if key in stored:
                    repeated[key] = repeated.get(key, 1) + 1
                else:
                    stored[key] = self._key(store, key)
        return stored, repeated

    async def _read(
        self, store: StateStore[Any], stored: dict[str, str], repeated: dict[str, int], asked: int
    ) -> dict[str, _Found | None]:
        """Reads each distinct key once, in batches that fit the room left under the limit;
        a key counts in the answer as often as it is named. Stops as soon as over."""
        distinct = list(stored)
        found: dict[str, _Found | None] = {}
        answer_bytes = 0
        while len(found) < len(distinct):
            if found:
                await asyncio.sleep(0)
            room = self.max_bulk_response_bytes - answer_bytes
            batch = distinct[len(found) : len(found) + _batch_size(len(found), answer_bytes, room)]
            started = time.perf_counter()
            ok = False
            try:
                items = await store.bulk_get([stored[key] for key in batch])
                ok = True
            finally:
                _CALLS.observe(store.name, "bulk_get", started, ok)
            for key, item in zip(batch, items, strict=True):
                found[key] = (
                    None if item is None else (item.value, item.etag, item.content_type, tuple(item.metadata.items()))
                )
                answer_bytes += repeated.get(key, 1) * _answer_bytes(key, item)
            if answer_bytes > self.max_bulk_response_bytes:
                raise errors.too_large(
                    f"GetBulkState of {asked} key(s) from state store {store.name} would answer more than"
                    f" {self.max_bulk_response_bytes} bytes (limit max_bulk_response_bytes); ask for fewer keys"
                    " at a time",
                    "ERR_BULK_RESPONSE_TOO_LARGE",
                )
        return found

    async def save(self, store_name: str, requests: Sequence[SetRequest]) -> None:
        """All or nothing: several items are written as one transaction where the store has them.

        Dapr's bulk save goes item by item, so a conflict on the second item leaves the
        first written behind an error; here the client's error means nothing was written.
        """
        store = self.store(store_name)
        await self._write(store, "saving", requests, store.set, "set")

    async def delete(self, store_name: str, requests: Sequence[DeleteRequest]) -> None:
        """All or nothing, as `save`."""
        store = self.store(store_name)
        await self._write(store, "deleting", requests, store.delete, "delete")

    async def _write(
        self,
        store: StateStore[Any],
        verb: str,
        requests: Sequence[W],
        write: Callable[[W], Awaitable[object]],
        operation: str,
    ) -> None:
        """Check every request, then apply them at once, or one by one where the store has no transactions."""
        app_keys = self._check(store, requests)
        if len(requests) > 1 and await self._at_once(store, verb, requests):
            return
        for index, (app_key, request) in enumerate(zip(app_keys, requests, strict=True)):
            if index and index % CHUNK == 0:
                await asyncio.sleep(0)
            started = time.perf_counter()
            try:
                await write(request)
            except ComponentError as err:
                _CALLS.observe(store.name, operation, started, False)
                raise _write_error(store, verb, f"key {app_key}", err) from None
            _CALLS.observe(store.name, operation, started)

    async def _at_once(self, store: StateStore[Any], verb: str, operations: Sequence[Operation]) -> bool:
        """Apply checked operations in one transaction; False when the store has no transactions."""
        started = time.perf_counter()
        try:
            await store.transact(list(operations))
        except NotSupportedError:
            return False
        except ComponentError as err:
            _CALLS.observe(store.name, "transaction", started, False)
            raise _write_error(store, verb, f"one of {len(operations)} items", err) from None
        _CALLS.observe(store.name, "transaction", started)
        return True

    async def transact(self, store_name: str, operations: Sequence[Operation]) -> None:
        store = self.store(store_name)
        self._check(store, operations)
        started = time.perf_counter()
        try:
            await store.transact(operations)
        except NotSupportedError as err:
            raise errors.failed_precondition(str(err), "ERR_STATE_STORE_NOT_SUPPORTED") from None
        except ComponentError as err:
            _CALLS.observe(store.name, "transaction", started, False)
            raise _write_error(store, "executing a transaction in", "", err) from None
        _CALLS.observe(store.name, "transaction", started)

    async def query(self, store_name: str, query_text: str | bytes) -> state_query.QueryPage:
        """Dapr's QueryStateAlpha1 over the app's own keys (those its key prefix gives it).

        The answer is held to `max_bulk_response_bytes`, as a bulk read is: a query that
        would answer more fails with an error saying to page it with `page.limit`.
        """
        store = self.store(store_name)
        try:
            query = state_query.parse(query_text)
        except state_query.QueryError as err:
            raise errors.invalid_argument(f"malformed query for state store {store.name}: {err}") from None
        selection = state_query.Selection(query)
        whole = query.limit == 0 and query.offset == 0  # every match is in the answer
        started = time.perf_counter()
        ok = False
        try:
            # The app's keys, or every key without a prefix.
            async with contextlib.aclosing(store.scan(store.keys.qualify(""))) as batches:
                async for batch in batches:
                    selection.add(batch)
                    if selection.enough:
                        break
                    if whole and selection.matched_bytes > self.max_bulk_response_bytes:
                        raise self._query_too_large(store)
                    await asyncio.sleep(0)
            ok = True
        except NotSupportedError:
            ok = True
            raise errors.failed_precondition(
                f"state store {store.name} does not support querying (state.in-memory, state.sqlite and"
                " state.postgresql do)",
                "ERR_STATE_STORE_NOT_SUPPORTED",
            ) from None
        except ComponentError as err:
            raise errors.internal(f"state store {store.name} query failed: {err}", "ERR_STATE_QUERY") from None
        finally:
            _CALLS.observe(store.name, "query", started, ok)
        page = selection.page()
        answer_bytes = 0
        for item in page.items:
            item.key = store.keys.unqualify(item.key)
            answer_bytes += _answer_bytes(item.key, item)
            if answer_bytes > self.max_bulk_response_bytes:
                raise self._query_too_large(store)
        return page

    def _query_too_large(self, store: StateStore[Any]) -> errors.ApiError:
        return errors.too_large(
            f"the query of state store {store.name} would answer more than {self.max_bulk_response_bytes}"
            " bytes (limit max_bulk_response_bytes); ask for a page at a time with page.limit",
            "ERR_BULK_RESPONSE_TOO_LARGE",
        )


def _batch_size(read: int, answer_bytes: int, room: int) -> int:
    """Keys to read next: as many as the room left holds, at the average size read so far."""
    if read == 0:
        return _FIRST_READ
    average = max(1, answer_bytes // read)
    return max(1, min(CHUNK, room // average))


def _answer_bytes(key: str, item: StateItem | None) -> int:
    size = len(key) + _ITEM_OVERHEAD
    if item is not None:
        size += len(item.value) + len(item.etag or "") + sum(len(k) + len(v) for k, v in item.metadata.items())
    return size


def _write_error(store: StateStore[Any], verb: str, what: str, err: ComponentError) -> errors.ApiError:
    """Dapr's mapping: ETag mismatch → ABORTED (HTTP 409), invalid ETag → INVALID_ARGUMENT."""
    where = f"{what} in state store {store.name}" if what else f"state store {store.name}"
    message = f"failed {verb} {where}: {err}"
    code = {"saving": "ERR_STATE_SAVE", "deleting": "ERR_STATE_DELETE"}.get(verb, "ERR_STATE_TRANSACTION")
    if isinstance(err, ETagMismatchError):
        message = f"failed {verb} {where}: possible etag mismatch. error from state store: {err}"
        return errors.aborted(message, code)
    if isinstance(err, ETagInvalidError | InvalidOperationError):
        return errors.invalid_argument(message, code)
    return errors.internal(message, code)
