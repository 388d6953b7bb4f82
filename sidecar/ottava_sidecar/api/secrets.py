"""What the secret calls mean, for every wire API."""

import time
from typing import Any

from ottava_sidecar import limits
from ottava_sidecar.api import errors
from ottava_sidecar.components.errors import AccessDeniedError, ComponentError
from ottava_sidecar.components.registry import LookupFailure, Registry
from ottava_sidecar.components.secretstores.base import SecretNotFoundError, SecretStore
from ottava_sidecar.metrics import ComponentCalls
from ottava_sidecar.resources.models import SecretScope

_CALLS = ComponentCalls("secrets")  # latency of each component's operations


class SecretsApi:
    def __init__(self, registry: Registry, *, max_bulk_response_bytes: int | None = None) -> None:
        self._registry = registry
        self.max_bulk_response_bytes = (
            limits.Limits().max_bulk_response_bytes if max_bulk_response_bytes is None else max_bulk_response_bytes
        )
        # Secret scopes of the Configuration, by store name (Dapr's semantics), with their
        # place in it (`secrets.scopes[0]`) and the Configuration's name, for messages.
        self.scopes: dict[str, tuple[int, SecretScope]] = {}
        self.scopes_source = ""

    def set_scopes(self, scopes: list[SecretScope], source: str) -> None:
        self.scopes = {scope.store_name: (index, scope) for index, scope in enumerate(scopes)}
        self.scopes_source = source

    def allowed(self, store: str, name: str) -> bool:
        return self.refusal(store, name) is None

    def refusal(self, store: str, name: str) -> str | None:
        """Why the scope of `store` hides the secret `name` (naming the scope), or None when it may be read."""
        entry = self.scopes.get(store)
        if entry is None:
            return None
        index, scope = entry
        if name in scope.denied_secrets:
            why = "it is in deniedSecrets"
        elif scope.allowed_secrets:
            if name in scope.allowed_secrets:
                return None
            why = "it is not in allowedSecrets"
        elif scope.default_access == "allow":
            return None
        else:
            why = "defaultAccess is deny"
        return (
            f"access to secret {name!r} of secret store {store} is denied by "
            f"{self.scopes_source}, secrets.scopes[{index}] (storeName {store}): {why}"
        )

    def store(self, name: str) -> SecretStore[Any]:
        if not name:
            raise errors.invalid_argument("secret store name is empty", "ERR_SECRET_STORE_NOT_FOUND")
        try:
            return self._registry.lookup("secretstores", name, SecretStore)
        except LookupFailure as failure:
            raise errors.from_lookup(failure) from None

    async def get(self, store_name: str, name: str) -> dict[str, str]:
        store = self.store(store_name)
        if not name:
            raise errors.invalid_argument(f"secret name is empty (secret store {store.name})")
        refusal = self.refusal(store.name, name)
        if refusal is not None:
            raise errors.permission_denied(refusal)
        started = time.perf_counter()
        ok = False
        try:
            values = await store.get(name)
            ok = True
            return values
        except SecretNotFoundError as err:
            raise errors.not_found(str(err), "ERR_SECRET_GET") from None
        except AccessDeniedError as err:
            raise errors.permission_denied(str(err)) from None
        except ComponentError as err:
            raise errors.internal(
                f"failed getting secret {name} from secret store {store.name}: {err}", "ERR_SECRET_GET"
            ) from None
        finally:
            _CALLS.observe(store.name, "get", started, ok)

    async def bulk_get(self, store_name: str) -> dict[str, dict[str, str]]:
        store = self.store(store_name)
        started = time.perf_counter()
        try:
            secrets = await store.bulk_get()
        except ComponentError as err:
            _CALLS.observe(store.name, "bulk_get", started, False)
            raise errors.internal(
                f"failed getting secrets from secret store {store.name}: {err}", "ERR_SECRET_GET"
            ) from None
        _CALLS.observe(store.name, "bulk_get", started)
        allowed = {name: values for name, values in secrets.items() if self.allowed(store.name, name)}
        # The store reads its secrets in one go; what the sidecar can bound is the answer.
        size = sum(len(name) + sum(len(k) + len(v) for k, v in values.items()) for name, values in allowed.items())
        if size > self.max_bulk_response_bytes:
            raise errors.too_large(
                f"GetBulkSecret of {len(allowed)} secret(s) from secret store {store.name} would answer more than"
                f" {self.max_bulk_response_bytes} bytes (limit max_bulk_response_bytes)",
                "ERR_BULK_RESPONSE_TOO_LARGE",
            )
        return allowed
