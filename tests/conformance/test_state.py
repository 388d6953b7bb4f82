"""The state store contract, for every `state.*` implementation.

Keys in these tests are already "stored keys": the API layer prefixes app keys before a
store sees them (`store.keys.qualify`), and the isolation tests use that same prefixer.
"""

import asyncio
import time
import tracemalloc
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from ottava_sidecar import limits
from ottava_sidecar.api.errors import ApiError
from ottava_sidecar.api.state import StateApi
from ottava_sidecar.components.errors import ComponentError, ETagInvalidError, ETagMismatchError
from ottava_sidecar.components.state.base import Concurrency, DeleteRequest, Feature, Operation, SetRequest, StateStore

from tests.conformance.conftest import Components, unique

BUILDING_BLOCK = "state"
FIRST = Concurrency.FIRST_WRITE
MIB = 1024 * 1024


async def _store(components: Components, **kwargs: str) -> StateStore[Any]:
    store = await components.create(**kwargs)
    assert isinstance(store, StateStore)
    return store


async def test_reports_etag_ttl_and_transactions(components: Components) -> None:
    store = await _store(components)
    assert {Feature.ETAG, Feature.TRANSACTIONAL, Feature.TTL} <= set(store.features)


async def test_round_trip_of_binary_values_and_content_type(components: Components) -> None:
    store = await _store(components)
    key, value = unique("k"), bytes(range(256)) * 40  # every byte value, 10 KiB
    assert await store.get(key) is None
    await store.set(SetRequest(key, value, content_type="application/octet-stream"))
    item = await store.get(key)
    assert item is not None
    assert (item.key, item.value, item.content_type) == (key, value, "application/octet-stream")
    assert isinstance(item.etag, str) and item.etag
    await store.set(SetRequest(key, b""))
    empty = await store.get(key)
    assert empty is not None and empty.value == b""


async def test_every_write_changes_the_etag(components: Components) -> None:
    store = await _store(components)
    key = unique("k")
    etags = []
    for value in (b"1", b"2", b"2"):
        await store.set(SetRequest(key, value))
        item = await store.get(key)
        assert item is not None and item.etag
        etags.append(item.etag)
    assert len(set(etags)) == 3


async def test_etag_must_match_the_stored_one(components: Components) -> None:
    store = await _store(components)
    key = unique("k")
    await store.set(SetRequest(key, b"v1"))
    first = await store.get(key)
    assert first is not None and first.etag
    await store.set(SetRequest(key, b"v2", etag=first.etag))
    second = await store.get(key)
    assert second is not None and second.etag and second.etag != first.etag

    with pytest.raises(ETagMismatchError):
        await store.set(SetRequest(key, b"v3", etag=first.etag))
    with pytest.raises(ETagMismatchError):
        await store.delete(DeleteRequest(key, etag=first.etag))
    still = await store.get(key)
    assert still is not None and (still.value, still.etag) == (b"v2", second.etag)

    with pytest.raises(ETagMismatchError):
        await store.set(SetRequest(unique("missing"), b"v", etag=second.etag))
    with pytest.raises(ETagInvalidError):
        await store.set(SetRequest(key, b"v", etag="not-an-etag"))

    await store.delete(DeleteRequest(key, etag=second.etag))
    assert await store.get(key) is None


async def test_first_write_wins(components: Components) -> None:
    store = await _store(components)
    key = unique("k")
    await store.set(SetRequest(key, b"a", concurrency=FIRST))
    with pytest.raises(ETagMismatchError):
        await store.set(SetRequest(key, b"b", concurrency=FIRST))
    item = await store.get(key)
    assert item is not None and item.value == b"a" and item.etag
    await store.set(SetRequest(key, b"c", etag=item.etag, concurrency=FIRST))
    with pytest.raises(ETagMismatchError):
        await store.set(SetRequest(key, b"d", etag=item.etag, concurrency=FIRST))
    last = await store.get(key)
    assert last is not None and last.value == b"c"


async def test_last_write_wins_without_etag(components: Components) -> None:
    store = await _store(components)
    key = unique("k")
    await store.set(SetRequest(key, b"a"))
    await store.set(SetRequest(key, b"b"))
    item = await store.get(key)
    assert item is not None and item.value == b"b"


async def test_delete_is_idempotent_without_etag(components: Components) -> None:
    store = await _store(components)
    key = unique("k")
    await store.delete(DeleteRequest(key))
    await store.set(SetRequest(key, b"v"))
    await store.delete(DeleteRequest(key))
    await store.delete(DeleteRequest(key))
    assert await store.get(key) is None


