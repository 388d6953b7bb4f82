"""The contract of the one backoff every retry loop uses: growth, cap, jitter bounds, reset."""

import dataclasses
import itertools
import random

import pytest
from ottava_sidecar import backoff


def _take(policy: backoff.Backoff, count: int, rng: random.Random | None = None) -> list[float]:
    return list(itertools.islice(policy.delays(rng), count))


def test_without_jitter_the_waits_double_from_the_first_up_to_the_cap() -> None:
    policy = backoff.Backoff(first=0.2, cap=5.0, jitter=0)

    assert _take(policy, 8) == pytest.approx([0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0])


def test_the_factor_sets_the_growth() -> None:
    assert _take(backoff.Backoff(first=1.0, cap=100.0, factor=3.0, jitter=0), 4) == pytest.approx([1, 3, 9, 27])
    assert _take(backoff.Backoff(first=0.5, cap=100.0, factor=1.0, jitter=0), 3) == pytest.approx([0.5] * 3)


def test_a_first_wait_above_the_cap_waits_the_cap() -> None:
    # connectBackoff 5s with connectBackoffMax 2s: the "longest wait" is 2s, always.
    assert _take(backoff.Backoff(first=5.0, cap=2.0, jitter=0), 3) == pytest.approx([2.0, 2.0, 2.0])


@pytest.mark.parametrize("policy", [backoff.Backoff(first=0.2, cap=5.0), backoff.WATCH, backoff.COMPONENT_RETRY])
def test_jitter_stays_within_its_fraction_and_never_passes_the_cap(policy: backoff.Backoff) -> None:
    plain = _take(dataclasses.replace(policy, jitter=0), 40)
    rng = random.Random(7)
    for _ in range(50):
        for wait, nominal in zip(_take(policy, 40, rng), plain, strict=True):
            assert nominal * (1 - policy.jitter) <= wait <= nominal * (1 + policy.jitter)
            assert 0 < wait <= policy.cap


def test_jitter_spreads_the_waits_of_many_loops() -> None:
    """Two sidecars that lost the same server must not come back in the same instant."""
    policy = backoff.Backoff(first=1.0, cap=30.0)
    rng = random.Random(1)
    firsts = {next(policy.delays(rng)) for _ in range(100)}

    assert len(firsts) > 90
    assert min(firsts) < 0.97 and max(firsts) > 1.03


def test_jitter_still_spreads_the_waits_once_they_reach_the_cap() -> None:
    policy = backoff.Backoff(first=1.0, cap=4.0)
    at_cap = _take(policy, 60, random.Random(3))[10:]

    assert max(at_cap) <= 4.0
    assert min(at_cap) < 3.8


def test_the_jitter_source_can_be_given_so_a_sequence_repeats() -> None:
    policy = backoff.Backoff(first=0.1, cap=2.0)

    assert _take(policy, 10, random.Random(42)) == _take(policy, 10, random.Random(42))


def test_a_new_sequence_starts_again_from_the_first_wait() -> None:
    """Loops reset after a success by asking for new delays; the policy itself keeps no state."""
    policy = backoff.Backoff(first=0.1, cap=2.0, jitter=0)
    failing = policy.delays()
    for _ in range(6):
        next(failing)
    assert next(failing) == pytest.approx(2.0)

    assert next(policy.delays()) == pytest.approx(0.1)
    assert next(failing) == pytest.approx(2.0)  # the old sequence is not disturbed either


@pytest.mark.parametrize(
    ("first", "cap", "factor", "jitter"),
    [(0, 1, 2, 0.1), (-1, 1, 2, 0.1), (1, 0, 2, 0.1), (1, 2, 0.5, 0.1), (1, 2, 2, 1.0), (1, 2, 2, -0.1)],
)
def test_a_policy_that_could_wait_zero_shrink_or_go_negative_is_refused(
    first: float, cap: float, factor: float, jitter: float
) -> None:
    with pytest.raises(ValueError, match="must be"):
        backoff.Backoff(first=first, cap=cap, factor=factor, jitter=jitter)


@pytest.mark.parametrize(
    ("policy", "first", "cap"),
    [
        (backoff.APP_PORT_POLL, 0.05, 0.5),
        (backoff.APP_SUBSCRIPTIONS, 0.1, 5.0),
        (backoff.COMPONENT_RETRY, 1.0, 30.0),
        (backoff.CONFIGURATION_WATCH, 0.1, 2.0),
        (backoff.INVOCATION_RETRY, 0.1, 0.5),
        (backoff.WATCH, 0.25, 10.0),
    ],
)
def test_the_named_policies_keep_their_documented_bounds(policy: backoff.Backoff, first: float, cap: float) -> None:
    # docs/kubernetes.md: DOWN components are retried "1 s doubling to 30 s"; the others are
    # the waits the loops had before they shared this module.
    assert (policy.first, policy.cap, policy.factor) == (first, cap, 2.0)
    assert policy.jitter <= 0.2
