"""The operator's decisions that need no cluster: validation messages, RBAC rules, certificates."""

import copy
import datetime
import ssl
from pathlib import Path

from cryptography import x509
from ottava_operator import annotations, certificates, functions, rbac, services, status, validation, versions
from ottava_sidecar import contract
from ottava_sidecar.invocation import kubernetes as kubernetes_resolution
from ottava_sidecar.invocation.kubernetes import endpoints_of
from ottava_sidecar.invocation.resolution import Address


def component(**spec: object) -> dict[str, object]:
    return {
        "apiVersion": "ottava.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": "statestore", "namespace": "shop", "uid": "x", "managedFields": []},
        "spec": {"type": "state.in-memory", "version": "v1", **spec},
        "status": {"conditions": []},
    }


def test_valid_component_has_no_problems() -> None:
    assert validation.component_problems(component()) == []


def test_unknown_type_and_missing_field_are_named() -> None:
    [problem] = validation.component_problems(component(type="state.nosuchdb"))
    assert problem.startswith("spec.type:") and "state.nosuchdb" in problem
    problems = validation.component_problems(component(type="secretstores.local.file"))
    assert problems == ["spec.metadata.secretsFile: required field is missing"]


def test_value_and_secret_key_ref_both_set_is_refused() -> None:
    item = {"name": "redisPassword", "value": "x", "secretKeyRef": {"name": "redis", "key": "password"}}
    [problem] = validation.component_problems(component(metadata=[item]))
    assert "spec.metadata.0" in problem and "either 'value' or 'secretKeyRef'" in problem


def subscription(**spec: object) -> dict[str, object]:
    return {
        "apiVersion": "ottava.io/v1alpha1",
        "kind": "Subscription",
        "metadata": {"name": "orders", "namespace": "shop", "uid": "x"},
        "spec": {"pubsubname": "pubsub", "topic": "orders", "routes": {"default": "/orders"}, **spec},
        "status": {"conditions": []},
    }


def test_subscriptions_that_cannot_be_delivered_are_named() -> None:
    assert validation.subscription_problems(subscription()) == []
    [problem] = validation.subscription_problems(subscription(routes={}))
    assert "no route: set routes.default or routes.rules" in problem
    [problem] = validation.subscription_problems(
        subscription(routes={"rules": [{"match": "event.type =", "path": "/x"}]})
    )
    assert problem.startswith("spec.routes.rules:") and "event.type =" in problem
    [problem] = validation.subscription_problems(subscription(bulkSubscribe={"enabled": True, "maxMessagesCount": 0}))
    assert problem.startswith("spec.bulkSubscribe.maxMessagesCount:")


def test_sidecars_may_read_their_namespaces_subscriptions_and_traffic_routes() -> None:
    [wiring] = [r for r in rbac.role_rules([]) if r["apiGroups"] == [contract.API_GROUP]]
    assert wiring == {
        "apiGroups": [contract.API_GROUP],
        "resources": ["components", "configurations", "subscriptions", "trafficroutes", "resiliencies"],
        "verbs": ["get", "list", "watch"],
    }


def resiliency(trip: str = "consecutiveFailures >= 5", retry: str = "three") -> dict[str, object]:
    return {
        "apiVersion": "ottava.io/v1alpha1",
        "kind": "Resiliency",
        "metadata": {"name": "calls", "namespace": "shop", "uid": "x"},
        "spec": {
            "policies": {
                "retries": {"three": {"policy": "constant", "duration": "1s", "maxRetries": 3}},
                "circuitBreakers": {"cb": {"trip": trip}},
            },
            "targets": {"apps": {"billing": {"retry": retry, "circuitBreaker": "cb"}}},
        },
        "status": {"conditions": []},
    }


def test_resiliency_trip_and_policy_names_are_checked_naming_the_field() -> None:
    assert validation.resiliency_problems(resiliency()) == []
    [problem] = validation.resiliency_problems(resiliency(trip="consecutiveFailures >>= 5"))
    assert problem.startswith("spec.policies.circuitBreakers.cb.trip:") and "is not a CEL expression" in problem
    [problem] = validation.resiliency_problems(resiliency(retry="fiveTimes"))
    assert (
        problem
        == "spec.targets.apps.billing.retry: no retries policy is named 'fiveTimes' (policies.retries defines: three)"
    )


