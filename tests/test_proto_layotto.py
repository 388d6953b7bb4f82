"""Wire facts of the Layotto-compatible API that existing Layotto clients rely on.

The expected values were read from Layotto's own spec/proto/runtime/v1/runtime.proto
and appcallback.proto; they are checked here against the descriptors of Ottava's
generated code, so a change to proto/ that would break a Layotto client fails.
"""

from __future__ import annotations

from concurrent import futures

import grpc
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from ottava_sidecar._gen.spec.proto.runtime.v1 import (
    appcallback_pb2,
    runtime_pb2,
    runtime_pb2_grpc,
)

PKG = "spec.proto.runtime.v1"
EMPTY = "google.protobuf.Empty"

# rpc name -> (request type, response type, client streams, server streams)
RUNTIME_RPCS: dict[str, tuple[str, str, bool, bool]] = {
    "SayHello": ("SayHelloRequest", "SayHelloResponse", False, False),
    "InvokeService": ("InvokeServiceRequest", "InvokeResponse", False, False),
    "GetConfiguration": ("GetConfigurationRequest", "GetConfigurationResponse", False, False),
    "SaveConfiguration": ("SaveConfigurationRequest", EMPTY, False, False),
    "DeleteConfiguration": ("DeleteConfigurationRequest", EMPTY, False, False),
    "SubscribeConfiguration": (
        "SubscribeConfigurationRequest",
        "SubscribeConfigurationResponse",
        True,
        True,
    ),
    "TryLock": ("TryLockRequest", "TryLockResponse", False, False),
    "Unlock": ("UnlockRequest", "UnlockResponse", False, False),
    "LockKeepAlive": ("LockKeepAliveRequest", "LockKeepAliveResponse", False, False),
    "GetNextId": ("GetNextIdRequest", "GetNextIdResponse", False, False),
    "GetState": ("GetStateRequest", "GetStateResponse", False, False),
    "GetBulkState": ("GetBulkStateRequest", "GetBulkStateResponse", False, False),
    "SaveState": ("SaveStateRequest", EMPTY, False, False),
    "DeleteState": ("DeleteStateRequest", EMPTY, False, False),
    "DeleteBulkState": ("DeleteBulkStateRequest", EMPTY, False, False),
    "ExecuteStateTransaction": ("ExecuteStateTransactionRequest", EMPTY, False, False),
    "PublishEvent": ("PublishEventRequest", EMPTY, False, False),
    "SubscribeTopicEvents": (
        "SubscribeTopicEventsRequest",
        "SubscribeTopicEventsResponse",
        True,
        True,
    ),
    "GetFile": ("GetFileRequest", "GetFileResponse", False, True),
    "PutFile": ("PutFileRequest", EMPTY, True, False),
    "ListFile": ("ListFileRequest", "ListFileResp", False, False),
    "DelFile": ("DelFileRequest", EMPTY, False, False),
    "GetFileMeta": ("GetFileMetaRequest", "GetFileMetaResponse", False, False),
    "InvokeBinding": ("InvokeBindingRequest", "InvokeBindingResponse", False, False),
    "GetSecret": ("GetSecretRequest", "GetSecretResponse", False, False),
    "GetBulkSecret": ("GetBulkSecretRequest", "GetBulkSecretResponse", False, False),
}

APPCALLBACK_RPCS: dict[str, tuple[str, str, bool, bool]] = {
    "ListTopicSubscriptions": (EMPTY, "ListTopicSubscriptionsResponse", False, False),
    "OnTopicEvent": ("TopicEventRequest", "TopicEventResponse", False, False),
}

T = FieldDescriptor
MAP = "map"  # repeated <Name>Entry message
REP = "repeated"

