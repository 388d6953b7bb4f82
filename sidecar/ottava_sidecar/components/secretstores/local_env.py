"""`secretstores.local.env`: the sidecar's environment variables as secrets (for development)."""

import os

from pydantic import Field

from ottava_sidecar.components.base import ComponentMetadata
from ottava_sidecar.components.registration import register
from ottava_sidecar.components.secretstores.base import SecretNotFoundError, SecretStore


class LocalEnvMetadata(ComponentMetadata):
    prefix: str = Field(
        default="",
        description="Only variables starting with this prefix are secrets; the prefix is "
        "removed from their names. Empty exposes the whole environment.",
    )


@register("secretstores.local.env", LocalEnvMetadata)
class LocalEnvSecretStore(SecretStore[LocalEnvMetadata]):
    """Environment variables as secrets, each `{NAME: value}`; for development only."""

    async def get(self, name: str) -> dict[str, str]:
        value = os.environ.get(self.settings.prefix + name)
        if value is None:
            raise SecretNotFoundError(f"secret {name!r} not found in secret store {self.name}")
        return {name: value}

    async def bulk_get(self) -> dict[str, dict[str, str]]:
        prefix = self.settings.prefix
        return {
            key[len(prefix) :]: {key[len(prefix) :]: value}
            for key, value in os.environ.items()
            if key.startswith(prefix) and len(key) > len(prefix)
        }
