"""What every component shares: a name, typed settings, and a lifecycle."""

from typing import ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from ottava_sidecar.components.errors import NotSupportedError

__all__ = ["ComponentInstance", "ComponentMetadata", "NotSupportedError", "SettingsT"]


class ComponentMetadata(BaseModel):
    """Base of every component type's metadata model.

    Unknown fields are errors, so a typo in a manifest is reported at load time rather
    than silently ignored. Values arrive as strings (as in Dapr manifests) and pydantic
    converts them to the declared types.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


SettingsT = TypeVar("SettingsT", bound=ComponentMetadata)


class ComponentInstance(Generic[SettingsT]):
    """A loaded component: the running counterpart of a `resources.models.Component` manifest.

    `init` connects to the backend and may fail; `close` releases it. Both are awaited on
    the sidecar's event loop, so implementations must not block.
    """

    #: Capabilities reported by the metadata API (Dapr's "features").
    features: ClassVar[tuple[str, ...]] = ()

    def __init__(self, name: str, settings: SettingsT, *, app_id: str) -> None:
        self.name = name
        self.settings = settings
        self.app_id = app_id

    async def init(self) -> None:
        """Connect to the backend; raise with a clear message when it cannot."""

    async def close(self) -> None:
        """Release what `init` acquired."""
