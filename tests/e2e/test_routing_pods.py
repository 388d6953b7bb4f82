"""Traffic routing between versions of an app, on real pods.

App `billing` runs as two Deployments, `billing-v1` and `billing-v2`, annotated
`ottava.io/app-version: v1` and `v2`; the example app `caller` calls it through its
sidecar. A `TrafficRoute` named `billing`, applied with kubectl, tells the caller's
sidecar how to spread the calls: the operator indexes the pods' versions in
EndpointSlices, and the sidecar follows the TrafficRoutes of its namespace live. Which
version answered each call is what billing's pods say (`/hello` names their version).
"""

from __future__ import annotations

import collections
import json
from typing import Any

import httpx
import pytest
from kubernetes import client

from . import cluster as cluster_mod
from . import incluster, pods
from .test_operator import apply
from .test_pods_journey import app_deployment, dump

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

CALLS = 1000


def versioned(app_id: str, version: str) -> dict[str, Any]:
    """A Deployment `<app_id>-<version>` of the example app, serving app id `app_id` at `version`."""
    document = app_deployment(f"{app_id}-{version}", 1, {"APP_VERSION": version})
    template = document["spec"]["template"]
    template["metadata"]["annotations"]["ottava.io/app-id"] = app_id
    template["metadata"]["annotations"]["ottava.io/app-version"] = version
    for item in template["spec"]["containers"][0]["env"]:
        if item["name"] == "APP_ID":
            item["value"] = app_id
    return document


def route(*rules: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "ottava.io/v1alpha1",
        "kind": "TrafficRoute",
        "metadata": {"name": "billing"},
        "spec": {"rules": list(rules)},
    }


SPLIT = {"destinations": [{"version": "v1", "weight": 90}, {"version": "v2", "weight": 10}]}
CANARY = {"match": {"headers": {"x-canary": {"exact": "on"}}}, "destinations": [{"version": "v2"}]}


def invoke(session: httpx.Client, caller: client.V1Pod, headers: dict[str, str] | None = None) -> str:
    """Call billing's /hello through the caller's sidecar (its Dapr HTTP API, which answers only
    its own pod: through the example app's `/sidecar/` route); the version that answered."""
    response = session.get(pods.app_url(caller, "/sidecar/v1.0/invoke/billing/method/hello"), headers=headers or {})
    assert response.status_code == 200, f"{response.status_code} {response.text}"
    version: str = response.json()["version"]
    return version


def test_a_traffic_route_splits_calls_between_versions_and_a_header_rule_picks_one(
    ottava_in_cluster: incluster.InstalledOttava,
    cluster: cluster_mod.Cluster,
    kube: client.ApiClient,
    restricted_namespace: str,
) -> None:
    ns = restricted_namespace
    documents = [app_deployment("caller", 1), versioned("billing", "v1"), versioned("billing", "v2")]
    result = apply(cluster, ns, dump(*documents))
    assert result.returncode == 0, result.stderr
    [caller] = pods.wait_ready(kube, ns, "caller", 1, timeout=180)
    pods.wait_ready(kube, ns, "billing-v1", 1, timeout=180)
    pods.wait_ready(kube, ns, "billing-v2", 1, timeout=180)

    # A route the webhook refuses names the field; the valid one is accepted and shown Ready.
    bad = route({"destinations": [{"version": "v1", "weight": 90}, {"version": "v2", "weight": 20}]})
    refused = apply(cluster, ns, dump(bad))
    assert refused.returncode != 0 and "weight" in refused.stderr, refused.stderr
    assert apply(cluster, ns, dump(route(CANARY, SPLIT))).returncode == 0

    with httpx.Client(timeout=10) as session:
        # The caller's sidecar has the route, and knows which pod serves which version,
        # once marked calls all reach v2.
        def routed() -> bool:
            return all(invoke(session, caller, {"x-canary": "on"}) == "v2" for _ in range(20))

        cluster_mod.poll(routed, timeout=90, what="marked calls to reach v2 only")

        marked = collections.Counter(invoke(session, caller, {"x-canary": "on"}) for _ in range(100))
        assert marked == {"v2": 100}

        split = collections.Counter(invoke(session, caller) for _ in range(CALLS))
        share = 100 * split["v1"] / CALLS
        assert 86 <= share <= 94, f"v1 got {share:.1f}% of {CALLS} calls, not 90 ± 4: {dict(split)}"
        assert split["v1"] + split["v2"] == CALLS

        # A live edit: no rule matches any more, so calls go to every version in turn.
        assert apply(cluster, ns, dump(route(CANARY))).returncode == 0
        cluster_mod.poll(
            lambda: {invoke(session, caller) for _ in range(10)} == {"v1", "v2"},
            timeout=60,
            what="unmatched calls to reach both versions after the edit",
        )

    info = httpx.get(pods.app_url(caller, "/sidecar/actuator/info"), timeout=10).json()
    assert "billing" in json.dumps(info.get("trafficRoutes")), info.get("trafficRoutes")

    def ready() -> bool:
        found = json.loads(cluster.kubectl("get", "trafficroute", "billing", "-n", ns, "-o", "json"))
        conditions = (found.get("status") or {}).get("conditions") or []
        return [c["status"] for c in conditions if c["type"] == "Ready"] == ["True"]

    cluster_mod.poll(ready, timeout=30, what="the TrafficRoute to show Ready")
