"""What the configuration calls mean, for every wire API.

Dapr's calls know only keys: they reach the items of the sidecar's own app id, in the
group and label named by the request metadata (`group`, `label`) or the defaults.
Layotto's calls name app id, group and label; an empty app id means the sidecar's own.
A key named twice in one call counts once.

A subscriber that does not read its changes is dropped once more than the subscriber
buffer limit (`Limits.subscriber_buffer_bytes`) waits for it: its stream ends with
RESOURCE_EXHAUSTED naming the limit, and the sidecar logs it.

The subscriptions open now (Dapr's SubscribeConfiguration streams, the subscriptions of
Layotto's streams) are listed by `open_subscriptions`, which the info endpoint shows.
"""

import asyncio
import contextlib
import logging
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import grpc

from ottava_sidecar import limits
from ottava_sidecar.api import errors
from ottava_sidecar.components.configuration.base import (
    DEFAULT_GROUP,
    DEFAULT_LABEL,
    ConfigurationItem,
    ConfigurationQuery,
    ConfigurationStore,
    ConfigurationWatch,
    SubscriberOverflowError,
    SubscriberQueue,
    items_size,
)
from ottava_sidecar.components.errors import ComponentError
from ottava_sidecar.components.registry import LookupFailure, Registry
from ottava_sidecar.metrics import ComponentCalls

log = logging.getLogger(__name__)

# What a Layotto stream holds: (store name, app id, items), or what ends it.
_CALLS = ComponentCalls("configuration")  # latency of each component's operations
_Update = tuple[str, str, list[ConfigurationItem]]


def dropped(where: str, overflow: SubscriberOverflowError) -> errors.ApiError:
    """The status that ends a subscriber which fell too far behind, logged once."""
    message = (
        f"configuration subscriber dropped ({where}): {overflow}; read the stream as changes come, "
        "subscribe to fewer keys, or raise the sidecar's subscriber buffer limit"
    )
    log.warning(message)
    return errors.ApiError(
        grpc.StatusCode.RESOURCE_EXHAUSTED, message, http_status=429, error_code="ERR_CONFIGURATION_SUBSCRIBE"
    )


@dataclass(frozen=True)
class OpenSubscription:
    """A configuration subscription, as the info endpoint shows it while it is open."""

    id: str  # Dapr's subscription id; for Layotto, the id of the stream that holds it
    api: str  # "dapr" | "layotto"
    store: str
    query: ConfigurationQuery
    since: float  # wall clock

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "api": self.api,
            "store": self.store,
            "keys": list(self.query.keys),
            "appId": self.query.app_id,
            "group": self.query.group,
            "label": self.query.label,
            "since": datetime.fromtimestamp(self.since, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        }


