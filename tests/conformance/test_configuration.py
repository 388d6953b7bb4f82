"""The configuration store contract (Layotto's addressing), for every `configuration.*` implementation.

Each test uses its own app id, so tests sharing one server never see each other's items.
"""

import asyncio
import time
from typing import Any

import pytest
from ottava_sidecar.components.configuration.base import (
    ConfigurationItem,
    ConfigurationQuery,
    ConfigurationStore,
    ConfigurationWatch,
    SubscriberOverflowError,
)

from tests.conformance.conftest import Components, unique

BUILDING_BLOCK = "configuration"
NOTIFY_TIMEOUT = 5.0


async def _store(components: Components) -> ConfigurationStore[Any]:
    store = await components.create()
    assert isinstance(store, ConfigurationStore)
    return store


async def _next(watch: ConfigurationWatch) -> list[ConfigurationItem]:
    return await asyncio.wait_for(anext(aiter(watch)), NOTIFY_TIMEOUT)


async def _changes(watch: ConfigurationWatch, count: int) -> dict[str, ConfigurationItem]:
    """The latest change of each key, until `count` keys have changed."""
    seen: dict[str, ConfigurationItem] = {}
    while len(seen) < count:
        for item in await _next(watch):
            seen[item.key] = item
    return seen


def _summary(items: list[ConfigurationItem]) -> list[tuple[str, str, str, str, dict[str, str]]]:
    return sorted((i.key, i.content, i.group, i.label, i.tags) for i in items)


async def test_save_and_get_by_group_label_and_keys(components: Components) -> None:
    store = await _store(components)
    app = unique("shop")
    await store.save(
        app,
        [
            ConfigurationItem("timeout", "30s", "checkout", "prod", tags={"owner": "pay"}, metadata={"m": "1"}),
            ConfigurationItem("retries", "3", "checkout", "prod"),
            ConfigurationItem("timeout", "5s", "checkout", "dev"),
            ConfigurationItem("timeout", "1s", "search", "prod"),
        ],
    )
    prod = await store.get(ConfigurationQuery(app, "checkout", "prod"))
    assert _summary(prod) == [
        ("retries", "3", "checkout", "prod", {}),
        ("timeout", "30s", "checkout", "prod", {"owner": "pay"}),
    ]
    assert all(item.version for item in prod)
    one = await store.get(ConfigurationQuery(app, "checkout", "prod", ("timeout", "absent")))
    assert _summary(one) == [("timeout", "30s", "checkout", "prod", {"owner": "pay"})]
    assert one[0].metadata == {"m": "1"}
    assert _summary(await store.get(ConfigurationQuery(app, "checkout", "dev"))) == [
        ("timeout", "5s", "checkout", "dev", {})
    ]
    assert await store.get(ConfigurationQuery(unique("other-app"), "checkout", "prod")) == []


async def test_default_group_and_label(components: Components) -> None:
    store = await _store(components)
    app = unique("app")
    await store.save(app, [ConfigurationItem("color", "blue")])
    (item,) = await store.get(ConfigurationQuery(app, keys=("color",)))
    assert (item.key, item.content, item.group, item.label) == ("color", "blue", "default", "default")


async def test_saving_again_replaces_content_and_changes_version(components: Components) -> None:
    store = await _store(components)
    app = unique("app")
    await store.save(app, [ConfigurationItem("k", "v1", tags={"a": "1"})])
    (first,) = await store.get(ConfigurationQuery(app))
    await store.save(app, [ConfigurationItem("k", "v2")])
    (second,) = await store.get(ConfigurationQuery(app))
    assert (second.content, second.tags) == ("v2", {})
    assert second.version != first.version


