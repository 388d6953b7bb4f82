"""Key prefixing, so that apps sharing a backend do not see each other's keys.

Dapr's rule, kept for compatibility with data written by Dapr: by default a key `k` of
app `orders` is stored as `orders||k`. `keyPrefix` chooses the prefix: `appid` (default),
`name` (the component's name), `none`, or any other literal string.
"""

from pydantic import Field

from ottava_sidecar.components.base import ComponentMetadata

SEPARATOR = "||"


class KeyPrefixMetadata(ComponentMetadata):
    """Metadata shared by the building blocks whose keys are prefixed (state, lock)."""

    key_prefix: str = Field(
        default="appid",
        alias="keyPrefix",
        description="Prefix of stored keys: appid (default), name, none, or a literal.",
    )


def prefix_for(key_prefix: str, *, app_id: str, component_name: str) -> str:
    match key_prefix.lower():
        case "appid":
            return app_id
        case "name":
            return component_name
        case "none" | "":
            return ""
        case _:
            return key_prefix


class KeyPrefixer:
    """Turns app keys into stored keys and back."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._head = f"{prefix}{SEPARATOR}" if prefix else ""

    def qualify(self, key: str) -> str:
        """Stored form of an app's key; raises ValueError for a key that would be ambiguous."""
        if self._head and SEPARATOR in key:
            raise ValueError(f"input key {key!r} can't contain '{SEPARATOR}'")
        return self._head + key

    def unqualify(self, stored_key: str) -> str:
        return stored_key[len(self._head) :] if stored_key.startswith(self._head) else stored_key
