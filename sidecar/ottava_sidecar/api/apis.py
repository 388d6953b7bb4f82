"""All of the building-block APIs of one sidecar, handed to each wire surface."""

from dataclasses import dataclass

from ottava_sidecar.api.bindings import BindingsApi
from ottava_sidecar.api.configuration import ConfigurationApi
from ottava_sidecar.api.files import FilesApi
from ottava_sidecar.api.functions import FunctionsApi, Host
from ottava_sidecar.api.invocation import InvocationApi
from ottava_sidecar.api.lock import LockApi
from ottava_sidecar.api.metadata import MetadataApi
from ottava_sidecar.api.pubsub import PubSubApi
from ottava_sidecar.api.secrets import SecretsApi
from ottava_sidecar.api.sequencer import SequencerApi
from ottava_sidecar.api.state import StateApi
from ottava_sidecar.components.registry import Registry
from ottava_sidecar.invocation.invoker import Invoker
from ottava_sidecar.limits import Limits
from ottava_sidecar.messaging.runtime import Messaging


@dataclass(frozen=True)
class Apis:
    registry: Registry
    state: StateApi
    configuration: ConfigurationApi
    lock: LockApi
    sequencer: SequencerApi
    secrets: SecretsApi
    metadata: MetadataApi
    pubsub: PubSubApi
    invocation: InvocationApi
    files: FilesApi
    bindings: BindingsApi
    functions: FunctionsApi

    @classmethod
    def create(
        cls,
        registry: Registry,
        metadata: MetadataApi,
        *,
        messaging: Messaging | None = None,
        invoker: Invoker | None = None,
        limits: Limits | None = None,
    ) -> "Apis":
        """Without `invoker`, service invocation answers FAILED_PRECONDITION; without `limits`, `Limits()`."""
        limits = limits or Limits()
        configuration = ConfigurationApi(registry, subscriber_buffer_bytes=limits.subscriber_buffer_bytes)
        # What the info endpoint shows of the other APIs: read when it is asked, nothing per call.
        metadata.configuration_subscriptions = lambda: [s.describe() for s in configuration.open_subscriptions()]
        if invoker is not None:
            metadata.peers = lambda: invoker.peers
            metadata.traffic_routes = invoker.traffic.describe
            metadata.resiliencies = lambda: invoker.resiliency.names if invoker.resiliency is not None else []
        state = StateApi(registry, max_bulk_response_bytes=limits.max_bulk_response_bytes)
        pubsub = PubSubApi(messaging or Messaging(registry), registry.app_id)
        invocation = InvocationApi(invoker)
        functions = FunctionsApi(registry, Host(registry.app_id, state, pubsub, invocation, configuration))
        invocation.local = functions.find
        return cls(
            registry,
            state,
            configuration,
            LockApi(registry),
            SequencerApi(registry),
            SecretsApi(registry, max_bulk_response_bytes=limits.max_bulk_response_bytes),
            metadata,
            pubsub,
            invocation,
            FilesApi(registry),
            BindingsApi(registry),
            functions,
        )
