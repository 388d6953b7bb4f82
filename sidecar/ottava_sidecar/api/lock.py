"""What the lock calls mean, for every wire API (messages as Dapr words them)."""

import time
from typing import Any

from ottava_sidecar import limits
from ottava_sidecar.api import errors
from ottava_sidecar.components.errors import ComponentError
from ottava_sidecar.components.lock.base import LockStore, UnlockStatus
from ottava_sidecar.components.registry import LookupFailure, Registry
from ottava_sidecar.metrics import ComponentCalls

_CALLS = ComponentCalls("lock")  # latency of each component's operations


class LockApi:
    def __init__(self, registry: Registry) -> None:
        self._registry = registry

    def store(self, name: str) -> LockStore[Any]:
        if not name:
            raise errors.invalid_argument("lock store name is empty", "ERR_LOCK_STORE_NOT_FOUND")
        try:
            return self._registry.lookup("lock", name, LockStore)
        except LookupFailure as failure:
            raise errors.from_lookup(failure) from None

    def _resource(self, store: LockStore[Any], resource_id: str, owner: str) -> str:
        if not resource_id:
            raise errors.invalid_argument(f"ResourceId is empty in lock store {store.name}")
        if not owner:
            raise errors.invalid_argument(f"LockOwner is empty in lock store {store.name}")
        try:
            return store.keys.qualify(resource_id)
        except ValueError as err:
            raise errors.invalid_argument(f"{err} (lock store {store.name})") from None

    @staticmethod
    def _check_expiry(store: LockStore[Any], resource_id: str, expiry_seconds: int) -> None:
        # Checked before the store is asked: Dapr's field is int32, and a store must never
        # hold a lock it cannot let expire (in-memory would, Redis would fail on it).
        if expiry_seconds <= 0:
            raise errors.invalid_argument(f"ExpiryInSeconds is not positive in lock store {store.name}")
        if expiry_seconds > limits.MAX_LOCK_EXPIRY_SECONDS:
            raise errors.invalid_argument(
                f"ExpiryInSeconds={expiry_seconds} of resource {resource_id!r} in lock store {store.name} is out of"
                f" range: 1 to {limits.MAX_LOCK_EXPIRY_SECONDS} seconds"
            )

    async def try_lock(self, store_name: str, resource_id: str, owner: str, expiry_seconds: int) -> bool:
        store = self.store(store_name)
        resource = self._resource(store, resource_id, owner)
        self._check_expiry(store, resource_id, expiry_seconds)
        started = time.perf_counter()
        ok = False
        try:
            acquired = await store.try_lock(resource, owner, expiry_seconds)
            ok = True
            return acquired
        except ComponentError as err:
            raise errors.internal(
                f"failed to try acquiring lock in lock store {store.name}: {err}", "ERR_TRY_LOCK"
            ) from None
        finally:
            _CALLS.observe(store.name, "try_lock", started, ok)

    async def unlock(self, store_name: str, resource_id: str, owner: str) -> UnlockStatus:
        store = self.store(store_name)
        resource = self._resource(store, resource_id, owner)
        started = time.perf_counter()
        ok = False
        try:
            status = await store.unlock(resource, owner)
            ok = True
            return status
        except ComponentError:
            return UnlockStatus.INTERNAL_ERROR
        finally:
            _CALLS.observe(store.name, "unlock", started, ok)

    async def keep_alive(self, store_name: str, resource_id: str, owner: str, expiry_seconds: int) -> UnlockStatus:
        """Layotto's LockKeepAlive: the owner's lock now expires `expiry_seconds` from now."""
        store = self.store(store_name)
        resource = self._resource(store, resource_id, owner)
        self._check_expiry(store, resource_id, expiry_seconds)
        started = time.perf_counter()
        ok = False
        try:
            status = await store.keep_alive(resource, owner, expiry_seconds)
            ok = True
            return status
        except ComponentError:
            return UnlockStatus.INTERNAL_ERROR
        finally:
            _CALLS.observe(store.name, "keep_alive", started, ok)
