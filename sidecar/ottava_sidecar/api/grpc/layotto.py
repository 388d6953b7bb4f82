"""The Layotto runtime API (`spec.proto.runtime.v1.Runtime`), translated onto Ottava's APIs.

The calls Layotto shares with Dapr come from the mixins of `state`, `pubsub`,
`secrets` and `invocation`, which this service hands Layotto's response classes.
"""

from collections.abc import AsyncIterator

from google.protobuf import empty_pb2

from ottava_sidecar._gen.spec.proto.runtime.v1 import runtime_pb2 as pb
from ottava_sidecar._gen.spec.proto.runtime.v1 import runtime_pb2_grpc
from ottava_sidecar.api.apis import Apis
from ottava_sidecar.api.grpc import bindings, files, invocation, pubsub, secrets, state
from ottava_sidecar.api.grpc.calls import Context, answer_unimplemented, streaming, unary
from ottava_sidecar.appchannel.grpc import layotto_event
from ottava_sidecar.components.configuration.base import ConfigurationItem
from ottava_sidecar.components.sequencer.base import Increment

SERVICE = "spec.proto.runtime.v1.Runtime"
_GREETING = "greeting"  # what Layotto's quick start prints (its `helloworld` component's `hello` setting)
_TOPIC_EVENTS = pubsub.TopicEventsMessages(
    pb.SubscribeTopicEventsResponse, pb.SubscribeTopicEventsResponseInitial, layotto_event
)


def _to_message(item: ConfigurationItem) -> pb.ConfigurationItem:
    return pb.ConfigurationItem(
        key=item.key, content=item.content, group=item.group, label=item.label, tags=item.tags, metadata=item.metadata
    )


def _from_message(item: pb.ConfigurationItem) -> ConfigurationItem:
    return ConfigurationItem(
        key=item.key,
        content=item.content,
        group=item.group,
        label=item.label,
        tags=dict(item.tags),
        metadata=dict(item.metadata),
    )


class LayottoService(
    state.StateCalls[pb.GetStateResponse, pb.GetBulkStateResponse],
    pubsub.PubSubCalls,
    secrets.SecretCalls[pb.GetSecretResponse, pb.GetBulkSecretResponse],
    invocation.InvocationCalls[pb.InvokeResponse],
    files.FileCalls,
    bindings.BindingCalls[pb.InvokeBindingResponse],
    runtime_pb2_grpc.RuntimeServicer,
):
    surface = "layotto"  # the label of its calls in metrics (calls.py)
    state_messages = pb
    secret_messages = pb
    invoke_messages = pb
    binding_messages = pb

    def __init__(self, apis: Apis) -> None:
        self.apis = apis

    # --- hello ---------------------------------------------------------------------

    @unary("hello")
    async def SayHello(self, request: pb.SayHelloRequest, context: Context) -> pb.SayHelloResponse:
        """Layotto's connectivity check, answered as its quick start's `helloworld` component does.

        Layotto looks `service_name` up among configured hello components; Ottava has none
        to configure, so every name gets the quick start's answer: "greeting", followed by
        ", <name>" when a name is given, with the request's data sent back.
        """
        greeting = f"{_GREETING}, {request.name}" if request.name else _GREETING
        return pb.SayHelloResponse(hello=greeting, data=request.data if request.HasField("data") else None)

    # --- configuration -------------------------------------------------------------

    @unary("configuration")
    async def GetConfiguration(
        self, request: pb.GetConfigurationRequest, context: Context
    ) -> pb.GetConfigurationResponse:
        query = self.apis.configuration.query(request.app_id, request.group, request.label, list(request.keys))
        items = await self.apis.configuration.get(request.store_name, query)
        return pb.GetConfigurationResponse(items=[_to_message(i) for i in items])

    @unary("configuration")
    async def SaveConfiguration(self, request: pb.SaveConfigurationRequest, context: Context) -> empty_pb2.Empty:
        await self.apis.configuration.save(
            request.store_name, request.app_id, [_from_message(i) for i in request.items]
        )
        return empty_pb2.Empty()

    @unary("configuration")
    async def DeleteConfiguration(self, request: pb.DeleteConfigurationRequest, context: Context) -> empty_pb2.Empty:
        query = self.apis.configuration.query(request.app_id, request.group, request.label, list(request.keys))
        await self.apis.configuration.delete(request.store_name, query)
        return empty_pb2.Empty()

    @streaming("configuration")
    async def SubscribeConfiguration(
        self, request_iterator: AsyncIterator[pb.SubscribeConfigurationRequest], context: Context
    ) -> AsyncIterator[pb.SubscribeConfigurationResponse]:
        """Each request adds a subscription; its current items come first, then every change."""
        configuration = self.apis.configuration
        subscriptions = (
            (r.store_name, configuration.query(r.app_id, r.group, r.label, list(r.keys)))
            async for r in request_iterator
        )
        async for store_name, app_id, items in configuration.watch(subscriptions):
            yield pb.SubscribeConfigurationResponse(
                store_name=store_name, app_id=app_id, items=[_to_message(i) for i in items]
            )

    # --- lock and sequencer --------------------------------------------------------

    @unary("lock")
    async def TryLock(self, request: pb.TryLockRequest, context: Context) -> pb.TryLockResponse:
        success = await self.apis.lock.try_lock(
            request.store_name, request.resource_id, request.lock_owner, request.expire
        )
        return pb.TryLockResponse(success=success)

    @unary("lock")
    async def Unlock(self, request: pb.UnlockRequest, context: Context) -> pb.UnlockResponse:
        status = await self.apis.lock.unlock(request.store_name, request.resource_id, request.lock_owner)
        return pb.UnlockResponse(status=pb.UnlockResponse.Status.ValueType(status))

    @unary("lock")
    async def LockKeepAlive(self, request: pb.LockKeepAliveRequest, context: Context) -> pb.LockKeepAliveResponse:
        status = await self.apis.lock.keep_alive(
            request.store_name, request.resource_id, request.lock_owner, request.expire
        )
        return pb.LockKeepAliveResponse(status=pb.LockKeepAliveResponse.Status.ValueType(status))

    @unary("sequencer")
    async def GetNextId(self, request: pb.GetNextIdRequest, context: Context) -> pb.GetNextIdResponse:
        increment = Increment.STRONG if request.options.increment == pb.SequencerOptions.STRONG else Increment.WEAK
        return pb.GetNextIdResponse(
            next_id=await self.apis.sequencer.next_id(request.store_name, request.key, increment)
        )

    # --- pub/sub -------------------------------------------------------------------

    @streaming("pubsub")
    def SubscribeTopicEvents(
        self, request_iterator: AsyncIterator[pb.SubscribeTopicEventsRequest], context: Context
    ) -> AsyncIterator[pb.SubscribeTopicEventsResponse]:
        return self.topic_events(request_iterator, "SubscribeTopicEvents", _TOPIC_EVENTS)


answer_unimplemented(LayottoService, runtime_pb2_grpc.RuntimeServicer, SERVICE)
