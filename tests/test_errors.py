"""Bad calls get a clear error that names the store, key or method — and lose nothing."""

from collections.abc import Callable
from typing import Any

import grpc
import pytest
from dapr.proto.common.v1 import common_pb2
from dapr.proto.runtime.v1 import (
    actors_pb2,
    configuration_pb2,
    dapr_pb2_grpc,
    lock_pb2,
    secret_pb2,
    state_pb2,
)

from tests.conftest import SidecarProcess


@pytest.fixture
def dapr(default_sidecar: SidecarProcess) -> dapr_pb2_grpc.DaprStub:
    channel = grpc.insecure_channel(default_sidecar.grpc_address)
    return dapr_pb2_grpc.DaprStub(channel)


class RpcFailure:
    """The status of a failed call, read off the grpc error."""

    def __init__(self, err: Any) -> None:
        self.code: grpc.StatusCode = err.code()
        self.details: str = err.details() or ""


def rpc_error(call: Callable[[Any], Any], request: object) -> RpcFailure:
    with pytest.raises(grpc.RpcError) as err:
        call(request)
    return RpcFailure(err.value)


def test_unknown_state_store_is_named(dapr: dapr_pb2_grpc.DaprStub) -> None:
    err = rpc_error(dapr.GetState, state_pb2.GetStateRequest(store_name="nosuchstore", key="k"))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "nosuchstore" in err.details


@pytest.mark.parametrize(
    ("method", "request_message", "store"),
    [
        ("GetConfiguration", configuration_pb2.GetConfigurationRequest(store_name="nocfg", keys=["a"]), "nocfg"),
        (
            "TryLockAlpha1",
            lock_pb2.TryLockRequest(store_name="nolock", resource_id="r", lock_owner="o", expiry_in_seconds=5),
            "nolock",
        ),
        ("GetSecret", secret_pb2.GetSecretRequest(store_name="novault", key="k"), "novault"),
    ],
)
def test_unknown_store_of_each_building_block_is_named(
    dapr: dapr_pb2_grpc.DaprStub, method: str, request_message: object, store: str
) -> None:
    err = rpc_error(getattr(dapr, method), request_message)
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert store in err.details


def test_a_store_of_another_building_block_is_not_found(dapr: dapr_pb2_grpc.DaprStub) -> None:
    err = rpc_error(dapr.GetState, state_pb2.GetStateRequest(store_name="lockstore", key="k"))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "state store lockstore is not found" in err.details


def test_missing_key_is_invalid_argument(dapr: dapr_pb2_grpc.DaprStub) -> None:
    err = rpc_error(dapr.GetState, state_pb2.GetStateRequest(store_name="statestore", key=""))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "key is empty" in err.details and "statestore" in err.details


def test_invalid_ttl_is_rejected_and_nothing_is_saved(dapr: dapr_pb2_grpc.DaprStub) -> None:
    item = common_pb2.StateItem(key="ttl-bad", value=b"v", metadata={"ttlInSeconds": "soon"})
    err = rpc_error(dapr.SaveState, state_pb2.SaveStateRequest(store_name="statestore", states=[item]))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "ttlInSeconds" in err.details
    assert dapr.GetState(state_pb2.GetStateRequest(store_name="statestore", key="ttl-bad")).data == b""


def test_failed_transaction_changes_nothing(dapr: dapr_pb2_grpc.DaprStub) -> None:
    dapr.SaveState(
        state_pb2.SaveStateRequest(store_name="statestore", states=[common_pb2.StateItem(key="tx-a", value=b"old")])
    )
    operations = [
        state_pb2.TransactionalStateOperation(
            operationType="upsert", request=common_pb2.StateItem(key="tx-a", value=b"new")
        ),
        state_pb2.TransactionalStateOperation(
            operationType="upsert",
            request=common_pb2.StateItem(key="tx-b", value=b"new", etag=common_pb2.Etag(value="999999")),
        ),
    ]
    err = rpc_error(
        dapr.ExecuteStateTransaction,
        state_pb2.ExecuteStateTransactionRequest(storeName="statestore", operations=operations),
    )
    assert err.code == grpc.StatusCode.ABORTED
    assert dapr.GetState(state_pb2.GetStateRequest(store_name="statestore", key="tx-a")).data == b"old"


def test_lock_with_non_positive_expiry(dapr: dapr_pb2_grpc.DaprStub) -> None:
    request = lock_pb2.TryLockRequest(store_name="lockstore", resource_id="r", lock_owner="o", expiry_in_seconds=0)
    err = rpc_error(dapr.TryLockAlpha1, request)
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "ExpiryInSeconds" in err.details


def test_unimplemented_dapr_method_is_named(dapr: dapr_pb2_grpc.DaprStub) -> None:
    err = rpc_error(dapr.GetActorState, actors_pb2.GetActorStateRequest(actor_type="cart", actor_id="1", key="k"))
    assert err.code == grpc.StatusCode.UNIMPLEMENTED
    assert "dapr.proto.runtime.v1.Dapr/GetActorState" in err.details
