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


async def _wait_until_taken(locks: LockStore[Any], resource: str, owner: str, why: str) -> None:
    """Polls until `owner` takes `resource`: the store's own clock has run out its previous lock."""
    deadline = time.monotonic() + 8  # some servers round a 1 s lease up to their minimum
    while not await locks.try_lock(resource, owner, 30):
        assert time.monotonic() < deadline, why
        await asyncio.sleep(0.1)


async def test_a_renewed_lock_outlives_its_first_expiry(components: Components) -> None:
    locks = await _locks(components)
    resource, witness = unique("res"), unique("witness")
    assert await locks.try_lock(resource, "alice", 1)
    # Taken after the resource, for as long: once it can be taken again, the resource's
    # first expiry has passed too, on the store's clock.
    assert await locks.try_lock(witness, "carol", 1)
    assert await locks.keep_alive(resource, "alice", 60) is UnlockStatus.SUCCESS
    await _wait_until_taken(locks, witness, "bob", "a witness lock taken for 1s is still held after 8s")
    assert not await locks.try_lock(resource, "bob", 30), "the renewed lock expired at its first expiry"
    assert await locks.unlock(resource, "bob") is UnlockStatus.LOCK_BELONGS_TO_OTHERS
    assert await locks.unlock(resource, "alice") is UnlockStatus.SUCCESS


async def test_a_lock_can_be_renewed_to_expire_sooner(components: Components) -> None:
    locks = await _locks(components)
    resource = unique("res")
    assert await locks.try_lock(resource, "alice", 600)
    assert await locks.keep_alive(resource, "alice", 1) is UnlockStatus.SUCCESS
    await _wait_until_taken(locks, resource, "bob", "a lock renewed for 1s is still held after 8s")
    assert await locks.unlock(resource, "bob") is UnlockStatus.SUCCESS


async def test_only_the_owner_renews(components: Components) -> None:
    locks = await _locks(components)
    resource = unique("res")
    assert await locks.keep_alive(resource, "alice", 30) is UnlockStatus.LOCK_DOES_NOT_EXIST
    assert await locks.try_lock(resource, "bob", 30)
    assert await locks.keep_alive(resource, "alice", 30) is UnlockStatus.LOCK_BELONGS_TO_OTHERS
    assert await locks.unlock(resource, "bob") is UnlockStatus.SUCCESS
    assert await locks.keep_alive(resource, "bob", 30) is UnlockStatus.LOCK_DOES_NOT_EXIST, "renewed after release"
    assert await locks.try_lock(resource, "alice", 30), "a refused renewal left the lock held"
    assert await locks.unlock(resource, "alice") is UnlockStatus.SUCCESS


async def test_an_expired_lock_cannot_be_renewed(components: Components) -> None:
    locks = await _locks(components)
    resource, witness = unique("res"), unique("witness")
    assert await locks.try_lock(resource, "alice", 1)
    assert await locks.try_lock(witness, "carol", 1)  # expires no sooner than the resource
    await _wait_until_taken(locks, witness, "bob", "a witness lock taken for 1s is still held after 8s")
    assert await locks.keep_alive(resource, "alice", 30) is UnlockStatus.LOCK_DOES_NOT_EXIST
    assert await locks.try_lock(resource, "bob", 30), "a refused renewal brought an expired lock back"
    assert await locks.unlock(resource, "bob") is UnlockStatus.SUCCESS


@pytest.mark.requires("shared")
async def test_a_renewal_through_one_sidecar_holds_for_another(components: Components) -> None:
    first, second = await _locks(components), await _locks(components)
    resource = unique("res")
    assert await first.try_lock(resource, "alice", 600)
    assert await second.keep_alive(resource, "bob", 1) is UnlockStatus.LOCK_BELONGS_TO_OTHERS
    assert await second.keep_alive(resource, "alice", 1) is UnlockStatus.SUCCESS
    await _wait_until_taken(first, resource, "bob", "a lock renewed for 1s by another sidecar is held after 8s")
    assert await second.unlock(resource, "bob") is UnlockStatus.SUCCESS


@pytest.mark.parametrize("expiry", [limits.MAX_LOCK_EXPIRY_SECONDS + 1, 0, -5])
async def test_a_renewal_out_of_range_is_refused_and_changes_nothing(api: LockApi, expiry: int) -> None:
    resource = unique("res")
    assert await api.try_lock("lockstore", resource, "alice", 30)
    with pytest.raises(ApiError) as refused:
        await api.keep_alive("lockstore", resource, "alice", expiry)
    assert refused.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert "ExpiryInSeconds" in refused.value.message and "lockstore" in refused.value.message
    assert not await api.try_lock("lockstore", resource, "bob", 30)
    assert await api.keep_alive("lockstore", resource, "alice", 30) is UnlockStatus.SUCCESS
    assert await api.unlock("lockstore", resource, "alice") is UnlockStatus.SUCCESS