class ConfigurationApi:
    def __init__(
        self, registry: Registry, *, subscriber_buffer_bytes: int = limits.Limits.subscriber_buffer_bytes
    ) -> None:
        self._registry = registry
        self.subscriber_buffer_bytes = subscriber_buffer_bytes
        # Watches are dropped from here once nobody holds them; closed ones are not listed.
        self._open: weakref.WeakKeyDictionary[ConfigurationWatch, OpenSubscription] = weakref.WeakKeyDictionary()

    def open_subscriptions(self) -> list[OpenSubscription]:
        """The subscriptions open now, oldest first."""
        return sorted((record for watch, record in list(self._open.items()) if not watch.closed), key=lambda r: r.since)

    def store(self, name: str) -> ConfigurationStore[Any]:
        if not name:
            raise errors.invalid_argument("configuration store name is empty", "ERR_CONFIGURATION_STORE_NOT_FOUND")
        try:
            return self._registry.lookup("configuration", name, ConfigurationStore)
        except LookupFailure as failure:
            raise errors.from_lookup(failure) from None

    def query(self, app_id: str, group: str, label: str, keys: Sequence[str]) -> ConfigurationQuery:
        if any(not key for key in keys):
            raise errors.invalid_argument("a configuration key is empty")
        return ConfigurationQuery(
            app_id or self._registry.app_id, group or DEFAULT_GROUP, label or DEFAULT_LABEL, tuple(dict.fromkeys(keys))
        )

    def dapr_query(self, keys: Sequence[str], metadata: Mapping[str, str]) -> ConfigurationQuery:
        return self.query("", metadata.get("group", ""), metadata.get("label", ""), keys)

    async def get(self, store_name: str, query: ConfigurationQuery) -> list[ConfigurationItem]:
        store = self.store(store_name)
        started = time.perf_counter()
        ok = False
        try:
            items = await store.get(query)
            ok = True
            return items
        except ComponentError as err:
            raise errors.internal(
                f"failed to get {list(query.keys)} from configuration store {store.name}: {err}",
                "ERR_CONFIGURATION_GET",
            ) from None
        finally:
            _CALLS.observe(store.name, "get", started, ok)

    async def save(self, store_name: str, app_id: str, items: Sequence[ConfigurationItem]) -> None:
        store = self.store(store_name)
        if not items:
            raise errors.invalid_argument(f"no items to save (configuration store {store.name})")
        for item in items:
            if not item.key:
                raise errors.invalid_argument(f"a configuration key is empty (configuration store {store.name})")
            item.group, item.label = item.group or DEFAULT_GROUP, item.label or DEFAULT_LABEL
        try:
            await store.save(app_id or self._registry.app_id, items)
        except ComponentError as err:
            raise errors.internal(
                f"failed to save to configuration store {store.name}: {err}", "ERR_CONFIGURATION_SAVE"
            ) from None

    async def delete(self, store_name: str, query: ConfigurationQuery) -> None:
        store = self.store(store_name)
        try:
            await store.delete(query)
        except ComponentError as err:
            raise errors.internal(
                f"failed to delete from configuration store {store.name}: {err}", "ERR_CONFIGURATION_DELETE"
            ) from None

    async def subscribe(
        self, store_name: str, query: ConfigurationQuery, *, subscription_id: str = "", api: str = "dapr"
    ) -> ConfigurationWatch:
        """A watch of `query`, listed by `open_subscriptions` (as `subscription_id`, of `api`) until closed."""
        store = self.store(store_name)
        started = time.perf_counter()
        try:
            watch = await store.subscribe(query, buffer_bytes=self.subscriber_buffer_bytes)
        except ComponentError as err:
            _CALLS.observe(store.name, "subscribe", started, False)
            raise errors.internal(
                f"failed to subscribe to configuration store {store.name}: {err}", "ERR_CONFIGURATION_SUBSCRIBE"
            ) from None
        _CALLS.observe(store.name, "subscribe", started)
        self._open[watch] = OpenSubscription(subscription_id, api, store_name, query, time.time())
        return watch

    async def changes(self, store_name: str, watch: ConfigurationWatch) -> AsyncIterator[list[ConfigurationItem]]:
        """The batches of `watch` (of store `store_name`); RESOURCE_EXHAUSTED once it overflowed."""
        try:
            async for batch in watch:
                yield batch
        except SubscriberOverflowError as overflow:
            raise dropped(f"configuration store {store_name}, keys {list(watch.query.keys)}", overflow) from None

    async def watch(self, subscriptions: AsyncIterator[tuple[str, ConfigurationQuery]]) -> AsyncIterator[_Update]:
        """Layotto's subscription stream, as `(store name, app id, items)`.

        Each `(store name, query)` read adds a subscription, while the earlier ones keep
        streaming: its current items come first, then every change. A subscription the
        stream already has (the same store, app id, group, label and keys, in any order)
        is acknowledged silently: it adds nothing and resends nothing. An error reading or
        subscribing ends the stream with that error; so does falling more than the
        subscriber buffer limit behind, with RESOURCE_EXHAUSTED.
        """
        stream = _SubscriptionStream(self)
        reader = asyncio.create_task(stream.read(subscriptions))
        try:
            async for update in stream.outbox:
                yield update
        except SubscriberOverflowError as overflow:
            raise dropped(f"Layotto stream of {len(stream.watches)} subscriptions", overflow) from None
        finally:
            reader.cancel()
            await stream.close(reader)


class _SubscriptionStream:
    """The subscriptions of one Layotto stream, feeding one outbox bounded in bytes."""

    def __init__(self, api: ConfigurationApi) -> None:
        self._api = api
        self.outbox: SubscriberQueue[_Update] = SubscriberQueue(api.subscriber_buffer_bytes, "configuration")
        self.watches: list[ConfigurationWatch] = []
        self._pumps: list[asyncio.Task[None]] = []
        self._subscribed: set[tuple[str, str, str, str, frozenset[str]]] = set()
        self.id = str(uuid.uuid4())  # names the stream's subscriptions in the info endpoint

    def send(self, update: _Update) -> None:
        if not self.outbox.put(update, items_size(update[2])):
            for watch in self.watches:  # dropped: stop following the stores at once
                watch.close(discard=True)

    async def _pump(self, store_name: str, app_id: str, watch: ConfigurationWatch) -> None:
        try:
            async for changes in watch:
                self.send((store_name, app_id, changes))
        except SubscriberOverflowError as overflow:  # the watch's own bound: it ends the stream too
            self.outbox.end(overflow, discard=True)

    async def read(self, subscriptions: AsyncIterator[tuple[str, ConfigurationQuery]]) -> None:
        try:
            async for store_name, query in subscriptions:
                identity = (store_name, query.app_id, query.group, query.label, frozenset(query.keys))
                if identity in self._subscribed or self.outbox.ended:
                    continue
                self._subscribed.add(identity)
                current = await self._api.get(store_name, query)
                watch = await self._api.subscribe(store_name, query, subscription_id=self.id, api="layotto")
                self.watches.append(watch)
                if current:
                    self.send((store_name, query.app_id, current))
                self._pumps.append(asyncio.create_task(self._pump(store_name, query.app_id, watch)))
        except BaseException as err:  # handed to the generator, which raises it to the caller
            self.outbox.end(err)

    async def close(self, reader: "asyncio.Task[None]") -> None:
        for watch in self.watches:
            watch.close(discard=True)
        for task in self._pumps:
            task.cancel()
        self.outbox.end(discard=True)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(reader, *self._pumps, return_exceptions=True)
