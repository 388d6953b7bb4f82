"""The subscriptions of one sidecar: those read from the app, those its Subscription
resources declare, and those opened over streams.

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
from ottava_sidecar.messaging.delivery import AppDelivery, BulkDelivery, BulkSubscriber, Subscriber, broker_metadata
from ottava_sidecar.messaging.streams import StreamSubscription
from ottava_sidecar.messaging.subscriptions import Kind, SubscriptionSpec

log = logging.getLogger(__name__)


class AlreadySubscribedError(Exception):
    pass


@dataclass
class _Active:
    spec: SubscriptionSpec
    handle: Subscription | StreamSubscription
    broker: PubSub[Any] | None = None  # the instance an app subscription was opened on
    bulk: BulkDelivery | None = None  # a bulk subscription's batcher, closed with it

    async def close(self) -> None:
        await self.handle.close()
        if self.bulk is not None:
            await self.bulk.close()


class Messaging:
    def __init__(self, registry: Registry) -> None:
        self._registry = registry
        self._active: dict[tuple[str, str], _Active] = {}
        # The app's subscriptions, wanted whether or not their component is UP now.
        self._wanted: dict[tuple[str, str], tuple[SubscriptionSpec, Subscriber]] = {}
        self._pending: dict[tuple[str, str], str] = {}
        self._follow_tasks: set[asyncio.Task[None]] = set()
        self._follow_lock = asyncio.Lock()
        # Declarative subscriptions (Subscription resources in the app's scope), and the app
        # channel they deliver to once the app is connected (`subscribe_app`).
        self._declared: list[SubscriptionSpec] = []
        self._channel: Subscriber | None = None
        registry.on_status(self._component_changed)

    def broker(self, name: str) -> PubSub[Any]:
        """The ready pub/sub component `name`; `LookupFailure` naming it otherwise."""
        return self._registry.lookup("pubsub", name, PubSub)

    def _subscribable(self, name: str) -> PubSub[Any]:
        """As `broker`, but the component's own instance, never a Resiliency stand-in: a
        subscription is moved when the instance changes (`_follow` compares them)."""
        return self._registry.lookup("pubsub", name, PubSub, through_policies=False)

    def _claim(self, spec: SubscriptionSpec) -> None:
        if spec.key in self._active:
            existing = self._active[spec.key].spec
            raise AlreadySubscribedError(
                f"app {self._registry.app_id!r} already has a {existing.kind.value} subscription to "
                f"topic {spec.topic} of pubsub {spec.pubsub_name}"
            )

    async def subscribe_app(self, channel: Subscriber, specs: list[SubscriptionSpec]) -> list[str]:
        """Start delivering to the app; one problem per subscription that could not start yet.

        The declarative subscriptions (`declare`) start first, then `specs` (the app's own);
        a topic both declare is the declarative one's (the app's is a problem, named).
        A subscription whose component is not UP is kept and opened once it is.
        """
        self._channel = channel
        declared = [spec for spec in self._declared if spec.key not in self._wanted]
        return await self._subscribe(channel, [*declared, *specs])

    async def declare(self, specs: list[SubscriptionSpec]) -> list[str]:
        """Make `specs` the declarative subscriptions; what could not start yet, as `subscribe_app`.

        Before the app is connected they are kept for `subscribe_app`; after, those removed
        or changed are closed and the new ones opened (a Subscription edited in the cluster).
        """
        self._declared = list(specs)
        if self._channel is None:
            return []
        declared = {spec.key: spec for spec in specs}
        for key, (wanted, _) in list(self._wanted.items()):
            if wanted.kind is not Kind.DECLARATIVE:
                continue
            new = declared.get(key)
            if new is not None and new.same_as(wanted):
                del declared[key]
                continue
            await self._drop(key)
        problems = await self._subscribe(self._channel, list(declared.values()))
        self._app_condition()
        return problems

    async def _drop(self, key: tuple[str, str]) -> None:
        self._wanted.pop(key, None)
        self._pending.pop(key, None)
        active = self._active.pop(key, None)
        if active is None:
            return
        try:
            await active.close()
        except Exception:
            log.exception("closing the subscription to %s/%s failed", *key)
        log.info("unsubscribed from %s/%s", *key, extra={"pubsub": key[0], "topic": key[1]})

    async def _subscribe(self, channel: Subscriber, specs: list[SubscriptionSpec]) -> list[str]:
        for spec in specs:
            try:
                self._claim(spec)
            except AlreadySubscribedError as err:
                self._pending[spec.key] = f"subscription to {spec.pubsub_name}/{spec.topic}: {err}"
                continue
            if spec.key in self._wanted:
                existing = self._wanted[spec.key][0]
                self._pending[spec.key] = (
                    f"subscription to {spec.pubsub_name}/{spec.topic}: app {self._registry.app_id!r} already has a "
                    f"{existing.kind.value} subscription to it, waiting for its component"
                )
                continue
            self._wanted[spec.key] = (spec, channel)
            try:
                broker = self._subscribable(spec.pubsub_name)
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
        handler: AppDelivery | BulkDelivery
        if spec.bulk is not None and isinstance(channel, BulkSubscriber):
            handler = BulkDelivery(spec, broker, channel)
        else:
            handler = AppDelivery(spec, broker, channel)
        handle = await broker.subscribe(spec.topic, handler, metadata=broker_metadata(spec))
        self._active[spec.key] = _Active(spec, handle, broker, handler if isinstance(handler, BulkDelivery) else None)
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
                        await active.close()
                    except Exception:
                        log.exception("closing the subscription to %s/%s failed", name, spec.topic)
                try:
                    await self._open(spec, channel, instance)
                except Exception as err:
                    self._pending[key] = f"subscription to {name}/{spec.topic} failed: {err}"
                    log.exception("subscribing to %s/%s failed", name, spec.topic)
            self._app_condition()

    def _app_condition(self) -> None:
        """Readiness's `app` entry names what could not start (once the app is connected)."""
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
        stream = StreamSubscription(spec, self._subscribable(spec.pubsub_name))
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
        self._channel = None
        for active in list(self._active.values()):
            try:
                await active.close()
            except Exception:
                log.exception("closing the subscription to %s/%s failed", active.spec.pubsub_name, active.spec.topic)
        self._active.clear()
