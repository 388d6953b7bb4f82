"""`function.wasm`: a WebAssembly module (WASI preview 1) run by wasmtime, invoked like an app.

Each call runs the module's `_start` in a fresh instance (the ABI and the reasons for
its shape are in docs/wasm.md): the request body is its stdin, its stdout the response
body, the method and the rest are in its environment, and a non-zero exit status is an
error whose message carries its stderr. It reaches the runtime API only through the
host functions of the import module `ottava`.

The sandbox: no preopened folder, no socket, no inherited environment or argument; a
memory limit per instance (`memoryLimitMiB`); a time limit per call (`timeLimit`), by
epoch interruption: one timer thread advances the engine's epoch every `TICK_SECONDS`,
and an instance past its deadline traps at its next loop head or call. Calls run in a
thread pool of the component's own (`maxConcurrentCalls`), so a looping module holds its
own threads until its limit stops it, never the event loop or another function's calls.

Compiled modules are cached by their content's SHA-256, so a reload of the same bytes
or a second component on one module compiles nothing. The file is checked every
`reloadInterval`; a changed module is compiled in the background and swapped in once it
compiled, so calls keep running on the old module until then and none fails.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import concurrent.futures
import hashlib
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import Field, model_validator

from ottava_sidecar import metrics
from ottava_sidecar.components.backends.options import Seconds
from ottava_sidecar.components.base import ComponentMetadata
from ottava_sidecar.components.errors import ComponentError
from ottava_sidecar.components.functions.base import (
    Function,
    FunctionCall,
    FunctionError,
    FunctionFailure,
    FunctionHost,
    FunctionResult,
)
from ottava_sidecar.components.registration import register

if TYPE_CHECKING:
    import wasmtime

log = logging.getLogger(__name__)

TICK_SECONDS = 0.005  # the epoch timer's period: a call overruns its time limit by at most this
PAGE = 65536
MODULES_CACHED = 32  # compiled modules kept (the functions' current ones, and recent versions)
STDERR_KEPT = 4096  # bytes of stderr an error message carries
IMPORT_MODULE = "ottava"

# Host functions' results: the length of the pending result (>= 0), or one of these.
NOT_FOUND = -1
ERROR = -2

T = TypeVar("T")


class WasmMetadata(ComponentMetadata):
    path: str = Field(
        default="",
        description="The module: a `.wasm` file, or a `.wat` text file (compiled as it is read). "
        "Standalone; in a cluster, name a ConfigMap key instead (`configMap`, `configMapKey`).",
    )
    config_map: str = Field(
        default="",
        alias="configMap",
        description="In a cluster: the ConfigMap (in the sidecar's namespace) that holds the module, "
        "followed by a watch, so an edit is a hot reload.",
    )
    config_map_key: str = Field(
        default="",
        alias="configMapKey",
        description="The key of the module in `configMap`: under `binaryData` (a `.wasm`), or under `data` "
        "(WAT text). Default: the only key the ConfigMap has.",
    )
    memory_limit_mib: int = Field(
        default=64,
        alias="memoryLimitMiB",
        ge=1,
        le=4096,
        description="The most linear memory one instance may grow to, in MiB; growing beyond it fails.",
    )
    time_limit: Seconds = Field(
        default=1.0,
        gt=0,
        le=3600,
        alias="timeLimit",
        description="How long one call may run (its host calls included) before it is stopped.",
    )
    max_concurrent_calls: int = Field(
        default=4,
        alias="maxConcurrentCalls",
        ge=1,
        le=256,
        description="Calls run at once, each on a thread of the function's own; more wait for a free one.",
    )
    reload_interval: Seconds = Field(
        default=1.0,
        ge=0,
        alias="reloadInterval",
        description='How often the file is checked for a new module ("0s": never; the module is read once).',
    )
    content_type: str = Field(
        default="text/plain; charset=utf-8",
        alias="contentType",
        description="The content type of the response body (what the function writes to stdout).",
    )

    @model_validator(mode="after")
    def _one_source(self) -> WasmMetadata:
        if bool(self.path) == bool(self.config_map):
            raise ValueError("name the module with exactly one of 'path' (a file) and 'configMap' (in a cluster)")
        if self.config_map_key and not self.config_map:
            raise ValueError("'configMapKey' goes with 'configMap'")
        return self


# ---------------------------------------------------------------------------------------------
# The engine, its epoch timer, and the compiled modules: one of each per process.


class _Engine:
    """The wasmtime engine (loaded on first use), its epoch timer and the module cache."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._engine: wasmtime.Engine | None = None
        self._linker: wasmtime.Linker | None = None
        # Compiled modules by SHA-256, most recently used last; a call holds its own reference.
        self._modules: collections.OrderedDict[str, wasmtime.InstancePre] = collections.OrderedDict()
        self._users = 0
        self._timer: tuple[threading.Thread, threading.Event] | None = None

    def acquire(self) -> None:
        """A component starts using the engine: the timer runs while any does."""
        with self._lock:
            self._users += 1
            if self._timer is None:
                stop = threading.Event()  # its own, so a timer that is stopping never runs on
                thread = threading.Thread(target=self._tick, args=(stop,), name="wasm-epoch", daemon=True)
                self._timer = (thread, stop)
                thread.start()

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            timer = self._timer if self._users == 0 else None
            if timer is not None:
                self._timer = None
                timer[1].set()
        if timer is not None:
            timer[0].join()

    def _tick(self, stop: threading.Event) -> None:
        engine = self.engine()
        while not stop.wait(TICK_SECONDS):
            engine.increment_epoch()

    def engine(self) -> wasmtime.Engine:
        with self._lock:
            if self._engine is None:
                import wasmtime  # only when a function.wasm component starts

                config = wasmtime.Config()
                config.epoch_interruption = True
                self._engine = wasmtime.Engine(config)
                self._linker = _linker(self._engine)
            return self._engine

    def prepare(self, digest: str, code: bytes) -> wasmtime.InstancePre:
        """The module of `code` (SHA-256 `digest`) compiled and linked; from the cache when it was before.

        Runs in a worker thread: compiling takes from milliseconds (WAT) to a second (Go).
        """
        import wasmtime

        engine = self.engine()
        with self._lock:
            cached = self._modules.get(digest)
            if cached is not None:
                self._modules.move_to_end(digest)
                return cached
        module = wasmtime.Module(engine, code if code.startswith(b"\0asm") else bytes(wasmtime.wat2wasm(code.decode())))
        exports = {export.name: export.type for export in module.exports}
        if not isinstance(exports.get("_start"), wasmtime.FuncType):
            raise ValueError("it exports no function '_start': build it as a WASI command (a main function)")
        if not isinstance(exports.get("memory"), wasmtime.MemoryType):
            raise ValueError("it exports no memory named 'memory', which the host functions read and write")
        assert self._linker is not None
        pre = self._linker.instantiate_pre(module)  # fails on an import that neither WASI nor `ottava` has
        with self._lock:
            pre = self._modules.setdefault(digest, pre)
            while len(self._modules) > MODULES_CACHED:
                self._modules.popitem(last=False)
            return pre


