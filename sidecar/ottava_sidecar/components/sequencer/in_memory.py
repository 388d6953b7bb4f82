"""`sequencer.in-memory`: counters per key, starting at 1, kept in the process."""

from ottava_sidecar.components.base import ComponentMetadata
from ottava_sidecar.components.registration import register
from ottava_sidecar.components.sequencer.base import Increment, Sequencer


class InMemorySequencerMetadata(ComponentMetadata):
    pass


@register("sequencer.in-memory", InMemorySequencerMetadata)
class InMemorySequencer(Sequencer[InMemorySequencerMetadata]):
    """Process-local counters: strictly increasing by one per key (both WEAK and STRONG)."""

    def __init__(self, name: str, settings: InMemorySequencerMetadata, *, app_id: str) -> None:
        super().__init__(name, settings, app_id=app_id)
        self._counters: dict[str, int] = {}

    async def next_id(self, key: str, increment: Increment) -> int:
        value = self._counters.get(key, 0) + 1
        self._counters[key] = value
        return value
