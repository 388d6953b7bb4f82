"""A client generated from `proto/` drives the Layotto surface of the same sidecar."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import grpc
import pytest
from dapr.proto.runtime.v1 import dapr_pb2_grpc, lock_pb2
from google.protobuf import any_pb2
from ottava_sidecar._gen.spec.proto.runtime.v1 import runtime_pb2 as pb
from ottava_sidecar._gen.spec.proto.runtime.v1 import runtime_pb2_grpc

from tests.conftest import SidecarProcess


@pytest.fixture
async def runtime(default_sidecar: SidecarProcess) -> AsyncIterator[runtime_pb2_grpc.RuntimeAsyncStub]:
    async with grpc.aio.insecure_channel(default_sidecar.grpc_address) as channel:
        yield runtime_pb2_grpc.RuntimeStub(channel)


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


async def test_configuration_with_group_label_and_tags(runtime: runtime_pb2_grpc.RuntimeAsyncStub) -> None:
    app = unique("shop")
    items = [
        pb.ConfigurationItem(key="timeout", content="30s", group="checkout", label="prod", tags={"owner": "pay"}),
        pb.ConfigurationItem(key="timeout", content="5s", group="checkout", label="dev"),
        pb.ConfigurationItem(key="retries", content="3", group="checkout", label="prod"),
    ]
    await runtime.SaveConfiguration(pb.SaveConfigurationRequest(store_name="configstore", app_id=app, items=items))

    prod = await runtime.GetConfiguration(
        pb.GetConfigurationRequest(
            store_name="configstore", app_id=app, group="checkout", label="prod", keys=["timeout"]
        )
    )
    assert [(i.key, i.content, i.group, i.label, dict(i.tags)) for i in prod.items] == [
        ("timeout", "30s", "checkout", "prod", {"owner": "pay"})
    ]
    whole_label = await runtime.GetConfiguration(
        pb.GetConfigurationRequest(store_name="configstore", app_id=app, group="checkout", label="prod")
    )
    assert sorted(i.key for i in whole_label.items) == ["retries", "timeout"]
    other_app = await runtime.GetConfiguration(
        pb.GetConfigurationRequest(store_name="configstore", app_id=unique("other"), group="checkout", label="prod")
    )
    assert list(other_app.items) == []

    await runtime.DeleteConfiguration(
        pb.DeleteConfigurationRequest(
            store_name="configstore", app_id=app, group="checkout", label="dev", keys=["timeout"]
        )
    )
    dev = await runtime.GetConfiguration(
        pb.GetConfigurationRequest(
            store_name="configstore", app_id=app, group="checkout", label="dev", keys=["timeout"]
        )
    )
    assert list(dev.items) == []


async def test_subscribe_configuration_gets_current_items_then_changes(
    runtime: runtime_pb2_grpc.RuntimeAsyncStub,
) -> None:
    app = unique("shop")
    save = pb.SaveConfigurationRequest(
        store_name="configstore", app_id=app, items=[pb.ConfigurationItem(key="color", content="red", group="ui")]
    )
    await runtime.SaveConfiguration(save)
    requests: asyncio.Queue[pb.SubscribeConfigurationRequest] = asyncio.Queue()
    await requests.put(
        pb.SubscribeConfigurationRequest(store_name="configstore", app_id=app, group="ui", keys=["color"])
    )

    async def outgoing() -> AsyncIterator[pb.SubscribeConfigurationRequest]:
        while True:
            yield await requests.get()

    call = runtime.SubscribeConfiguration(outgoing())
    responses = call.__aiter__()
    current = await asyncio.wait_for(responses.__anext__(), timeout=10)
    assert [(i.key, i.content) for i in current.items] == [("color", "red")]

    save.items[0].content = "blue"
    await runtime.SaveConfiguration(save)
    changed = await asyncio.wait_for(responses.__anext__(), timeout=10)
    assert changed.store_name == "configstore"
    assert [(i.key, i.content, i.group) for i in changed.items] == [("color", "blue", "ui")]

    await runtime.DeleteConfiguration(
        pb.DeleteConfigurationRequest(store_name="configstore", app_id=app, group="ui", keys=["color"])
    )
    deleted = await asyncio.wait_for(responses.__anext__(), timeout=10)
    assert [(i.key, i.content) for i in deleted.items] == [("color", "")]
    call.cancel()


async def test_next_id_strictly_increasing_under_concurrency(runtime: runtime_pb2_grpc.RuntimeAsyncStub) -> None:
    key = unique("order-id")
    strong = pb.SequencerOptions(increment=pb.SequencerOptions.STRONG)

    async def caller() -> list[int]:
        ids = []
        for _ in range(10):
            response = await runtime.GetNextId(pb.GetNextIdRequest(store_name="sequencer", key=key, options=strong))
            ids.append(response.next_id)
        return ids

    per_caller = await asyncio.gather(*(caller() for _ in range(20)))
    for ids in per_caller:
        assert ids == sorted(ids) and len(set(ids)) == len(ids), "a caller saw ids go backwards or repeat"
    every_id = sorted(i for ids in per_caller for i in ids)
    assert every_id == list(range(1, 201)), "STRONG ids must be unique and without gaps"


async def test_try_lock_contention_between_two_owners(runtime: runtime_pb2_grpc.RuntimeAsyncStub) -> None:
    resource = unique("stock")

    async def try_lock(owner: str) -> bool:
        response = await runtime.TryLock(
            pb.TryLockRequest(store_name="lockstore", resource_id=resource, lock_owner=owner, expire=30)
        )
        return response.success

    results = await asyncio.gather(*(try_lock(owner) for owner in ["alice", "bob"] * 10))
    winners = {owner for owner, won in zip(["alice", "bob"] * 10, results, strict=True) if won}
    assert len(winners) == 1 and results.count(True) == 1
    (winner,) = winners
    loser = "bob" if winner == "alice" else "alice"

    async def unlock(owner: str) -> int:
        response = await runtime.Unlock(
            pb.UnlockRequest(store_name="lockstore", resource_id=resource, lock_owner=owner)
        )
        return response.status

    assert await unlock(loser) == pb.UnlockResponse.LOCK_BELONG_TO_OTHERS
    assert await unlock(winner) == pb.UnlockResponse.SUCCESS
    assert await unlock(winner) == pb.UnlockResponse.LOCK_UNEXIST
    assert await try_lock(loser)


async def test_state_and_secrets_through_layotto(runtime: runtime_pb2_grpc.RuntimeAsyncStub) -> None:
    key = unique("cart")
    await runtime.SaveState(pb.SaveStateRequest(store_name="statestore", states=[pb.StateItem(key=key, value=b"x")]))
    got = await runtime.GetState(pb.GetStateRequest(store_name="statestore", key=key))
    assert got.data == b"x" and got.etag
    secret = await runtime.GetSecret(pb.GetSecretRequest(store_name="secretstore", key="OTTAVA_TEST_DB_PASSWORD"))
    assert dict(secret.data) == {"OTTAVA_TEST_DB_PASSWORD": "s3cret"}


async def test_say_hello_answers_as_layottos_quick_start(runtime: runtime_pb2_grpc.RuntimeAsyncStub) -> None:
    hello = await runtime.SayHello(pb.SayHelloRequest(service_name="helloworld"))
    assert hello.hello == "greeting" and not hello.HasField("data")
    padding = any_pb2.Any(type_url="type.googleapis.com/pad", value=b"x" * 1000)
    named = await runtime.SayHello(pb.SayHelloRequest(service_name="quick_start_demo", name="ottava", data=padding))
    assert named.hello == "greeting, ottava"
    assert named.data == padding


async def test_lock_keep_alive(runtime: runtime_pb2_grpc.RuntimeAsyncStub) -> None:
    resource = unique("job")

    async def keep_alive(owner: str, expire: int = 30) -> int:
        request = pb.LockKeepAliveRequest(store_name="lockstore", resource_id=resource, lock_owner=owner, expire=expire)
        return (await runtime.LockKeepAlive(request)).status

    assert await keep_alive("alice") == pb.LockKeepAliveResponse.LOCK_UNEXIST
    taken = await runtime.TryLock(
        pb.TryLockRequest(store_name="lockstore", resource_id=resource, lock_owner="alice", expire=1)
    )
    assert taken.success
    assert await keep_alive("alice", 600) == pb.LockKeepAliveResponse.SUCCESS
    assert await keep_alive("bob") == pb.LockKeepAliveResponse.LOCK_BELONG_TO_OTHERS
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await keep_alive("alice", 0)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "lockstore" in str(refused.value.details())
    released = await runtime.Unlock(pb.UnlockRequest(store_name="lockstore", resource_id=resource, lock_owner="alice"))
    assert released.status == pb.UnlockResponse.SUCCESS
    assert await keep_alive("alice") == pb.LockKeepAliveResponse.LOCK_UNEXIST


async def test_a_lock_taken_through_dapr_is_renewed_through_layotto(default_sidecar: SidecarProcess) -> None:
    resource = unique("shared")
    async with grpc.aio.insecure_channel(default_sidecar.grpc_address) as channel:
        dapr = dapr_pb2_grpc.DaprStub(channel)
        layotto = runtime_pb2_grpc.RuntimeStub(channel)
        taken = await dapr.TryLockAlpha1(
            lock_pb2.TryLockRequest(store_name="lockstore", resource_id=resource, lock_owner="w", expiry_in_seconds=5)
        )
        assert taken.success
        renewed = await layotto.LockKeepAlive(
            pb.LockKeepAliveRequest(store_name="lockstore", resource_id=resource, lock_owner="w", expire=60)
        )
        assert renewed.status == pb.LockKeepAliveResponse.SUCCESS
        released = await dapr.UnlockAlpha1(
            lock_pb2.UnlockRequest(store_name="lockstore", resource_id=resource, lock_owner="w")
        )
        assert released.status == lock_pb2.UnlockResponse.SUCCESS
