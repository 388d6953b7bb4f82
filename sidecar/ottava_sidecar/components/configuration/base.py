"""Interface of configuration stores.

Items are addressed as Layotto does: (app_id, group, label, key), with tags and
metadata beside the content. Dapr's API, which knows keys only, reaches the same items
with the sidecar's app id and the group/label given in request metadata (defaults below).
"""

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, TypeVar

from ottava_sidecar.components.base import ComponentInstance, ComponentMetadata

DEFAULT_GROUP: Final = "default"
DEFAULT_LABEL: Final = "default"


@dataclass(slots=True)
class ConfigurationItem:
    key: str
    content: str
    group: str = DEFAULT_GROUP
    label: str = DEFAULT_LABEL
    tags: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    version: str = ""
    deleted: bool = False  # set on notifications of deletion


@dataclass(frozen=True, slots=True)
class ConfigurationQuery:
    """Which items: every key of the group/label when `keys` is empty."""

    app_id: str
    group: str = DEFAULT_GROUP
    label: str = DEFAULT_LABEL
    keys: tuple[str, ...] = ()

    def matches(self, app_id: str, item: ConfigurationItem) -> bool:
        return (
            app_id == self.app_id
            and item.group == self.group
            and item.label == self.label
            and (not self.keys or item.key in self.keys)
        )


class ConfigurationWatch:
    """A subscription: an async iterator of batches of changed items, until closed."""

    def __init__(self, query: ConfigurationQuery, on_close: Callable[["ConfigurationWatch"], None]) -> None:
        self.query = query
        self._changes: asyncio.Queue[list[ConfigurationItem] | None] = asyncio.Queue()
        self._on_close = on_close
        self.closed = False

    def push(self, items: list[ConfigurationItem]) -> None:
        if not self.closed and items:
            self._changes.put_nowait(items)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._changes.put_nowait(None)
            self._on_close(self)

    def __aiter__(self) -> AsyncIterator[list[ConfigurationItem]]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[list[ConfigurationItem]]:
        while (batch := await self._changes.get()) is not None:
            yield batch


ConfigurationSettingsT = TypeVar("ConfigurationSettingsT", bound=ComponentMetadata)


class ConfigurationStore(ComponentInstance[ConfigurationSettingsT]):
    async def get(self, query: ConfigurationQuery) -> list[ConfigurationItem]:
        raise NotImplementedError

    async def save(self, app_id: str, items: Sequence[ConfigurationItem]) -> None:
        raise NotImplementedError

    async def delete(self, query: ConfigurationQuery) -> None:
        raise NotImplementedError

    async def subscribe(self, query: ConfigurationQuery) -> ConfigurationWatch:
        raise NotImplementedError
