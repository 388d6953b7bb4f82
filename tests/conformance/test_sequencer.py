"""The sequencer contract (Layotto's GetNextId), for every `sequencer.*` implementation."""

import asyncio
from typing import Any

import pytest
from ottava_sidecar.components.sequencer.base import Increment, Sequencer

from tests.conformance.conftest import Components, unique

BUILDING_BLOCK = "sequencer"


async def _sequencer(components: Components) -> Sequencer[Any]:
    sequencer = await components.create()
    assert isinstance(sequencer, Sequencer)
    return sequencer


@pytest.mark.parametrize("increment", [Increment.WEAK, Increment.STRONG])
async def test_ids_start_at_one_and_increase(components: Components, increment: Increment) -> None:
    sequencer = await _sequencer(components)
    key = unique("orders")
    ids = [await sequencer.next_id(key, increment) for _ in range(5)]
    assert ids[0] >= 1
    assert ids == sorted(set(ids)), ids
    if increment is Increment.STRONG:
        assert ids == list(range(ids[0], ids[0] + 5))


async def test_keys_count_independently(components: Components) -> None:
    sequencer = await _sequencer(components)
    a, b = unique("a"), unique("b")
    assert [await sequencer.next_id(a, Increment.STRONG) for _ in range(3)] == [1, 2, 3]
    assert await sequencer.next_id(b, Increment.STRONG) == 1


async def test_strong_ids_under_concurrent_callers_are_unique_and_contiguous(components: Components) -> None:
    sequencer = await _sequencer(components)
    key = unique("concurrent")
    ids = await asyncio.gather(*(sequencer.next_id(key, Increment.STRONG) for _ in range(40)))
    assert sorted(ids) == list(range(1, 41))


@pytest.mark.requires("shared")
async def test_two_sidecars_share_one_sequence(components: Components) -> None:
    first, second = await _sequencer(components), await _sequencer(components)
    key = unique("shared")
    ids = await asyncio.gather(
        *(s.next_id(key, Increment.STRONG) for _ in range(15) for s in (first, second)),
    )
    assert sorted(ids) == list(range(1, 31))


@pytest.mark.requires("persistent")
async def test_ids_keep_increasing_across_a_restart(components: Components) -> None:
    sequencer = await _sequencer(components)
    key = unique("restart")
    last = max([await sequencer.next_id(key, Increment.STRONG) for _ in range(3)])
    await components.close(sequencer)
    restarted = await _sequencer(components)
    assert await restarted.next_id(key, Increment.STRONG) == last + 1
    assert await restarted.next_id(key, Increment.WEAK) > last + 1