async def test_concurrent_writers_with_one_etag_exactly_one_wins(components: Components) -> None:
    store = await _store(components)
    key = unique("k")
    await store.set(SetRequest(key, b"start"))
    item = await store.get(key)
    assert item is not None and item.etag
    outcomes = await asyncio.gather(
        *(store.set(SetRequest(key, str(n).encode(), etag=item.etag)) for n in range(10)), return_exceptions=True
    )
    assert sum(o is None for o in outcomes) == 1, outcomes
    assert all(isinstance(o, ETagMismatchError) for o in outcomes if o is not None), outcomes


async def test_concurrent_first_writes_exactly_one_wins(components: Components) -> None:
    store = await _store(components)
    key = unique("k")
    outcomes = await asyncio.gather(
        *(store.set(SetRequest(key, str(n).encode(), concurrency=FIRST)) for n in range(10)), return_exceptions=True
    )
    assert sum(o is None for o in outcomes) == 1, outcomes
    assert all(isinstance(o, ETagMismatchError) for o in outcomes if o is not None), outcomes


async def test_bulk_get_keeps_order_and_reports_missing_keys(components: Components) -> None:
    store = await _store(components)
    keys = [unique("k") for _ in range(5)]
    for index, key in enumerate(keys[:3]):
        await store.set(SetRequest(key, str(index).encode()))
    items = await store.bulk_get([keys[4], keys[0], keys[3], keys[2], keys[1]])
    assert [i.value if i else None for i in items] == [None, b"0", None, b"2", b"1"]
    assert [i.key for i in items if i] == [keys[0], keys[2], keys[1]]


async def test_transaction_applies_every_operation(components: Components) -> None:
    store = await _store(components)
    a, b, c = unique("a"), unique("b"), unique("c")
    await store.set(SetRequest(b, b"old-b"))
    await store.set(SetRequest(c, b"old-c"))
    c_item = await store.get(c)
    assert c_item is not None
    await store.transact([SetRequest(a, b"new-a"), DeleteRequest(b), SetRequest(c, b"new-c", etag=c_item.etag)])
    got = await store.bulk_get([a, b, c])
    assert [i.value if i else None for i in got] == [b"new-a", None, b"new-c"]


async def test_transaction_is_all_or_nothing(components: Components) -> None:
    store = await _store(components)
    a, b = unique("a"), unique("b")
    await store.set(SetRequest(a, b"old-a"))
    await store.set(SetRequest(b, b"old-b"))
    stale = await store.get(b)
    assert stale is not None and stale.etag
    await store.set(SetRequest(b, b"newer-b"))
    failing_transactions: list[list[Operation]] = [
        [SetRequest(a, b"new-a"), DeleteRequest(b, etag=stale.etag)],
        [DeleteRequest(a), SetRequest(b, b"x", etag=stale.etag)],
        [SetRequest(a, b"new-a"), SetRequest(b, b"x", concurrency=FIRST)],
    ]
    for failing in failing_transactions:
        with pytest.raises(ETagMismatchError):
            await store.transact(failing)
    got = await store.bulk_get([a, b])
    assert [i.value if i else None for i in got] == [b"old-a", b"newer-b"]


async def test_ttl_expires_items_and_reports_expiry_time(components: Components) -> None:
    store = await _store(components)
    short, forever, renewed = unique("short"), unique("forever"), unique("renewed")
    before = datetime.now(UTC).replace(microsecond=0)
    await store.set(SetRequest(short, b"v", ttl_seconds=1))
    await store.set(SetRequest(forever, b"v"))
    await store.set(SetRequest(renewed, b"v", ttl_seconds=1))
    await store.set(SetRequest(renewed, b"v2"))  # a later write without TTL keeps the item for good

    item = await store.get(short)
    assert item is not None
    expires = datetime.fromisoformat(item.metadata["ttlExpireTime"].replace("Z", "+00:00"))
    assert before <= expires <= before + timedelta(seconds=3)
    plain = await store.get(forever)
    assert plain is not None and "ttlExpireTime" not in plain.metadata

    deadline = time.monotonic() + 6
    while await store.get(short) is not None:
        assert time.monotonic() < deadline, "an item with a 1s TTL is still there after 6s"
        await asyncio.sleep(0.1)
    assert await store.get(forever) is not None
    kept = await store.get(renewed)
    assert kept is not None and kept.value == b"v2"
    # An expired item is gone for ETag checks too: first-write may create it again.
    await store.set(SetRequest(short, b"again", concurrency=FIRST))


