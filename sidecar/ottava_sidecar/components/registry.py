"""The components a sidecar has loaded, by name, with their status.

API handlers look components up here; a lookup that fails names the store and says
whether it is missing, of another building block, or failed to initialise.

A component that failed to initialise is not given up on: `retry_down` initialises DOWN
components again with `backoff.COMPONENT_RETRY`, in every mode, whether or not they
ignore errors, so a backend that comes up after the sidecar is used once it answers.
"""

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from ottava_sidecar import backoff
from ottava_sidecar.components import catalogue
from ottava_sidecar.components.base import ComponentInstance
from ottava_sidecar.components.secretstores.base import SecretStore
from ottava_sidecar.resources.models import Component

log = logging.getLogger(__name__)


class Status(enum.StrEnum):
    INIT = "INIT"
    UP = "UP"
    DOWN = "DOWN"
    SKIPPED = "SKIPPED"  # not loaded: its scopes exclude this app


@dataclass
class Entry:
    manifest: Component
    status: Status = Status.INIT
    reason: str = ""
    instance: ComponentInstance[Any] | None = None
    init_seconds: float | None = None
    # Why it was last DOWN and when (wall clock), kept once it is UP again for troubleshooting.
    last_error: str = ""
    last_error_at: float | None = None

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def type(self) -> str:
        return self.manifest.spec.type

    @property
    def building_block(self) -> str:
        return self.manifest.spec.building_block

    def failed(self, reason: str) -> None:
        """Remember `reason` as the last error, seen now."""
        self.last_error, self.last_error_at = reason, time.time()

    def describe(self) -> dict[str, Any]:
        details: dict[str, Any] = {"type": self.type, "version": self.manifest.spec.version}
        if self.reason:
            details["reason"] = self.reason
        if self.manifest.spec.ignore_errors:
            details["ignoreErrors"] = True
        return {"status": self.status.value, "details": details}


@dataclass
class Condition:
    """Readiness of something that is not a component (e.g. the app the sidecar waits for)."""

    status: Status
    reason: str = ""

    def describe(self) -> dict[str, Any]:
        return {"status": self.status.value, "details": {"reason": self.reason} if self.reason else {}}


RETIRE_GRACE_SECONDS = 5.0


def _same_wiring(a: Component, b: Component) -> bool:
    """Whether two versions of a Component wire the same thing (metadata such as
    resourceVersion or labels do not count)."""
    return a.spec == b.spec and a.scopes == b.scopes and a.auth == b.auth