def test_sidecars_may_follow_exactly_the_config_maps_their_functions_name() -> None:
    function = component(type="function.wasm", metadata=[{"name": "configMap", "value": "counter-module"}])
    from_file = component(type="function.wasm", metadata=[{"name": "path", "value": "/f/counter.wasm"}])
    rules = [r for r in rbac.role_rules([function, from_file]) if r["resources"] == ["configmaps"]]
    assert rules == [
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "verbs": ["get", "list", "watch"],
            "resourceNames": ["counter-module"],
        }
    ]


def test_role_grants_exactly_the_referenced_secrets() -> None:
    ref = {"name": "keyPrefix", "secretKeyRef": {"name": "prefix-secret", "key": "p"}}
    resolved_elsewhere = {**component(metadata=[ref]), "auth": {"secretStore": "vault"}}
    rules = rbac.role_rules([component(metadata=[ref]), component(), resolved_elsewhere])
    assert rules[-1] == {
        "apiGroups": [""],
        "resources": ["secrets"],
        "verbs": ["get"],
        "resourceNames": ["prefix-secret"],
    }
    assert all(r.get("resources") != ["secrets"] for r in rbac.role_rules([component()])), (
        "no referenced Secret must mean no Secret rule at all (empty resourceNames would grant every Secret)"
    )


def test_kubernetes_secret_store_widens_the_role_only_as_far_as_its_allow_list() -> None:
    ref = {"name": "keyPrefix", "secretKeyRef": {"name": "prefix-secret", "key": "p"}}
    allow = {"name": "allowedSecrets", "value": "db-auth, api-key"}
    listed = component(type="secretstores.kubernetes", metadata=[allow])
    secret_rules = [r for r in rbac.role_rules([component(metadata=[ref]), listed]) if r["resources"] == ["secrets"]]
    assert secret_rules == [
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "verbs": ["get"],
            "resourceNames": ["api-key", "db-auth", "prefix-secret"],
        }
    ]

    everything = component(type="secretstores.kubernetes")
    secret_rules = [r for r in rbac.role_rules([listed, everything]) if r["resources"] == ["secrets"]]
    assert secret_rules == [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}], (
        "a store without allowedSecrets reads any Secret by name, and is never handed `list`"
    )

    from_a_secret = {"name": "allowedSecrets", "secretKeyRef": {"name": "names", "key": "list"}}
    unknown = rbac.role_rules([component(type="secretstores.kubernetes", metadata=[from_a_secret])])
    assert [r.get("resourceNames") for r in unknown if r["resources"] == ["secrets"]] == [["names"]], (
        "an allow-list the operator cannot read grants nothing beyond the Secret it comes from"
    )


def test_kubernetes_configuration_store_gets_configmaps_and_nothing_else_does() -> None:
    def configmap_rules(*components: dict[str, object]) -> list[dict[str, object]]:
        return [r for r in rbac.role_rules(list(components)) if r["resources"] == ["configmaps"]]

    assert configmap_rules(component(), component(type="secretstores.kubernetes")) == []
    assert configmap_rules(component(type="configuration.kubernetes")) == [
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"],
        }
    ]


def test_sidecars_may_only_list_and_watch_endpoint_slices() -> None:
    for components in ([], [component()], [component(type="secretstores.kubernetes")]):
        discovery = [r for r in rbac.role_rules(components) if "discovery.k8s.io" in r["apiGroups"]]
        assert discovery == [
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]}
        ]


def test_peer_role_is_bound_to_the_other_namespaces_with_apps_only() -> None:
    subjects = rbac.peer_subjects("shop", {"shop", "billing", "audit"})
    assert [s["name"] for s in subjects] == ["system:serviceaccounts:audit", "system:serviceaccounts:billing"]
    assert all(s["kind"] == "Group" for s in subjects)
    assert rbac.peer_subjects("shop", {"shop"}) == [], "alone, a namespace grants nothing to anyone"


def test_app_service_is_headless_with_the_named_ports_and_selects_injected_pods() -> None:
    service = services.app_service("orders", "shop")
    assert service["metadata"]["name"] == "orders-ottava"
    assert service["metadata"]["labels"][contract.LABEL_MANAGED_BY] == contract.MANAGED_BY
    spec = service["spec"]
    assert spec["clusterIP"] == "None" and spec["publishNotReadyAddresses"] is False
    assert spec["selector"] == {"ottava.io/app-id": "orders", "ottava.io/sidecar-injected": "true"}
    assert {p["name"]: p["port"] for p in spec["ports"]} == {
        "grpc": 50001,
        "http": 3500,
        "internal": 50002,
        "metrics": 9090,
    }


