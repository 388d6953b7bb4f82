"""`secretstores.local.file`: secrets from a JSON file (for development).

Nested objects are flattened with `nestedSeparator` ({"db": {"pw": "x"}} → `db:pw`),
as Dapr's store does; with `multiValued: "true"` each top-level key is one secret
holding its nested pairs instead.
"""

import asyncio
import json
from pathlib import Path
from typing import Any

from pydantic import Field

from ottava_sidecar.components.base import ComponentMetadata
from ottava_sidecar.components.errors import ComponentError
from ottava_sidecar.components.registration import register
from ottava_sidecar.components.secretstores.base import SecretNotFoundError, SecretStore


class LocalFileMetadata(ComponentMetadata):
    secrets_file: str = Field(alias="secretsFile", min_length=1, description="Path of the JSON file.")
    nested_separator: str = Field(
        default=":",
        alias="nestedSeparator",
        min_length=1,
        description="Joins the keys of nested objects into one name.",
    )
    multi_valued: bool = Field(
        default=False,
        alias="multiValued",
        description="When true, each top-level key is one secret holding its nested pairs.",
    )


@register("secretstores.local.file", LocalFileMetadata)
class LocalFileSecretStore(SecretStore[LocalFileMetadata]):
    """Secrets read from a JSON file when the component starts; for development only."""

    def __init__(self, name: str, settings: LocalFileMetadata, *, app_id: str) -> None:
        super().__init__(name, settings, app_id=app_id)
        self._secrets: dict[str, dict[str, str]] = {}

    async def init(self) -> None:
        path = Path(self.settings.secrets_file)
        try:
            document = json.loads(await asyncio.to_thread(path.read_text, encoding="utf-8"))
        except OSError as err:
            raise ComponentError(f"cannot read secrets file {path}: {err.strerror}") from None
        except json.JSONDecodeError as err:
            raise ComponentError(f"secrets file {path} is not valid JSON: {err}") from None
        if not isinstance(document, dict):
            raise ComponentError(f"secrets file {path} must hold a JSON object")
        sep = self.settings.nested_separator
        if self.settings.multi_valued:
            self._secrets = {
                key: _flatten(value, sep) if isinstance(value, dict) else {key: _text(value)}
                for key, value in document.items()
            }
        else:
            self._secrets = {key: {key: value} for key, value in _flatten(document, sep).items()}

    async def get(self, name: str) -> dict[str, str]:
        try:
            return dict(self._secrets[name])
        except KeyError:
            raise SecretNotFoundError(f"secret {name!r} not found in secret store {self.name}") from None

    async def bulk_get(self) -> dict[str, dict[str, str]]:
        return {name: dict(values) for name, values in self._secrets.items()}


def _flatten(document: dict[str, Any], sep: str, prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in document.items():
        name = f"{prefix}{sep}{key}" if prefix else key
        if isinstance(value, dict):
            flat.update(_flatten(value, sep, name))
        else:
            flat[name] = _text(value)
    return flat


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)