ENGINE = _Engine()


# ---------------------------------------------------------------------------------------------
# One call: its context, the host functions that read it, and the run.


@dataclass
class _CallContext:
    name: str
    host: FunctionHost
    loop: asyncio.AbstractEventLoop
    deadline: float  # time.monotonic()
    result: bytes = b""  # what result_read copies
    error: str = ""  # what error_read copies
    content_type: str = ""


_CURRENT = threading.local()  # the _CallContext of the call the worker thread runs


def _context() -> _CallContext:
    context: _CallContext = _CURRENT.context
    return context


def _memory(caller: wasmtime.Caller) -> wasmtime.Memory:
    import wasmtime

    memory = caller.get("memory")
    if not isinstance(memory, wasmtime.Memory):
        raise wasmtime.WasmtimeError("the module exports no memory named 'memory'")
    return memory


def _read(caller: wasmtime.Caller, ptr: int, length: int) -> bytes:
    return bytes(_memory(caller).read(caller, ptr, ptr + length))


def _text(caller: wasmtime.Caller, ptr: int, length: int) -> str:
    return _read(caller, ptr, length).decode(errors="replace")


def _write(caller: wasmtime.Caller, ptr: int, length: int, data: bytes) -> int:
    """Copy up to `length` bytes of `data` to the guest at `ptr`; how many were copied."""
    part = data[: max(0, length)]
    if part:
        _memory(caller).write(caller, part, ptr)
    return len(part)


