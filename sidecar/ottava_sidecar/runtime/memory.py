"""Giving freed memory back to the system, so that RSS falls once abusive clients leave.

Python frees the buffers of a closed stream or a dropped subscriber, but glibc's malloc
keeps freed blocks of medium size (a 16 KiB event, a 100 KiB body) in its heap for
reuse: the process's RSS stays at its peak long after the data is gone, and a pod's
memory limit is measured in RSS. `malloc_trim(0)` hands the free pages back
(MADV_DONTNEED on free chunks, not only the heap's top). It runs in a thread every few
seconds: it takes malloc's lock, not Python's, so calls go on meanwhile. Before it, a
full garbage collection frees what reference cycles still hold.

And glibc raises its mmap threshold each time it frees a large mapped block, after which
blocks up to that size (a 1 MiB value read in a bulk call) come from the heap and leave
holes in it. A fixed threshold keeps every block of 128 KiB or more in a mapping of its
own, returned whole when freed. Where the C library has neither call (musl, macOS), this
does nothing.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from ottava_sidecar.background import BackgroundTask

if TYPE_CHECKING:
    import ctypes

log = logging.getLogger(__name__)

INTERVAL_SECONDS = 5.0
MMAP_THRESHOLD_BYTES = 128 * 1024
_M_MMAP_THRESHOLD = -3  # mallopt's parameter number, from glibc's malloc.h


def _libc() -> ctypes.CDLL | None:
    """The symbols the process has loaded, the C library's among them.

    Not `ctypes.util.find_library("c")`: on Linux it runs `ldconfig -p` in a child process,
    some milliseconds of every start-up, to name the library that is already loaded.
    """
    # Late: loading ctypes is start-up time the ready line need not wait for.
    import ctypes

    try:
        return ctypes.CDLL(None)
    except OSError:
        return None


def _malloc_trim() -> Callable[[], object] | None:
    import ctypes

    libc = _libc()
    trim = getattr(libc, "malloc_trim", None)
    if trim is None:
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


def fix_mmap_threshold() -> bool:
    """Keep large blocks in mappings of their own; whether the C library took it."""
    import ctypes

    mallopt = getattr(_libc(), "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))


# The collector's thresholds while start-up holds its older generations back (`hold_collections`).
_held: tuple[int, int, int] | None = None
# A threshold never reached: older generations are collected after this many younger collections.
_NEVER = 1_000_000


def hold_collections() -> None:
    """Until `freeze_startup_objects`, collect only the youngest generation: `ottava run` starts so.

    Start-up makes a few hundred thousand objects that all live on (modules, classes,
    schemas). The collector, counting allocations, walked them again and again while
    they were made: some 45 ms of CPU before the HTTP API served, on this project's
    2-core machine, a full collection of 25 ms among it. Collecting the youngest
    generation only (about 9 ms) still frees start-up's short-lived cycles as they come.
    """
    global _held
    if _held is None:
        _held = gc.get_threshold()
        gc.set_threshold(_held[0], _NEVER, _NEVER)


def freeze_startup_objects() -> None:
    """Leave what start-up built (modules, classes, components) out of later collections.

    A full collection walks every tracked object: with start-up's few hundred thousand
    among them, each took some 60 ms on this project's 2-core machine, during which no
    call and no probe is answered; without them, about 12 ms. Start-up's garbage is
    collected first; then all generations are collected as usual (`hold_collections`).
    """
    global _held
    gc.collect()
    gc.freeze()
    if _held is not None:
        gc.set_threshold(*_held)
        _held = None


class MemoryTrimmer(BackgroundTask):
    name = "memory-trim"

    def __init__(self, interval: float = INTERVAL_SECONDS) -> None:
        super().__init__()
        self.interval = interval
        self._trim: Callable[[], object] | None = None

    def start(self) -> None:
        fix_mmap_threshold()
        self._trim = _malloc_trim()
        if self._trim is not None:
            super().start()

    def trim_now(self) -> None:
        """Hand freed memory back at once (start-up's, once it is done), on the caller's thread."""
        if self._trim is not None:
            self._trim()

    async def run(self) -> None:
        assert self._trim is not None
        while True:
            await asyncio.sleep(self.interval)
            # Garbage in reference cycles (an error's traceback holding a request's frame)
            # waits for a full collection, which an idle process never triggers: collect
            # it first, so that its memory is free to hand back.
            gc.collect()
            await asyncio.to_thread(self._trim)
