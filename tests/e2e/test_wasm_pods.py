"""A WebAssembly function in a cluster: its module in a ConfigMap, run by the sidecar of a real pod.

The app team puts a WAT module in a ConfigMap and applies a `function.wasm` Component
that names it, scoped to app `caller`; the operator's Role lets the namespace's sidecars
read that ConfigMap (and no other). The example app invokes the function by its
Component's name through its sidecar, and an edited ConfigMap is a hot reload: the next
calls get the new module. A pod of another app (`visitor`, outside the scopes, so its
sidecar does not run the function) calls it too: through the function's Service, whose
EndpointSlices the operator fills with the sidecars of `caller`, over mTLS.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes import client

from . import cluster as cluster_mod
from . import incluster, pods
from .test_operator import apply
from .test_pods_journey import app_deployment, dump

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

# A function with no toolchain: it writes `{"version": N}` to stdout (14 bytes), whatever it is asked.
MODULE = """\
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "{{\\"version\\": {version}}}")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const 14))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
"""


def config_map(version: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "greeter-module"},
        "data": {"greeter.wat": MODULE.format(version=version)},
    }


FUNCTION = {
    "apiVersion": "ottava.io/v1alpha1",
    "kind": "Component",
    "metadata": {"name": "greeter"},
    "scopes": ["caller"],
    "spec": {
        "type": "function.wasm",
        "version": "v1",
        "metadata": [
            {"name": "configMap", "value": "greeter-module"},
            {"name": "configMapKey", "value": "greeter.wat"},
        ],
    },
}


def test_a_function_from_a_config_map_runs_in_a_pod_and_follows_edits(
    ottava_in_cluster: incluster.InstalledOttava,
    cluster: cluster_mod.Cluster,
    kube: client.ApiClient,
    restricted_namespace: str,
) -> None:
    ns = restricted_namespace
    result = apply(
        cluster, ns, dump(config_map(1), FUNCTION, app_deployment("caller", 1), app_deployment("visitor", 1))
    )
    assert result.returncode == 0, result.stderr
    [caller] = pods.wait_ready(kube, ns, "caller", 1, timeout=120)
    [visitor] = pods.wait_ready(kube, ns, "visitor", 1, timeout=120)

    assert pods.call_app(caller, "GET", "/invoke/greeter/hello") == {"version": 1}

    # An edited module reaches the running sidecar through its watch: no restart, no failed call.
    result = apply(cluster, ns, dump(config_map(2)))
    assert result.returncode == 0, result.stderr

    seen: list[Any] = []

    def edited() -> bool:
        try:
            seen.append(pods.call_app(caller, "GET", "/invoke/greeter/hello"))
        except Exception as err:  # a failed call is what this test is here to catch
            seen.append(repr(err))
        return seen[-1] == {"version": 2}

    cluster_mod.poll(edited, timeout=60, what="the function to answer from the edited module")
    assert all(answer in ({"version": 1}, {"version": 2}) for answer in seen), seen  # no call failed
    role = cluster.kubectl("get", "role", "-n", ns, "-o", "json")
    rules = [rule for item in json.loads(role)["items"] for rule in item["rules"]]
    assert {
        "apiGroups": [""],
        "resources": ["configmaps"],
        "verbs": ["get", "list", "watch"],
        "resourceNames": ["greeter-module"],
    } in rules

    # From another pod: the function's Service lists the sidecar of `caller`, which runs it.
    def from_visitor() -> Any:
        answer = pods.call_app(visitor, "GET", "/invoke/greeter/hello")
        return answer if answer == {"version": 2} else None

    cluster_mod.poll(from_visitor, timeout=60, what="the visitor's call of the function through its Service")
    slices = json.loads(
        cluster.kubectl(
            "get", "endpointslices", "-n", ns, "-l", "kubernetes.io/service-name=greeter-ottava", "-o", "json"
        )
    )["items"]
    assert [s["metadata"]["labels"]["ottava.io/app-id"] for s in slices] == ["caller"]
    assert [e["addresses"][0] for s in slices for e in s["endpoints"]] == [caller.status.pod_ip]

    # A deleted Component takes its Service, and the calls from other pods, with it.
    cluster.kubectl("delete", "component", "greeter", "-n", ns)
    cluster_mod.poll(
        lambda: "greeter-ottava" not in cluster.kubectl("get", "services", "-n", ns, "-o", "name"),
        timeout=60,
        what="the function's Service to go with its Component",
    )
