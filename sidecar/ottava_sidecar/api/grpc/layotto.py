"""The Layotto runtime API (`spec.proto.runtime.v1.Runtime`), translated onto Ottava's APIs."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf import empty_pb2

from ottava_sidecar._gen.spec.proto.runtime.v1 import runtime_pb2 as pb
from ottava_sidecar._gen.spec.proto.runtime.v1 import runtime_pb2_grpc
from ottava_sidecar.api.configuration import ConfigurationApi
from ottava_sidecar.api.grpc.calls import answer_unimplemented, streaming, unary
from ottava_sidecar.api.grpc.layotto_messaging import LayottoMessaging
from ottava_sidecar.api.grpc.state_calls import StateCalls
from ottava_sidecar.api.invocation import InvocationApi
from ottava_sidecar.api.lock import LockApi
from ottava_sidecar.api.pubsub import PubSubApi
from ottava_sidecar.api.secrets import SecretsApi
from ottava_sidecar.api.sequencer import SequencerApi
from ottava_sidecar.api.state import StateApi
from ottava_sidecar.components.configuration.base import ConfigurationItem, ConfigurationWatch
from ottava_sidecar.components.sequencer.base import Increment

Context = grpc.aio.ServicerContext[Any, Any]
SERVICE = "spec.proto.runtime.v1.Runtime"


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


class LayottoService(StateCalls, LayottoMessaging, runtime_pb2_grpc.RuntimeServicer):
    """Pub/sub and service invocation come from `LayottoMessaging`."""

    def __init__(
        self,
        state: StateApi,
        configuration: ConfigurationApi,
        lock: LockApi,
        sequencer: SequencerApi,
        secrets: SecretsApi,
        pubsub: PubSubApi,
        invocation: InvocationApi,
    ) -> None:
        self.pubsub = pubsub
        self.invocation = invocation
        self.state = state
        self.messages = pb
        self.configuration = configuration
        self.lock = lock
        self.sequencer = sequencer
        self.secrets = secrets

    # --- configuration -------------------------------------------------------------

    @unary("configuration")
    async def GetConfiguration(
        self, request: pb.GetConfigurationRequest, context: Context
    ) -> pb.GetConfigurationResponse:
        query = self.configuration.query(request.app_id, request.group, request.label, list(request.keys))
        items = await self.configuration.get(request.store_name, query)
        return pb.GetConfigurationResponse(items=[_to_message(i) for i in items])

    @unary("configuration")
    async def SaveConfiguration(self, request: pb.SaveConfigurationRequest, context: Context) -> empty_pb2.Empty:
        await self.configuration.save(request.store_name, request.app_id, [_from_message(i) for i in request.items])
        return empty_pb2.Empty()

    @unary("configuration")
    async def DeleteConfiguration(self, request: pb.DeleteConfigurationRequest, context: Context) -> empty_pb2.Empty:
        query = self.configuration.query(request.app_id, request.group, request.label, list(request.keys))
        await self.configuration.delete(request.store_name, query)
        return empty_pb2.Empty()

    @streaming("configuration")
    async def SubscribeConfiguration(
        self, request_iterator: AsyncIterator[pb.SubscribeConfigurationRequest], context: Context
    ) -> AsyncIterator[pb.SubscribeConfigurationResponse]:
        """Each request adds a subscription; its current items come first, then every change."""
        outbox: asyncio.Queue[pb.SubscribeConfigurationResponse | BaseException] = asyncio.Queue()
        watches: list[ConfigurationWatch] = []
        pumps: list[asyncio.Task[None]] = []

        async def pump(store: str, app_id: str, watch: ConfigurationWatch) -> None:
            async for changes in watch:
                outbox.put_nowait(
                    pb.SubscribeConfigurationResponse(
                        store_name=store, app_id=app_id, items=[_to_message(i) for i in changes]
                    )
                )

        async def read_requests() -> None:
            try:
                async for request in request_iterator:
                    query = self.configuration.query(request.app_id, request.group, request.label, list(request.keys))
                    current = await self.configuration.get(request.store_name, query)
                    watch = await self.configuration.subscribe(request.store_name, query)
                    watches.append(watch)
                    if current:
                        outbox.put_nowait(
                            pb.SubscribeConfigurationResponse(
                                store_name=request.store_name,
                                app_id=query.app_id,
                                items=[_to_message(i) for i in current],
                            )
                        )
                    pumps.append(asyncio.create_task(pump(request.store_name, query.app_id, watch)))
            except BaseException as err:  # handed to the generator, which raises it in the call
                outbox.put_nowait(err)

        reader = asyncio.create_task(read_requests())
        try:
            while True:
                message = await outbox.get()
                if isinstance(message, BaseException):
                    raise message
                yield message
        finally:
            reader.cancel()
            for watch in watches:
                watch.close()
            for task in pumps:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(reader, *pumps, return_exceptions=True)

    # --- lock and sequencer --------------------------------------------------------

    @unary("lock")
    async def TryLock(self, request: pb.TryLockRequest, context: Context) -> pb.TryLockResponse:
        success = await self.lock.try_lock(request.store_name, request.resource_id, request.lock_owner, request.expire)
        return pb.TryLockResponse(success=success)

    @unary("lock")
    async def Unlock(self, request: pb.UnlockRequest, context: Context) -> pb.UnlockResponse:
        status = await self.lock.unlock(request.store_name, request.resource_id, request.lock_owner)
        return pb.UnlockResponse(status=int(status))  # type: ignore[arg-type]

    @unary("sequencer")
    async def GetNextId(self, request: pb.GetNextIdRequest, context: Context) -> pb.GetNextIdResponse:
        increment = Increment.STRONG if request.options.increment == pb.SequencerOptions.STRONG else Increment.WEAK
        return pb.GetNextIdResponse(next_id=await self.sequencer.next_id(request.store_name, request.key, increment))

    # --- secrets -------------------------------------------------------------------

    @unary("secrets")
    async def GetSecret(self, request: pb.GetSecretRequest, context: Context) -> pb.GetSecretResponse:
        return pb.GetSecretResponse(data=await self.secrets.get(request.store_name, request.key))

    @unary("secrets")
    async def GetBulkSecret(self, request: pb.GetBulkSecretRequest, context: Context) -> pb.GetBulkSecretResponse:
        secrets = await self.secrets.bulk_get(request.store_name)
        return pb.GetBulkSecretResponse(
            data={name: pb.SecretResponse(secrets=values) for name, values in secrets.items()}
        )


answer_unimplemented(LayottoService, runtime_pb2_grpc.RuntimeServicer, SERVICE)
