"""The in-memory components' contracts, exercised directly through their interfaces."""

import asyncio
import json
import time
from pathlib import Path

import pytest
from ottava_sidecar.components import catalogue
from ottava_sidecar.components.configuration.base import ConfigurationItem, ConfigurationQuery
from ottava_sidecar.components.configuration.in_memory import InMemoryConfigurationStore
from ottava_sidecar.components.errors import ComponentError, ETagInvalidError, ETagMismatchError
from ottava_sidecar.components.lock.base import UnlockStatus
from ottava_sidecar.components.lock.in_memory import InMemoryLockStore
from ottava_sidecar.components.pubsub.base import Message
from ottava_sidecar.components.pubsub.in_memory import InMemoryPubSub
from ottava_sidecar.components.secretstores.local_file import LocalFileSecretStore
from ottava_sidecar.components.state.base import Concurrency, DeleteRequest, SetRequest
from ottava_sidecar.components.state.in_memory import InMemoryStateStore


def create(type_name: str, **metadata: str) -> object:
    return catalogue.lookup(type_name).create("test", metadata, app_id="app")


async def test_state_ttl_expires_items() -> None:
    store = create("state.in-memory")
    assert isinstance(store, InMemoryStateStore)
    await store.init()
    try:
        await store.set(SetRequest("short", b"v", ttl_seconds=1))
        await store.set(SetRequest("forever", b"v"))
        item = await store.get("short")
        assert item is not None and "ttlExpireTime" in item.metadata
        deadline = time.monotonic() + 5
        while await store.get("short") is not None:
            assert time.monotonic() < deadline, "item with a 1s TTL still there after 5s"
            await asyncio.sleep(0.05)
        assert await store.get("forever") is not None
    finally:
        await store.close()


async def test_state_etag_rules() -> None:
    store = create("state.in-memory")
    assert isinstance(store, InMemoryStateStore)
    await store.set(SetRequest("k", b"1"))
    item = await store.get("k")
    assert item is not None and item.etag
    with pytest.raises(ETagMismatchError):
        await store.set(SetRequest("missing", b"1", etag="1"))
    with pytest.raises(ETagInvalidError):
        await store.set(SetRequest("k", b"2", etag="not-a-version"))
    with pytest.raises(ETagMismatchError):
        await store.set(SetRequest("k", b"2", concurrency=Concurrency.FIRST_WRITE))
    await store.set(SetRequest("k", b"2", etag=item.etag, concurrency=Concurrency.FIRST_WRITE))
    with pytest.raises(ETagMismatchError):
        await store.delete(DeleteRequest("k", etag=item.etag))
    await store.delete(DeleteRequest("k"))
    assert await store.get("k") is None


async def test_state_transaction_is_all_or_nothing() -> None:
    store = create("state.in-memory")
    assert isinstance(store, InMemoryStateStore)
    await store.set(SetRequest("a", b"old"))
    with pytest.raises(ETagMismatchError):
        await store.transact([SetRequest("a", b"new"), DeleteRequest("b", etag="5")])
    item = await store.get("a")
    assert item is not None and item.value == b"old"


def test_key_prefix_follows_dapr() -> None:
    by_app = create("state.in-memory")
    by_name = create("state.in-memory", keyPrefix="name")
    unprefixed = create("state.in-memory", keyPrefix="none")
    assert isinstance(by_app, InMemoryStateStore)
    assert isinstance(by_name, InMemoryStateStore)
    assert isinstance(unprefixed, InMemoryStateStore)
    assert by_app.keys.qualify("k") == "app||k"
    assert by_name.keys.qualify("k") == "test||k"
    assert unprefixed.keys.qualify("k||x") == "k||x"
    with pytest.raises(ValueError, match=r"can't contain '\|\|'"):
        by_app.keys.qualify("a||b")


