"""Name resolution: which sidecar serves an app id.

`NameResolver` is the interface a sidecar uses: it registers its own app id and
internal address when it starts, removes them when it stops, and resolves the app ids
it calls. Standalone sidecars resolve through a folder on the local machine
(`standalone.LocalRegistry`); in a cluster they follow the EndpointSlices of each app's
Service (`kubernetes.KubernetesResolver`).
"""

import abc
import re
from dataclasses import dataclass

APP_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")


@dataclass(frozen=True)
class Address:
    host: str
    port: int
    # The app id whose certificate the sidecar there holds, when it is not the app id
    # resolved: a function's name resolves to the sidecar that runs it (docs/wasm.md).
    certified_as: str = ""
    # The version of the app that the sidecar there serves (`ottava run --app-version`, the
    # pod label `ottava.io/app-version`); empty when it declared none. Traffic routing picks by it.
    version: str = ""

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


class AppNotFoundError(LookupError):
    """No sidecar serves the app id; the message names it and where it was looked for."""


def check_app_id(app_id: str) -> None:
    if not APP_ID.match(app_id):
        raise AppNotFoundError(
            f"app id {app_id!r} is not valid (letters, digits, '.', '_', '-'; starting with a letter or digit)"
        )


class NameResolver(abc.ABC):
    @abc.abstractmethod
    async def register(self, app_id: str, address: Address) -> None:
        """Make this sidecar findable as `app_id` at `address`."""

    @abc.abstractmethod
    async def unregister(self) -> None:
        """Undo `register` (on shutdown)."""

    @abc.abstractmethod
    async def resolve(self, app_id: str, version: str | None = None) -> Address:
        """The internal address of a sidecar serving `app_id` (at `version`, unless None); `AppNotFoundError` if none."""

    async def register_function(self, name: str, address: Address, host_app_id: str) -> None:
        """Make the function `name`, run by this sidecar (app `host_app_id`), findable at `address`.

        A resolver that cannot leaves it reachable from its own sidecar only.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot make functions reachable from other sidecars")

    def served_app_id(self, target: str) -> str:
        """The app id the target's sidecar serves, from the form the caller named it in."""
        return target

    def served_namespace(self, target: str) -> str | None:
        """The namespace of the target's app (None: the caller's own), which its certificate names."""
        return None

    def forget(self, app_id: str, address: Address) -> None:  # noqa: B027 - optional hook
        """`address` failed for `app_id`: do not hand it out from a cache again."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release what resolution holds (watches, connections); after the last call."""