def app_slice(app: str, *endpoints: tuple[str, bool], address_type: str = "IPv4") -> dict[str, object]:
    """An app Service's EndpointSlice as the EndpointSlice controller writes it."""
    return {
        "metadata": {
            "name": f"{app}-ottava-x1",
            "namespace": "shop",
            "labels": {
                "kubernetes.io/service-name": f"{app}-ottava",
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
                contract.LABEL_MANAGED_BY: contract.MANAGED_BY,
                contract.LABEL_APP_ID: app,
            },
        },
        "addressType": address_type,
        "endpoints": [
            {"addresses": [ip], "conditions": {"ready": ready}, "targetRef": {"kind": "Pod", "uid": ip}}
            for ip, ready in endpoints
        ],
        "ports": [{"name": name, "port": port, "protocol": "TCP"} for name, port in services.PORTS],
    }


def test_a_functions_slices_list_the_sidecars_of_the_apps_that_run_it_each_certified_as_its_app() -> None:
    greeter = {
        "apiVersion": "ottava.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": "greeter", "namespace": "shop"},
        "spec": {"type": "function.wasm", "version": "v1", "metadata": []},
        "scopes": ["orders", "billing"],
    }
    function = functions.function_of(greeter)
    assert function is not None and function.scopes == ("orders", "billing")
    assert functions.function_of(component()) is None, "a state store is no function"

    service = functions.function_service(function)
    assert service["metadata"]["name"] == "greeter-ottava" and service["spec"]["selector"] is None
    assert service["metadata"]["labels"][contract.LABEL_FUNCTION] == "greeter"
    assert functions.is_function_service(service) and not functions.is_function_service(
        services.app_service("orders", "shop")
    )

    apps = [
        app_slice("orders", ("10.0.0.1", True), ("10.0.0.2", False)),
        app_slice("billing", ("10.0.0.3", True)),
        app_slice("audit", ("10.0.0.4", True)),  # not in the scopes: it does not run greeter
    ]
    slices = functions.function_slices(function, "uid-1", apps)
    assert [s["metadata"]["name"] for s in slices] == ["greeter-ottava-billing-ipv4", "greeter-ottava-orders-ipv4"]
    for each in slices:
        labels = each["metadata"]["labels"]
        assert labels["kubernetes.io/service-name"] == "greeter-ottava"
        assert labels["endpointslice.kubernetes.io/managed-by"] != "endpointslice-controller.k8s.io"
        assert labels[contract.LABEL_MANAGED_BY] == contract.MANAGED_BY  # what sidecars watch
        assert each["metadata"]["ownerReferences"][0]["uid"] == "uid-1"  # deleted with the Service
    # The function's own slices, listed again, are not taken for an app's.
    assert functions.function_slices(function, "uid-1", apps + slices) == slices

    # A caller's resolver: the ready sidecars of both apps, each to be certified as its app.
    found = endpoints_of(slices, "greeter")
    assert found.ready == (
        Address("10.0.0.1", contract.INTERNAL_GRPC_PORT, "orders"),
        Address("10.0.0.3", contract.INTERNAL_GRPC_PORT, "billing"),
    )
    assert found.not_ready == 1
    # An app's own slices name no other app to be certified as.
    assert endpoints_of([apps[0]], "orders").ready == (Address("10.0.0.1", contract.INTERNAL_GRPC_PORT),)

    unscoped = functions.function_of({**greeter, "scopes": []})
    assert unscoped is not None
    assert len(functions.function_slices(unscoped, "uid-1", apps)) == 3, "no scopes: every app runs it"


def test_drift_ignores_what_the_apiserver_adds_and_names_what_was_changed() -> None:
    desired = services.app_service("orders", "shop")
    as_read = copy.deepcopy(desired)
    as_read["metadata"].update(uid="u", resourceVersion="7")
    as_read["metadata"]["labels"]["team"] = "payments"  # someone's extra label is theirs to keep
    as_read["spec"].update(clusterIPs=["None"], sessionAffinity="None", ipFamilies=["IPv4"])
    for port in as_read["spec"]["ports"]:
        port.pop("targetPort")  # defaulted to the port
    assert services.drift(as_read, desired) == []

    edited = copy.deepcopy(as_read)
    edited["spec"]["ports"] = edited["spec"]["ports"][:2]
    edited["spec"]["selector"] = {"app": "orders"}
    edited["spec"]["publishNotReadyAddresses"] = True
    del edited["metadata"]["labels"][contract.LABEL_MANAGED_BY]
    assert services.drift(edited, desired) == [
        "metadata.labels",
        "spec.selector",
        "spec.publishNotReadyAddresses",
        "spec.ports",
    ]


