"""Interface of lock stores. Resource ids reaching a store are already prefixed."""

import enum
from typing import TypeVar

from ottava_sidecar.components.base import ComponentInstance
from ottava_sidecar.components.keys import KeyPrefixer, KeyPrefixMetadata, prefix_for


class UnlockStatus(enum.IntEnum):
    """Same values as Dapr's and Layotto's UnlockResponse.Status, and Layotto's LockKeepAliveResponse.Status."""

    SUCCESS = 0
    LOCK_DOES_NOT_EXIST = 1
    LOCK_BELONGS_TO_OTHERS = 2
    INTERNAL_ERROR = 3


class LockMetadata(KeyPrefixMetadata):
    pass


LockSettingsT = TypeVar("LockSettingsT", bound=LockMetadata)


class LockStore(ComponentInstance[LockSettingsT]):
    def __init__(self, name: str, settings: LockSettingsT, *, app_id: str) -> None:
        super().__init__(name, settings, app_id=app_id)
        self.keys = KeyPrefixer(prefix_for(settings.key_prefix, app_id=app_id, component_name=name))

    async def try_lock(self, resource_id: str, owner: str, expiry_seconds: int) -> bool:
        """Take the lock unless someone else holds it; never waits."""
        raise NotImplementedError

    async def unlock(self, resource_id: str, owner: str) -> UnlockStatus:
        raise NotImplementedError

    async def keep_alive(self, resource_id: str, owner: str, expiry_seconds: int) -> UnlockStatus:
        """Make the owner's lock expire `expiry_seconds` from now (sooner or later than it would have).

        Answers as unlock does: SUCCESS, LOCK_DOES_NOT_EXIST (never taken, released or
        expired: an expired lock stays expired) or LOCK_BELONGS_TO_OTHERS (left alone).
        """
        raise NotImplementedError
