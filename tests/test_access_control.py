"""Access control policies (`Configuration.spec.accessControl`): what `AccessPolicy.check` decides.

Each case is a caller, an operation and a verb under one policy, and what the caller
sees: allowed, or denied by a named rule. Policies are built from manifests as a sidecar
builds them (`Configuration.model_validate`, then `from_configuration`), so the model's
defaults and validation are part of what is tested; the operator's admission check
(`configuration_problems`) must refuse the same bad manifests.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml
from ottava_operator.validation import configuration_problems
from ottava_sidecar.identity.spiffe import SpiffeId
from ottava_sidecar.invocation.access_control import AccessPolicy, compile_operation
from ottava_sidecar.resources.manifests import describe_errors
from ottava_sidecar.resources.models import Configuration
from ottava_sidecar.runtime.sidecar import Options, Sidecar
from prometheus_client import REGISTRY
from pydantic import ValidationError

POLICY = """
defaultAction: deny
trustDomain: public
policies:
- appId: checkout                     # policies[0]
  defaultAction: allow
  namespace: default
  operations:
  - {name: /admin/reports, httpVerb: [GET], action: allow}
  - {name: /admin/**, httpVerb: [POST, DELETE], action: deny}
  - {name: orders/*/cancel, httpVerb: ['*'], action: deny}
  - {name: /v*/internal, httpVerb: [get], action: deny}
- appId: checkout                     # policies[1]: the same app id in another namespace
  namespace: other
  operations:
  - {name: /orders, httpVerb: [GET], action: allow}
