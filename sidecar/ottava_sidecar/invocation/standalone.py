"""Standalone name resolution: a registry folder shared by the sidecars of one user.

Each sidecar writes `<folder>/<app-id>/<pid>.json` (its internal address, and the
version of the app it serves, `ottava run --app-version`) when it starts and removes it
when it stops. A file whose process no longer exists (a sidecar that was killed) is
ignored and cleaned up by the next lookup. Several sidecars with the same app id (of one
version or of several) are used in turn; traffic routing may ask for one version's.

The folder is `$OTTAVA_REGISTRY_DIR`, else `$XDG_RUNTIME_DIR/ottava/registry`, else
`~/.ottava/registry`; it is private to the user (mode 0700).
"""

import asyncio
import json
import logging
import os
import time
from pathlib import Path

from ottava_sidecar.invocation.resolution import Address, AppNotFoundError, NameResolver, check_app_id

log = logging.getLogger(__name__)

ENV_REGISTRY_DIR = "OTTAVA_REGISTRY_DIR"
CACHE_SECONDS = 2.0


def default_folder() -> Path:
    if os.environ.get(ENV_REGISTRY_DIR):
        return Path(os.environ[ENV_REGISTRY_DIR])
    if os.environ.get("XDG_RUNTIME_DIR"):
        return Path(os.environ["XDG_RUNTIME_DIR"]) / "ottava" / "registry"
    return Path.home() / ".ottava" / "registry"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


class LocalRegistry(NameResolver):
    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder or default_folder()
        self._own: list[Path] = []  # the records this sidecar wrote: its app id's and its functions'
        self._cache: dict[str, tuple[float, list[Address]]] = {}
        self._turn = 0

    async def register(self, app_id: str, address: Address) -> None:
        check_app_id(app_id)
        self._own.append(await asyncio.to_thread(self._write, app_id, address))
        log.info("registered app %s at %s in %s", app_id, address, self.folder)

    async def register_function(self, name: str, address: Address, host_app_id: str) -> None:
        check_app_id(name)
        self._own.append(await asyncio.to_thread(self._write, name, address, host_app_id))
        log.info("registered function %s of app %s at %s in %s", name, host_app_id, address, self.folder)

    def _write(self, app_id: str, address: Address, served_by: str = "") -> Path:
        folder = self.folder / app_id
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = folder / f"{os.getpid()}.json"
        temporary = path.with_suffix(".tmp")
        record: dict[str, object] = {"appId": app_id, "host": address.host, "port": address.port, "pid": os.getpid()}
        if served_by:  # a function: the sidecar there holds the certificate of the app that runs it
            record["servedBy"] = served_by
        elif address.version:
            record["version"] = address.version
        temporary.write_text(json.dumps(record), encoding="utf-8")
        temporary.chmod(0o600)
        temporary.replace(path)  # atomic: readers never see half a file
        return path

    async def unregister(self) -> None:
        owned, self._own = self._own, []
        for own in owned:
            await asyncio.to_thread(own.unlink, missing_ok=True)

    async def resolve(self, app_id: str, version: str | None = None) -> Address:
        check_app_id(app_id)
        cached = self._cache.get(app_id)
        addresses = cached[1] if cached is not None and cached[0] > time.monotonic() else []
        # Read again when nothing is cached, or nothing of the version asked for: it may have started since.
        if not addresses or (version is not None and all(a.version != version for a in addresses)):
            addresses = await asyncio.to_thread(self._read, app_id)
            self._cache[app_id] = (time.monotonic() + CACHE_SECONDS, addresses)
        if not addresses:
            raise AppNotFoundError(
                f"app id {app_id!r} is not found: no running sidecar has registered it in {self.folder} "
                f"(is `ottava run --app-id {app_id}` running, as the same user?)"
            )
        if version is not None:
            every, addresses = addresses, [a for a in addresses if a.version == version]
            if not addresses:
                found = ", ".join(sorted({a.version or "(none)" for a in every}))
                raise AppNotFoundError(
                    f"no running sidecar of app {app_id!r} serves version {version!r} in {self.folder} "
                    f"(versions found: {found}; is `ottava run --app-id {app_id} --app-version {version}` running?)"
                )
        self._turn += 1
        return addresses[self._turn % len(addresses)]

    def _read(self, app_id: str) -> list[Address]:
        addresses: list[Address] = []
        folder = self.folder / app_id
        if not folder.is_dir():
            return addresses
        for path in sorted(folder.glob("*.json")):
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
                pid = int(record["pid"])
                address = Address(
                    str(record["host"]),
                    int(record["port"]),
                    str(record.get("servedBy", "")),
                    str(record.get("version", "")),
                )
            except (OSError, ValueError, KeyError, TypeError):
                continue  # being replaced, or not ours
            if not _alive(pid):
                path.unlink(missing_ok=True)  # a sidecar that died without cleaning up
                continue
            addresses.append(address)
        return addresses

    def forget(self, app_id: str, address: Address) -> None:
        self._cache.pop(app_id, None)
