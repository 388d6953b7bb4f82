"""The Dapr runtime API (`dapr.proto.runtime.v1.Dapr`), translated onto Ottava's APIs."""

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
from dapr.proto.common.v1 import common_pb2
from dapr.proto.runtime.v1 import (
    configuration_pb2,
    dapr_pb2,
    dapr_pb2_grpc,
    lock_pb2,
    metadata_pb2,
    secret_pb2,
    state_pb2,
)
from google.protobuf import empty_pb2

from ottava_sidecar.api import errors
from ottava_sidecar.api.configuration import ConfigurationApi
from ottava_sidecar.api.grpc.calls import answer_unimplemented, streaming, unary
from ottava_sidecar.api.grpc.dapr_messaging import DaprMessaging, metadata_subscriptions
from ottava_sidecar.api.grpc.state_calls import StateCalls
from ottava_sidecar.api.invocation import InvocationApi
from ottava_sidecar.api.lock import LockApi
from ottava_sidecar.api.metadata import MetadataApi
from ottava_sidecar.api.pubsub import PubSubApi
from ottava_sidecar.api.secrets import SecretsApi
from ottava_sidecar.api.state import StateApi
from ottava_sidecar.components.configuration.base import ConfigurationItem, ConfigurationWatch

Context = grpc.aio.ServicerContext[Any, Any]
SERVICE = "dapr.proto.runtime.v1.Dapr"


def _dapr_items(items: list[ConfigurationItem]) -> dict[str, common_pb2.ConfigurationItem]:
    return {
        item.key: common_pb2.ConfigurationItem(value=item.content, version=item.version, metadata=item.metadata)
        for item in items
    }


class DaprService(StateCalls, DaprMessaging, dapr_pb2_grpc.DaprServicer):
    """Pub/sub and service invocation come from `DaprMessaging`."""

    def __init__(
        self,
        state: StateApi,
        configuration: ConfigurationApi,
        lock: LockApi,
        secrets: SecretsApi,
        metadata: MetadataApi,
        pubsub: PubSubApi,
        invocation: InvocationApi,
    ) -> None:
        self.pubsub = pubsub
        self.invocation = invocation
        self.state = state
        self.messages = state_pb2
        self.configuration = configuration
        self.lock = lock
        self.secrets = secrets
        self.metadata = metadata
        self._watches: dict[str, ConfigurationWatch] = {}

    # --- configuration -------------------------------------------------------------

    @unary("configuration")
    async def GetConfiguration(
        self, request: configuration_pb2.GetConfigurationRequest, context: Context
    ) -> configuration_pb2.GetConfigurationResponse:
        query = self.configuration.dapr_query(list(request.keys), request.metadata)
        items = await self.configuration.get(request.store_name, query)
        return configuration_pb2.GetConfigurationResponse(items=_dapr_items(items))

    GetConfigurationAlpha1 = GetConfiguration

    @streaming("configuration")
    async def SubscribeConfiguration(
        self, request: configuration_pb2.SubscribeConfigurationRequest, context: Context
    ) -> AsyncIterator[configuration_pb2.SubscribeConfigurationResponse]:
        # Dapr's protocol: the first message carries only the subscription id, which the
        # client needs for UnsubscribeConfiguration; changes follow.
        query = self.configuration.dapr_query(list(request.keys), request.metadata)
        watch = await self.configuration.subscribe(request.store_name, query)
        subscription_id = str(uuid.uuid4())
        self._watches[subscription_id] = watch
        try:
            yield configuration_pb2.SubscribeConfigurationResponse(id=subscription_id)
            async for changes in watch:
                yield configuration_pb2.SubscribeConfigurationResponse(id=subscription_id, items=_dapr_items(changes))
        finally:
            self._watches.pop(subscription_id, None)
            watch.close()

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
        success = await self.lock.try_lock(
            request.store_name, request.resource_id, request.lock_owner, request.expiry_in_seconds
        )
        return lock_pb2.TryLockResponse(success=success)

    @unary("lock")
    async def UnlockAlpha1(self, request: lock_pb2.UnlockRequest, context: Context) -> lock_pb2.UnlockResponse:
        status = await self.lock.unlock(request.store_name, request.resource_id, request.lock_owner)
        return lock_pb2.UnlockResponse(status=int(status))  # type: ignore[arg-type]

    # --- secrets -------------------------------------------------------------------

    @unary("secrets")
    async def GetSecret(self, request: secret_pb2.GetSecretRequest, context: Context) -> secret_pb2.GetSecretResponse:
        return secret_pb2.GetSecretResponse(data=await self.secrets.get(request.store_name, request.key))

    @unary("secrets")
    async def GetBulkSecret(
        self, request: secret_pb2.GetBulkSecretRequest, context: Context
    ) -> secret_pb2.GetBulkSecretResponse:
        secrets = await self.secrets.bulk_get(request.store_name)
        return secret_pb2.GetBulkSecretResponse(
            data={name: secret_pb2.SecretResponse(secrets=values) for name, values in secrets.items()}
        )

    # --- metadata and lifecycle ----------------------------------------------------

    @unary("metadata")
    async def GetMetadata(
        self, request: metadata_pb2.GetMetadataRequest, context: Context
    ) -> metadata_pb2.GetMetadataResponse:
        app = self.metadata.app
        return metadata_pb2.GetMetadataResponse(
            id=self.metadata.app_id,
            runtime_version=self.metadata.version,
            registered_components=[metadata_pb2.RegisteredComponents(**c) for c in self.metadata.components()],
            extended_metadata=self.metadata.extended,
            subscriptions=metadata_subscriptions(self.metadata.subscriptions()),
            app_connection_properties=metadata_pb2.AppConnectionProperties(
                port=app.port or 0, protocol=app.protocol, channel_address=app.address
            ),
        )

    @unary("metadata")
    async def SetMetadata(self, request: metadata_pb2.SetMetadataRequest, context: Context) -> empty_pb2.Empty:
        if not request.key:
            raise errors.invalid_argument("metadata key is empty")
        self.metadata.set(request.key, request.value)
        return empty_pb2.Empty()

    @unary("lifecycle")
    async def Shutdown(self, request: dapr_pb2.ShutdownRequest, context: Context) -> empty_pb2.Empty:
        # Answer first, then stop: the caller gets its reply before the server drains.
        asyncio.get_running_loop().call_soon(self.metadata.request_shutdown)
        return empty_pb2.Empty()

    def close(self) -> None:
        for watch in list(self._watches.values()):
            with contextlib.suppress(Exception):
                watch.close()


answer_unimplemented(DaprService, dapr_pb2_grpc.DaprServicer, SERVICE)