- appId: billing                      # policies[2]
  trustDomain: example.org
  defaultAction: deny
  operations:
  - {name: /invoices/*, action: allow}
"""

CHECKOUT = SpiffeId("public", "default", "checkout")
CHECKOUT_OTHER_NS = SpiffeId("public", "other", "checkout")
CHECKOUT_OTHER_TD = SpiffeId("example.org", "default", "checkout")
BILLING = SpiffeId("example.org", "default", "billing")
BILLING_PUBLIC = SpiffeId("public", "default", "billing")
SHIPPING = SpiffeId("public", "default", "shipping")

ALLOWED = None

CASES: list[tuple[str, SpiffeId | None, str, str, str | None]] = [
    # (case, caller, operation, verb, rule that denies or ALLOWED)
    ("verb listed, action allow", CHECKOUT, "/admin/reports", "GET", ALLOWED),
    (
        "first rule's name matches but not its verb: the next rule decides",
        CHECKOUT,
        "/admin/reports",
        "POST",
        "policies[0].operations[1]",
    ),
    ("'**' spans segments", CHECKOUT, "/admin/users/1/keys", "DELETE", "policies[0].operations[1]"),
    ("'**' matches no segment", CHECKOUT, "/admin", "POST", "policies[0].operations[1]"),
    ("'**' needs a segment boundary", CHECKOUT, "/administrator", "POST", ALLOWED),
    ("verb not listed by any rule: the app default", CHECKOUT, "/admin/users", "GET", ALLOWED),
    ("HTTP ignores case of name and verb", CHECKOUT, "/ADMIN/Users", "post", "policies[0].operations[1]"),
    ("gRPC: the first rule whose name matches, verbs unread", CHECKOUT, "/admin/reports", "", ALLOWED),
    ("gRPC: a rule for POST also covers gRPC", CHECKOUT, "/admin/users", "", "policies[0].operations[1]"),
    ("gRPC: case matters", CHECKOUT, "/ADMIN/users", "", ALLOWED),
    ("leading '/' added to both sides, '*' verb", CHECKOUT, "orders/7/cancel", "PATCH", "policies[0].operations[2]"),
    ("'*' segment is one segment", CHECKOUT, "/orders/7/8/cancel", "PATCH", ALLOWED),
    ("'*' inside a segment", CHECKOUT, "/v2/internal", "GET", "policies[0].operations[3]"),
    ("'*' inside a segment stays in it", CHECKOUT, "/v2/x/internal", "GET", ALLOWED),
    ("rule verbs in lower case", CHECKOUT, "/v1/internal", "GET", "policies[0].operations[3]"),
    ("same app id, its own namespace's policy", CHECKOUT_OTHER_NS, "/orders", "GET", ALLOWED),
    ("policy without defaultAction: the global one", CHECKOUT_OTHER_NS, "/orders", "POST", "defaultAction"),
    ("same app id in another trust domain: no policy", CHECKOUT_OTHER_TD, "/admin/reports", "GET", "defaultAction"),
    ("a last '*' also matches the path without it (Dapr)", BILLING, "/invoices", "GET", ALLOWED),
    ("default verb list is '*'", BILLING, "/invoices/9", "DELETE", ALLOWED),
    ("app defaultAction deny", BILLING, "/invoices/9/lines", "GET", "policies[2].defaultAction"),
    ("app id matches, trust domain does not", BILLING_PUBLIC, "/invoices/9", "GET", "defaultAction"),
    ("no policy names the caller", SHIPPING, "/orders", "GET", "defaultAction"),
    ("no verified identity: the global default only", None, "/admin/reports", "GET", "defaultAction"),
    ("no verified identity over gRPC", None, "/orders", "", "defaultAction"),
]


def policy(access_control: str | dict[str, Any] | None, name: str = "appconfig") -> AccessPolicy:
    spec = {} if access_control is None else {"accessControl": _load(access_control)}
    configuration = Configuration.model_validate(
        {"apiVersion": "dapr.io/v1alpha1", "kind": "Configuration", "metadata": {"name": name}, "spec": spec}
    )
    return AccessPolicy.from_configuration(configuration.spec.access_control, f"Configuration {name}")


def _load(document: str | dict[str, Any]) -> Any:
    return yaml.safe_load(document) if isinstance(document, str) else document


def denials(caller_app_id: str, decided_by: str) -> float:
    labels = {"caller_app_id": caller_app_id, "decided_by": decided_by}
    return REGISTRY.get_sample_value("ottava_access_control_denials_total", labels) or 0.0


@pytest.mark.parametrize(("case", "caller", "operation", "verb", "rule"), CASES, ids=[c[0] for c in CASES])
def test_check(case: str, caller: SpiffeId | None, operation: str, verb: str, rule: str | None) -> None:
    denial = policy(POLICY).check(caller, operation, verb)
    assert (denial.rule if denial else ALLOWED) == rule, denial.message if denial else case


@pytest.mark.parametrize(
    ("name", "matching", "not_matching"),
    [
        ("/orders", ["/orders"], ["/orders/1", "/order", "/ordersx"]),
        ("orders", ["/orders"], ["/orders/1"]),
        ("/orders/*", ["/orders/1", "/orders/", "/orders"], ["/orders/1/items", "/ordersx"]),
        ("/orders/*/items", ["/orders/1/items", "/orders//items"], ["/orders/1/2/items", "/orders/items"]),
        ("/orders/**", ["/orders", "/orders/1", "/orders/1/items/2"], ["/ordersx", "/order"]),
        ("/**", ["/", "/a", "/a/b/c"], []),
        ("/a/**/z", ["/a/z", "/a/b/z", "/a/b/c/z"], ["/a/b/c", "/az"]),
        ("/v*.json", ["/v1.json", "/v.json", "/version.json"], ["/v1/x.json", "/v1xjson"]),
        ("/a.b", ["/a.b"], ["/axb"]),  # only '*' is special
    ],
)
def test_operation_names(name: str, matching: list[str], not_matching: list[str]) -> None:
    pattern = re.compile(compile_operation(name))
    assert [m for m in matching if not pattern.fullmatch(m)] == []
    assert [m for m in not_matching if pattern.fullmatch(m)] == []


def test_denial_names_the_rule_and_the_caller() -> None:
    rules = {
        "defaultAction": "allow",
        "policies": [
            {
                "appId": "checkout",
                "operations": [
                    {"name": "/admin/reports", "httpVerb": ["GET"], "action": "allow"},
                    {"name": "/admin/**", "httpVerb": ["POST"], "action": "deny"},
                ],
            }
        ],
    }
    denial = policy(rules).check(CHECKOUT, "/admin/users", "POST")
    assert denial is not None
    assert denial.message == (
        'access control of Configuration appconfig denied app "checkout" (spiffe://public/ns/default/checkout) '
        "POST /admin/users: policies[0].operations[1] (name /admin/**, httpVerb [POST], action deny)"
    )