async def test_lock_expiry_and_owner() -> None:
    lock = create("lock.in-memory")
    assert isinstance(lock, InMemoryLockStore)
    assert await lock.try_lock("r", "alice", 1)
    assert not await lock.try_lock("r", "bob", 1)
    assert await lock.unlock("r", "bob") is UnlockStatus.LOCK_BELONGS_TO_OTHERS
    deadline = time.monotonic() + 5
    while not await lock.try_lock("r", "bob", 30):
        assert time.monotonic() < deadline, "a lock with a 1s expiry was still held after 5s"
        await asyncio.sleep(0.05)
    assert await lock.unlock("r", "alice") is UnlockStatus.LOCK_BELONGS_TO_OTHERS
    assert await lock.unlock("r", "bob") is UnlockStatus.SUCCESS


async def test_configuration_subscription_sees_saves_and_deletes_of_its_keys_only() -> None:
    store = create("configuration.in-memory")
    assert isinstance(store, InMemoryConfigurationStore)
    watch = await store.subscribe(ConfigurationQuery("app", keys=("a",)))
    await store.save("app", [ConfigurationItem("b", "ignored"), ConfigurationItem("a", "1")])
    await store.save("other-app", [ConfigurationItem("a", "ignored")])
    await store.delete(ConfigurationQuery("app", keys=("a",)))
    watch.close()
    batches = [batch async for batch in watch]
    assert [[(i.key, i.content, i.deleted) for i in batch] for batch in batches] == [
        [("a", "1", False)],
        [("a", "", True)],
    ]


async def test_local_file_secrets_flatten_nested_values(tmp_path: Path) -> None:
    path = tmp_path / "secrets.json"
    path.write_text(json.dumps({"db": {"user": "u", "password": "p"}, "token": "t", "port": 5432}), encoding="utf-8")
    flat = create("secretstores.local.file", secretsFile=str(path))
    multi = create("secretstores.local.file", secretsFile=str(path), multiValued="true")
    assert isinstance(flat, LocalFileSecretStore) and isinstance(multi, LocalFileSecretStore)
    await flat.init()
    await multi.init()
    assert await flat.get("db:password") == {"db:password": "p"}
    assert await flat.get("port") == {"port": "5432"}
    assert await multi.get("db") == {"user": "u", "password": "p"}
    broken = create("secretstores.local.file", secretsFile=str(tmp_path / "missing.json"))
    assert isinstance(broken, LocalFileSecretStore)
    with pytest.raises(ComponentError, match=r"missing\.json"):
        await broken.init()


async def test_pubsub_redelivers_until_the_handler_succeeds() -> None:
    broker = create("pubsub.in-memory", redeliveryBackoffSeconds="0.01")
    assert isinstance(broker, InMemoryPubSub)
    attempts: list[str] = []
    delivered: asyncio.Queue[Message] = asyncio.Queue()

    async def flaky(message: Message) -> None:
        attempts.append(message.id)
        if len(attempts) < 3:
            raise RuntimeError("not yet")
        await delivered.put(message)

    await broker.subscribe("orders", flaky)
    message_id = await broker.publish("orders", b"{}")
    message = await asyncio.wait_for(delivered.get(), timeout=5)
    assert message.id == message_id and attempts == [message_id] * 3
    await broker.close()


def test_catalogue_reports_wrong_metadata_precisely() -> None:
    with pytest.raises(catalogue.MetadataError) as err:
        catalogue.lookup("secretstores.local.file").parse_metadata({"secretFile": "x"})
    assert "secretFile: unknown field for secretstores.local.file" in str(err.value)
    assert "secretsFile: required field is missing" in str(err.value)
    with pytest.raises(catalogue.UnknownComponentTypeError, match=r"state\.nosuch"):
        catalogue.lookup("state.nosuch")


def test_fields_from_secrets_are_checked_for_existence_only() -> None:
    state = catalogue.lookup("state.in-memory")
    # The value is unknown until the secret is read: a constrained field must not fail on a stand-in.
    assert state.check_declared({}, {"cleanupIntervalInSeconds"}) == []
    assert state.check_declared({"cleanupIntervalInSeconds": "0"}, set()) == [
        "cleanupIntervalInSeconds: Input should be greater than 0"
    ]
    [unknown] = state.check_declared({}, {"cleanupInterval"})
    assert unknown.startswith("cleanupInterval: unknown field for state.in-memory")
    files = catalogue.lookup("secretstores.local.file")
    assert files.check_declared({}, {"secretsFile"}) == []
    assert files.check_declared({}, set()) == ["secretsFile: required field is missing"]
