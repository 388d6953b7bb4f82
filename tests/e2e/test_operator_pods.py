"""The operator as the chart runs it: two replicas in pods, one leader, handover when its pod goes."""

from __future__ import annotations

import time

import pytest
from kubernetes import client

from . import cluster as cluster_mod
from . import incluster, pods
from .test_leader_election import add_component, make_namespace, status_ready

pytestmark = pytest.mark.e2e


def test_deleting_the_leader_pod_hands_over_within_15_seconds(
    ottava_operator: incluster.InstalledOttava, kube: client.ApiClient
) -> None:
    replicas = ottava_operator.operator_pods()
    assert len(replicas) == 2 and all(pods.is_ready(p) for p in replicas), pods.describe(replicas)
    leader = cluster_mod.poll(ottava_operator.leader, timeout=60, what="one operator replica to say it leads")
    [standby] = [p for p in replicas if pods.name(p) != pods.name(leader)]

    deleted_at = time.monotonic()
    client.CoreV1Api(kube).delete_namespaced_pod(pods.name(leader), incluster.NAMESPACE)
    cluster_mod.poll(
        lambda: ottava_operator.leader([standby]),
        timeout=15,
        what="the remaining replica to lead within 15 s of the leader pod's deletion",
        interval=0.2,
    )
    took = time.monotonic() - deleted_at
    print(f"\nhandover after deleting the leader pod: {took:.1f} s")
    # The new leader does the work: a Component applied now gets its status.
    namespace = make_namespace(kube, "handover")
    try:
        add_component(kube, namespace)
        cluster_mod.poll(lambda: status_ready(kube, namespace), timeout=30, what="the new leader to write the status")
    finally:
        client.CoreV1Api(kube).delete_namespace(namespace)
    # The Deployment replaces the pod; the newcomer stands by.

    def two_ready() -> list[client.V1Pod] | None:
        ready = [p for p in ottava_operator.operator_pods() if pods.is_ready(p)]
        return ready if len(ready) == 2 else None

    after = cluster_mod.poll(two_ready, timeout=120, what="the operator Deployment to have two Ready replicas again")
    newcomer = next(p for p in after if pods.name(p) != pods.name(standby))
    assert ottava_operator.leader([newcomer]) is None
