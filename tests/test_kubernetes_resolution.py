"""Name resolution in a cluster, the parts that need no apiserver: reading EndpointSlices,
round robin, `id.namespace`. The watch itself is tested against a real control plane in
`tests/e2e/test_app_services.py`."""

from typing import Any

import pytest
from ottava_sidecar import contract
from ottava_sidecar.invocation.kubernetes import RoundRobin, endpoints_of, split_app_id
from ottava_sidecar.invocation.resolution import Address, AppNotFoundError

INTERNAL = contract.INTERNAL_GRPC_PORT


def endpoint(address: str, uid: str | None = None, **conditions: bool) -> dict[str, Any]:
    item: dict[str, Any] = {"addresses": [address], "conditions": conditions}
    if uid is not None:
        item["targetRef"] = {"kind": "Pod", "name": f"pod-{uid}", "uid": uid}
    return item


def endpoint_slice(
    name: str, *endpoints: dict[str, Any], address_type: str = "IPv4", internal: bool = True
) -> dict[str, Any]:
    ports = [{"name": "grpc", "port": contract.GRPC_PORT, "protocol": "TCP"}]
    if internal:
        ports.append({"name": contract.SERVICE_PORT_INTERNAL, "port": INTERNAL, "protocol": "TCP"})
    return {
        "metadata": {"name": name, "labels": {"kubernetes.io/service-name": "orders-ottava"}},
        "addressType": address_type,
        "endpoints": list(endpoints),
        "ports": ports,
    }


def test_only_ready_endpoints_serve_on_the_internal_port() -> None:
    found = endpoints_of(
        [
            endpoint_slice(
                "orders-ottava-a",
                endpoint("10.0.0.2", ready=True),
                endpoint("10.0.0.1"),  # no condition: "unknown", which the API says to treat as ready
                endpoint("10.0.0.3", ready=False),  # starting, or failing its readiness probe
                endpoint("10.0.0.4", ready=False, serving=True, terminating=True),  # draining
            )
        ]
    )
    assert found.ready == (Address("10.0.0.1", INTERNAL), Address("10.0.0.2", INTERNAL))
    assert found.not_ready == 2


def test_slices_without_the_internal_port_or_of_fqdn_type_are_ignored() -> None:
    found = endpoints_of(
        [
            endpoint_slice("a", endpoint("10.0.0.1", ready=True), internal=False),
            endpoint_slice("b", endpoint("orders.example.com", ready=True), address_type="FQDN"),
        ]
    )
    assert found.ready == () and found.not_ready == 0


def test_a_dual_stack_pod_counts_once_preferring_ipv4() -> None:
    found = endpoints_of(
        [
            endpoint_slice("v6", endpoint("fd00::1", "uid-1", ready=True), address_type="IPv6"),
            endpoint_slice("v4", endpoint("10.0.0.1", "uid-1", ready=True), endpoint("10.0.0.2", "uid-2", ready=True)),
        ]
    )
    assert found.ready == (Address("10.0.0.1", INTERNAL), Address("10.0.0.2", INTERNAL))


def test_round_robin_takes_turns_and_skips_a_forgotten_address_for_a_while() -> None:
    key = ("shop", "orders")
    one, two = Address("10.0.0.1", INTERNAL), Address("10.0.0.2", INTERNAL)
    robin = RoundRobin()
    assert [robin.pick(key, (one, two), now=0) for _ in range(4)] == [one, two, one, two]
    robin.forget(key, two, until=10)
    assert {robin.pick(key, (one, two), now=1) for _ in range(3)} == {one}
    assert {robin.pick(key, (one, two), now=11) for _ in range(2)} == {one, two}, "forgotten only for a while"
    robin.forget(key, one, until=20)
    robin.forget(key, two, until=20)
    assert robin.pick(key, (one, two), now=12) in (one, two), "with every address forgotten, still try one"
    robin.forget(key, two, until=30)
    robin.changed(key)
    assert {robin.pick(key, (one, two), now=13) for _ in range(2)} == {one, two}, "new slices: a fresh chance"


def test_id_and_id_dot_namespace() -> None:
    assert split_app_id("orders", "shop") == ("orders", "shop")
    assert split_app_id("orders.billing", "shop") == ("orders", "billing")
    assert split_app_id("orders.", "shop") == ("orders", "shop")


@pytest.mark.parametrize(
    ("target", "says"),
    [
        ("Orders", "cannot name a Service"),
        ("orders.a.b", "is not a namespace name"),
        ("9lives", "starting with a letter"),
        ("o" * (contract.MAX_SERVICE_APP_ID + 1), "too long"),
    ],
)
def test_ids_that_cannot_have_a_service_are_refused_naming_why(target: str, says: str) -> None:
    with pytest.raises(AppNotFoundError, match=says) as caught:
        split_app_id(target, "shop")
    assert repr(target) in str(caught.value)


def test_each_version_takes_its_own_turns() -> None:
    key = ("shop", "billing")
    one, two = Address("10.0.0.1", INTERNAL, version="v2"), Address("10.0.0.2", INTERNAL, version="v2")
    other = Address("10.0.0.3", INTERNAL, version="v1")
    robin = RoundRobin()
    assert robin.pick(key, (one, two), now=0, version="v2") == one
    assert robin.pick(key, (other,), now=0, version="v1") == other
    assert robin.pick(key, (one, two), now=0, version="v2") == two, "a call to v1 did not cost v2 its turn"