# message -> field name -> (number, type, "repeated"/"map"/"")
FIELDS: dict[str, dict[str, tuple[int, int, str]]] = {
    "GetConfigurationRequest": {
        "store_name": (1, T.TYPE_STRING, ""),
        "app_id": (2, T.TYPE_STRING, ""),
        "group": (3, T.TYPE_STRING, ""),
        "label": (4, T.TYPE_STRING, ""),
        "keys": (5, T.TYPE_STRING, REP),
        "metadata": (6, T.TYPE_MESSAGE, MAP),
        "subscribe_update": (7, T.TYPE_BOOL, ""),
    },
    "ConfigurationItem": {
        "key": (1, T.TYPE_STRING, ""),
        "content": (2, T.TYPE_STRING, ""),
        "group": (3, T.TYPE_STRING, ""),
        "label": (4, T.TYPE_STRING, ""),
        "tags": (5, T.TYPE_MESSAGE, MAP),
        "metadata": (6, T.TYPE_MESSAGE, MAP),
    },
    "SaveConfigurationRequest": {
        "store_name": (1, T.TYPE_STRING, ""),
        "app_id": (2, T.TYPE_STRING, ""),
        "items": (3, T.TYPE_MESSAGE, REP),
        "metadata": (4, T.TYPE_MESSAGE, MAP),
    },
    "SubscribeConfigurationResponse": {
        "store_name": (1, T.TYPE_STRING, ""),
        "app_id": (2, T.TYPE_STRING, ""),
        "items": (3, T.TYPE_MESSAGE, REP),
    },
    "TryLockRequest": {
        "store_name": (1, T.TYPE_STRING, ""),
        "resource_id": (2, T.TYPE_STRING, ""),
        "lock_owner": (3, T.TYPE_STRING, ""),
        "expire": (4, T.TYPE_INT32, ""),
    },
    "TryLockResponse": {"success": (1, T.TYPE_BOOL, "")},
    "UnlockRequest": {
        "store_name": (1, T.TYPE_STRING, ""),
        "resource_id": (2, T.TYPE_STRING, ""),
        "lock_owner": (3, T.TYPE_STRING, ""),
    },
    "UnlockResponse": {"status": (1, T.TYPE_ENUM, "")},
    "GetNextIdRequest": {
        "store_name": (1, T.TYPE_STRING, ""),
        "key": (2, T.TYPE_STRING, ""),
        "options": (3, T.TYPE_MESSAGE, ""),
        "metadata": (4, T.TYPE_MESSAGE, MAP),
    },
    "SequencerOptions": {"increment": (1, T.TYPE_ENUM, "")},
    "GetNextIdResponse": {"next_id": (1, T.TYPE_INT64, "")},
    "GetStateRequest": {
        "store_name": (1, T.TYPE_STRING, ""),
        "key": (2, T.TYPE_STRING, ""),
        "consistency": (3, T.TYPE_ENUM, ""),
        "metadata": (4, T.TYPE_MESSAGE, MAP),
    },
    "SaveStateRequest": {
        "store_name": (1, T.TYPE_STRING, ""),
        "states": (2, T.TYPE_MESSAGE, REP),
    },
    "StateItem": {
        "key": (1, T.TYPE_STRING, ""),
        "value": (2, T.TYPE_BYTES, ""),
        "etag": (3, T.TYPE_MESSAGE, ""),
        "metadata": (4, T.TYPE_MESSAGE, MAP),
        "options": (5, T.TYPE_MESSAGE, ""),
    },
    "ExecuteStateTransactionRequest": {
        "storeName": (1, T.TYPE_STRING, ""),
        "operations": (2, T.TYPE_MESSAGE, REP),
        "metadata": (3, T.TYPE_MESSAGE, MAP),
    },
    "TransactionalStateOperation": {
        "operationType": (1, T.TYPE_STRING, ""),
        "request": (2, T.TYPE_MESSAGE, ""),
    },
    "PublishEventRequest": {
        "pubsub_name": (1, T.TYPE_STRING, ""),
        "topic": (2, T.TYPE_STRING, ""),
        "data": (3, T.TYPE_BYTES, ""),
        "data_content_type": (4, T.TYPE_STRING, ""),
        "metadata": (5, T.TYPE_MESSAGE, MAP),
    },
    "SubscribeTopicEventsRequest": {
        "initial_request": (1, T.TYPE_MESSAGE, ""),
        "event_processed": (2, T.TYPE_MESSAGE, ""),
    },
    "SubscribeTopicEventsRequestInitial": {
        "pubsub_name": (1, T.TYPE_STRING, ""),
        "topic": (2, T.TYPE_STRING, ""),
        "metadata": (3, T.TYPE_MESSAGE, MAP),
        "dead_letter_topic": (4, T.TYPE_STRING, ""),
    },
    "InvokeServiceRequest": {
        "id": (1, T.TYPE_STRING, ""),
        "message": (3, T.TYPE_MESSAGE, ""),
    },
    "CommonInvokeRequest": {
        "method": (1, T.TYPE_STRING, ""),
        "data": (2, T.TYPE_MESSAGE, ""),
        "content_type": (3, T.TYPE_STRING, ""),
        "http_extension": (4, T.TYPE_MESSAGE, ""),
    },
    "GetSecretRequest": {
        "store_name": (1, T.TYPE_STRING, ""),
        "key": (2, T.TYPE_STRING, ""),
        "metadata": (3, T.TYPE_MESSAGE, MAP),
    },
    "InvokeBindingRequest": {
        "name": (1, T.TYPE_STRING, ""),
        "data": (2, T.TYPE_BYTES, ""),
        "metadata": (3, T.TYPE_MESSAGE, MAP),
        "operation": (4, T.TYPE_STRING, ""),
    },
    "TopicEventRequest": {
        "id": (1, T.TYPE_STRING, ""),
        "source": (2, T.TYPE_STRING, ""),
        "type": (3, T.TYPE_STRING, ""),
        "spec_version": (4, T.TYPE_STRING, ""),
        "data_content_type": (5, T.TYPE_STRING, ""),
        "topic": (6, T.TYPE_STRING, ""),
        "data": (7, T.TYPE_BYTES, ""),
        "pubsub_name": (8, T.TYPE_STRING, ""),
        "metadata": (10, T.TYPE_MESSAGE, MAP),
    },
    "TopicSubscription": {
        "pubsub_name": (1, T.TYPE_STRING, ""),
        "topic": (2, T.TYPE_STRING, ""),
        "metadata": (3, T.TYPE_MESSAGE, MAP),
    },
}

