"""Mirroring a collection of objects: list once, then watch, and survive everything.

A `Reflector` keeps `objects` equal to the collection on the apiserver and calls back on
every change. Watches resume from the last resourceVersion (bookmarks keep it fresh on
quiet collections); a 410 Gone relists and reports the difference as events; a lost
connection or a restarting apiserver is retried with bounded exponential backoff. One
watch per collection, never polling.
"""

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp

from ottava_sidecar import backoff
from ottava_sidecar.kube.client import KubeClient, KubeError

log = logging.getLogger(__name__)

Handler = Callable[[str, dict[str, Any]], Awaitable[None]]  # (ADDED|MODIFIED|DELETED, object)


def _name(obj: dict[str, Any]) -> str:
    return str(obj.get("metadata", {}).get("name", ""))


def _version(obj: dict[str, Any]) -> str:
    return str(obj.get("metadata", {}).get("resourceVersion", ""))


class Reflector:
    def __init__(
        self,
        client: KubeClient,
        path: str,
        on_event: Handler,
        *,
        field_selector: str | None = None,
        label_selector: str | None = None,
        what: str = "",
        min_backoff: float = backoff.WATCH.first,
        max_backoff: float = backoff.WATCH.cap,
        watch_timeout_seconds: int = 300,
    ) -> None:
        self.client = client
        self.path = path
        self.what = what or path
        self.on_event = on_event
        self.selectors = {k: v for k, v in (("fieldSelector", field_selector), ("labelSelector", label_selector)) if v}
        self.objects: dict[str, dict[str, Any]] = {}
        self.resource_version: str | None = None
        self.synced = asyncio.Event()
        self.last_error: KubeError | None = None
        self._backoff = backoff.Backoff(min_backoff, max_backoff, jitter=backoff.WATCH.jitter)
        self._watch_timeout = watch_timeout_seconds

    async def run(self) -> None:
        delays = self._backoff.delays()
        while True:
            try:
                if self.resource_version is None:
                    await self._relist()
                await self._watch()
                delays = self._backoff.delays()  # a watch that ended normally (server timeout): resume
            except KubeError as err:
                if err.status == 410:
                    log.info("watch expired; relisting", extra={"what": self.what})
                    self.resource_version = None
                    continue
                self.last_error = err
                delay = next(delays)
                log.warning(
                    "watch failed; retrying",
                    extra={"what": self.what, "error": str(err), "retryInSeconds": round(delay, 2)},
                )
                await asyncio.sleep(delay)

    async def _relist(self) -> None:
        listed = await self.client.get(self.path, **self.selectors)
        items = {_name(item): item for item in listed.get("items", [])}
        self.last_error = None
        for name, gone in list(self.objects.items()):
            if name not in items:
                del self.objects[name]
                await self._emit("DELETED", gone)
        for name, item in items.items():
            previous = self.objects.get(name)
            self.objects[name] = item
            if previous is None:
                await self._emit("ADDED", item)
            elif _version(previous) != _version(item):
                await self._emit("MODIFIED", item)
        self.resource_version = str(listed.get("metadata", {}).get("resourceVersion", ""))
        self.synced.set()

    async def _watch(self) -> None:
        params = {
            **self.selectors,
            "watch": "1",
            "allowWatchBookmarks": "true",
            "resourceVersion": self.resource_version or "",
            "timeoutSeconds": str(self._watch_timeout),
        }
        response = await self.client.stream(self.path, params)
        try:
            async for line in _lines(response.content.iter_any()):
                event = json.loads(line)
                kind = event.get("type")
                obj: dict[str, Any] = event.get("object") or {}
                if kind == "ERROR":
                    raise KubeError(int(obj.get("code", 500)), obj.get("reason", ""), obj.get("message", ""))
                self.resource_version = _version(obj) or self.resource_version
                self.last_error = None
                if kind == "BOOKMARK":
                    continue
                name = _name(obj)
                if kind == "DELETED":
                    self.objects.pop(name, None)
                else:
                    self.objects[name] = obj
                await self._emit(str(kind), obj)
        except (OSError, ValueError, asyncio.IncompleteReadError, aiohttp.ClientError) as err:
            # A stopping apiserver cuts the chunked stream short: aiohttp says so with a
            # ClientPayloadError, which must resume the watch like any other break.
            raise KubeError(0, "WatchBroken", f"watch of {self.what} broke: {err or type(err).__name__}") from None
        finally:
            response.release()

    async def _emit(self, kind: str, obj: dict[str, Any]) -> None:
        try:
            await self.on_event(kind, obj)
        except Exception:
            log.exception("handling a watch event failed", extra={"what": self.what, "event": kind, "name": _name(obj)})


async def _lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Newline-delimited JSON of any length (a watch event can exceed a reader's line limit)."""
    buffer = b""
    async for chunk in chunks:
        buffer += chunk
        *complete, buffer = buffer.split(b"\n")
        for line in complete:
            if line.strip():
                yield line
    if buffer.strip():
        yield buffer
