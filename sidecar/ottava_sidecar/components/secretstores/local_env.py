"""`secretstores.local.env`: the sidecar's environment variables as secrets (for development).

The sidecar's own credentials are not the app's secrets: `DAPR_API_TOKEN` (which callers
of the sidecar's API present) and `APP_API_TOKEN` (which the sidecar presents to the app)
are never served, whatever the prefix, so a process that may read secrets cannot read
the token that guards the API it reads them through.
"""

import os

from pydantic import Field

from ottava_sidecar import contract
from ottava_sidecar.components.base import ComponentMetadata
from ottava_sidecar.components.registration import register
from ottava_sidecar.components.secretstores.base import SecretNotFoundError, SecretStore

NEVER_SERVED = frozenset({contract.ENV_API_TOKEN, contract.ENV_APP_API_TOKEN})


class LocalEnvMetadata(ComponentMetadata):
    prefix: str = Field(
        default="",
        description="Only variables starting with this prefix are secrets; the prefix is "
        "removed from their names. Empty exposes the whole environment but the API tokens "
        "(DAPR_API_TOKEN, APP_API_TOKEN).",
    )


@register("secretstores.local.env", LocalEnvMetadata)
class LocalEnvSecretStore(SecretStore[LocalEnvMetadata]):
    """Environment variables as secrets, each `{NAME: value}`; for development only."""

    async def get(self, name: str) -> dict[str, str]:
        variable = self.settings.prefix + name
        value = None if variable in NEVER_SERVED else os.environ.get(variable)
        if value is None:
            raise SecretNotFoundError(f"secret {name!r} not found in secret store {self.name}")
        return {name: value}

    async def bulk_get(self) -> dict[str, dict[str, str]]:
        prefix = self.settings.prefix
        return {
            key[len(prefix) :]: {key[len(prefix) :]: value}
            for key, value in os.environ.items()
            if key.startswith(prefix) and len(key) > len(prefix) and key not in NEVER_SERVED
        }