def _await(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a host call on the event loop and wait for it, within the call's time limit."""
    context = _context()
    remaining = context.deadline - time.monotonic()
    future = asyncio.run_coroutine_threadsafe(coroutine, context.loop)
    if remaining <= 0:
        future.cancel()
        raise TimeoutError("the call's time limit has passed")
    try:
        return future.result(remaining)
    except concurrent.futures.TimeoutError:
        future.cancel()
        raise TimeoutError("the call's time limit has passed") from None


def _host_call(name: str, body: Callable[[_CallContext], int]) -> int:
    """Run a host function: its failure becomes ERROR, with the text for error_read."""
    context = _context()
    try:
        return body(context)
    except Exception as err:  # whatever the runtime API raised: the guest decides what to do
        context.error = f"{name}: {err}" if str(err) else f"{name}: {type(err).__name__}"
        return ERROR


def _pending(context: _CallContext, data: bytes | None) -> int:
    if data is None:
        context.result = b""
        return NOT_FOUND
    context.result = data
    return len(data)


def _state_get(c: wasmtime.Caller, sp: int, sl: int, kp: int, kl: int) -> int:
    def body(ctx: _CallContext) -> int:
        return _pending(ctx, _await(ctx.host.state_get(_text(c, sp, sl), _text(c, kp, kl))))

    return _host_call("state_get", body)


def _state_save(c: wasmtime.Caller, sp: int, sl: int, kp: int, kl: int, vp: int, vl: int) -> int:
    def body(ctx: _CallContext) -> int:
        _await(ctx.host.state_save(_text(c, sp, sl), _text(c, kp, kl), _read(c, vp, vl)))
        return 0

    return _host_call("state_save", body)


def _state_delete(c: wasmtime.Caller, sp: int, sl: int, kp: int, kl: int) -> int:
    def body(ctx: _CallContext) -> int:
        _await(ctx.host.state_delete(_text(c, sp, sl), _text(c, kp, kl)))
        return 0

    return _host_call("state_delete", body)


def _publish(c: wasmtime.Caller, pp: int, pl: int, tp: int, tl: int, dp: int, dl: int, cp: int, cl: int) -> int:
    def body(ctx: _CallContext) -> int:
        content_type = _text(c, cp, cl) or "application/json"
        _await(ctx.host.publish(_text(c, pp, pl), _text(c, tp, tl), _read(c, dp, dl), content_type))
        return 0

    return _host_call("publish", body)


def _invoke(c: wasmtime.Caller, ap: int, al: int, mp: int, ml: int, dp: int, dl: int) -> int:
    def body(ctx: _CallContext) -> int:
        return _pending(ctx, _await(ctx.host.invoke(_text(c, ap, al), _text(c, mp, ml), _read(c, dp, dl))))

    return _host_call("invoke", body)


def _config_get(c: wasmtime.Caller, sp: int, sl: int, kp: int, kl: int) -> int:
    def body(ctx: _CallContext) -> int:
        value = _await(ctx.host.config_get(_text(c, sp, sl), _text(c, kp, kl)))
        return _pending(ctx, None if value is None else value.encode())

    return _host_call("config_get", body)


def _log(c: wasmtime.Caller, level: int, p: int, n: int) -> None:
    name = _context().name
    logging.getLogger(f"{__name__}.{name}").log(_LEVELS.get(level, logging.INFO), "%s", _text(c, p, n))


def _result_read(c: wasmtime.Caller, p: int, n: int) -> int:
    return _write(c, p, n, _context().result)


def _error_read(c: wasmtime.Caller, p: int, n: int) -> int:
    return _write(c, p, n, _context().error.encode())


def _set_content_type(c: wasmtime.Caller, p: int, n: int) -> None:
    _context().content_type = _text(c, p, n)


# name: (its i32 parameters, whether it returns an i32, the function)
_HOST_FUNCTIONS: dict[str, tuple[int, bool, Callable[..., int | None]]] = {
    "state_get": (4, True, _state_get),
    "state_save": (6, True, _state_save),
    "state_delete": (4, True, _state_delete),
    "publish": (8, True, _publish),
    "invoke": (6, True, _invoke),
    "config_get": (4, True, _config_get),
    "log": (3, False, _log),
    "result_read": (2, True, _result_read),
    "error_read": (2, True, _error_read),
    "set_content_type": (2, False, _set_content_type),
}


def _linker(engine: wasmtime.Engine) -> wasmtime.Linker:
    """WASI preview 1 and the `ottava` host functions; they find their call in `_CURRENT`."""
    import wasmtime

    i32 = wasmtime.ValType.i32()
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    for name, (params, returns, function) in _HOST_FUNCTIONS.items():
        kind = wasmtime.FuncType([i32] * params, [i32] if returns else [])
        linker.define_func(IMPORT_MODULE, name, kind, function, access_caller=True)
    return linker


_LIMITS = {FunctionFailure.TIME_LIMIT: "time", FunctionFailure.MEMORY_LIMIT: "memory"}
_LEVELS = {0: logging.DEBUG, 1: logging.INFO, 2: logging.WARNING, 3: logging.ERROR}


def _memfd(name: str, data: bytes = b"") -> tuple[int, str]:
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    if data:
        os.write(fd, data)
    return fd, f"/proc/self/fd/{fd}"


def _read_fd(fd: int, most: int) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, most) if most > 0 else b""


# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Loaded:
    digest: str
    pre: wasmtime.InstancePre
    stamp: tuple[int, int]  # the file's (mtime_ns, size) when it was read; (0, 0) from a ConfigMap


@register("function.wasm", WasmMetadata)
class WasmFunction(Function[WasmMetadata]):
    """A WebAssembly module run in a fresh instance for each call."""

    async def init(self) -> None:
        self.time_limit = self.settings.time_limit
        self.memory_bytes = self.settings.memory_limit_mib * 1024 * 1024
        self.path = Path(self.settings.path)
        ENGINE.acquire()
        self._acquired = True
        self._watch: asyncio.Task[None] | None = None
        self._config_map: _ConfigMapSource | None = None
        loaded: _Loaded | None
        try:
            if self.settings.config_map:
                self._config_map = _ConfigMapSource(self)
                loaded = await self._config_map.open()
            else:
                loaded = await self._load(None)
        except Exception:
            await self.close()
            raise
        assert loaded is not None  # with nothing loaded before, it loads or raises
        self.loaded: _Loaded = loaded
        self._pool = concurrent.futures.ThreadPoolExecutor(
            self.settings.max_concurrent_calls, thread_name_prefix=f"wasm-{self.name}"
        )
        interval = self.settings.reload_interval
        if self._config_map is not None:
            self._config_map.follow()
        elif interval > 0:
            self._watch = asyncio.create_task(self._watch_file(interval), name=f"wasm-reload-{self.name}")

    async def compile(self, code: bytes, origin: str, stamp: tuple[int, int]) -> _Loaded:
        """`code` compiled (or found in the cache), or a ComponentError naming `origin`."""
        digest = hashlib.sha256(code).hexdigest()
        started = time.monotonic()
        try:
            pre = await asyncio.to_thread(ENGINE.prepare, digest, code)
        except Exception as err:
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ComponentError(f"function {self.name}: module {origin} cannot be used: {reason}") from None
        log.info(
            "function %s: module %s (sha256 %s) ready in %.0f ms",
            self.name,
            origin,
            digest[:12],
            (time.monotonic() - started) * 1000,
        )
        return _Loaded(digest, pre, stamp)

    async def _stamp(self) -> tuple[int, int]:
        """The file's (mtime_ns, size): what tells a changed module without reading it."""
        try:
            stat = await asyncio.to_thread(self.path.stat)
        except OSError as err:
            raise ComponentError(f"function {self.name}: cannot read its module {self.path}: {err.strerror}") from None
        return stat.st_mtime_ns, stat.st_size

    async def _load(self, current: _Loaded | None) -> _Loaded | None:
        """The module at `path` compiled, or None when it did not change since `current`."""
        stamp = await self._stamp()
        if current is not None and current.stamp == stamp:
            return None
        try:
            code = await asyncio.to_thread(self.path.read_bytes)
        except OSError as err:
            raise ComponentError(f"function {self.name}: cannot read its module {self.path}: {err.strerror}") from None
        digest = hashlib.sha256(code).hexdigest()
        if current is not None and current.digest == digest:
            return _Loaded(digest, current.pre, stamp)
        return await self.compile(code, str(self.path), stamp)

    async def _watch_file(self, interval: float) -> None:
        failed: tuple[int, int] | None = None  # the file that did not load: tried again once it changes
        while True:
            await asyncio.sleep(interval)
            stamp = await self._stamp_or_none()
            if stamp in (self.loaded.stamp, failed):
                continue
            try:
                loaded = await self._load(self.loaded)
            except ComponentError as err:
                # Keep serving the module that works; say once why the new one is not used.
                failed = stamp
                metrics.FUNCTION_RELOADS.labels(self.name, "failed").inc()
                log.error("%s; the previous module keeps serving", err)
                continue
            if loaded is not None:
                if loaded.digest != self.loaded.digest:
                    metrics.FUNCTION_RELOADS.labels(self.name, "reloaded").inc()
                    log.info("function %s: reloaded %s", self.name, self.path)
                self.loaded = loaded  # calls that started keep the module they started with

    async def _stamp_or_none(self) -> tuple[int, int]:
        try:
            return await self._stamp()
        except ComponentError:
            return (-1, -1)  # no file: reported once, until one appears

    async def close(self) -> None:
        watch = getattr(self, "_watch", None)
        if watch is not None:
            watch.cancel()
        source = getattr(self, "_config_map", None)
        if source is not None:
            await source.close()
        pool = getattr(self, "_pool", None)
        if pool is not None:
            # The calls that started or wait finish first, each within its time limit: the epoch
            # timer, which enforces that limit, must outlive them.
            await asyncio.to_thread(pool.shutdown, wait=True)
        if getattr(self, "_acquired", False):
            self._acquired = False
            await asyncio.to_thread(ENGINE.release)

    async def call(self, call: FunctionCall, host: FunctionHost) -> FunctionResult:
        limit = self.time_limit
        context = _CallContext(self.name, host, asyncio.get_running_loop(), deadline=0.0)
        loaded = self.loaded
        started = time.monotonic()
        outcome = "ok"
        try:
            # The thread stops itself at its time limit: a caller that gives up sooner leaves it to finish.
            return await asyncio.wrap_future(self._pool.submit(self._run, loaded.pre, call, context, limit))
        except FunctionError as err:
            outcome = err.kind.value
            if err.kind in _LIMITS:
                metrics.FUNCTION_LIMIT_HITS.labels(self.name, _LIMITS[err.kind]).inc()
            raise
        finally:
            metrics.FUNCTION_CALLS.labels(self.name, outcome).inc()
            metrics.FUNCTION_SECONDS.labels(self.name).observe(time.monotonic() - started)

    def _run(
        self, pre: wasmtime.InstancePre, call: FunctionCall, context: _CallContext, limit: float
    ) -> FunctionResult:
        """One call in a fresh instance, in a worker thread."""

        context.deadline = time.monotonic() + limit
        running = metrics.FUNCTION_RUNNING.labels(self.name)
        running.inc()
        try:
            return self._run_instance(pre, call, context, limit)
        finally:
            running.dec()

    def _run_instance(
        self, pre: wasmtime.InstancePre, call: FunctionCall, context: _CallContext, limit: float
    ) -> FunctionResult:
        import wasmtime

        store = wasmtime.Store(ENGINE.engine())
        store.set_limits(memory_size=self.memory_bytes)
        store.set_epoch_deadline(max(1, math.ceil(limit / TICK_SECONDS)))
        wasi = wasmtime.WasiConfig()
        wasi.argv = [self.name, call.method]
        wasi.env = [
            ("OTTAVA_FUNCTION", self.name),
            ("OTTAVA_METHOD", call.method),
            ("OTTAVA_HTTP_VERB", call.verb),
            ("OTTAVA_QUERY", call.query),
            ("OTTAVA_CONTENT_TYPE", call.content_type),
            ("OTTAVA_CALLER_APP_ID", call.caller_app_id),
        ]
        stdin, stdin_path = _memfd("stdin", call.data)
        stdout, stdout_path = _memfd("stdout")
        stderr, stderr_path = _memfd("stderr")
        try:
            wasi.stdin_file = stdin_path
            wasi.stdout_file = stdout_path
            wasi.stderr_file = stderr_path
            store.set_wasi(wasi)
            _CURRENT.context = context
            instance: wasmtime.Instance | None = None
            try:
                instance = pre.instantiate(store)
                start = instance.exports(store).get("_start")
                if not isinstance(start, wasmtime.Func):
                    raise FunctionError(
                        FunctionFailure.INVALID,
                        f"function {self.name}: its module exports no '_start' (a WASI command)",
                    )
                status = 0
                try:
                    start(store)
                except wasmtime.ExitTrap as exit_:
                    status = exit_.code
            except wasmtime.Trap as trap:
                raise self._trap_error(trap, store, instance_memory(store, instance)) from None
            except wasmtime.WasmtimeError as err:
                raise self._instantiation_error(err) from None
            finally:
                _CURRENT.context = None
            if status != 0:
                if time.monotonic() >= context.deadline:  # a host call it waited for was cut at the limit
                    raise self._time_limit_error()
                detail = _read_fd(stderr, STDERR_KEPT).decode(errors="replace").strip()
                used = instance_memory(store, instance)
                # Growing past the limit fails: a module then exits (Go: "fatal error: out of memory").
                if (used is not None and used + PAGE > self.memory_bytes) or "out of memory" in detail:
                    raise FunctionError(
                        FunctionFailure.MEMORY_LIMIT,
                        f"function {self.name} exceeded its memory limit of {self.settings.memory_limit_mib} MiB "
                        f"(it exited with status {status}: {detail.splitlines()[0] if detail else 'no message'})",
                    )
                raise FunctionError(
                    FunctionFailure.FAILED,
                    f"function {self.name} failed on {call.method} with exit status {status}"
                    + (f": {detail}" if detail else " (it wrote nothing to stderr)"),
                )
            size = os.fstat(stdout).st_size
            if size > self.memory_bytes:
                raise FunctionError(
                    FunctionFailure.FAILED,
                    f"function {self.name} wrote {size} bytes to stdout, more than its memory limit "
                    f"({self.settings.memory_limit_mib} MiB)",
                )
            return FunctionResult(_read_fd(stdout, size), context.content_type or self.settings.content_type)
        finally:
            for fd in (stdin, stdout, stderr):
                os.close(fd)

    def _trap_error(self, trap: wasmtime.Trap, store: wasmtime.Store, memory_bytes: int | None) -> FunctionError:
        import wasmtime

        if trap.trap_code is wasmtime.TrapCode.INTERRUPT:
            return self._time_limit_error()
        if memory_bytes is not None and memory_bytes + PAGE > self.memory_bytes:
            # memory.grow past the limit returns -1; a module that then traps ran out of memory.
            return FunctionError(
                FunctionFailure.MEMORY_LIMIT,
                f"function {self.name} exceeded its memory limit of {self.settings.memory_limit_mib} MiB "
                f"(it trapped with {memory_bytes // 1024} KiB in use: {_trap_text(trap.message)})",
            )
        return FunctionError(FunctionFailure.TRAPPED, f"function {self.name} trapped: {_trap_text(trap.message)}")

    def _time_limit_error(self) -> FunctionError:
        return FunctionError(
            FunctionFailure.TIME_LIMIT,
            f"function {self.name} exceeded its {_ms(self.time_limit)} time limit and was stopped",
        )

    def _instantiation_error(self, err: Exception) -> FunctionError:
        text = str(err)
        if "memory" in text and ("limit" in text or "exceed" in text or "grow" in text):
            return FunctionError(
                FunctionFailure.MEMORY_LIMIT,
                f"function {self.name} needs more memory than its limit of "
                f"{self.settings.memory_limit_mib} MiB to start: {text.splitlines()[0]}",
            )
        return FunctionError(FunctionFailure.INVALID, f"function {self.name} cannot start: {text.splitlines()[0]}")


