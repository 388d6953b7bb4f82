"""The official Dapr Python SDK, unmodified, against `ottava run` on its defaults.

This is the quick start of the README: an app written for Dapr runs on Ottava.
"""

import threading
import uuid
from typing import Any

import grpc
import pytest
from dapr.aio.clients import DaprClient as AsyncDaprClient
from dapr.clients import DaprClient
from dapr.clients.exceptions import DaprGrpcError
from dapr.clients.grpc._response import ConfigurationResponse, UnlockResponseStatus
from dapr.clients.grpc._state import Concurrency, StateOptions
from ottava_sidecar._gen.spec.proto.runtime.v1 import runtime_pb2 as layotto
from ottava_sidecar._gen.spec.proto.runtime.v1 import runtime_pb2_grpc as layotto_grpc

from tests.conftest import SECRET_ENV, SidecarProcess


@pytest.fixture
def dapr_env(default_sidecar: SidecarProcess, monkeypatch: pytest.MonkeyPatch) -> SidecarProcess:
    """The environment `ottava run -- APP` gives an app: the SDK finds the sidecar from it."""
    monkeypatch.setenv("DAPR_GRPC_PORT", str(default_sidecar.grpc_port))
    monkeypatch.setenv("DAPR_HTTP_PORT", str(default_sidecar.http_port))
    return default_sidecar


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def test_state_round_trip_with_etags(dapr_env: SidecarProcess) -> None:
    key = unique("order")
    with DaprClient() as client:
        client.save_state("statestore", key, '{"qty": 1}')
        first = client.get_state("statestore", key)
        assert first.data == b'{"qty": 1}'
        assert first.etag

        client.save_state("statestore", key, '{"qty": 2}', etag=first.etag)
        second = client.get_state("statestore", key)
        assert second.data == b'{"qty": 2}'
        assert second.etag != first.etag

        with pytest.raises(DaprGrpcError) as stale:
            client.save_state("statestore", key, '{"qty": 3}', etag=first.etag)
        assert stale.value.code() == grpc.StatusCode.ABORTED
        assert "etag mismatch" in str(stale.value.details())
        assert client.get_state("statestore", key).data == b'{"qty": 2}'

        with pytest.raises(DaprGrpcError):
            client.delete_state("statestore", key, etag=first.etag)
        client.delete_state("statestore", key, etag=second.etag)
        gone = client.get_state("statestore", key)
        assert gone.data == b""
        assert gone.etag == ""


def test_first_write_wins_refuses_to_overwrite_without_etag(dapr_env: SidecarProcess) -> None:
    key = unique("first-write")
    first_write = StateOptions(concurrency=Concurrency.first_write)
    with DaprClient() as client:
        client.save_state("statestore", key, "a", options=first_write)
        with pytest.raises(DaprGrpcError) as err:
            client.save_state("statestore", key, "b", options=first_write)
        assert err.value.code() == grpc.StatusCode.ABORTED
        assert client.get_state("statestore", key).data == b"a"


def test_bulk_and_transaction(dapr_env: SidecarProcess) -> None:
    a, b, c = unique("a"), unique("b"), unique("c")
    with DaprClient() as client:
        client.save_bulk_state("statestore", [_state_item(a, "1"), _state_item(b, "2")])
        from dapr.clients.grpc._request import TransactionalStateOperation, TransactionOperationType

        client.execute_state_transaction(
            "statestore",
            [
                TransactionalStateOperation(operation_type=TransactionOperationType.upsert, key=c, data="3"),
                TransactionalStateOperation(operation_type=TransactionOperationType.delete, key=a),
            ],
        )
        items = {i.key: i.data for i in client.get_bulk_state("statestore", [a, b, c]).items}
        assert items == {a: b"", b: b"2", c: b"3"}


def _state_item(key: str, value: str) -> Any:
    from dapr.clients.grpc._state import StateItem

    return StateItem(key=key, value=value)


