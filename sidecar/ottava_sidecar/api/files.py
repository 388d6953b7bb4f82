"""What Layotto's file calls mean: GetFile, PutFile, ListFile, DelFile, GetFileMeta.

Names are checked here, the same way for every store (`components.file.base.check_name`),
before a store sees them; a store adds its own checks (`file.local` resolves symlinks).
Files pass through as streams of chunks, never whole.
"""

import time
from collections.abc import AsyncIterator, Awaitable, Mapping
from typing import Any, TypeVar

from ottava_sidecar.api import errors
from ottava_sidecar.components.errors import AccessDeniedError, ComponentError
from ottava_sidecar.components.file.base import FileMeta, FileMissingError, FileNameError, FileStore, Page, check_name
from ottava_sidecar.components.registry import LookupFailure, Registry
from ottava_sidecar.metrics import ComponentCalls

_CALLS = ComponentCalls("file")  # latency of each component's operations
T = TypeVar("T")


class FilesApi:
    def __init__(self, registry: Registry) -> None:
        self._registry = registry

    def store(self, name: str) -> FileStore[Any]:
        if not name:
            raise errors.invalid_argument("file store name is empty", "ERR_FILE_STORE_NOT_FOUND")
        try:
            return self._registry.lookup("file", name, FileStore)
        except LookupFailure as failure:
            raise errors.from_lookup(failure) from None

    def _target(self, store_name: str, name: str, *, directory: bool = False) -> tuple[FileStore[Any], str]:
        store = self.store(store_name)
        try:
            return store, check_name(name, store.root, directory=directory)
        except FileNameError as err:
            raise _bad_name(err, store) from None

    async def get(self, store_name: str, name: str, metadata: Mapping[str, str]) -> AsyncIterator[bytes]:
        store, name = self._target(store_name, name)
        started = time.perf_counter()
        ok = False
        try:
            async for chunk in store.get(name, metadata):
                yield chunk
            ok = True
        except ComponentError as err:
            raise _failure(err, "get", name, store) from None
        finally:
            _CALLS.observe(store.name, "get", started, ok)

    async def put(self, store_name: str, name: str, metadata: Mapping[str, str], chunks: AsyncIterator[bytes]) -> None:
        store, name = self._target(store_name, name)
        started = time.perf_counter()
        ok = False
        try:
            await store.put(name, chunks, metadata)
            ok = True
        except ComponentError as err:
            raise _failure(err, "put", name, store) from None
        finally:
            _CALLS.observe(store.name, "put", started, ok)

    async def list(
        self, store_name: str, directory: str, page_size: int, marker: str, metadata: Mapping[str, str]
    ) -> Page:
        store, directory = self._target(store_name, directory, directory=True)
        if page_size < 0:
            raise errors.invalid_argument(f"page_size {page_size} is negative (file store {store.name})")
        return await self._run(store, "list", directory, store.list(directory, page_size, marker, metadata))

    async def delete(self, store_name: str, name: str, metadata: Mapping[str, str]) -> None:
        store, name = self._target(store_name, name)
        await self._run(store, "delete", name, store.delete(name, metadata))

    async def stat(self, store_name: str, name: str, metadata: Mapping[str, str]) -> FileMeta:
        store, name = self._target(store_name, name)
        return await self._run(store, "stat", name, store.stat(name, metadata))

    async def _run(self, store: FileStore[Any], operation: str, name: str, call: Awaitable[T]) -> T:
        started = time.perf_counter()
        ok = False
        try:
            result = await call
            ok = True
            return result
        except ComponentError as err:
            raise _failure(err, operation, name, store) from None
        finally:
            _CALLS.observe(store.name, operation, started, ok)


def _bad_name(err: FileNameError, store: FileStore[Any]) -> errors.ApiError:
    return errors.invalid_argument(f"{err} (file store {store.name})", "ERR_FILE_NAME_INVALID")


# Each operation's error code when the backend fails.
_CODES = {"get": "ERR_FILE_GET", "put": "ERR_FILE_PUT", "list": "ERR_FILE_LIST", "delete": "ERR_FILE_DELETE"}


def _failure(err: ComponentError, operation: str, name: str, store: FileStore[Any]) -> errors.ApiError:
    if isinstance(err, FileNameError):
        return _bad_name(err, store)
    if isinstance(err, FileMissingError):
        return errors.not_found(f"{err} (file store {store.name})", "ERR_FILE_NOT_FOUND")
    if isinstance(err, AccessDeniedError):
        return errors.permission_denied(f"{err} (file store {store.name})")
    return errors.internal(
        f"failed to {operation} {name or 'the root'} in file store {store.name}: {err}",
        _CODES.get(operation, "ERR_FILE_STAT"),
    )
