"""Interface of sequencers (Layotto's GetNextId)."""

import enum
from typing import TypeVar

from ottava_sidecar.components.base import ComponentInstance, ComponentMetadata


class Increment(enum.Enum):
    """WEAK: increasing per sidecar, may jump; STRONG: strictly +1 across all callers."""

    WEAK = 0
    STRONG = 1


SequencerSettingsT = TypeVar("SequencerSettingsT", bound=ComponentMetadata)


class Sequencer(ComponentInstance[SequencerSettingsT]):
    async def next_id(self, key: str, increment: Increment) -> int:
        raise NotImplementedError
