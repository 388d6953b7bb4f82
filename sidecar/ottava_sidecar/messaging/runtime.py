"""The subscriptions of one sidecar: those read from the app and those opened over streams.

An app has at most one subscription per pub/sub component and topic, however it made
it, so an event is never delivered to the same app twice by accident.
"""

import logging
from dataclasses import dataclass
from typing import Any

from ottava_sidecar.appchannel.base import AppChannel
from ottava_sidecar.components.pubsub.base import PubSub, Subscription
from ottava_sidecar.messaging.delivery import AppDelivery
from ottava_sidecar.messaging.streams import StreamSubscription
from ottava_sidecar.messaging.subscriptions import SubscriptionSpec
from ottava_sidecar.runtime.registry import LookupFailure, Registry

log = logging.getLogger(__name__)


class AlreadySubscribedError(Exception):
    pass


@dataclass
class _Active:
    spec: SubscriptionSpec
    handle: Subscription | StreamSubscription


class Messaging:
    def __init__(self, registry: Registry) -> None:
        self._registry = registry
        self._active: dict[tuple[str, str], _Active] = {}

    def broker(self, name: str) -> PubSub[Any]:
        """The ready pub/sub component `name`; `LookupFailure` naming it otherwise."""
        return self._registry.lookup("pubsub", name, PubSub)

    def _claim(self, spec: SubscriptionSpec) -> None:
        if spec.key in self._active:
            existing = self._active[spec.key].spec
            raise AlreadySubscribedError(
                f"app {self._registry.app_id!r} already has a {existing.kind.value} subscription to "
                f"topic {spec.topic} of pubsub {spec.pubsub_name}"
            )

    async def subscribe_app(self, channel: AppChannel, specs: list[SubscriptionSpec]) -> list[str]:
        """Start delivering to the app; one problem per subscription that could not start."""
        problems: list[str] = []
        for spec in specs:
            try:
                self._claim(spec)
                broker = self.broker(spec.pubsub_name)
            except (AlreadySubscribedError, LookupFailure) as err:
                problems.append(f"subscription to {spec.pubsub_name}/{spec.topic}: {err}")
                continue
            handle = await broker.subscribe(spec.topic, AppDelivery(spec, broker, channel), metadata=spec.metadata)
            self._active[spec.key] = _Active(spec, handle)
            log.info(
                "subscribed to %s/%s",
                spec.pubsub_name,
                spec.topic,
                extra={"pubsub": spec.pubsub_name, "topic": spec.topic, "kind": spec.kind.value},
            )
        for problem in problems:
            log.error(problem)
        return problems

    async def open_stream(self, spec: SubscriptionSpec) -> StreamSubscription:
        """Raises `AlreadySubscribedError` or `LookupFailure`."""
        self._claim(spec)
        stream = StreamSubscription(spec, self.broker(spec.pubsub_name))
        self._active[spec.key] = _Active(spec, stream)
        try:
            await stream.start()
        except BaseException:
            del self._active[spec.key]
            raise
        return stream

    async def close_stream(self, stream: StreamSubscription) -> None:
        active = self._active.get(stream.spec.key)
        if active is not None and active.handle is stream:
            del self._active[stream.spec.key]
        await stream.close()

    def subscriptions(self) -> list[SubscriptionSpec]:
        return [active.spec for active in self._active.values()]

    async def close(self) -> None:
        for active in list(self._active.values()):
            try:
                await active.handle.close()
            except Exception:
                log.exception("closing the subscription to %s/%s failed", active.spec.pubsub_name, active.spec.topic)
        self._active.clear()
