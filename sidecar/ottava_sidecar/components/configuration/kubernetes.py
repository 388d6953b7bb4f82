"""`configuration.kubernetes`: ConfigMaps as a configuration store, followed by one watch.

Which ConfigMaps: those labelled `ottava.io/config-store: <component name>` in the
namespace. Each key of a ConfigMap's `data` is one item; the ConfigMap's labels give the
item's address:

* `ottava.io/config-group` → group, `ottava.io/config-label` → label (both "default"
  when absent);
* `ottava.io/app-id` → the app the items belong to. Without it the ConfigMap is
  *shared*: its items are seen by every app. When an app's own ConfigMap and a shared
  one hold the same key, the app's own wins; among ConfigMaps of the same kind, the
  name that sorts first wins.

Saves write to the app's own ConfigMaps (never to shared ones, so one app cannot change
another's configuration): into the one that already holds the key, else into the first
(by name) of that app, group and label, else into a new ConfigMap named after the app,
group and label. Deletes remove keys from
the app's own ConfigMaps only, and delete a ConfigMap left without data. Tags and
metadata of items live in the annotation `ottava.io/config-items` (JSON by key).
An item's version is its ConfigMap's resourceVersion.

One list-then-watch (the `Reflector`) keeps a local copy of the store's ConfigMaps; reads
answer from it, and subscriptions are fed by diffing what each one sees before and after
every change, so a `kubectl edit` reaches subscribers as a watch event, never by polling.
The store's own writes update the copy at once (read-your-writes), and the watch event
that follows is recognised by its resourceVersion.
"""

import asyncio
import copy
import hashlib
import json
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Final

from ottava_sidecar import contract, limits
from ottava_sidecar.components.backends.kubernetes import KubernetesConnection, KubernetesMetadata
from ottava_sidecar.components.configuration.base import (
    DEFAULT_GROUP,
    DEFAULT_LABEL,
    ConfigurationItem,
    ConfigurationQuery,
    ConfigurationStore,
    ConfigurationWatch,
)
from ottava_sidecar.components.errors import ComponentError
from ottava_sidecar.components.registration import register

if TYPE_CHECKING:
    from ottava_sidecar.kube.watch import Reflector

log = logging.getLogger(__name__)

LABEL_STORE: Final = "ottava.io/config-store"
LABEL_GROUP: Final = "ottava.io/config-group"
LABEL_LABEL: Final = "ottava.io/config-label"
LABEL_APP_ID: Final = contract.LABEL_APP_ID
ANNOTATION_ITEMS: Final = "ottava.io/config-items"

_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?")
_DATA_KEY = re.compile(r"[-._A-Za-z0-9]+")
_CONFLICT_RETRIES = 5

_Object = dict[str, Any]


class KubernetesConfigurationMetadata(KubernetesMetadata):
    pass