# enum full name (relative to the package) -> value name -> number
ENUMS: dict[str, dict[str, int]] = {
    "UnlockResponse.Status": {
        "SUCCESS": 0,
        "LOCK_UNEXIST": 1,
        "LOCK_BELONG_TO_OTHERS": 2,
        "INTERNAL_ERROR": 3,
    },
    "LockKeepAliveResponse.Status": {
        "SUCCESS": 0,
        "LOCK_UNEXIST": 1,
        "LOCK_BELONG_TO_OTHERS": 2,
        "INTERNAL_ERROR": 3,
    },
    "SequencerOptions.AutoIncrement": {"WEAK": 0, "STRONG": 1},
    "StateOptions.StateConcurrency": {
        "CONCURRENCY_UNSPECIFIED": 0,
        "CONCURRENCY_FIRST_WRITE": 1,
        "CONCURRENCY_LAST_WRITE": 2,
    },
    "StateOptions.StateConsistency": {
        "CONSISTENCY_UNSPECIFIED": 0,
        "CONSISTENCY_EVENTUAL": 1,
        "CONSISTENCY_STRONG": 2,
    },
    "HTTPExtension.Verb": {
        "NONE": 0,
        "GET": 1,
        "HEAD": 2,
        "POST": 3,
        "PUT": 4,
        "DELETE": 5,
        "CONNECT": 6,
        "OPTIONS": 7,
        "TRACE": 8,
        "PATCH": 9,
    },
    "TopicEventResponse.TopicEventResponseStatus": {"SUCCESS": 0, "RETRY": 1, "DROP": 2},
}


def _full(name: str) -> str:
    return name if name.startswith("google.") else f"{PKG}.{name}"


def _message(name: str) -> Descriptor:
    for module in (runtime_pb2, appcallback_pb2):
        found: Descriptor | None = module.DESCRIPTOR.message_types_by_name.get(name)
        if found is not None:
            return found
    raise AssertionError(f"message {name} not defined")


def test_files_share_layotto_package() -> None:
    assert runtime_pb2.DESCRIPTOR.package == PKG
    assert appcallback_pb2.DESCRIPTOR.package == PKG


@pytest.mark.parametrize(
    ("module", "service", "rpcs"),
    [(runtime_pb2, "Runtime", RUNTIME_RPCS), (appcallback_pb2, "AppCallback", APPCALLBACK_RPCS)],
)
def test_service_rpcs(module: object, service: str, rpcs: dict[str, tuple[str, str, bool, bool]]) -> None:
    svc = module.DESCRIPTOR.services_by_name[service]  # type: ignore[attr-defined]
    assert svc.full_name == f"{PKG}.{service}"
    assert set(svc.methods_by_name) == set(rpcs)
    for name, (req, resp, client_streams, server_streams) in rpcs.items():
        method = svc.methods_by_name[name]
        assert method.input_type.full_name == _full(req), name
        assert method.output_type.full_name == _full(resp), name
        assert method.client_streaming is client_streams, name
        assert method.server_streaming is server_streams, name