def test_app_ids_that_cannot_name_a_service_are_explained() -> None:
    assert contract.app_service_problem("orders-v2") is None
    assert contract.app_service_problem("o" * 56) is None
    too_long = contract.app_service_problem("o" * 57)
    assert too_long is not None and "longer than 56" in too_long
    for bad in ("orders.v2", "Orders", "2fast", "orders-"):
        problem = contract.app_service_problem(bad)
        assert problem is not None and repr(bad) in problem
    parsed = annotations.parse({"ottava.io/enabled": "true", "ottava.io/app-id": "orders.v2"})
    assert parsed.app_id == "orders.v2", "a pod with such an id still runs and calls others"
    assert ["other apps cannot invoke it" in p for p in parsed.problems] == [True]


def test_ready_condition_keeps_transition_time_while_status_holds() -> None:
    first = status.ready_condition([], 1, None)
    again = status.ready_condition([], 2, [{**first, "lastTransitionTime": "2020-01-01T00:00:00Z"}])
    assert again["lastTransitionTime"] == "2020-01-01T00:00:00Z"
    assert again["observedGeneration"] == 2
    broken = status.ready_condition(["spec.type: bad"], 3, [again])
    assert (broken["status"], broken["reason"]) == ("False", "Invalid")
    assert broken["lastTransitionTime"] != "2020-01-01T00:00:00Z"


def test_serving_certificate_verifies_against_its_ca(tmp_path: Path) -> None:
    names = ("ottava-webhook.ottava-system.svc", "127.0.0.1")
    material = certificates.build(names)
    (tmp_path / "ca.crt").write_bytes(material.ca_cert)
    (tmp_path / "tls.crt").write_bytes(material.cert)
    (tmp_path / "tls.key").write_bytes(material.key)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    cert = x509.load_pem_x509_certificate(material.cert)
    ca = x509.load_pem_x509_certificate(material.ca_cert)
    cert.verify_directly_issued_by(ca)
    assert certificates.needs_renewal(material, names) is None


def test_renewal_when_a_third_of_life_is_left_or_a_name_is_missing() -> None:
    names = ("ottava-webhook.ottava-system.svc",)
    material = certificates.build(names)
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=250)
    assert "expires" in (certificates.needs_renewal(material, names, now=later) or "")
    assert "lacks 127.0.0.1" in (certificates.needs_renewal(material, (*names, "127.0.0.1")) or "")
    renewed = certificates.build(names, (material.ca_cert, material.ca_key))
    assert renewed.ca_cert == material.ca_cert, "reissuing must keep the CA, so the caBundle stays valid"


def traffic_route(**spec: object) -> dict[str, object]:
    return {
        "apiVersion": "ottava.io/v1alpha1",
        "kind": "TrafficRoute",
        "metadata": {"name": "billing", "namespace": "shop", "uid": "x"},
        "spec": spec,
        "status": {"conditions": []},
    }


def test_traffic_routes_that_cannot_route_are_refused_naming_the_field() -> None:
    assert validation.traffic_route_problems(traffic_route(rules=[{"destinations": [{"version": "v1"}]}])) == []
    [problem] = validation.traffic_route_problems(
        traffic_route(rules=[{"destinations": [{"version": "v1", "weight": 90}, {"version": "v2", "weight": 5}]}])
    )
    assert problem.startswith("spec.rules.0:") and "weights add up to 95" in problem
    [problem] = validation.traffic_route_problems(traffic_route(rules=[{"match": {"callerAppId": "checkout"}}]))
    assert problem.startswith("spec.rules.0:") and "names no destination" in problem
    [problem] = validation.traffic_route_problems(
        traffic_route(rules=[{"fault": {"delay": {"fixedDelay": "1s", "percent": 150}}}])
    )
    assert problem.startswith("spec.rules.0.fault.delay.percent:")


def pod(name: str, uid: str, version: str | None, *ips: str, **metadata: object) -> dict[str, object]:
    labels = {contract.LABEL_APP_ID: "billing", contract.LABEL_SIDECAR_INJECTED: "true"}
    if version is not None:
        labels[contract.LABEL_APP_VERSION] = version
    return {
        "metadata": {"name": name, "namespace": "shop", "uid": uid, "labels": labels, **metadata},
        "status": {"podIPs": [{"ip": ip} for ip in ips]},
    }


