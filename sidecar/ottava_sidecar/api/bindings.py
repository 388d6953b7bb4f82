"""What the binding calls mean, for every wire API; and the readers that call the app on input events.

Output: `invoke` looks the binding up, checks the operation against those the binding
supports, and calls it. Every failure carries Dapr's `ERR_INVOKE_OUTPUT_BINDING` and
Dapr's HTTP status (500); the gRPC status says what kind of failure it was.

Input: once the app is connected, `InputBindings.start` asks it which input bindings it
listens to (`OPTIONS /<route>` or `ListInputBindings`) and runs one reader per binding,
handing each event to the app; an event the app did not accept is handed over again.
"""

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any, Protocol

import grpc

from ottava_sidecar import backoff
from ottava_sidecar.api import errors
from ottava_sidecar.components.bindings.base import (
    BindingEvent,
    BindingMetadata,
    BindingNotFoundError,
    BindingRequest,
    BindingRequestError,
    BindingResponse,
    InputBinding,
    OutputBinding,
)
from ottava_sidecar.components.errors import ComponentError
from ottava_sidecar.components.registry import Entry, Registry, Status
from ottava_sidecar.metrics import ComponentCalls

log = logging.getLogger(__name__)

_CALLS = ComponentCalls("bindings")
ERROR_CODE = "ERR_INVOKE_OUTPUT_BINDING"


def _error(code: grpc.StatusCode, message: str) -> errors.ApiError:
    return errors.ApiError(code, message, http_status=500, error_code=ERROR_CODE)


class BindingsApi:
    def __init__(self, registry: Registry) -> None:
        self._registry = registry

    def _names(self, direction: type[Any]) -> list[str]:
        return sorted(
            e.name
            for e in self._registry.entries()
            if e.building_block == "bindings" and e.status is Status.UP and isinstance(e.instance, direction)
        )

    def output(self, name: str) -> OutputBinding[Any]:
        """The output binding `name`, or an error that names it and the output bindings there are."""
        entry = self._registry.get(name)
        ours = entry is not None and entry.building_block == "bindings"
        if entry is not None and ours and entry.status not in (Status.UP, Status.SKIPPED):
            reason = entry.reason or "initialising"
            raise _error(grpc.StatusCode.UNAVAILABLE, f"output binding {name} is not ready: {reason}")
        instance = entry.instance if entry is not None and ours and entry.status is Status.UP else None
        if not isinstance(instance, OutputBinding):
            known = ", ".join(self._names(OutputBinding)) or "none is configured"
            what = "is an input binding only" if isinstance(instance, InputBinding) else "is not found"
            raise _error(grpc.StatusCode.INVALID_ARGUMENT, f"output binding {name!r} {what} (output bindings: {known})")
        settings: BindingMetadata = instance.settings
        if not settings.allows("output"):
            raise _error(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"binding {name} is not an output binding: its metadata says direction {settings.direction!r}",
            )
        return instance

    async def invoke(self, name: str, operation: str, data: bytes, metadata: dict[str, str]) -> BindingResponse:
        if not name:
            raise _error(grpc.StatusCode.INVALID_ARGUMENT, "binding name is empty")
        binding = self.output(name)
        if operation not in binding.operations:
            supported = ", ".join(binding.operations)
            raise _error(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"binding {name} does not support operation {operation!r} (supported operations: {supported})",
            )
        started = time.perf_counter()
        ok = False
        try:
            response = await binding.invoke(BindingRequest(operation, data, metadata))
            ok = True
            return response
        except BindingNotFoundError as err:
            raise _error(
                grpc.StatusCode.NOT_FOUND, f"error invoking output binding {name} ({operation}): {err}"
            ) from None
        except BindingRequestError as err:
            raise _error(
                grpc.StatusCode.INVALID_ARGUMENT, f"error invoking output binding {name} ({operation}): {err}"
            ) from None
        except ComponentError as err:
            raise _error(
                grpc.StatusCode.INTERNAL, f"error invoking output binding {name} ({operation}): {err}"
            ) from None
        finally:
            _CALLS.observe(name, operation, started, ok)


class BindingApp(Protocol):
    """What the input readers need of the app channel."""

    def describe(self) -> str: ...
    async def input_bindings(self, routes: dict[str, str]) -> set[str]: ...
    async def deliver_binding(self, name: str, route: str, event: BindingEvent) -> None: ...


@dataclass
class _Reader:
    instance: InputBinding[Any]
    task: "asyncio.Task[None]"


# A reader whose backend failed starts reading again after this backoff.
_REREAD = backoff.Backoff(first=0.5, cap=10.0)


