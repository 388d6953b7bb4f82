"""The subscriptions of one sidecar: those read from the app and those opened over streams.

An app has at most one subscription per pub/sub component and topic, however it made
it, so an event is never delivered to the same app twice by accident.

The app's own subscriptions follow its pub/sub components: one that was not UP when the
app said it wanted it (a Secret not there yet, a broker still starting) is opened when
the component comes UP, and one whose component is reloaded moves to the new instance,
so neither a late backend nor a hot reload silently ends deliveries.
"""

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from ottava_sidecar.components.pubsub.base import PubSub, Subscription
from ottava_sidecar.components.registry import Entry, LookupFailure, Registry, Status
from ottava_sidecar.messaging.delivery import AppDelivery, Subscriber
from ottava_sidecar.messaging.streams import StreamSubscription
from ottava_sidecar.messaging.subscriptions import SubscriptionSpec

log = logging.getLogger(__name__)


class AlreadySubscribedError(Exception):
    pass


@dataclass
class _Active:
    spec: SubscriptionSpec
    handle: Subscription | StreamSubscription
    broker: PubSub[Any] | None = None  # the instance an app subscription was opened on


class Messaging:
    def __init__(self, registry: Registry) -> None:
        self._registry = registry
        self._active: dict[tuple[str, str], _Active] = {}
        # The app's subscriptions, wanted whether or not their component is UP now.
        self._wanted: dict[tuple[str, str], tuple[SubscriptionSpec, Subscriber]] = {}
        self._pending: dict[tuple[str, str], str] = {}
        self._follow_tasks: set[asyncio.Task[None]] = set()
        self._follow_lock = asyncio.Lock()
        registry.on_status(self._component_changed)

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

    async def subscribe_app(self, channel: Subscriber, specs: list[SubscriptionSpec]) -> list[str]:
        """Start delivering to the app; one problem per subscription that could not start yet.

        A subscription whose component is not UP is kept and opened once it is.
        """
        for spec in specs:
            try:
                self._claim(spec)
            except AlreadySubscribedError as err:
                self._pending[spec.key] = f"subscription to {spec.pubsub_name}/{spec.topic}: {err}"
                continue
            self._wanted[spec.key] = (spec, channel)
            try:
                broker = self.broker(spec.pubsub_name)
            except LookupFailure as err:
                self._pending[spec.key] = (
                    f"subscription to {spec.pubsub_name}/{spec.topic} waits for its component: {err}"
                )
                continue
            await self._open(spec, channel, broker)
        problems = list(self._pending.values())
        for problem in problems:
            log.error(problem)
        return problems

    async def _open(self, spec: SubscriptionSpec, channel: Subscriber, broker: PubSub[Any]) -> None:
        handle = await broker.subscribe(spec.topic, AppDelivery(spec, broker, channel), metadata=spec.metadata)
        self._active[spec.key] = _Active(spec, handle, broker)
        self._pending.pop(spec.key, None)
        log.info(
            "subscribed to %s/%s",
            spec.pubsub_name,
            spec.topic,
            extra={"pubsub": spec.pubsub_name, "topic": spec.topic, "kind": spec.kind.value},
        )

    def _component_changed(self, entry: Entry) -> None:
        if entry.building_block != "pubsub" or entry.status is not Status.UP or entry.instance is None:
            return
        if not any(spec.pubsub_name == entry.name for spec, _ in self._wanted.values()):
            return
        task = asyncio.get_running_loop().create_task(self._follow(entry.name, entry.instance))
        self._follow_tasks.add(task)
        task.add_done_callback(self._follow_tasks.discard)

    async def _follow(self, name: str, instance: object) -> None:
        """Open (or move to `instance`) the app's subscriptions to pub/sub `name`."""
        if not isinstance(instance, PubSub):
            return
        async with self._follow_lock:
            for key, (spec, channel) in list(self._wanted.items()):
                active = self._active.get(key)
                if spec.pubsub_name != name or (active is not None and active.broker is instance):
                    continue
                if active is not None:
                    del self._active[key]
                    try:
                        await active.handle.close()
                    except Exception:
                        log.exception("closing the subscription to %s/%s failed", name, spec.topic)
                try:
                    await self._open(spec, channel, instance)
                except Exception as err:
                    self._pending[key] = f"subscription to {name}/{spec.topic} failed: {err}"
                    log.exception("subscribing to %s/%s failed", name, spec.topic)
            app = self._registry.conditions().get("app")
            if app is not None and app.status is Status.UP:
                self._registry.set_condition("app", Status.UP, "; ".join(self._pending.values()))

    async def settled(self) -> None:
        """Until the subscriptions have caught up with the component changes seen so far."""
        while self._follow_tasks:
            await asyncio.gather(*self._follow_tasks, return_exceptions=True)

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
        for task in list(self._follow_tasks):
            task.cancel()
        self._wanted.clear()
        for active in list(self._active.values()):
            try:
                await active.handle.close()
            except Exception:
                log.exception("closing the subscription to %s/%s failed", active.spec.pubsub_name, active.spec.topic)
        self._active.clear()
