"""examples/kubernetes/ as a newcomer applies it: `kubectl apply -f examples/kubernetes/` after `make e2e-up`."""

from __future__ import annotations

import time

import pytest
from kubernetes import client

from . import cluster as cluster_mod
from . import incluster, pods

pytestmark = pytest.mark.e2e


def test_the_example_runs_and_is_ready_within_a_minute(
    ottava_in_cluster: incluster.InstalledOttava, cluster: cluster_mod.Cluster, kube: client.ApiClient, namespace: str
) -> None:
    started = time.monotonic()
    cluster.kubectl("apply", "-n", namespace, "-f", str(incluster.EXAMPLE))
    greeters = pods.wait_ready(kube, namespace, "greeter", 2, timeout=60)
    [caller] = pods.wait_ready(kube, namespace, "caller", 1, timeout=max(1.0, 60 - (time.monotonic() - started)))
    took = time.monotonic() - started
    assert took <= 60, f"the example took {took:.0f}s to be Ready"
    for pod in [caller, *greeters]:
        assert pods.ready_counts(pod) == (2, 2), pods.describe([pod])

    # What the README shows: the caller invokes greeter by app id, and both replicas answer.
    answered = {pods.call_app(caller, "GET", "/invoke/greeter/hello")["pod"] for _ in range(12)}
    assert answered == {p.metadata.name for p in greeters}
    pods.call_app(caller, "PUT", "/state/order-1", body=b'{"qty": 1}')
    assert pods.call_app(caller, "GET", "/state/order-1")["value"] == '{"qty": 1}'
