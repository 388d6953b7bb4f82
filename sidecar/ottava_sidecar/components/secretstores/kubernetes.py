"""`secretstores.kubernetes`: the Secrets of a namespace, read with the sidecar's own identity.

Every read goes to the apiserver (no cache, no watch): a Secret is read rarely, usually
once at start-up, and a cache would keep a revoked or rotated value. What the store may
read is what the sidecar's Role grants. The operator grants `get` on exactly the Secrets
named in `allowedSecrets`, or `get` and `list` on every Secret of the namespace when the
field is empty — an administrator opts into that by creating the Component.
"""

import base64
import binascii
import logging
import re
from typing import Any

from pydantic import Field, field_validator

from ottava_sidecar.components.backends.kubernetes import KubernetesConnection, KubernetesMetadata
from ottava_sidecar.components.errors import AccessDeniedError, ComponentError
from ottava_sidecar.components.registration import register
from ottava_sidecar.components.secretstores.base import SecretNotFoundError, SecretStore

log = logging.getLogger(__name__)

_PAGE_SIZE = "250"
_SECRET_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")


class KubernetesSecretStoreMetadata(KubernetesMetadata):
    allowed_secrets: str = Field(
        default="",
        alias="allowedSecrets",
        description="Comma-separated names of the only Secrets this store serves (the operator then grants "
        "`get` on exactly these). Empty: every Secret of the namespace (`get` and `list`).",
    )

    @field_validator("allowed_secrets")
    @classmethod
    def _names(cls, value: str) -> str:
        for name in (n.strip() for n in value.split(",") if n.strip()):
            if len(name) > 253 or not _SECRET_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not a Secret name (lowercase letters, digits, '-', '.')")
        return value

    @property
    def allowed(self) -> tuple[str, ...]:
        return tuple(sorted({n.strip() for n in self.allowed_secrets.split(",") if n.strip()}))


@register("secretstores.kubernetes", KubernetesSecretStoreMetadata)
class KubernetesSecretStore(SecretStore[KubernetesSecretStoreMetadata]):
    """The namespace's Kubernetes Secrets, each `{key: value}` from its base64-decoded `data`.

    Reads are subject to the sidecar's RBAC: a Secret its Role does not grant is refused
    with an error naming the Secret and the Role, not reported as missing.
    """

    def __init__(self, name: str, settings: KubernetesSecretStoreMetadata, *, app_id: str) -> None:
        super().__init__(name, settings, app_id=app_id)
        self.kube = KubernetesConnection(settings, f"secret store {name}")

    async def init(self) -> None:
        await self.kube.open()

    async def close(self) -> None:
        await self.kube.close()

    def _path(self, name: str = "") -> str:
        base = f"/api/v1/namespaces/{self.kube.namespace}/secrets"
        return f"{base}/{name}" if name else base

    async def get(self, name: str) -> dict[str, str]:
        allowed = self.settings.allowed
        if allowed and name not in allowed:
            raise AccessDeniedError(
                f"secret {name!r} is not in allowedSecrets of secret store {self.name} ({', '.join(allowed)})"
            )
        return _decode(await self._read(name), self.name)

    async def _read(self, name: str) -> dict[str, Any]:
        from ottava_sidecar.kube.client import KubeError

        if "/" in name or name in (".", ".."):
            raise SecretNotFoundError(f"secret {name!r} not found in secret store {self.name}: not a Secret name")
        try:
            return await self.kube.client.get(self._path(name))
        except KubeError as err:
            if err.status == 404:
                raise SecretNotFoundError(
                    f"secret {name!r} not found in secret store {self.name} (namespace {self.kube.namespace})"
                ) from None
            raise self.kube.error(err, "get", f"Secret {name!r}") from None

    async def bulk_get(self) -> dict[str, dict[str, str]]:
        if self.settings.allowed:
            found: dict[str, dict[str, str]] = {}
            for name in self.settings.allowed:
                try:
                    found[name] = _decode(await self._read(name), self.name)
                except SecretNotFoundError:
                    continue  # allowed but not created (yet): bulk reads return what exists
            return found
        return {
            _name(secret): values
            for secret in await self._list()
            if (values := _decode_or_skip(secret, self.name)) is not None
        }

    async def _list(self) -> list[dict[str, Any]]:
        from ottava_sidecar.kube.client import KubeError

        secrets: list[dict[str, Any]] = []
        params = {"limit": _PAGE_SIZE}
        while True:
            try:
                page = await self.kube.client.get(self._path(), **params)
            except KubeError as err:
                raise self.kube.error(err, "list", "Secrets") from None
            secrets.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return secrets
            params = {"limit": _PAGE_SIZE, "continue": str(token)}


def _name(secret: dict[str, Any]) -> str:
    return str((secret.get("metadata") or {}).get("name", ""))


def _decode(secret: dict[str, Any], store: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for key, encoded in (secret.get("data") or {}).items():
        try:
            values[key] = base64.b64decode(str(encoded), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise ComponentError(
                f"key {key!r} of Secret {_name(secret)!r} is binary, not UTF-8 text; "
                f"secret store {store} serves text values only"
            ) from None
    return values


def _decode_or_skip(secret: dict[str, Any], store: str) -> dict[str, str] | None:
    try:
        return _decode(secret, store)
    except ComponentError as err:
        log.warning("bulk read skips a binary Secret", extra={"store": store, "reason": str(err)})
        return None