async def test_keys_of_different_apps_are_isolated(components: Components) -> None:
    orders = await _store(components, app_id="orders")
    billing = await _store(components, app_id="billing")
    shared_a = await _store(components, app_id="orders", keyPrefix="none")
    shared_b = await _store(components, app_id="billing", keyPrefix="none")
    key = unique("k")
    await orders.set(SetRequest(orders.keys.qualify(key), b"orders"))
    await billing.set(SetRequest(billing.keys.qualify(key), b"billing"))
    mine, theirs = await orders.get(orders.keys.qualify(key)), await billing.get(billing.keys.qualify(key))
    assert mine is not None and mine.value == b"orders"
    assert theirs is not None and theirs.value == b"billing"
    assert orders.keys.qualify(key) == f"orders||{key}"

    if components.backend.shared:
        await shared_a.set(SetRequest(shared_a.keys.qualify(key), b"common"))
        seen = await shared_b.get(shared_b.keys.qualify(key))
        assert seen is not None and seen.value == b"common"


@pytest.mark.requires("persistent")
async def test_data_survives_a_restart(components: Components) -> None:
    store = await _store(components)
    key = unique("k")
    await store.set(SetRequest(key, b"kept"))
    before = await store.get(key)
    await components.close(store)
    restarted = await _store(components)
    after = await restarted.get(key)
    assert before is not None and after is not None
    assert (after.value, after.etag) == (b"kept", before.etag)


# --- bad input: nothing written, every item readable --------------------------------------


OUT_OF_RANGE_TTLS = [limits.MAX_TTL_SECONDS + 1, 3 * 10**11, 2**63 - 1, -2]


@pytest.mark.parametrize("ttl", OUT_OF_RANGE_TTLS)
async def test_a_ttl_out_of_range_is_refused_and_writes_nothing(components: Components, ttl: int) -> None:
    store = await _store(components)
    kept, fresh = unique("kept"), unique("fresh")
    await store.set(SetRequest(kept, b"old"))
    with pytest.raises(ComponentError):
        await store.set(SetRequest(fresh, b"v", ttl_seconds=ttl))
    with pytest.raises(ComponentError):
        await store.set(SetRequest(kept, b"new", ttl_seconds=ttl))
    with pytest.raises(ComponentError):
        await store.transact([SetRequest(fresh, b"first"), SetRequest(kept, b"second", ttl_seconds=ttl)])
    got = await store.bulk_get([kept, fresh])
    assert [i.value if i else None for i in got] == [b"old", None]
    item = got[0]
    assert item is not None and "ttlExpireTime" not in item.metadata, "the failed write left a TTL behind"


async def test_the_longest_ttl_is_stored_and_reads_back(components: Components) -> None:
    store = await _store(components)
    key = unique("k")
    await store.transact([SetRequest(key, b"v", ttl_seconds=limits.MAX_TTL_SECONDS)])
    item = await store.get(key)
    assert item is not None and item.value == b"v"
    expires = datetime.fromisoformat(item.metadata["ttlExpireTime"].replace("Z", "+00:00"))
    assert expires > datetime.now(UTC) + timedelta(days=365 * 60)


# --- the same through the state API, on a sidecar's registry ------------------------------


@pytest.fixture
async def api(components: Components) -> AsyncIterator[StateApi]:
    """The state API of a sidecar whose `statestore` is this type, on its real server."""
    registry = await components.registry("statestore")
    yield StateApi(registry, max_bulk_response_bytes=2 * MIB)
    await registry.close()


async def _values(api: StateApi, *keys: str) -> list[bytes | None]:
    return [r.item.value if r.item else None for r in await api.bulk_get("statestore", keys)]


async def test_a_transaction_with_a_bad_second_operation_writes_nothing(api: StateApi) -> None:
    a, b, c = unique("a"), unique("b"), unique("c")
    await api.save("statestore", [SetRequest(c, b"old-c")])
    for ttl in (2**63 - 1, 3 * 10**11):
        operations: list[Operation] = [
            SetRequest(a, b"a"),
            SetRequest(b, b"b", ttl_seconds=ttl),
            DeleteRequest(c),
        ]
        with pytest.raises(ApiError) as refused:
            await api.transact("statestore", operations)
        assert refused.value.code is grpc.StatusCode.INVALID_ARGUMENT
        assert b in refused.value.message and "ttlInSeconds" in refused.value.message
        assert await _values(api, a, b, c) == [None, None, b"old-c"]


