"""The Dapr runtime API (`dapr.proto.runtime.v1.Dapr`), translated onto Ottava's APIs.

The calls Layotto shares with Dapr come from the mixins of `state`, `pubsub`,
`secrets` and `invocation`, which this service hands Dapr's response classes.
"""

import asyncio
import contextlib
import functools
import uuid
from collections.abc import AsyncIterator

from dapr.proto.common.v1 import common_pb2
from dapr.proto.runtime.v1 import (
    binding_pb2,
    configuration_pb2,
    dapr_pb2,
    dapr_pb2_grpc,
    lock_pb2,
    metadata_pb2,
    pubsub_pb2,
    secret_pb2,
    state_pb2,
)
from google.protobuf import empty_pb2

from ottava_sidecar.api import errors
from ottava_sidecar.api.apis import Apis
from ottava_sidecar.api.grpc import bindings, invocation, pubsub, secrets, state, state_query
from ottava_sidecar.api.grpc.calls import Context, answer_unimplemented, streaming, unary
from ottava_sidecar.api.pubsub import BulkEntry
from ottava_sidecar.appchannel.grpc import dapr_event
from ottava_sidecar.components.configuration.base import ConfigurationItem, ConfigurationWatch
from ottava_sidecar.messaging.subscriptions import SubscriptionSpec

SERVICE = "dapr.proto.runtime.v1.Dapr"
_TOPIC_EVENTS = pubsub.TopicEventsMessages(
    pubsub_pb2.SubscribeTopicEventsResponseAlpha1,
    pubsub_pb2.SubscribeTopicEventsResponseInitialAlpha1,
    functools.partial(dapr_event, path=""),
)


def _dapr_items(items: list[ConfigurationItem]) -> dict[str, common_pb2.ConfigurationItem]:
    return {
        item.key: common_pb2.ConfigurationItem(value=item.content, version=item.version, metadata=item.metadata)
        for item in items
    }


def _metadata_subscriptions(specs: list[SubscriptionSpec]) -> list[metadata_pb2.PubsubSubscription]:
    """The app's subscriptions as GetMetadata lists them."""
    return [
        metadata_pb2.PubsubSubscription(
            pubsub_name=s.pubsub_name,
            topic=s.topic,
            metadata=s.metadata,
            rules=metadata_pb2.PubsubSubscriptionRules(
                rules=[
                    metadata_pb2.PubsubSubscriptionRule(match=r["match"], path=r["path"]) for r in s.describe()["rules"]
                ]
            ),
            dead_letter_topic=s.dead_letter_topic,
            type=metadata_pb2.PubsubSubscriptionType.Value(s.kind.value),
        )
        for s in specs
    ]


