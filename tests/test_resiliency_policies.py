"""Resiliency policies without a network: which policies a target gets, the breaker's states, retry matching.

The end-to-end behaviour (real sidecars, a failing app, a restarted Redis) is in
`test_resiliency.py`; these pin the rules that decide it, as Dapr states them.
"""

import asyncio
from typing import Any

import pytest
from ottava_sidecar.resiliency import outbound
from ottava_sidecar.resiliency.policy import Breaker, BreakerOpen, Failure, Retry, State
from ottava_sidecar.resiliency.provider import Provider
from ottava_sidecar.resources.resiliency import CircuitBreakerPolicy, Resiliency, RetryPolicy
from ottava_sidecar.runtime.kubernetes import valid_resiliencies


def resource(spec: dict[str, Any], name: str = "r", scopes: list[str] | None = None) -> Resiliency:
    return Resiliency.model_validate(
        {
            "apiVersion": "ottava.io/v1alpha1",
            "kind": "Resiliency",
            "metadata": {"name": name},
            "scopes": scopes or [],
            "spec": spec,
        }
    )


DEFAULTS = {
    "policies": {
        "timeouts": {"DefaultTimeoutPolicy": "9s", "DefaultAppTimeoutPolicy": "3s", "short": "100ms"},
        "retries": {
            "DefaultStatestoreComponentOutboundRetryPolicy": {"maxRetries": 5},
            "DefaultComponentRetryPolicy": {"maxRetries": 1},
            "two": {"maxRetries": 2},
        },
    },
    "targets": {"apps": {"billing": {"timeout": "short"}}, "components": {"orders": {"outbound": {"retry": "two"}}}},
}


def test_named_targets_get_exactly_their_policies_and_others_dapr_defaults() -> None:
    provider = Provider("checkout", [resource(DEFAULTS)])
    billing, other_app = provider.app("billing"), provider.app("stock")
    assert billing is not None and billing.timeout == 0.1 and billing.retry is None
    assert other_app is not None and (other_app.timeout, other_app.timeout_name) == (3.0, "DefaultAppTimeoutPolicy")
    named = provider.outbound("orders", "state")
    assert named is not None and named.retry is not None and named.retry.name == "two" and named.timeout == 0
    state = provider.outbound("carts", "state")
    assert state is not None and state.retry is not None
    assert state.retry.name == "DefaultStatestoreComponentOutboundRetryPolicy" and state.timeout == 9.0
    lock = provider.outbound("locks", "lock")
    assert lock is not None and lock.retry is not None and lock.retry.name == "DefaultComponentRetryPolicy"


def test_no_resource_means_no_policy_and_scopes_choose_the_apps() -> None:
    assert Provider("checkout").app("billing") is None
    scoped = resource(DEFAULTS, scopes=["shipping"])
    provider = Provider("checkout", [scoped])
    assert provider.app("billing") is None
    provider.replace([scoped, resource(DEFAULTS, "everyone")])
    assert provider.app("billing") is not None and provider.names == ["everyone"]
    provider.replace([])
    assert provider.app("billing") is None


def test_an_unchanged_resource_keeps_its_breakers_state() -> None:
    spec = {
        "policies": {"circuitBreakers": {"cb": {"trip": "consecutiveFailures >= 1", "timeout": "1h"}}},
        "targets": {"apps": {"billing": {"circuitBreaker": "cb"}}},
    }
    provider = Provider("checkout", [resource(spec)])
    policy = provider.app("billing")
    assert policy is not None and policy.breaker is not None
    policy.breaker.enter()
    policy.breaker.failed()
    provider.replace([resource(spec)])  # a watch resync: the same resource again
    assert provider.app("billing") is policy and state(policy.breaker) is State.OPEN
    provider.replace([resource({**spec, "policies": {"circuitBreakers": {"cb": {"trip": "requests > 9"}}}})])
    again = provider.app("billing")
    assert again is not None and again.breaker is not None and state(again.breaker) is State.CLOSED


def state(cb: Breaker) -> State:
    """The breaker's state now (a call, so that mypy does not keep an earlier assert's narrowing)."""
    return cb.state


def breaker(trip: str, **spec: Any) -> Breaker:
    return Breaker("cb", CircuitBreakerPolicy.model_validate({"trip": trip, **spec}), "app:billing")