@register("configuration.kubernetes", KubernetesConfigurationMetadata)
class KubernetesConfigurationStore(ConfigurationStore[KubernetesConfigurationMetadata]):
    """ConfigMaps labelled `ottava.io/config-store: <name>`; subscriptions follow one ConfigMap watch.

    Group, label and app id are the ConfigMap's labels `ottava.io/config-group`,
    `ottava.io/config-label` and `ottava.io/app-id` (absent: shared by every app).
    """

    def __init__(self, name: str, settings: KubernetesConfigurationMetadata, *, app_id: str) -> None:
        super().__init__(name, settings, app_id=app_id)
        self.kube = KubernetesConnection(settings, f"configuration store {name}")
        self._configmaps: dict[str, _Object] = {}
        self._tombstones: dict[str, int] = {}  # name → resourceVersion at which we deleted it
        self._subscriptions: dict[ConfigurationWatch, dict[str, ConfigurationItem]] = {}
        self._reflector: Reflector | None = None
        self._task: asyncio.Task[None] | None = None

    # --- lifecycle -------------------------------------------------------------------

    async def init(self) -> None:
        from ottava_sidecar.kube.client import KubeError
        from ottava_sidecar.kube.watch import Reflector

        _check_label_value("component name", self.name, self.name)
        await self.kube.open()
        selector = f"{LABEL_STORE}={self.name}"
        try:
            # Fails fast, with the missing rule named, where the watch would only retry.
            await self.kube.client.get(self._path(), labelSelector=selector, limit="1")
        except KubeError as err:
            await self.kube.close()
            raise self.kube.error(err, "list", "ConfigMaps") from None
        self._reflector = Reflector(
            self.kube.client, self._path(), self._on_event, label_selector=selector, what=f"ConfigMaps of {self.name}"
        )
        self._task = asyncio.create_task(self._reflector.run(), name=f"{self.name}-configmaps")
        try:
            await asyncio.wait_for(self._reflector.synced.wait(), self.settings.timeout)
        except TimeoutError:
            await self.close()
            reason = self._reflector.last_error or "no answer"
            raise ComponentError(f"configuration store {self.name}: cannot list ConfigMaps: {reason}") from None

    async def close(self) -> None:
        for watch in list(self._subscriptions):
            watch.close()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.kube.close()

    def _path(self, name: str = "") -> str:
        base = f"/api/v1/namespaces/{self.kube.namespace}/configmaps"
        return f"{base}/{name}" if name else base

    # --- reads -----------------------------------------------------------------------

    async def get(self, query: ConfigurationQuery) -> list[ConfigurationItem]:
        return [replace(item) for item in self._visible(query).values()]

    def _visible(self, query: ConfigurationQuery) -> dict[str, ConfigurationItem]:
        """What `query` sees now: shared items, overridden by the app's own."""
        items: dict[str, ConfigurationItem] = {}
        for owned in (False, True):
            for configmap in self._of(query.app_id, query.group, query.label, owned=owned, first_wins=True):
                for item in _items(configmap, query.group, query.label):
                    if not query.keys or item.key in query.keys:
                        items[item.key] = item
        return items

    def _of(self, app_id: str, group: str, label: str, *, owned: bool, first_wins: bool = False) -> list[_Object]:
        """ConfigMaps of (app, group, label), own or shared; sorted by name (reversed when the
        caller lets later ones override earlier ones, so the first name wins)."""
        found = [
            configmap
            for configmap in self._configmaps.values()
            if _address(configmap)[1:] == (group, label)
            and (_address(configmap)[0] == app_id if owned else _address(configmap)[0] is None)
        ]
        return sorted(found, key=_name, reverse=first_wins)

    # --- writes ----------------------------------------------------------------------

    async def save(self, app_id: str, items: Sequence[ConfigurationItem]) -> None:
        _check_label_value("app id", app_id, self.name, required=True)
        targets: dict[str, list[ConfigurationItem]] = {}
        addresses: dict[str, tuple[str, str]] = {}
        for item in items:
            _check_label_value("group", item.group, self.name)
            _check_label_value("label", item.label, self.name)
            if len(item.key) > 253 or not _DATA_KEY.fullmatch(item.key):
                raise ComponentError(
                    f"key {item.key!r} can't be a ConfigMap key in {self.name} (letters, digits, '-', '_', '.')"
                )
            own = self._of(app_id, item.group, item.label, owned=True)
            holder = next((cm for cm in own if item.key in _data(cm)), own[0] if own else None)
            name = _name(holder) if holder is not None else self._canonical_name(app_id, item.group, item.label)
            targets.setdefault(name, []).append(item)
            addresses[name] = (item.group, item.label)
        for name, saved in targets.items():
            group, label = addresses[name]
            await self._update(name, lambda cm, saved=saved: _put_items(cm, saved), create=(app_id, group, label))

    async def delete(self, query: ConfigurationQuery) -> None:
        for configmap in self._of(query.app_id, query.group, query.label, owned=True):
            doomed = [key for key in _data(configmap) if not query.keys or key in query.keys]
            if doomed:
                await self._update(_name(configmap), lambda cm, doomed=doomed: _drop_items(cm, doomed))

    def _canonical_name(self, app_id: str, group: str, label: str) -> str:
        digest = hashlib.sha256(f"{self.name}\0{app_id}\0{group}\0{label}".encode()).hexdigest()[:8]
        readable = "-".join(re.sub(r"[^a-z0-9]+", "-", part.lower()).strip("-")[:40] for part in (app_id, group, label))
        return f"{readable}-{digest}"

    async def _update(
        self,
        name: str,
        change: Any,  # (configmap) -> None, editing it in place
        create: tuple[str, str, str] | None = None,
    ) -> None:
        """Read-modify-write one ConfigMap, retrying on conflicts; delete it when left empty."""
        from ottava_sidecar.kube.client import KubeError

        current = copy.deepcopy(self._configmaps.get(name))
        for _ in range(_CONFLICT_RETRIES):
            try:
                if current is None:
                    if create is None:
                        return  # gone meanwhile: nothing left to delete
                    fresh = self._new_configmap(name, *create)
                    change(fresh)
                    self._apply("ADDED", await self.kube.client.request("POST", self._path(), body=fresh))
                    return
                change(current)
                if not _data(current) and not current.get("binaryData"):
                    rv = current["metadata"]["resourceVersion"]
                    await self.kube.client.request(
                        "DELETE", self._path(name), body={"preconditions": {"resourceVersion": rv}}
                    )
                    self._apply("DELETED", current)
                    return
                self._apply("MODIFIED", await self.kube.client.request("PUT", self._path(name), body=current))
                return
            except KubeError as err:
                if err.status not in (404, 409):
                    verb = "create" if current is None else "update"
                    raise self.kube.error(err, verb, f"ConfigMap {name!r}") from None
                current = await self._fetch(name)  # somebody else wrote it: start from theirs
        raise ComponentError(f"configuration store {self.name}: ConfigMap {name!r} kept changing; try again")

    async def _fetch(self, name: str) -> _Object | None:
        from ottava_sidecar.kube.client import KubeError

        try:
            found = await self.kube.client.get(self._path(name))
        except KubeError as err:
            if err.status == 404:
                return None
            raise self.kube.error(err, "get", f"ConfigMap {name!r}") from None
        if _store(found) != self.name:
            raise ComponentError(
                f"configuration store {self.name}: ConfigMap {name!r} exists but is not labelled "
                f"{LABEL_STORE}={self.name}; rename or relabel it"
            )
        return found

    def _new_configmap(self, name: str, app_id: str, group: str, label: str) -> _Object:
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": name,
                "namespace": self.kube.namespace,
                "labels": {
                    LABEL_STORE: self.name,
                    LABEL_APP_ID: app_id,
                    LABEL_GROUP: group,
                    LABEL_LABEL: label,
                    "app.kubernetes.io/managed-by": "ottava",
                },
            },
            "data": {},
        }

    # --- the local copy and subscriptions ---------------------------------------------

    async def _on_event(self, kind: str, configmap: _Object) -> None:
        self._apply(kind, configmap)

    def _apply(self, kind: str, configmap: _Object) -> None:
        """Take a change into the local copy unless it is older than what the copy holds."""
        name, version = _name(configmap), _version(configmap)
        held = self._configmaps.get(name)
        if held is not None and version is not None and (_version(held) or 0) > version:
            return  # a watch event older than our own write
        if held is None and version is not None and self._tombstones.get(name, -1) >= version:
            return  # an event from before we deleted it
        if kind == "DELETED":
            self._configmaps.pop(name, None)
            if version is not None:
                self._tombstones[name] = version
        elif _store(configmap) == self.name:
            self._configmaps[name] = configmap
        else:
            self._configmaps.pop(name, None)  # relabelled out of this store
        self._notify()

    async def subscribe(
        self, query: ConfigurationQuery, *, buffer_bytes: int = limits.Limits.subscriber_buffer_bytes
    ) -> ConfigurationWatch:
        watch = ConfigurationWatch(query, self._unsubscribe, buffer_bytes=buffer_bytes)
        self._subscriptions[watch] = self._visible(query)
        return watch

    def _unsubscribe(self, watch: ConfigurationWatch) -> None:
        self._subscriptions.pop(watch, None)

    def _notify(self) -> None:
        for watch, seen in list(self._subscriptions.items()):
            now = self._visible(watch.query)
            changed = [replace(item) for key, item in now.items() if _differs(seen.get(key), item)]
            removed = [
                ConfigurationItem(key, "", item.group, item.label, deleted=True)
                for key, item in seen.items()
                if key not in now
            ]
            self._subscriptions[watch] = now
            watch.push(changed + removed)