class DaprService(
    state.StateCalls[state_pb2.GetStateResponse, state_pb2.GetBulkStateResponse],
    state_query.StateQueryCalls,
    pubsub.PubSubCalls,
    secrets.SecretCalls[secret_pb2.GetSecretResponse, secret_pb2.GetBulkSecretResponse],
    invocation.InvocationCalls[common_pb2.InvokeResponse],
    bindings.BindingCalls[binding_pb2.InvokeBindingResponse],
    dapr_pb2_grpc.DaprServicer,
):
    surface = "dapr"  # the label of its calls in metrics (calls.py)
    state_messages = state_pb2
    secret_messages = secret_pb2
    invoke_messages = common_pb2
    binding_messages = binding_pb2

    def __init__(self, apis: Apis) -> None:
        self.apis = apis
        self._watches: dict[str, ConfigurationWatch] = {}

    # --- configuration -------------------------------------------------------------

    @unary("configuration")
    async def GetConfiguration(
        self, request: configuration_pb2.GetConfigurationRequest, context: Context
    ) -> configuration_pb2.GetConfigurationResponse:
        query = self.apis.configuration.dapr_query(list(request.keys), request.metadata)
        items = await self.apis.configuration.get(request.store_name, query)
        return configuration_pb2.GetConfigurationResponse(items=_dapr_items(items))

    GetConfigurationAlpha1 = GetConfiguration

    @streaming("configuration")
    async def SubscribeConfiguration(
        self, request: configuration_pb2.SubscribeConfigurationRequest, context: Context
    ) -> AsyncIterator[configuration_pb2.SubscribeConfigurationResponse]:
        # Dapr's protocol: the first message carries only the subscription id, which the
        # client needs for UnsubscribeConfiguration; changes follow.
        query = self.apis.configuration.dapr_query(list(request.keys), request.metadata)
        subscription_id = str(uuid.uuid4())
        watch = await self.apis.configuration.subscribe(request.store_name, query, subscription_id=subscription_id)
        self._watches[subscription_id] = watch
        try:
            yield configuration_pb2.SubscribeConfigurationResponse(id=subscription_id)
            async for changes in self.apis.configuration.changes(request.store_name, watch):
                yield configuration_pb2.SubscribeConfigurationResponse(id=subscription_id, items=_dapr_items(changes))
        finally:
            self._watches.pop(subscription_id, None)
            watch.close(discard=True)

    SubscribeConfigurationAlpha1 = SubscribeConfiguration

    @unary("configuration")
    async def UnsubscribeConfiguration(
        self, request: configuration_pb2.UnsubscribeConfigurationRequest, context: Context
    ) -> configuration_pb2.UnsubscribeConfigurationResponse:
        watch = self._watches.pop(request.id, None)
        if watch is None:
            return configuration_pb2.UnsubscribeConfigurationResponse(
                ok=False, message=f"subscription {request.id!r} not found"
            )
        watch.close()
        return configuration_pb2.UnsubscribeConfigurationResponse(ok=True)

    UnsubscribeConfigurationAlpha1 = UnsubscribeConfiguration

    # --- lock ----------------------------------------------------------------------

    @unary("lock")
    async def TryLockAlpha1(self, request: lock_pb2.TryLockRequest, context: Context) -> lock_pb2.TryLockResponse:
        success = await self.apis.lock.try_lock(
            request.store_name, request.resource_id, request.lock_owner, request.expiry_in_seconds
        )
        return lock_pb2.TryLockResponse(success=success)

    @unary("lock")
    async def UnlockAlpha1(self, request: lock_pb2.UnlockRequest, context: Context) -> lock_pb2.UnlockResponse:
        status = await self.apis.lock.unlock(request.store_name, request.resource_id, request.lock_owner)
        return lock_pb2.UnlockResponse(status=lock_pb2.UnlockResponse.Status.ValueType(status))

    # --- pub/sub -------------------------------------------------------------------

    @streaming("pubsub")
    def SubscribeTopicEventsAlpha1(
        self, request_iterator: AsyncIterator[pubsub_pb2.SubscribeTopicEventsRequestAlpha1], context: Context
    ) -> AsyncIterator[pubsub_pb2.SubscribeTopicEventsResponseAlpha1]:
        return self.topic_events(request_iterator, "SubscribeTopicEventsAlpha1", _TOPIC_EVENTS)

    @unary("pubsub")
    async def BulkPublishEvent(
        self, request: pubsub_pb2.BulkPublishRequest, context: Context
    ) -> pubsub_pb2.BulkPublishResponse:
        entries = [BulkEntry(e.entry_id, e.event, e.content_type, dict(e.metadata)) for e in request.entries]
        result = await self.apis.pubsub.bulk_publish(
            request.pubsub_name, request.topic, entries, dict(request.metadata)
        )
        await context.send_initial_metadata(result.message_id_metadata())
        return pubsub_pb2.BulkPublishResponse(
            failedEntries=[
                pubsub_pb2.BulkPublishResponseFailedEntry(entry_id=entry, error=error)
                for entry, error in result.failed.items()
            ]
        )

    BulkPublishEventAlpha1 = BulkPublishEvent

    # --- metadata and lifecycle ----------------------------------------------------

    @unary("metadata")
    async def GetMetadata(
        self, request: metadata_pb2.GetMetadataRequest, context: Context
    ) -> metadata_pb2.GetMetadataResponse:
        app = self.apis.metadata.app
        return metadata_pb2.GetMetadataResponse(
            id=self.apis.metadata.app_id,
            runtime_version=self.apis.metadata.version,
            registered_components=[metadata_pb2.RegisteredComponents(**c) for c in self.apis.metadata.components()],
            extended_metadata=self.apis.metadata.extended,
            subscriptions=_metadata_subscriptions(self.apis.metadata.subscriptions()),
            app_connection_properties=metadata_pb2.AppConnectionProperties(
                port=app.port or 0, protocol=app.protocol, channel_address=app.address
            ),
        )

    @unary("metadata")
    async def SetMetadata(self, request: metadata_pb2.SetMetadataRequest, context: Context) -> empty_pb2.Empty:
        if not request.key:
            raise errors.invalid_argument("metadata key is empty")
        self.apis.metadata.set(request.key, request.value)
        return empty_pb2.Empty()

    @unary("lifecycle")
    async def Shutdown(self, request: dapr_pb2.ShutdownRequest, context: Context) -> empty_pb2.Empty:
        # Answer first, then stop: the caller gets its reply before the server drains.
        asyncio.get_running_loop().call_soon(self.apis.metadata.request_shutdown)
        return empty_pb2.Empty()

    def close(self) -> None:
        for watch in list(self._watches.values()):
            with contextlib.suppress(Exception):
                watch.close()


answer_unimplemented(DaprService, dapr_pb2_grpc.DaprServicer, SERVICE)
