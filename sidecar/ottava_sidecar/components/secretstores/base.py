"""Interface of secret stores."""

from typing import TypeVar

from ottava_sidecar.components.base import ComponentInstance, ComponentMetadata
from ottava_sidecar.components.errors import ComponentError


class SecretNotFoundError(ComponentError):
    pass


SecretSettingsT = TypeVar("SecretSettingsT", bound=ComponentMetadata)


class SecretStore(ComponentInstance[SecretSettingsT]):
    async def get(self, name: str) -> dict[str, str]:
        """The secret's key/value pairs; raises SecretNotFoundError naming the secret."""
        raise NotImplementedError

    async def bulk_get(self) -> dict[str, dict[str, str]]:
        raise NotImplementedError