class LookupFailure(LookupError):
    """Why a component could not be used; `kind` lets each wire API pick its error."""

    def __init__(self, kind: str, building_block: str, name: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind  # "none-configured" | "not-found" | "not-ready"
        self.building_block = building_block
        self.name = name


InstanceT = TypeVar("InstanceT", bound=ComponentInstance[Any])

Listener = Callable[[Entry], None]


class _StartFailure(Exception):
    """Why a component could not be initialised, worded for the readiness body."""


# How long closing an instance nobody will use (its init failed, or it lost a race) may take.
_CLOSE_UNUSED_SECONDS = 5.0


class Registry:
    def __init__(self, app_id: str) -> None:
        self.app_id = app_id
        self._entries: dict[str, Entry] = {}
        self.loaded = False  # every component has finished initialising (or failing)
        self._listeners: list[Listener] = []
        self._conditions: dict[str, Condition] = {}
        self._retiring: set[asyncio.Task[None]] = set()
        self._retrying: asyncio.Task[None] | None = None
        # What the API gets for a component: (name, building block, instance) -> the instance or a
        # stand-in that calls it through its resiliency policies (set by the runtime).
        self.wrap: Callable[[str, str, Any], Any] | None = None

    def set_condition(self, name: str, status: Status, reason: str = "") -> None:
        """Readiness also waits for `name` (INIT), or is DOWN because of it, until it is UP."""
        self._conditions[name] = Condition(status, reason)

    def conditions(self) -> dict[str, Condition]:
        return dict(self._conditions)

    def on_status(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def entries(self) -> list[Entry]:
        return list(self._entries.values())

    def get(self, name: str) -> Entry | None:
        return self._entries.get(name)

    def lookup(
        self, building_block: str, name: str, kind: type[InstanceT], *, through_policies: bool = True
    ) -> InstanceT:
        """The ready instance of component `name`, which must be of `building_block`; with
        `through_policies`, what `wrap` makes of it (its calls under its Resiliency policies)."""
        entry = self._entries.get(name)
        if (
            entry is not None
            and entry.status is Status.UP
            and entry.building_block == building_block
            and isinstance(entry.instance, kind)
        ):
            if through_policies and self.wrap is not None:
                return cast(InstanceT, self.wrap(name, building_block, entry.instance))
            return entry.instance
        raise self._failure(building_block, name, entry)

    def _failure(self, building_block: str, name: str, entry: Entry | None) -> LookupFailure:
        if not any(e.building_block == building_block and e.status is not Status.SKIPPED for e in self.entries()):
            return LookupFailure(
                "none-configured",
                building_block,
                name,
                f"{_noun(building_block)} {name} is not found: no {_noun(building_block)} is configured",
            )
        if entry is None or entry.building_block != building_block or entry.status is Status.SKIPPED:
            return LookupFailure("not-found", building_block, name, f"{_noun(building_block)} {name} is not found")
        return LookupFailure(
            "not-ready",
            building_block,
            name,
            f"{_noun(building_block)} {name} is not ready: {entry.reason or 'initialising'}",
        )

    async def load(self, components: list[Component], resolve: "SecretResolver | None" = None) -> None:
        """Initialise every in-scope component; secret stores first, since others may need them."""
        for manifest in components:
            entry = Entry(manifest)
            if not manifest.in_scope(self.app_id):
                entry.status, entry.reason = Status.SKIPPED, f"scopes {manifest.scopes} exclude app {self.app_id!r}"
            self._entries[manifest.name] = entry
        pending = [e for e in self._entries.values() if e.status is Status.INIT]
        secret_stores = [e for e in pending if e.building_block == "secretstores"]
        await asyncio.gather(*(self._init(e, resolve) for e in secret_stores))
        await asyncio.gather(*(self._init(e, resolve) for e in pending if e not in secret_stores))
        self.loaded = True

    async def _init(self, entry: Entry, resolve: "SecretResolver | None") -> None:
        started = time.monotonic()
        try:
            instance = await self._start(entry.manifest, resolve)
        except _StartFailure as failure:
            self._set(entry, Status.DOWN, str(failure))
        else:
            entry.instance = instance
            entry.init_seconds = time.monotonic() - started
            self._set(entry, Status.UP, "")

    async def _start(self, manifest: Component, resolve: "SecretResolver | None") -> ComponentInstance[Any]:
        """An initialised instance of `manifest`'s component, or `_StartFailure` saying why not."""
        spec = manifest.spec
        try:
            values = await self._metadata_values(manifest, resolve)
            component_type = catalogue.lookup(spec.type, spec.version)
            instance = component_type.create(manifest.name, values, app_id=self.app_id)
        except Exception as err:  # any failure of a backend is reported, never fatal
            raise _StartFailure(f"init failed: {err}") from None
        try:
            await asyncio.wait_for(instance.init(), timeout=spec.init_timeout_seconds)
        except TimeoutError:
            await _close_unused(manifest.name, instance)
            raise _StartFailure(f"init did not finish within initTimeout {spec.init_timeout}") from None
        except Exception as err:
            await _close_unused(manifest.name, instance)
            raise _StartFailure(f"init failed: {err}") from None
        return instance

    def retry_down(self, resolve: "SecretResolver | None" = None) -> None:
        """From now on, initialise DOWN components again (with backoff) until they are UP.

        Started once the components are loaded; stopped by `close`. A component that
        ignores errors is retried too: it does not hold readiness back, but the app
        still wants it.
        """
        if self._retrying is None:
            self._retrying = asyncio.create_task(self._retry_loop(resolve), name="retry DOWN components")

    async def _retry_loop(self, resolve: "SecretResolver | None") -> None:
        delays = backoff.COMPONENT_RETRY.delays()
        while True:
            await asyncio.sleep(next(delays))
            down = [e for e in self._entries.values() if e.status is Status.DOWN]
            if not down:
                delays = backoff.COMPONENT_RETRY.delays()
                continue
            # Secret stores first, as at load: the others may resolve their metadata there.
            secret_stores = [e for e in down if e.building_block == "secretstores"]
            await asyncio.gather(*(self._retry(e, resolve) for e in secret_stores))
            await asyncio.gather(*(self._retry(e, resolve) for e in down if e not in secret_stores))

    async def _retry(self, entry: Entry, resolve: "SecretResolver | None") -> None:
        started = time.monotonic()
        try:
            instance = await self._start(entry.manifest, resolve)
        except _StartFailure as failure:
            if self._entries.get(entry.name) is entry:
                # A new reason is news; the same one again is only worth a debug line.
                level = logging.DEBUG if entry.reason == str(failure) else logging.WARNING
                entry.reason = str(failure)
                entry.failed(entry.reason)
                log.log(
                    level,
                    "component %s still DOWN; it is retried with backoff",
                    entry.name,
                    extra={"component": entry.name, "type": entry.type, "reason": entry.reason},
                )
            return
        if self._entries.get(entry.name) is not entry or entry.status is not Status.DOWN:
            # Reloaded or removed while this attempt initialised: the newer wiring wins.
            await _close_unused(entry.name, instance)
            return
        entry.instance = instance
        entry.init_seconds = time.monotonic() - started
        self._set(entry, Status.UP, "")

    async def _metadata_values(self, manifest: Component, resolve: "SecretResolver | None") -> dict[str, str]:
        values: dict[str, str] = {}
        for item in manifest.spec.metadata:
            if item.secret_key_ref is None:
                values[item.name] = item.value or ""
                continue
            if resolve is None:
                raise LookupError(f"metadata {item.name}: secretKeyRef cannot be resolved here")
            ref = item.secret_key_ref
            values[item.name] = await resolve(manifest, ref.name, ref.key or ref.name)
        return values

    def _set(self, entry: Entry, status: Status, reason: str) -> None:
        entry.status, entry.reason = status, reason
        if status is Status.DOWN:
            entry.failed(reason)
        level = logging.INFO if status is Status.UP else logging.ERROR
        log.log(
            level,
            "component %s %s",
            entry.name,
            status.value,
            extra={"component": entry.name, "type": entry.type, **({"reason": reason} if reason else {})},
        )
        for listener in self._listeners:
            listener(entry)

    async def upsert(
        self, manifest: Component, resolve: "SecretResolver | None" = None, *, force: bool = False
    ) -> Entry:
        """Load a new or changed component, switching calls to it once it has initialised.

        Calls keep reaching the current instance while the new one initialises, so a
        reload fails no call; the old instance is closed a grace period after the switch,
        when calls that had already looked it up have finished.
        """
        old = self._entries.get(manifest.name)
        if old is not None and not force and _same_wiring(old.manifest, manifest):
            return old
        entry = Entry(manifest)
        if old is not None:  # a reload keeps the component's last error until it has a newer one
            entry.last_error, entry.last_error_at = old.last_error, old.last_error_at
        if manifest.in_scope(self.app_id):
            await self._init(entry, resolve)
        else:
            entry.status, entry.reason = Status.SKIPPED, f"scopes {manifest.scopes} exclude app {self.app_id!r}"
        # Retire what is there now: a retry may have brought `old` UP meanwhile.
        self._retire(self._entries.get(manifest.name))
        self._entries[manifest.name] = entry
        log.info("component %s %s", manifest.name, "reloaded" if old else "added", extra={"status": entry.status.value})
        return entry

    def remove(self, name: str) -> None:
        """Unload a deleted component; calls to it now fail naming it."""
        old = self._entries.pop(name, None)
        self._retire(old)
        if old is not None:
            log.info("component %s removed", name)

    def _retire(self, old: Entry | None) -> None:
        if old is None or old.instance is None:
            return
        instance = old.instance

        async def close_later() -> None:
            await asyncio.sleep(RETIRE_GRACE_SECONDS)
            try:
                await instance.close()
            except Exception:
                log.exception("closing the replaced instance of %s failed", old.name)

        task = asyncio.create_task(close_later(), name=f"retire-{old.name}")
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def close(self) -> None:
        if self._retrying is not None:
            self._retrying.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retrying
        for task in list(self._retiring):
            task.cancel()
        for entry in self._entries.values():
            if entry.instance is not None:
                try:
                    await entry.instance.close()
                except Exception:
                    log.exception("closing component %s failed", entry.name)


async def _close_unused(name: str, instance: ComponentInstance[Any]) -> None:
    """Release what an instance nobody will use holds (a connection pool), so retries leak nothing."""
    try:
        await asyncio.wait_for(instance.close(), timeout=_CLOSE_UNUSED_SECONDS)
    except Exception as err:
        log.debug("closing an unused instance of %s: %s", name, err)


_NOUNS = {
    "bindings": "binding",
    "secretstores": "secret store",
    "pubsub": "pub/sub",
    "sequencer": "sequencer store",
    "function": "function",
}


def _noun(building_block: str) -> str:
    """How messages name a component of a building block ("state store", "secret store")."""
    return _NOUNS.get(building_block, f"{building_block} store")


# Where secretKeyRef values come from without auth.secretStore: Kubernetes Secrets in a cluster.
DefaultSecrets = Callable[[str, str], Awaitable[str]]


class SecretResolver:
    """Resolves a component's `secretKeyRef` from the secret store its `auth` names."""

    def __init__(self, registry: Registry, default: "DefaultSecrets | None" = None) -> None:
        self._registry = registry
        self._default = default

    async def __call__(self, manifest: Component, name: str, key: str) -> str:
        store_name = manifest.auth.secret_store if manifest.auth else ""
        if not store_name:
            if self._default is not None:
                return await self._default(name, key)
            raise LookupError(f"secretKeyRef {name!r} needs auth.secretStore naming a secret store")
        store = self._registry.lookup("secretstores", store_name, SecretStore)
        secret: Mapping[str, str] = await store.get(name)
        if key not in secret:
            raise LookupError(f"secret {name!r} in {store_name} has no key {key!r}")
        return secret[key]
