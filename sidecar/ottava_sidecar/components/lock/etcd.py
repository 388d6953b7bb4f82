"""`lock.etcd`: a lock is a key attached to a lease that lives `expiry` seconds.

Taking the lock is one transaction: "if the key was never created, put it with the
lease". etcd deletes the key when the lease runs out, which is the lock's expiry
(etcd rounds leases shorter than its minimum, usually 2 s, up to that minimum).

Keeping a lock alive grants a new lease of the new expiry and moves the key onto it in a
transaction that checks the owner, then revokes the old lease. etcd's own keep-alive
would only restart the old lease's TTL, not set the new expiry the caller asks for.
"""

import contextlib
from typing import Any

from pydantic import Field

from ottava_sidecar.components.backends.etcd import EtcdConnection, EtcdMetadata
from ottava_sidecar.components.errors import ComponentError
from ottava_sidecar.components.lock.base import LockMetadata, LockStore, UnlockStatus
from ottava_sidecar.components.registration import register


class EtcdLockMetadata(LockMetadata, EtcdMetadata):
    etcd_prefix: str = Field(default="/ottava/lock/", alias="etcdPrefix", description="Prefix of the locks' keys.")


@register("lock.etcd", EtcdLockMetadata)
class EtcdLockStore(LockStore[EtcdLockMetadata]):
    """Locks in etcd: a create-if-absent transaction on a key held by a lease."""

    def __init__(self, name: str, settings: EtcdLockMetadata, *, app_id: str) -> None:
        super().__init__(name, settings, app_id=app_id)
        self.etcd = EtcdConnection(settings, f"lock store {name}")

    async def init(self) -> None:
        await self.etcd.open()

    async def close(self) -> None:
        await self.etcd.close()

    async def try_lock(self, resource_id: str, owner: str, expiry_seconds: int) -> bool:
        from aetcd import rpc

        etcd, key, timeout = self.etcd, self._key(resource_id), self.settings.timeout
        lease = await self._grant(resource_id, expiry_seconds)
        absent = rpc.Compare(key=key, target=rpc.Compare.CREATE, result=rpc.Compare.EQUAL, create_revision=0)
        put = rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=owner.encode(), lease=lease))
        try:
            reply = await etcd.call(
                f"locking {resource_id!r}",
                lambda: etcd.kv.Txn(
                    rpc.TxnRequest(compare=[absent], success=[put]), timeout=timeout, metadata=etcd.metadata
                ),
            )
        except ComponentError:
            # The caller is told it failed, so no lock may be left behind (if the put did
            # land), nor a lease of up to 68 years without a key.
            await self._revoke(lease)
            raise
        if not reply.succeeded:
            await self._revoke(lease)
        return bool(reply.succeeded)

    async def unlock(self, resource_id: str, owner: str) -> UnlockStatus:
        from aetcd import rpc

        delete = rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=self._key(resource_id)))
        reply = await self._if_owned(f"unlocking {resource_id!r}", resource_id, owner, delete)
        held = reply.responses[0].response_range.kvs
        if reply.succeeded:
            await self._revoke(held[0].lease)
            return UnlockStatus.SUCCESS
        return UnlockStatus.LOCK_BELONGS_TO_OTHERS if held else UnlockStatus.LOCK_DOES_NOT_EXIST

    async def keep_alive(self, resource_id: str, owner: str, expiry_seconds: int) -> UnlockStatus:
        from aetcd import rpc

        lease = await self._grant(resource_id, expiry_seconds)
        move = rpc.RequestOp(request_put=rpc.PutRequest(key=self._key(resource_id), value=owner.encode(), lease=lease))
        # A failed call leaves the new lease to run out by itself: the key may be on it already,
        # and revoking it would then release a lock its owner meant to keep.
        reply = await self._if_owned(f"keeping {resource_id!r} locked", resource_id, owner, move)
        held = reply.responses[0].response_range.kvs
        if reply.succeeded:
            await self._revoke(held[0].lease)
            return UnlockStatus.SUCCESS
        await self._revoke(lease)
        return UnlockStatus.LOCK_BELONGS_TO_OTHERS if held else UnlockStatus.LOCK_DOES_NOT_EXIST

    async def _if_owned(self, doing: str, resource_id: str, owner: str, then: Any) -> Any:
        """One transaction: `then` if `owner` holds the lock; the lock's key is read either way
        (the reply's first response), so a refusal can tell "not held" from "held by another"."""
        from aetcd import rpc

        etcd, key, timeout = self.etcd, self._key(resource_id), self.settings.timeout
        mine = rpc.Compare(key=key, target=rpc.Compare.VALUE, result=rpc.Compare.EQUAL, value=owner.encode())
        read = rpc.RequestOp(request_range=rpc.RangeRequest(key=key))
        return await etcd.call(
            doing,
            lambda: etcd.kv.Txn(
                rpc.TxnRequest(compare=[mine], success=[read, then], failure=[read]),
                timeout=timeout,
                metadata=etcd.metadata,
            ),
        )

    async def _grant(self, resource_id: str, expiry_seconds: int) -> int:
        from aetcd import rpc

        etcd = self.etcd
        lease = await etcd.call(
            f"granting a lease for {resource_id!r}",
            lambda: etcd.lease.LeaseGrant(
                rpc.LeaseGrantRequest(TTL=max(1, expiry_seconds)), timeout=self.settings.timeout, metadata=etcd.metadata
            ),
        )
        return int(lease.ID)

    def _key(self, resource_id: str) -> bytes:
        return (self.settings.etcd_prefix + resource_id).encode()

    async def _revoke(self, lease_id: int) -> None:
        from aetcd import rpc

        if not lease_id:
            return
        etcd = self.etcd
        # Best effort: a lease that ran out meanwhile is gone already, which is what we want.
        with contextlib.suppress(ComponentError):
            await etcd.call(
                "revoking a lease",
                lambda: etcd.lease.LeaseRevoke(
                    rpc.LeaseRevokeRequest(ID=lease_id), timeout=self.settings.timeout, metadata=etcd.metadata
                ),
            )