def instance_memory(store: wasmtime.Store, instance: wasmtime.Instance | None) -> int | None:
    """Bytes of linear memory the instance has (None when it exports none)."""
    import wasmtime

    if instance is None:
        return None
    memory = instance.exports(store).get("memory")
    if not isinstance(memory, wasmtime.Memory):
        return None
    return int(memory.data_len(store))


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:g} ms" if seconds < 1 else f"{seconds:g} s"


def _trap_text(message: str) -> str:
    """The cause of a trap, without wasmtime's backtrace of unnamed functions."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return lines[-1].removeprefix("wasm trap: ") if lines else "trap"


class _ConfigMapSource:
    """The module in a ConfigMap key (a cluster): read once with the sidecar's credentials,
    then followed by a watch on that one ConfigMap, so `kubectl apply` of a new module is
    a hot reload. The operator's Role for the namespace's sidecars lets them get, list and
    watch the ConfigMaps that functions name (by name), and nothing else of ConfigMaps."""

    def __init__(self, function: WasmFunction) -> None:
        from ottava_sidecar.components.backends.kubernetes import KubernetesConnection, KubernetesMetadata

        self.function = function
        self.name = function.settings.config_map
        self.kube = KubernetesConnection(KubernetesMetadata(), f"function {function.name}")
        self._task: asyncio.Task[None] | None = None
        self._digest = ""

    @property
    def origin(self) -> str:
        key = self.function.settings.config_map_key
        return f"ConfigMap {self.kube.namespace}/{self.name}" + (f" key {key}" if key else "")

    def _path(self) -> str:
        return f"/api/v1/namespaces/{self.kube.namespace}/configmaps"

    async def open(self) -> _Loaded:
        from ottava_sidecar.kube.client import KubeError

        await self.kube.open()
        try:
            config_map = await self.kube.client.get(f"{self._path()}/{self.name}")
        except KubeError as err:
            raise self.kube.error(err, "get", f"ConfigMap {self.name!r}") from None
        code = self._module(config_map)
        loaded = await self.function.compile(code, self.origin, (0, 0))
        self._digest = loaded.digest
        return loaded

    def _module(self, config_map: dict[str, Any]) -> bytes:
        """The module's bytes in the ConfigMap: `binaryData` (base64) or `data` (text)."""
        binary: dict[str, str] = config_map.get("binaryData") or {}
        text: dict[str, str] = config_map.get("data") or {}
        key = self.function.settings.config_map_key
        if not key:
            keys = [*binary, *text]
            if len(keys) != 1:
                raise ComponentError(
                    f"function {self.function.name}: ConfigMap {self.name} has {len(keys)} keys "
                    f"({', '.join(keys) or 'none'}); name the module's with 'configMapKey'"
                )
            key = keys[0]
        if key in binary:
            return base64.b64decode(binary[key])
        if key in text:
            return text[key].encode()
        raise ComponentError(
            f"function {self.function.name}: ConfigMap {self.name} has no key {key!r} "
            f"(keys: {', '.join([*binary, *text]) or 'none'})"
        )

    def follow(self) -> None:
        from ottava_sidecar.kube.watch import Reflector

        reflector = Reflector(
            self.kube.client,
            self._path(),
            self._changed,
            field_selector=f"metadata.name={self.name}",
            what=f"ConfigMap {self.name} of function {self.function.name}",
        )
        self._task = asyncio.create_task(reflector.run(), name=f"wasm-configmap-{self.function.name}")

    async def _changed(self, kind: str, config_map: dict[str, Any]) -> None:
        name = self.function.name
        if kind == "DELETED":
            log.error("function %s: %s was deleted; the module loaded before keeps serving", name, self.origin)
            return
        try:
            code = self._module(config_map)
            if hashlib.sha256(code).hexdigest() == self._digest:
                return
            loaded = await self.function.compile(code, self.origin, (0, 0))
        except ComponentError as err:
            metrics.FUNCTION_RELOADS.labels(name, "failed").inc()
            log.error("%s; the previous module keeps serving", err)
            return
        self._digest = loaded.digest
        self.function.loaded = loaded  # calls that started keep the module they started with
        metrics.FUNCTION_RELOADS.labels(name, "reloaded").inc()
        log.info("function %s: reloaded %s", name, self.origin)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.kube.close()