class _LockOnly(runtime_pb2_grpc.RuntimeServicer):
    def TryLock(
        self, request: runtime_pb2.TryLockRequest, context: grpc.ServicerContext
    ) -> runtime_pb2.TryLockResponse:
        return runtime_pb2.TryLockResponse(success=request.lock_owner == "me")


def test_generated_stub_and_servicer_talk_over_grpc() -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    # The stubs mark every rpc abstract; at run time the base class answers
    # UNIMPLEMENTED for the ones not overridden, which is what this checks.
    servicer = _LockOnly()  # type: ignore[abstract]
    runtime_pb2_grpc.add_RuntimeServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            # The raw method path is what a Layotto client puts on the wire.
            raw = channel.unary_unary(
                f"/{PKG}.Runtime/TryLock",
                request_serializer=runtime_pb2.TryLockRequest.SerializeToString,
                response_deserializer=runtime_pb2.TryLockResponse.FromString,
            )
            assert raw(runtime_pb2.TryLockRequest(lock_owner="me"), timeout=10).success
            stub = runtime_pb2_grpc.RuntimeStub(channel)
            assert not stub.TryLock(runtime_pb2.TryLockRequest(lock_owner="x"), timeout=10).success
            with pytest.raises(grpc.RpcError) as err:
                stub.GetNextId(runtime_pb2.GetNextIdRequest(key="k"), timeout=10)
            assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        server.stop(None)


@pytest.mark.parametrize("message", sorted(FIELDS))
def test_field_numbers(message: str) -> None:
    desc = _message(message)
    expected = FIELDS[message]
    for name, (number, ftype, kind) in expected.items():
        field = desc.fields_by_name.get(name)
        assert field is not None, f"{message}.{name} missing"
        assert field.number == number, f"{message}.{name}"
        assert field.type == ftype, f"{message}.{name}"
        is_map = field.message_type is not None and field.message_type.GetOptions().map_entry
        assert field.is_repeated == (kind in (REP, MAP)), f"{message}.{name}"
        assert is_map == (kind == MAP), f"{message}.{name}"


def test_no_unexpected_fields_on_key_messages() -> None:
    # A field Layotto does not have would be silently dropped by its clients.
    for message, expected in FIELDS.items():
        assert set(_message(message).fields_by_name) == set(expected), message


def test_oneofs_and_optional() -> None:
    req = _message("SubscribeTopicEventsRequest")
    assert [f.name for f in req.oneofs_by_name["subscribe_topic_events_request_type"].fields] == [
        "initial_request",
        "event_processed",
    ]
    resp = _message("SubscribeTopicEventsResponse")
    oneof = resp.oneofs_by_name["subscribe_topic_events_response_type"]
    assert [(f.name, f.number) for f in oneof.fields] == [
        ("initial_response", 1),
        ("event_message", 2),
    ]
    event_type = resp.fields_by_name["event_message"].message_type
    assert event_type is not None
    assert event_type.full_name == f"{PKG}.TopicEventRequest"
    initial = _message("SubscribeTopicEventsRequestInitial")
    assert initial.fields_by_name["dead_letter_topic"].has_presence


@pytest.mark.parametrize("enum", sorted(ENUMS))
def test_enum_values(enum: str) -> None:
    outer, inner = enum.split(".")
    desc = _message(outer).enum_types_by_name[inner]
    assert {v.name: v.number for v in desc.values} == ENUMS[enum]


def test_try_lock_request_bytes() -> None:
    # Hand-encoded: tags 1-3 length-delimited strings, tag 4 varint.
    req = runtime_pb2.TryLockRequest(store_name="s", resource_id="r", lock_owner="o", expire=5)
    assert req.SerializeToString() == b"\x0a\x01s\x12\x01r\x1a\x01o\x20\x05"
    assert runtime_pb2.TryLockRequest.FromString(b"\x0a\x01s\x20\x05").expire == 5


def test_topic_event_metadata_is_field_10() -> None:
    event = appcallback_pb2.TopicEventRequest(metadata={"k": "v"})
    # field 10, wire type 2 -> tag byte 0x52; entry: key (0x0a) and value (0x12).
    assert event.SerializeToString() == b"\x52\x06\x0a\x01k\x12\x01v"