def test_configuration_read_and_subscription_update(dapr_env: SidecarProcess) -> None:
    key = unique("greeting")
    _layotto_save(dapr_env, key, "hello")
    updates: list[ConfigurationResponse] = []
    received = threading.Event()

    def handler(subscription_id: str, response: ConfigurationResponse) -> None:
        if key in response.items:
            updates.append(response)
            received.set()

    with DaprClient() as client:
        got = client.get_configuration("configstore", [key])
        assert got.items[key].value == "hello"
        subscription_id = client.subscribe_configuration("configstore", [key], handler)
        assert subscription_id

        _layotto_save(dapr_env, key, "bonjour")
        assert received.wait(timeout=10), "no configuration update reached the subscriber"
        assert updates[-1].items[key].value == "bonjour"
        assert client.unsubscribe_configuration("configstore", subscription_id)


def _layotto_save(sidecar: SidecarProcess, key: str, content: str) -> None:
    with grpc.insecure_channel(sidecar.grpc_address) as channel:
        layotto_grpc.RuntimeStub(channel).SaveConfiguration(
            layotto.SaveConfigurationRequest(
                store_name="configstore", items=[layotto.ConfigurationItem(key=key, content=content)]
            )
        )


def test_lock_take_and_release(dapr_env: SidecarProcess) -> None:
    resource = unique("invoice")
    with DaprClient() as client:
        assert client.try_lock("lockstore", resource, "worker-1", 30).success
        assert not client.try_lock("lockstore", resource, "worker-2", 30).success
        assert client.unlock("lockstore", resource, "worker-2").status == UnlockResponseStatus.lock_belongs_to_others
        assert client.unlock("lockstore", resource, "worker-1").status == UnlockResponseStatus.success
        assert client.unlock("lockstore", resource, "worker-1").status == UnlockResponseStatus.lock_does_not_exist
        with client.try_lock("lockstore", resource, "worker-2", 30) as lock:
            assert lock.success


def test_secret_from_the_environment_store(dapr_env: SidecarProcess) -> None:
    (name, value), *_ = SECRET_ENV.items()
    with DaprClient() as client:
        assert client.get_secret("secretstore", name).secret == {name: value}
        with pytest.raises(grpc.RpcError) as missing:
            client.get_secret("secretstore", "OTTAVA_NO_SUCH_SECRET")
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        assert "OTTAVA_NO_SUCH_SECRET" in str(missing.value.details())


def test_metadata_lists_the_components(dapr_env: SidecarProcess) -> None:
    with DaprClient() as client:
        client.set_metadata("team", "payments")
        metadata = client.get_metadata()
    assert metadata.application_id == "quickstart"
    components = {c.name: c.type for c in metadata.registered_components}
    assert components == {
        "statestore": "state.in-memory",
        "pubsub": "pubsub.in-memory",
        "lockstore": "lock.in-memory",
        "configstore": "configuration.in-memory",
        "sequencer": "sequencer.in-memory",
        "secretstore": "secretstores.local.env",
    }
    capabilities = {c.name: c.capabilities for c in metadata.registered_components}
    assert set(capabilities["statestore"]) == {"ETAG", "TRANSACTIONAL", "TTL"}
    assert metadata.extended_metadata["team"] == "payments"


async def test_aio_client(dapr_env: SidecarProcess) -> None:
    key = unique("aio")
    async with AsyncDaprClient() as client:
        await client.save_state("statestore", key, "async value")
        got = await client.get_state("statestore", key)
        assert got.data == b"async value"
        await client.delete_state("statestore", key, etag=got.etag)
        assert (await client.get_state("statestore", key)).data == b""
        assert (await client.try_lock("lockstore", key, "me", 10)).success
        assert (await client.unlock("lockstore", key, "me")).status == UnlockResponseStatus.success
        metadata = await client.get_metadata()
        assert "statestore" in {c.name for c in metadata.registered_components}