def test_version_slices_list_each_versions_pods_by_address_family() -> None:
    pods = [
        pod("b-1", "u1", "v1", "10.0.0.1"),
        pod("b-2", "u2", "v2", "10.0.0.2", "fd00::2"),
        pod("b-3", "u3", "v2", "10.0.0.3"),
        pod("b-4", "u4", None, "10.0.0.4"),  # no version: in no slice
        pod("b-5", "u5", "v1"),  # no IP yet
        pod("b-6", "u6", "v1", "10.0.0.6", deletionTimestamp="2026-01-01T00:00:00Z"),
    ]
    slices = versions.version_slices("shop", "billing", pods, owner_uid="svc-uid")
    found = {
        (s["metadata"]["labels"][contract.LABEL_APP_VERSION], s["addressType"]): [
            (e["addresses"][0], e["targetRef"]["uid"]) for e in s["endpoints"]
        ]
        for s in slices
    }
    assert found == {
        ("v1", "IPv4"): [("10.0.0.1", "u1")],
        ("v2", "IPv4"): [("10.0.0.2", "u2"), ("10.0.0.3", "u3")],
        ("v2", "IPv6"): [("fd00::2", "u2")],
    }
    for slice_ in slices:
        labels = slice_["metadata"]["labels"]
        # The sidecars' watch selects them; no Service is named, so DNS and kube-proxy ignore them.
        assert labels[contract.LABEL_MANAGED_BY] == contract.MANAGED_BY and labels[contract.LABEL_APP_ID] == "billing"
        assert "kubernetes.io/service-name" not in labels
        assert slice_["metadata"]["ownerReferences"][0]["uid"] == "svc-uid"
        assert len(slice_["metadata"]["name"]) <= 253
    # Versions may hold what names may not.
    [upper] = versions.version_slices("shop", "billing", [pod("b", "u", "V2_rc", "10.0.0.9")], owner_uid="")
    assert upper["metadata"]["name"].islower() and "ownerReferences" not in upper["metadata"]


def test_a_version_slice_is_rewritten_only_when_its_pods_change() -> None:
    [desired] = versions.version_slices("shop", "billing", [pod("b-1", "u1", "v1", "10.0.0.1")], owner_uid="s")
    as_read = copy.deepcopy(desired)
    as_read["endpoints"][0]["conditions"] = {}  # what the apiserver adds
    as_read["metadata"]["resourceVersion"] = "7"
    assert not versions.differs(as_read, desired)
    [moved] = versions.version_slices("shop", "billing", [pod("b-1", "u1", "v1", "10.0.0.9")], owner_uid="s")
    assert versions.differs(as_read, moved)
    [reowned] = versions.version_slices("shop", "billing", [pod("b-1", "u1", "v1", "10.0.0.1")], owner_uid="t")
    assert versions.differs(as_read, reowned)


def test_the_resolver_reads_the_operators_version_slices_as_a_pod_index() -> None:
    pods = [pod("b-1", "u1", "v1", "10.0.0.1"), pod("b-2", "u2", "v2", "10.0.0.2")]
    index_slices = versions.version_slices("shop", "billing", pods, owner_uid="s")
    assert {kubernetes_resolution.version_slice_app(s) for s in index_slices} == {"billing"}
    index = kubernetes_resolution.version_index(index_slices)
    service_slice = {
        "metadata": {"name": "billing-ottava-abc", "labels": {"kubernetes.io/service-name": "billing-ottava"}},
        "addressType": "IPv4",
        "ports": [{"name": contract.SERVICE_PORT_INTERNAL, "port": contract.INTERNAL_GRPC_PORT}],
        "endpoints": [
            {"addresses": ["10.0.0.1"], "conditions": {"ready": True}, "targetRef": {"kind": "Pod", "uid": "u1"}},
            {"addresses": ["10.0.0.2"], "conditions": {"ready": True}, "targetRef": {"kind": "Pod", "uid": "u2"}},
            {"addresses": ["10.0.0.3"], "conditions": {"ready": True}, "targetRef": {"kind": "Pod", "uid": "u3"}},
            {"addresses": ["10.0.0.4"], "conditions": {"ready": False}, "targetRef": {"kind": "Pod", "uid": "u4"}},
        ],
    }
    assert kubernetes_resolution.version_slice_app(service_slice) is None
    found = kubernetes_resolution.endpoints_of([service_slice], "billing", index)
    # Readiness comes from the Service's slice only; the index says which version each ready pod serves.
    assert [(a.host, a.version) for a in found.ready] == [("10.0.0.1", "v1"), ("10.0.0.2", "v2"), ("10.0.0.3", "")]
    assert found.not_ready == 1
