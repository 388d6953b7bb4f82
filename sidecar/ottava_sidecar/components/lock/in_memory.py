"""`lock.in-memory`: process-local locks with owners and expiry."""

import time

from ottava_sidecar.components.lock.base import LockMetadata, LockStore, UnlockStatus
from ottava_sidecar.components.registration import register


class InMemoryLockMetadata(LockMetadata):
    pass


@register("lock.in-memory", InMemoryLockMetadata)
class InMemoryLockStore(LockStore[InMemoryLockMetadata]):
    """Process-local locks: one owner at a time, released by the owner or by expiry."""

    def __init__(self, name: str, settings: InMemoryLockMetadata, *, app_id: str) -> None:
        super().__init__(name, settings, app_id=app_id)
        self._held: dict[str, tuple[str, float]] = {}  # resource → (owner, monotonic deadline)

    async def try_lock(self, resource_id: str, owner: str, expiry_seconds: int) -> bool:
        now = time.monotonic()
        held = self._held.get(resource_id)
        if held is not None and held[1] > now:
            return False
        self._held[resource_id] = (owner, now + expiry_seconds)
        return True

    async def unlock(self, resource_id: str, owner: str) -> UnlockStatus:
        status = self._check(resource_id, owner)
        if status is UnlockStatus.SUCCESS:
            del self._held[resource_id]
        return status

    async def keep_alive(self, resource_id: str, owner: str, expiry_seconds: int) -> UnlockStatus:
        status = self._check(resource_id, owner)
        if status is UnlockStatus.SUCCESS:
            self._held[resource_id] = (owner, time.monotonic() + expiry_seconds)
        return status

    def _check(self, resource_id: str, owner: str) -> UnlockStatus:
        """Whether `owner` holds the lock now (SUCCESS); forgets it if it expired."""
        held = self._held.get(resource_id)
        if held is None or held[1] <= time.monotonic():
            self._held.pop(resource_id, None)
            return UnlockStatus.LOCK_DOES_NOT_EXIST
        return UnlockStatus.SUCCESS if held[0] == owner else UnlockStatus.LOCK_BELONGS_TO_OTHERS