async def test_a_bulk_save_with_one_bad_item_writes_none(api: StateApi) -> None:
    first, bad, last = unique("first"), unique("bad"), unique("last")
    requests = [SetRequest(first, b"1"), SetRequest(bad, b"2", ttl_seconds=2**31), SetRequest(last, b"3")]
    with pytest.raises(ApiError) as refused:
        await api.save("statestore", requests)
    assert refused.value.code is grpc.StatusCode.INVALID_ARGUMENT and bad in refused.value.message
    assert await _values(api, first, bad, last) == [None, None, None]


async def test_a_bulk_save_or_delete_with_a_conflict_writes_none(api: StateApi) -> None:
    new, old = unique("new"), unique("old")
    await api.save("statestore", [SetRequest(old, b"old")])
    first = await api.get("statestore", old)
    assert first is not None and first.etag
    await api.save("statestore", [SetRequest(old, b"newer")])  # the first ETag is stale now
    with pytest.raises(ApiError) as refused:
        await api.save("statestore", [SetRequest(new, b"n"), SetRequest(old, b"x", etag=first.etag)])
    assert refused.value.code is grpc.StatusCode.ABORTED and "one of 2 items" in refused.value.message
    assert await _values(api, new, old) == [None, b"newer"]
    with pytest.raises(ApiError) as refused:
        await api.save(
            "statestore", [SetRequest(new, b"n"), SetRequest(old, b"x", concurrency=Concurrency.FIRST_WRITE)]
        )
    assert refused.value.code is grpc.StatusCode.ABORTED
    assert await _values(api, new, old) == [None, b"newer"]
    await api.save("statestore", [SetRequest(new, b"n")])
    with pytest.raises(ApiError) as refused:
        await api.delete("statestore", [DeleteRequest(new), DeleteRequest(old, etag=first.etag)])
    assert refused.value.code is grpc.StatusCode.ABORTED
    assert await _values(api, new, old) == [b"n", b"newer"]


async def test_ttl_minus_one_never_expires_and_zero_expires_at_once(api: StateApi) -> None:
    forever, gone = unique("forever"), unique("gone")
    await api.save("statestore", [SetRequest(forever, b"f", ttl_seconds=-1), SetRequest(gone, b"g", ttl_seconds=0)])
    item = await api.get("statestore", forever)
    assert item is not None and "ttlExpireTime" not in item.metadata
    deadline = time.monotonic() + 5
    while await api.get("statestore", gone) is not None:
        assert time.monotonic() < deadline, "an item saved with ttlInSeconds=0 is still there after 5s"
        await asyncio.sleep(0.05)


async def test_a_bulk_read_over_the_limit_is_refused_naming_it(api: StateApi) -> None:
    big, small = unique("big"), unique("small")
    await api.save("statestore", [SetRequest(big, b"x" * MIB), SetRequest(small, b"s")])
    assert await _values(api, small, big, small) == [b"s", b"x" * MIB, b"s"]

    tracemalloc.start()
    try:
        with pytest.raises(ApiError) as refused:
            await api.bulk_get("statestore", [big] * 200)  # 200 MiB of answer from one key
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert refused.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_bulk_response_bytes" in refused.value.message and str(2 * MIB) in refused.value.message
    print(f"peak memory of a bulk read naming one 1 MiB key 200 times: {peak / MIB:.1f} MiB")
    assert peak < 8 * MIB, f"a refused bulk read held {peak / MIB:.0f} MiB"


async def test_a_bulk_read_stops_reading_once_over_the_limit(api: StateApi) -> None:
    keys = [unique("k") for _ in range(40)]
    await api.save("statestore", [SetRequest(key, b"y" * (256 * 1024)) for key in keys])  # 10 MiB in all
    tracemalloc.start()
    try:
        with pytest.raises(ApiError) as refused:
            await api.bulk_get("statestore", keys)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "max_bulk_response_bytes" in refused.value.message
    print(f"peak memory of a refused 10 MiB bulk read under a 2 MiB limit: {peak / MIB:.1f} MiB")
    assert peak < 8 * MIB, f"a refused bulk read held {peak / MIB:.0f} MiB"
    assert len(await api.bulk_get("statestore", keys[:7])) == 7