def test_denial_messages_of_the_defaults() -> None:
    checks = policy(POLICY)
    messages = {
        "no identity": checks.check(None, "/orders", ""),
        "no policy": checks.check(SHIPPING, "/orders", "GET"),
        "app default": checks.check(BILLING, "/refunds", "GET"),
        "policy without default": checks.check(CHECKOUT_OTHER_NS, "orders", "PUT"),
    }
    assert {k: d.message if d else None for k, d in messages.items()} == {
        "no identity": "access control of Configuration appconfig denied a caller without a verified identity "
        "gRPC /orders: defaultAction (defaultAction deny; a caller without a verified identity (mTLS is off) gets "
        "the global default only)",
        "no policy": 'access control of Configuration appconfig denied app "shipping" '
        "(spiffe://public/ns/default/shipping) GET /orders: defaultAction (defaultAction deny; no policy names "
        "appId shipping in namespace default, trustDomain public)",
        "app default": 'access control of Configuration appconfig denied app "billing" '
        "(spiffe://example.org/ns/default/billing) GET /refunds: policies[2].defaultAction (appId billing, action "
        "deny; none of its operations matched)",
        "policy without default": 'access control of Configuration appconfig denied app "checkout" '
        "(spiffe://public/ns/other/checkout) PUT /orders: defaultAction (defaultAction deny; policies[1] has no "
        "defaultAction and none of its operations matched)",
    }


def test_first_matching_rule_wins() -> None:
    deny_first = {
        "policies": [
            {
                "appId": "checkout",
                "defaultAction": "allow",
                "operations": [{"name": "/a/*", "action": "deny"}, {"name": "/a/b", "action": "allow"}],
            }
        ]
    }
    allow_first = {
        "policies": [
            {
                "appId": "checkout",
                "defaultAction": "allow",
                "operations": [{"name": "/a/b", "action": "allow"}, {"name": "/a/*", "action": "deny"}],
            }
        ]
    }
    for verb in ("GET", ""):
        assert (d := policy(deny_first).check(CHECKOUT, "/a/b", verb)) and d.rule == "policies[0].operations[0]"
        assert policy(allow_first).check(CHECKOUT, "/a/b", verb) is None
        assert (d := policy(allow_first).check(CHECKOUT, "/a/c", verb)) and d.rule == "policies[0].operations[1]"


@pytest.mark.parametrize(
    ("case", "access_control", "active", "unknown_caller", "no_identity"),
    [
        ("no accessControl", None, False, ALLOWED, ALLOWED),
        ("empty accessControl", {}, False, ALLOWED, ALLOWED),
        ("trust domain only", {"trustDomain": "example.org"}, False, ALLOWED, ALLOWED),
        ("defaultAction allow, no policies", {"defaultAction": "allow"}, False, ALLOWED, ALLOWED),
        ("defaultAction deny, no policies", {"defaultAction": "deny"}, True, "defaultAction", "defaultAction"),
        # Dapr: with policies listed and no global default, the default is deny.
        ("policies, defaultAction unset", {"policies": [{"appId": "billing"}]}, True, "defaultAction", "defaultAction"),
        (
            "policies, defaultAction allow",
            {"defaultAction": "allow", "policies": [{"appId": "billing"}]},
            True,
            ALLOWED,
            ALLOWED,
        ),
    ],
)
def test_global_default(
    case: str, access_control: dict[str, Any] | None, active: bool, unknown_caller: str | None, no_identity: str | None
) -> None:
    checks = policy(access_control)
    assert checks.active is active
    found = [checks.check(SHIPPING, "/orders", "GET"), checks.check(None, "/orders", "")]
    assert [d.rule if d else ALLOWED for d in found] == [unknown_caller, no_identity]


def test_unset_default_says_why_it_denies() -> None:
    denial = policy({"policies": [{"appId": "billing"}]}).check(SHIPPING, "/orders", "GET")
    assert denial is not None
    assert "defaultAction unset, so deny as policies are listed" in denial.message


def test_denials_are_counted_by_caller_and_deciding_rule() -> None:
    checks = policy(POLICY)
    before = {
        key: denials(*key)
        for key in [("checkout", "operation"), ("billing", "app-default"), ("shipping", "default"), ("", "no-identity")]
    }
    checks.check(CHECKOUT, "/admin/users", "POST")
    checks.check(CHECKOUT, "/admin/users", "DELETE")
    checks.check(CHECKOUT, "/admin/reports", "GET")  # allowed: not counted
    checks.check(BILLING, "/invoices/1/lines", "GET")
    checks.check(SHIPPING, "/orders", "GET")
    checks.check(None, "/orders", "GET")
    assert {key: denials(*key) - value for key, value in before.items()} == {
        ("checkout", "operation"): 2,
        ("billing", "app-default"): 1,
        ("shipping", "default"): 1,
        ("", "no-identity"): 1,
    }


