"""How long to wait before trying again: the one backoff every retry loop of the sidecar uses.

A `Backoff` is a policy, frozen and shareable; `delays()` starts one sequence of waits
from it: `first`, then `factor` times the previous, never more than `cap`, each spread
by a small random `jitter` so that many sidecars which lost the same server at the same
moment do not all come back at the same moment. Jitter never pushes a wait above the
cap nor below zero.

A loop that succeeds again starts over with a new `delays()`, which is how "reset to
the first wait after a good connection" reads:

    delays = backoff.CONFIGURATION_WATCH.delays()
    while True:
        try:
            await follow_changes()
            delays = backoff.CONFIGURATION_WATCH.delays()
        except OSError:
            await asyncio.sleep(next(delays))

The named policies below are the loops whose bounds are fixed; where a user sets the
bounds (a component's `connectBackoff`, a pub/sub's `redeliveryBackoffSeconds`), the
component builds its `Backoff` from its settings.
"""

import dataclasses
import random
from collections.abc import Iterator

__all__ = [
    "APP_PORT_POLL",
    "APP_SUBSCRIPTIONS",
    "COMPONENT_RETRY",
    "CONFIGURATION_WATCH",
    "IDENTITY_RENEWAL",
    "INVOCATION_RETRY",
    "WATCH",
    "Backoff",
]

_RANDOM = random.Random()


@dataclasses.dataclass(frozen=True, slots=True)
class Backoff:
    """Waits growing from `first` by `factor` up to `cap` seconds, each within ±`jitter` (a fraction)."""

    first: float
    cap: float
    factor: float = 2.0
    jitter: float = 0.1

    def __post_init__(self) -> None:
        if not self.first > 0:
            raise ValueError(f"the first wait must be positive, not {self.first!r}")
        if not self.cap > 0:
            raise ValueError(f"the longest wait must be positive, not {self.cap!r}")
        if not self.factor >= 1:
            raise ValueError(f"the factor must be at least 1, not {self.factor!r}")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"the jitter must be a fraction in [0, 1), not {self.jitter!r}")

    def delays(self, rng: random.Random | None = None) -> Iterator[float]:
        """An endless sequence of waits, in seconds; `rng` makes the jitter reproducible.

        A `first` above `cap` (settings may say so) waits `cap` from the start: the cap is
        the longest wait, always.
        """
        uniform = (rng or _RANDOM).uniform
        delay = min(self.first, self.cap)
        while True:
            yield min(delay * (1 + self.jitter * uniform(-1.0, 1.0)), self.cap)
            delay = min(delay * self.factor, self.cap)


#: Polling the app's port until the app listens (a local connect: cheap, so often).
APP_PORT_POLL = Backoff(first=0.05, cap=0.5)

#: Reading the app's programmatic subscriptions while the app is not ready to answer.
APP_SUBSCRIPTIONS = Backoff(first=0.1, cap=5.0)

#: Initialising DOWN components again (in a cluster, a Secret or a Service may come a bit later).
COMPONENT_RETRY = Backoff(first=1.0, cap=30.0)

#: Resuming a configuration store's change notifications (etcd watch, Redis keyspace events).
CONFIGURATION_WATCH = Backoff(first=0.1, cap=2.0)

#: Asking the CA for a workload certificate again (it may be restarting; the current one is still good).
IDENTITY_RENEWAL = Backoff(first=0.5, cap=30.0, jitter=0.2)

#: Calling another app again when the call surely did not reach it (bounded by the call's deadline).
INVOCATION_RETRY = Backoff(first=0.1, cap=0.5)

#: Resuming a Kubernetes watch: every sidecar of a cluster loses it when the apiserver
#: restarts, so the waits are spread wider than elsewhere.
WATCH = Backoff(first=0.25, cap=10.0, jitter=0.2)
