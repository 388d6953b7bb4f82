"""What GetNextId means (Layotto's sequencer API)."""

import time
from typing import Any

from ottava_sidecar.api import errors
from ottava_sidecar.components.errors import ComponentError
from ottava_sidecar.components.registry import LookupFailure, Registry
from ottava_sidecar.components.sequencer.base import Increment, Sequencer
from ottava_sidecar.metrics import ComponentCalls

_CALLS = ComponentCalls("sequencer")  # latency of each component's operations


class SequencerApi:
    def __init__(self, registry: Registry) -> None:
        self._registry = registry

    def store(self, name: str) -> Sequencer[Any]:
        if not name:
            raise errors.invalid_argument("sequencer store name is empty", "ERR_SEQUENCER_STORE_NOT_FOUND")
        try:
            return self._registry.lookup("sequencer", name, Sequencer)
        except LookupFailure as failure:
            raise errors.from_lookup(failure) from None

    async def next_id(self, store_name: str, key: str, increment: Increment) -> int:
        store = self.store(store_name)
        if not key:
            raise errors.invalid_argument(f"key is empty (sequencer store {store.name})")
        started = time.perf_counter()
        ok = False
        try:
            next_id = await store.next_id(key, increment)
            ok = True
            return next_id
        except ComponentError as err:
            raise errors.internal(
                f"failed to get next id of {key} from sequencer store {store.name}: {err}", "ERR_SEQUENCER"
            ) from None
        finally:
            _CALLS.observe(store.name, "next_id", started, ok)