class InputBindings:
    """One reader per input binding the app listens to, from `start` until `close`.

    They follow the registry: a binding that comes UP later (added, or its secret
    arrived) is read once the app says it listens; a reload swaps the reader to the new
    instance; a removed or replaced instance hands nothing more to the app.
    """

    def __init__(self, registry: Registry) -> None:
        self._registry = registry
        self._readers: dict[str, _Reader] = {}
        self._app: BindingApp | None = None
        self._following: set[asyncio.Task[None]] = set()
        registry.on_status(self._on_status)

    @property
    def names(self) -> list[str]:
        return sorted(self._readers)

    def _current(self, name: str) -> InputBinding[Any] | None:
        entry = self._registry.get(name)
        instance = entry.instance if entry is not None and entry.status is Status.UP else None
        if isinstance(instance, InputBinding) and instance.settings.allows("input"):
            return instance
        return None

    async def start(self, app: BindingApp) -> list[str]:
        """Read every input binding the app listens to; the names of those started."""
        self._app = app
        inputs = {e.name: b for e in self._registry.entries() if (b := self._current(e.name)) is not None}
        await self._start(app, inputs)
        return self.names

    async def _start(self, app: BindingApp, inputs: dict[str, InputBinding[Any]]) -> None:
        if not inputs:
            return
        routes = {name: _route(binding) for name, binding in inputs.items()}
        listened = await app.input_bindings(routes)
        for name in sorted(set(inputs) - listened):
            log.info("input binding %s: %s does not listen on %s; not reading it", name, app.describe(), routes[name])
        for name in sorted(listened & set(inputs)):
            if self._current(name) is not inputs[name]:
                continue  # replaced while the app was asked: the new instance's turn comes
            self._stop(name)
            task = asyncio.create_task(self._read(app, inputs[name], routes[name]), name=f"input-binding-{name}")
            self._readers[name] = _Reader(inputs[name], task)
            log.info("input binding %s: delivering its events to %s on %s", name, app.describe(), routes[name])

    def _on_status(self, entry: Entry) -> None:
        """A component changed: start or move the reader of a binding that came UP."""
        if self._app is None or entry.building_block != "bindings" or entry.status is not Status.UP:
            return
        instance = entry.instance
        reader = self._readers.get(entry.name)
        if reader is not None and reader.instance is instance:
            return
        if not isinstance(instance, InputBinding) or not instance.settings.allows("input"):
            return
        task = asyncio.create_task(self._follow(self._app, entry.name, instance), name=f"follow-binding-{entry.name}")
        self._following.add(task)
        task.add_done_callback(self._following.discard)

    async def _follow(self, app: BindingApp, name: str, instance: InputBinding[Any]) -> None:
        # The registry tells of a new instance just before it takes the old one's place, in
        # the same step: by the time this task runs, it has, unless a newer one came since.
        if self._current(name) is not instance:
            return
        try:
            await self._start(app, {name: instance})
        except Exception as err:
            log.error("input binding %s: asking %s whether it listens failed: %s", name, app.describe(), err)

    def _stop(self, name: str) -> None:
        reader = self._readers.pop(name, None)
        if reader is not None:
            reader.task.cancel()

    async def _read(self, app: BindingApp, binding: InputBinding[Any], route: str) -> None:
        name = binding.name

        async def handler(event: BindingEvent) -> None:
            if self._current(name) is not binding:
                # Removed or replaced: this instance hands the app nothing more.
                log.info("input binding %s: its instance was replaced or removed; its reader stops", name)
                task = asyncio.current_task()
                assert task is not None
                reader = self._readers.get(name)
                if reader is not None and reader.task is task:
                    del self._readers[name]
                task.cancel()
                await asyncio.sleep(0)
            started = time.perf_counter()
            try:
                await app.deliver_binding(name, route, event)
            except Exception:
                _CALLS.observe(name, "read", started, False)
                raise
            _CALLS.observe(name, "read", started)

        delays = _REREAD.delays()
        while True:
            try:
                await binding.read(handler)
                return
            except ComponentError as err:
                if self._current(name) is not binding:
                    return
                delay = next(delays)
                log.error("input binding %s failed reading (%s); reading again in %.1fs", name, err, delay)
                await asyncio.sleep(delay)

    async def close(self) -> None:
        self._app = None
        for follow in list(self._following):
            follow.cancel()
        readers, self._readers = list(self._readers.values()), {}
        for reader in readers:
            reader.task.cancel()
        for reader in readers:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader.task


def _route(binding: InputBinding[Any]) -> str:
    route: str = binding.settings.route or binding.name
    return "/" + route.lstrip("/")