def _check_label_value(what: str, value: str, store: str, *, required: bool = False) -> None:
    if (required and not value) or len(value) > 63 or not _LABEL_VALUE.fullmatch(value):
        raise ComponentError(
            f"{what} {value!r} can't be a Kubernetes label value in {store} "
            "(at most 63 letters, digits, '-', '_', '.'; starting and ending with a letter or digit)"
        )


def _name(configmap: _Object) -> str:
    return str((configmap.get("metadata") or {}).get("name", ""))


def _version(configmap: _Object) -> int | None:
    """The resourceVersion as a number, for ordering; None when the apiserver's is not one."""
    try:
        return int((configmap.get("metadata") or {}).get("resourceVersion", ""))
    except ValueError:
        return None


def _labels(configmap: _Object) -> dict[str, str]:
    return dict((configmap.get("metadata") or {}).get("labels") or {})


def _store(configmap: _Object) -> str | None:
    return _labels(configmap).get(LABEL_STORE)


def _address(configmap: _Object) -> tuple[str | None, str, str]:
    labels = _labels(configmap)
    return labels.get(LABEL_APP_ID), labels.get(LABEL_GROUP, DEFAULT_GROUP), labels.get(LABEL_LABEL, DEFAULT_LABEL)


def _data(configmap: _Object) -> dict[str, str]:
    if configmap.get("data") is None:
        configmap["data"] = {}
    data: dict[str, str] = configmap["data"]
    return data