def test_breaker_opens_on_its_trip_expression_and_half_opens_after_its_timeout() -> None:
    cb = breaker("consecutiveFailures >= 2 && requests >= 2", timeout="0s")
    cb.enter()
    cb.failed()
    assert state(cb) is State.CLOSED
    cb.enter()
    cb.failed()
    assert state(cb) is State.OPEN
    cb.enter()  # timeout 0s: half-open at once, this call is the probe
    assert state(cb) is State.HALF_OPEN
    with pytest.raises(BreakerOpen, match="probe calls are in flight"):
        cb.enter()
    cb.succeeded()
    assert state(cb) is State.CLOSED


def test_a_cancelled_probe_frees_its_slot() -> None:
    cb = breaker("consecutiveFailures >= 1", timeout="0s")
    cb.enter()
    cb.failed()
    cb.enter()  # the probe
    cb.abandoned()  # its caller went away
    cb.enter()  # another probe may go
    cb.succeeded()
    assert state(cb) is State.CLOSED


def test_open_breaker_refuses_naming_itself_and_its_trip() -> None:
    cb = breaker("totalFailures > 0", timeout="1h")
    cb.enter()
    cb.failed()
    with pytest.raises(BreakerOpen, match=r"circuit breaker 'cb' is open \(it tripped on 'totalFailures > 0'\)"):
        cb.enter()


def test_dapr_default_trip_is_more_than_five_consecutive_failures() -> None:
    cb = breaker(CircuitBreakerPolicy().trip)
    for _ in range(5):
        cb.enter()
        cb.failed()
    assert state(cb) is State.CLOSED
    cb.enter()
    cb.failed()
    assert state(cb) is State.OPEN


def test_retry_matching_follows_dapr_code_lists() -> None:
    retry = Retry(
        "r", RetryPolicy.model_validate({"matching": {"httpStatusCodes": "500-599,404", "gRPCStatusCodes": "14"}})
    )
    assert retry.retries(Failure("http", 503)) and retry.retries(Failure("http", 404))
    assert not retry.retries(Failure("http", 400))
    assert retry.retries(Failure("grpc", 14)) and not retry.retries(Failure("grpc", 3))
    assert retry.retries(Failure())  # no status code: every failure is retried
    everything = Retry("all", RetryPolicy())
    assert everything.retries(Failure("http", 400)) and everything.more(10_000)  # maxRetries -1: forever


def test_retry_delays_constant_and_exponential() -> None:
    constant = Retry("c", RetryPolicy.model_validate({"duration": "250ms"})).delays()
    assert [next(constant) for _ in range(3)] == [0.25, 0.25, 0.25]
    exponential = Retry("e", RetryPolicy.model_validate({"policy": "exponential", "maxInterval": "2s"})).delays()
    waits = [next(exponential) for _ in range(12)]
    assert all(0 < w <= 2.0 for w in waits) and waits[-1] == pytest.approx(2.0, rel=0.5)


@pytest.mark.parametrize(
    ("codes", "problem"),
    [("600", "600 is not a status code"), ("5xx", "is not a code nor a range"), ("599-500", "ends before it starts")],
)
def test_bad_status_code_lists_are_refused(codes: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        RetryPolicy.model_validate({"matching": {"httpStatusCodes": codes}})


def test_invalid_cluster_resiliencies_are_left_out_and_the_rest_apply() -> None:
    good = {"apiVersion": "ottava.io/v1alpha1", "kind": "Resiliency", "metadata": {"name": "good"}, "spec": {}}
    bad = {
        **good,
        "metadata": {"name": "bad"},
        "spec": {"targets": {"apps": {"x": {"retry": "missing"}}}},
        "status": {"conditions": []},
    }
    assert [r.name for r in valid_resiliencies([good, bad])] == ["good"]


class Store:
    """A stand-in backend whose `get` fails `failures` times before answering."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0
        self.name = "orders"

    async def get(self, key: str) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError("backend down")
        return f"value of {key}"


def test_outbound_stand_in_retries_backend_calls_and_still_passes_for_the_component() -> None:
    provider = Provider(
        "checkout",
        [
            resource(
                {
                    "policies": {"retries": {"fast": {"duration": "1ms", "maxRetries": 3}}},
                    "targets": {"components": {"orders": {"outbound": {"retry": "fast"}}}},
                }
            )
        ],
    )
    store = Store(failures=2)
    wrapped = outbound.wrapper(provider)("orders", "state", store)
    assert isinstance(wrapped, Store) and wrapped.name == "orders"
    assert asyncio.run(wrapped.get("k")) == "value of k" and store.calls == 3
    assert outbound.wrapper(provider)("other", "state", store) is store  # no policy: the component itself
