"""`lock.zookeeper`: a lock is a znode holding its owner and its deadline.

Taking a lock creates the znode (ZooKeeper lets one creator win); a znode past its
deadline is deleted with a version check and taken again. Unlock deletes it with a
version check, only for its owner, and keep-alive rewrites the deadline the same way.
Deadlines are wall-clock times of the sidecars, so
their clocks must be in sync (as NTP keeps them) to within the precision the locks need.
"""

import time
from urllib.parse import quote

from pydantic import Field

from ottava_sidecar.components.backends.zookeeper import ZookeeperConnection, ZookeeperMetadata
from ottava_sidecar.components.lock.base import LockMetadata, LockStore, UnlockStatus
from ottava_sidecar.components.registration import register


class ZookeeperLockMetadata(LockMetadata, ZookeeperMetadata):
    base_path: str = Field(default="/ottava", alias="basePath", description="Parent znode of everything stored.")


@register("lock.zookeeper", ZookeeperLockMetadata)
class ZookeeperLockStore(LockStore[ZookeeperLockMetadata]):
    """Locks as ZooKeeper znodes with an owner and a deadline, changed only with version checks."""

    def __init__(self, name: str, settings: ZookeeperLockMetadata, *, app_id: str) -> None:
        super().__init__(name, settings, app_id=app_id)
        self.zk = ZookeeperConnection(settings, f"lock store {name}")
        self.folder = settings.base_path.rstrip("/") + "/lock"

    async def init(self) -> None:
        client = await self.zk.open()
        with self.zk.errors("creating the lock folder"):
            await client.ensure_path(self.folder)

    async def close(self) -> None:
        await self.zk.close()

    def _path(self, resource_id: str) -> str:
        return f"{self.folder}/{quote(resource_id, safe='')}"

    async def try_lock(self, resource_id: str, owner: str, expiry_seconds: int) -> bool:
        from aiozk import exc

        path, client = self._path(resource_id), self.zk.client
        data = f"{time.time() + expiry_seconds:.3f}|{owner}".encode()
        with self.zk.errors(f"locking {resource_id!r}"):
            for _ in range(2):
                try:
                    await client.create(path, data)
                    return True
                except exc.NodeExists:
                    pass
                held = await self._read(path)
                if held is not None and held[0] > time.time():
                    return False
                if held is not None and not await self._delete(path, held[2]):
                    return False  # someone else changed it meanwhile
        return False

    async def unlock(self, resource_id: str, owner: str) -> UnlockStatus:
        path = self._path(resource_id)
        with self.zk.errors(f"unlocking {resource_id!r}"):
            held = await self._read(path)
            if held is None:
                return UnlockStatus.LOCK_DOES_NOT_EXIST
            deadline, holder, version = held
            if deadline <= time.time():
                await self._delete(path, version)
                return UnlockStatus.LOCK_DOES_NOT_EXIST
            if holder != owner:
                return UnlockStatus.LOCK_BELONGS_TO_OTHERS
            if await self._delete(path, version):
                return UnlockStatus.SUCCESS
            return UnlockStatus.LOCK_BELONGS_TO_OTHERS

    async def keep_alive(self, resource_id: str, owner: str, expiry_seconds: int) -> UnlockStatus:
        from aiozk import exc, protocol

        path, client = self._path(resource_id), self.zk.client
        with self.zk.errors(f"keeping {resource_id!r} locked"):
            while True:  # until the write finds the version it read: the owner checked is still the owner
                held = await self._read(path)
                if held is None or held[0] <= time.time():
                    return UnlockStatus.LOCK_DOES_NOT_EXIST
                _, holder, version = held
                if holder != owner:
                    return UnlockStatus.LOCK_BELONGS_TO_OTHERS
                data = f"{time.time() + expiry_seconds:.3f}|{owner}".encode()
                request = protocol.SetDataRequest(path=client.normalize_path(path), data=data, version=version)
                try:
                    await client.send(request)
                except exc.NoNode:
                    return UnlockStatus.LOCK_DOES_NOT_EXIST
                except exc.BadVersion:
                    continue  # another keep-alive, or an expiry and a new owner, came first: look again
                return UnlockStatus.SUCCESS

    async def _read(self, path: str) -> tuple[float, str, int] | None:
        from aiozk import exc

        try:
            data, stat = await self.zk.client.get(path)
        except exc.NoNode:
            return None
        deadline, _, holder = bytes(data).decode().partition("|")
        return float(deadline), holder, int(stat.version)

    async def _delete(self, path: str, version: int) -> bool:
        from aiozk import exc, protocol

        client = self.zk.client
        try:
            await client.send(protocol.DeleteRequest(path=client.normalize_path(path), version=version))
        except (exc.NoNode, exc.BadVersion):
            return False
        return True