async def test_delete_by_keys_and_by_group_label(components: Components) -> None:
    store = await _store(components)
    app = unique("app")
    await store.save(app, [ConfigurationItem(k, k.upper(), "g", "l") for k in ("a", "b", "c")])
    await store.save(app, [ConfigurationItem("a", "other", "g", "other-label")])
    await store.delete(ConfigurationQuery(app, "g", "l", ("a",)))
    assert sorted(i.key for i in await store.get(ConfigurationQuery(app, "g", "l"))) == ["b", "c"]
    await store.delete(ConfigurationQuery(app, "g", "l"))
    assert await store.get(ConfigurationQuery(app, "g", "l")) == []
    assert [i.content for i in await store.get(ConfigurationQuery(app, "g", "other-label"))] == ["other"]
    await store.delete(ConfigurationQuery(app, "g", "l", ("never-there",)))


async def test_subscribers_are_told_of_saves_and_deletes(components: Components) -> None:
    store = await _store(components)
    app = unique("app")
    watch = await store.subscribe(ConfigurationQuery(app, "g", "l"))
    try:
        await store.save(app, [ConfigurationItem("a", "1", "g", "l"), ConfigurationItem("b", "2", "g", "l")])
        saved = await _changes(watch, 2)
        assert {k: (i.content, i.deleted) for k, i in saved.items()} == {"a": ("1", False), "b": ("2", False)}

        await store.save(app, [ConfigurationItem("a", "1-bis", "g", "l", tags={"t": "x"})])
        (update,) = (await _changes(watch, 1)).values()
        assert (update.key, update.content, update.tags, update.deleted) == ("a", "1-bis", {"t": "x"}, False)

        await store.delete(ConfigurationQuery(app, "g", "l", ("b",)))
        (removal,) = (await _changes(watch, 1)).values()
        assert (removal.key, removal.group, removal.label, removal.deleted) == ("b", "g", "l", True)
    finally:
        watch.close()


async def test_subscribers_hear_only_what_they_asked_for(components: Components) -> None:
    store = await _store(components)
    app = unique("app")
    watch = await store.subscribe(ConfigurationQuery(app, "g", "l", ("wanted",)))
    try:
        await store.save(app, [ConfigurationItem("wanted", "no", "g", "other-label")])
        await store.save(unique("other-app"), [ConfigurationItem("wanted", "no", "g", "l")])
        await store.save(app, [ConfigurationItem("unwanted", "no", "g", "l")])
        await store.save(app, [ConfigurationItem("wanted", "yes", "g", "l")])
        batch = await _next(watch)
        assert [(i.key, i.content, i.label) for i in batch] == [("wanted", "yes", "l")]
    finally:
        watch.close()


async def test_a_closed_subscription_ends(components: Components) -> None:
    store = await _store(components)
    app = unique("app")
    watch = await store.subscribe(ConfigurationQuery(app))
    watch.close()
    await store.save(app, [ConfigurationItem("k", "v")])
    received = [batch async for batch in watch]
    assert received == []


async def test_a_subscriber_that_does_not_read_is_dropped(components: Components) -> None:
    store = await _store(components)
    app = unique("app")
    watch = await store.subscribe(ConfigurationQuery(app), buffer_bytes=16 * 1024)
    try:
        for n in range(40):  # 160 KiB of changes nobody reads
            await store.save(app, [ConfigurationItem(f"k{n}", "x" * 4096)])
        deadline = time.monotonic() + NOTIFY_TIMEOUT
        while not watch.closed:  # the watch closes itself once over its buffer
            assert time.monotonic() < deadline, "a subscriber that does not read was never dropped"
            await asyncio.sleep(0.05)
        with pytest.raises(SubscriberOverflowError, match="16384 bytes"):
            async for _ in watch:
                pass
    finally:
        watch.close()


@pytest.mark.requires("shared")
async def test_a_subscriber_hears_changes_made_by_another_sidecar(components: Components) -> None:
    listener, writer = await _store(components), await _store(components)
    app = unique("app")
    watch = await listener.subscribe(ConfigurationQuery(app))
    try:
        await writer.save(app, [ConfigurationItem("k", "from-the-other-side")])
        (item,) = (await _changes(watch, 1)).values()
        assert item.content == "from-the-other-side"
        await writer.delete(ConfigurationQuery(app, keys=("k",)))
        (gone,) = (await _changes(watch, 1)).values()
        assert gone.deleted
    finally:
        watch.close()
