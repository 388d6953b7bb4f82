"""The distributed lock contract, for every `lock.*` implementation."""

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from ottava_sidecar import limits
from ottava_sidecar.api.errors import ApiError
from ottava_sidecar.api.lock import LockApi
from ottava_sidecar.components.lock.base import LockStore, UnlockStatus

from tests.conformance.conftest import Components, unique

BUILDING_BLOCK = "lock"


async def _locks(components: Components, **kwargs: str) -> LockStore[Any]:
    store = await components.create(**kwargs)
    assert isinstance(store, LockStore)
    return store


async def test_one_owner_at_a_time(components: Components) -> None:
    locks = await _locks(components)
    resource = unique("res")
    assert await locks.try_lock(resource, "alice", 30)
    assert not await locks.try_lock(resource, "bob", 30)
    assert not await locks.try_lock(resource, "alice", 30), "locks are not re-entrant"
    assert await locks.unlock(resource, "bob") is UnlockStatus.LOCK_BELONGS_TO_OTHERS
    assert await locks.unlock(resource, "alice") is UnlockStatus.SUCCESS
    assert await locks.unlock(resource, "alice") is UnlockStatus.LOCK_DOES_NOT_EXIST
    assert await locks.try_lock(resource, "bob", 30)
    assert await locks.unlock(resource, "bob") is UnlockStatus.SUCCESS


async def test_unlocking_a_lock_never_taken(components: Components) -> None:
    locks = await _locks(components)
    assert await locks.unlock(unique("never"), "alice") is UnlockStatus.LOCK_DOES_NOT_EXIST


async def test_a_lock_expires(components: Components) -> None:
    locks = await _locks(components)
    resource = unique("res")
    assert await locks.try_lock(resource, "alice", 1)
    assert not await locks.try_lock(resource, "bob", 1)
    deadline = time.monotonic() + 6  # some servers round a 1 s lease up to their minimum
    while not await locks.try_lock(resource, "bob", 30):
        assert time.monotonic() < deadline, "a lock taken for 1s is still held after 6s"
        await asyncio.sleep(0.1)
    assert await locks.unlock(resource, "alice") is UnlockStatus.LOCK_BELONGS_TO_OTHERS
    assert await locks.unlock(resource, "bob") is UnlockStatus.SUCCESS


async def test_exactly_one_of_many_contenders_wins(components: Components) -> None:
    locks = await _locks(components)
    resource = unique("res")
    owners = [f"owner-{n}" for n in range(12)]
    won = await asyncio.gather(*(locks.try_lock(resource, owner, 30) for owner in owners))
    assert sum(won) == 1, won
    winner = owners[won.index(True)]
    statuses = await asyncio.gather(*(locks.unlock(resource, o) for o in owners if o != winner))
    assert set(statuses) == {UnlockStatus.LOCK_BELONGS_TO_OTHERS}
    assert await locks.unlock(resource, winner) is UnlockStatus.SUCCESS


@pytest.mark.requires("shared")
async def test_contention_between_two_sidecars(components: Components) -> None:
    first, second = await _locks(components), await _locks(components)
    resource = unique("res")
    won = await asyncio.gather(
        *(s.try_lock(resource, f"{n}-{i}", 30) for n, s in enumerate((first, second)) for i in range(5))
    )
    assert sum(won) == 1, won
    assert await second.unlock(resource, "nobody") is UnlockStatus.LOCK_BELONGS_TO_OTHERS


async def test_resources_of_different_apps_are_isolated(components: Components) -> None:
    orders, billing = await _locks(components, app_id="orders"), await _locks(components, app_id="billing")
    resource = unique("res")
    assert await orders.try_lock(orders.keys.qualify(resource), "alice", 30)
    assert await billing.try_lock(billing.keys.qualify(resource), "bob", 30)
    assert await orders.unlock(orders.keys.qualify(resource), "alice") is UnlockStatus.SUCCESS
    assert await billing.unlock(billing.keys.qualify(resource), "bob") is UnlockStatus.SUCCESS


@pytest.fixture
async def api(components: Components) -> AsyncIterator[LockApi]:
    """The lock API of a sidecar whose `lockstore` is this type, on its real server."""
    registry = await components.registry("lockstore")
    yield LockApi(registry)
    await registry.close()


@pytest.mark.parametrize("expiry", [10**20, 2**63 - 1, limits.MAX_LOCK_EXPIRY_SECONDS + 1, 0, -5])
async def test_an_expiry_out_of_range_is_refused_and_takes_nothing(api: LockApi, expiry: int) -> None:
    resource = unique("res")
    with pytest.raises(ApiError) as refused:
        await api.try_lock("lockstore", resource, "alice", expiry)
    assert refused.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert "ExpiryInSeconds" in refused.value.message and "lockstore" in refused.value.message
    assert await api.try_lock("lockstore", resource, "bob", 30), "the refused lock was taken anyway"
    assert await api.unlock("lockstore", resource, "bob") is UnlockStatus.SUCCESS


async def test_the_longest_expiry_is_accepted(api: LockApi) -> None:
    resource = unique("res")
    assert await api.try_lock("lockstore", resource, "alice", limits.MAX_LOCK_EXPIRY_SECONDS)
    assert not await api.try_lock("lockstore", resource, "bob", 30)
    assert await api.unlock("lockstore", resource, "alice") is UnlockStatus.SUCCESS