@pytest.mark.parametrize(
    ("case", "access_control", "problem"),
    [
        (
            "unknown action",
            {"policies": [{"appId": "a", "operations": [{"name": "/x", "action": "permit"}]}]},
            "spec.accessControl.policies.0.operations.0.action: Input should be 'allow' or 'deny'",
        ),
        ("unknown global action", {"defaultAction": "block"}, "spec.accessControl.defaultAction: Input should be"),
        (
            "empty operation name",
            {"policies": [{"appId": "a", "operations": [{"name": "", "action": "deny"}]}]},
            "spec.accessControl.policies.0.operations.0.name: String should have at least 1 character",
        ),
        (
            "blank operation name",
            {"policies": [{"appId": "a", "operations": [{"name": "  ", "action": "deny"}]}]},
            "spec.accessControl.policies.0.operations.0.name: Value error, an operation name cannot be blank",
        ),
        (
            "white space in a name",
            {"policies": [{"appId": "a", "operations": [{"name": "/a b", "action": "deny"}]}]},
            "spec.accessControl.policies.0.operations.0.name: Value error, operation name '/a b' contains white space",
        ),
        (
            "operation without action",
            {"policies": [{"appId": "a", "operations": [{"name": "/x"}]}]},
            "spec.accessControl.policies.0.operations.0.action: Field required",
        ),
        (
            "empty verb list",
            {"policies": [{"appId": "a", "operations": [{"name": "/x", "httpVerb": [], "action": "deny"}]}]},
            "spec.accessControl.policies.0.operations.0.httpVerb: Value error, httpVerb is empty",
        ),
        (
            "unknown verb",
            {
                "policies": [
                    {"appId": "a", "operations": [{"name": "/x", "httpVerb": ["GET", "FETCH"], "action": "deny"}]}
                ]
            },
            "spec.accessControl.policies.0.operations.0.httpVerb: Value error, 'FETCH' is not an HTTP verb",
        ),
        ("empty app id", {"policies": [{"appId": ""}]}, "spec.accessControl.policies.0.appId: String should have"),
        ("missing app id", {"policies": [{"namespace": "x"}]}, "spec.accessControl.policies.0.appId: Field required"),
        (
            "bad trust domain",
            {"policies": [{"appId": "a", "trustDomain": "Example Org"}]},
            "spec.accessControl.policies.0.trustDomain: String should match pattern",
        ),
        (
            "duplicate policy",
            {"policies": [{"appId": "a"}, {"appId": "b"}, {"appId": "a", "namespace": "default"}]},
            "spec.accessControl.policies: Value error, policies[2] names the same caller as policies[0] (appId a, "
            "namespace default, trustDomain public): merge their operations into one policy",
        ),
        (
            "Dapr's 'app' instead of 'appId'",
            {"policies": [{"app": "a"}]},
            "spec.accessControl.policies.0.app: unknown field",
        ),
    ],
)
def test_bad_policies_are_refused_naming_the_field(case: str, access_control: dict[str, Any], problem: str) -> None:
    document = {
        "apiVersion": "ottava.io/v1alpha1",
        "kind": "Configuration",
        "metadata": {"name": "appconfig"},
        "spec": {"accessControl": access_control},
    }
    with pytest.raises(ValidationError) as refused:
        Configuration.model_validate(document)
    assert problem in describe_errors(refused.value)
    # The operator's admission webhook refuses it at `kubectl apply`, with the same words.
    assert any(problem in p for p in configuration_problems(document)), configuration_problems(document)


def test_same_app_id_in_other_namespaces_and_trust_domains_is_allowed() -> None:
    rules = {"policies": [{"appId": "a"}, {"appId": "a", "namespace": "other"}, {"appId": "a", "trustDomain": "x"}]}
    assert (
        configuration_problems({"kind": "Configuration", "metadata": {"name": "c"}, "spec": {"accessControl": rules}})
        == []
    )


async def test_applying_a_configuration_replaces_the_sidecars_policy() -> None:
    # A Sidecar builds its gRPC servers on the running loop, so this test has one.
    sidecar = Sidecar(Options(app_id="orders"), [])
    assert sidecar.access_policy.check(SHIPPING, "/orders", "GET") is None
    configuration = Configuration.model_validate(
        {
            "apiVersion": "ottava.io/v1alpha1",
            "kind": "Configuration",
            "metadata": {"name": "strict"},
            "spec": {"accessControl": {"defaultAction": "deny"}},
        }
    )
    sidecar.settings.apply(configuration)
    denial = sidecar.access_policy.check(SHIPPING, "/orders", "GET")
    assert denial is not None and denial.message.startswith("access control of Configuration strict denied")
    sidecar.settings.apply(None)
    assert not sidecar.access_policy.active