def _extras(configmap: _Object) -> dict[str, dict[str, dict[str, str]]]:
    """Tags and metadata by key, from the annotation (ignored when hand-edited into nonsense)."""
    raw = ((configmap.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_ITEMS, "")
    try:
        extras = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return extras if isinstance(extras, dict) else {}


def _set_extras(configmap: _Object, extras: dict[str, dict[str, dict[str, str]]]) -> None:
    annotations = configmap["metadata"].setdefault("annotations", {}) or {}
    configmap["metadata"]["annotations"] = annotations
    if extras:
        annotations[ANNOTATION_ITEMS] = json.dumps(extras, sort_keys=True, separators=(",", ":"))
    else:
        annotations.pop(ANNOTATION_ITEMS, None)


def _items(configmap: _Object, group: str, label: str) -> Iterable[ConfigurationItem]:
    extras = _extras(configmap)
    version = str((configmap.get("metadata") or {}).get("resourceVersion", ""))
    for key, content in (configmap.get("data") or {}).items():
        found = extras.get(key)
        extra: dict[str, dict[str, str]] = found if isinstance(found, dict) else {}
        yield ConfigurationItem(
            key,
            str(content),
            group,
            label,
            tags={str(k): str(v) for k, v in dict(extra.get("tags") or {}).items()},
            metadata={str(k): str(v) for k, v in dict(extra.get("metadata") or {}).items()},
            version=version,
        )


def _put_items(configmap: _Object, items: Sequence[ConfigurationItem]) -> None:
    extras = _extras(configmap)
    for item in items:
        _data(configmap)[item.key] = item.content
        extras.pop(item.key, None)
        extra = {k: v for k, v in (("tags", item.tags), ("metadata", item.metadata)) if v}
        if extra:
            extras[item.key] = extra
    _set_extras(configmap, extras)


def _drop_items(configmap: _Object, keys: Sequence[str]) -> None:
    extras = _extras(configmap)
    for key in keys:
        _data(configmap).pop(key, None)
        extras.pop(key, None)
    _set_extras(configmap, extras)


def _differs(before: ConfigurationItem | None, after: ConfigurationItem) -> bool:
    """A change a subscriber cares about: content, tags or metadata (a version alone is not one;
    every key of a ConfigMap gets a new version when any of them changes)."""
    return before is None or (before.content, before.tags, before.metadata) != (
        after.content,
        after.tags,
        after.metadata,
    )
