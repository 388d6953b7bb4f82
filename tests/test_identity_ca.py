"""The identity CA's rotation phases, a brought CA's chain, and the signer's decisions.

The rotation is a pure function of the CA's state and the time (`identity_ca.advance`),
so these tests step a CA through a root's whole life without waiting; the end-to-end
test (`tests/e2e/test_identity_signer.py`) runs the real signer against the apiserver.
"""

from __future__ import annotations

import base64
import datetime
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID
from ottava_operator import identity_ca, signer
from ottava_operator.identity_ca import CaError, CaState, advance, new_state
from ottava_operator.signer import Caller, SignError, caller_of, check_pod, parse_request, trust_domain
from ottava_sidecar.identity import certs
from ottava_sidecar.identity.spiffe import SpiffeId

T0 = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
ROOT_TTL = datetime.timedelta(days=30)
WORKLOAD_TTL = datetime.timedelta(hours=24)
DAY = datetime.timedelta(days=1)
ID = SpiffeId("public", "shop", "orders")


def issue(state: CaState, at: datetime.datetime) -> x509.Certificate:
    leaf = certs.issue_workload(state.issuer, state.issuer_key, certs.new_key().public_key(), ID, WORKLOAD_TTL, at=at)
    return certs.load_certs(leaf)[0]


def trusted(leaf: x509.Certificate, state: CaState, at: datetime.datetime) -> bool:
    """The leaf verifies against a root of the bundle and is valid at `at`."""
    if not leaf.not_valid_before_utc <= at < leaf.not_valid_after_utc:
        return False
    for root in state.roots():
        try:
            leaf.verify_directly_issued_by(root)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return root.not_valid_after_utc > at
    return False


def step(state: CaState, at: datetime.datetime) -> tuple[CaState, list[str]]:
    return advance(state, at, ROOT_TTL, WORKLOAD_TTL)


def test_a_new_ca_signs_with_the_one_root_it_trusts() -> None:
    state = new_state(T0, ROOT_TTL)
    assert state.roots() == [state.issuer_cert]
    assert not state.next_root
    assert step(state, T0 + DAY) == (state, [])
    leaf = issue(state, T0 + DAY)
    assert trusted(leaf, state, T0 + DAY)


def test_the_root_rotates_with_an_overlap_of_one_workload_ttl() -> None:
    state = new_state(T0, ROOT_TTL)
    old_root = state.issuer_cert

    # More than a third of its life left: nothing happens.
    assert step(state, T0 + 19 * DAY) == (state, [])

    # Less than a third left: a new root is trusted at once, but the old one still signs.
    introduced_at = T0 + 21 * DAY
    state, changes = step(state, introduced_at)
    assert changes and "a new root is trusted now" in changes[0]
    new_root = certs.load_certs(state.next_root)[0]
    assert state.issuer_cert == old_root
    assert state.roots() == [old_root, new_root]
    before_switch = issue(state, introduced_at + DAY - datetime.timedelta(minutes=5))
    before_switch.verify_directly_issued_by(old_root)

    # Not yet trusted for a whole workload TTL: still not signing.
    assert step(state, introduced_at + DAY - datetime.timedelta(minutes=5)) == (state, [])

    # After one workload TTL every sidecar has renewed and learnt the new root: it signs.
    switch_at = introduced_at + DAY
    state, changes = step(state, switch_at)
    assert changes and "it signs from now on" in changes[0]
    assert state.issuer_cert == new_root and not state.next_root
    assert state.roots() == [old_root, new_root]
    after_switch = issue(state, switch_at)
    after_switch.verify_directly_issued_by(new_root)
    # Both generations verify against the bundle sidecars now hold.
    assert trusted(before_switch, state, switch_at) and trusted(after_switch, state, switch_at)

    # The old root stays trusted until it expires...
    just_before_expiry = old_root.not_valid_after_utc - datetime.timedelta(minutes=1)
    assert step(state, just_before_expiry) == (state, [])
    # ...and what it signed expires long before it does.
    assert before_switch.not_valid_after_utc < old_root.not_valid_after_utc

    # Then it drops out of the bundle.
    state, changes = step(state, old_root.not_valid_after_utc + datetime.timedelta(minutes=1))
    assert changes == [f"dropped the expired root {old_root.subject.rfc4514_string()}"]
    assert state.roots() == [new_root]
    assert state.issuer_cert == new_root


def test_a_workload_certificate_never_outlives_the_root_that_signed_it() -> None:
    state = new_state(T0, ROOT_TTL)
    late = issue(state, state.issuer_cert.not_valid_after_utc - datetime.timedelta(hours=2))
    assert late.not_valid_after_utc == state.issuer_cert.not_valid_after_utc


def test_the_next_root_signs_at_once_when_the_old_one_expired_meanwhile() -> None:
    # An operator that was down for the whole overlap: an expired root cannot sign.
    state, _ = step(new_state(T0, ROOT_TTL), T0 + 21 * DAY)
    expired = state.issuer_cert.not_valid_after_utc + DAY
    state, changes = advance(state, expired, ROOT_TTL, datetime.timedelta(days=60))
    assert "it signs from now on" in changes[0]
    assert len(state.roots()) == 1 and state.roots() == [state.issuer_cert]


def test_an_expired_ca_with_no_next_root_gets_a_new_one_that_signs_at_once() -> None:
    state = new_state(T0, ROOT_TTL)
    state, changes = step(state, T0 + 31 * DAY)
    assert changes[0] == "the signing root had expired: a new root signs at once"
    assert state.roots() == [state.issuer_cert]
    assert state.issuer_cert.not_valid_after_utc > T0 + 31 * DAY


def test_a_bundle_that_lost_the_signing_root_is_repaired() -> None:
    state = new_state(T0, ROOT_TTL)
    other = new_state(T0, ROOT_TTL)
    broken = CaState(state.issuer, state.issuer_key, other.trust_bundle)
    repaired, changes = step(broken, T0 + DAY)
    assert changes == ["the trust bundle lacked a root in use: added it"]
    assert repaired.roots() == [other.issuer_cert, state.issuer_cert]


def test_the_secret_holds_every_phase() -> None:
    state, _ = step(new_state(T0, ROOT_TTL), T0 + 21 * DAY)
    data = state.as_secret_data()
    assert set(data) == {"tls.crt", "tls.key", "ca.crt", "next.crt", "next.key"}
    assert CaState.from_secret_data(data, "ottava-system/ottava-identity-ca") == state
    promoted, _ = step(state, T0 + 22 * DAY)
    assert set(promoted.as_secret_data()) == {"tls.crt", "tls.key", "ca.crt"}


# Bring your own CA: an organisation's root, and an intermediate that signs.


def org_ca(path_length: int | None = None) -> tuple[bytes, bytes]:
    key = certs.new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Example Corp Root")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(certs.now() - DAY)
        .not_valid_after(certs.now() + 3650 * DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .sign(key, hashes.SHA256())
    )
    return certs.cert_pem(cert), certs.key_pem(key)


def intermediate(root: tuple[bytes, bytes], ca: bool = True) -> tuple[bytes, bytes]:
    root_cert, root_key = certs.load_certs(root[0])[0], certs.load_key(root[1])
    key = certs.new_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Example Corp Mesh CA")]))
        .issuer_name(root_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(certs.now() - DAY)
        .not_valid_after(certs.now() + 365 * DAY)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
        .sign(root_key, hashes.SHA256())
    )
    return certs.cert_pem(cert), certs.key_pem(key)


def secret_data(tls_crt: bytes, tls_key: bytes, ca_crt: bytes) -> dict[str, str]:
    return {
        k: base64.b64encode(v).decode() for k, v in {"tls.crt": tls_crt, "tls.key": tls_key, "ca.crt": ca_crt}.items()
    }


def test_a_brought_intermediate_signs_and_its_chain_goes_with_every_leaf_without_the_root() -> None:
    root = org_ca()
    mid = intermediate(root)
    # tls.crt: the issuer followed by its chain, up to the root, as many CAs hand it out.
    state = CaState.from_secret_data(secret_data(mid[0] + root[0], mid[1], root[0]), "ottava-system/corp-ca")
    assert state.chain == mid[0]
    assert state.roots() == certs.load_certs(root[0])

    leaf = certs.issue_workload(state.issuer, state.issuer_key, certs.new_key().public_key(), ID, WORKLOAD_TTL)
    # What the signer answers: the leaf, then the intermediate.
    chain = certs.load_certs(leaf + state.chain)
    assert len(chain) == 2
    chain[0].verify_directly_issued_by(chain[1])
    chain[1].verify_directly_issued_by(state.roots()[0])


def test_a_brought_root_sends_no_chain() -> None:
    root = org_ca()
    state = CaState.from_secret_data(secret_data(*root, root[0]), "ottava-system/corp-ca")
    assert state.chain == b""


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing", "Secret ottava-system/corp-ca lacks ca.crt"),
        ("wrong key", "tls.key is not the key of tls.crt"),
        ("not a CA", "is not a CA certificate"),
        ("other root", "does not lead to a root of ca.crt"),
    ],
)
def test_a_brought_ca_that_cannot_sign_is_refused_naming_why(case: str, message: str) -> None:
    root = org_ca()
    mid = intermediate(root)
    data = {
        "missing": {k: v for k, v in secret_data(mid[0], mid[1], root[0]).items() if k != "ca.crt"},
        "wrong key": secret_data(mid[0], root[1], root[0]),
        "not a CA": secret_data(*intermediate(root, ca=False), root[0]),
        "other root": secret_data(mid[0], mid[1], new_state(T0, ROOT_TTL).trust_bundle),
    }[case]
    with pytest.raises(CaError, match=message):
        CaState.from_secret_data(data, "ottava-system/corp-ca")


# The signer's decisions.


def csr_body(app_id: Any = "orders", csr: Any = None) -> bytes:
    if csr is None:
        csr = certs.new_request(certs.new_key(), ID).decode()
    return json.dumps({"csr": csr, "appId": app_id}).encode()


def test_a_good_request_gives_the_csrs_key_and_nothing_else_of_it() -> None:
    key = certs.new_key()
    # The CSR asks for another app's ID: only its key is used.
    body = json.dumps({"csr": certs.new_request(key, SpiffeId("public", "x", "admin")).decode(), "appId": "orders"})
    request = parse_request(body.encode())
    assert request.app_id == "orders"
    assert request.public_key.public_numbers() == key.public_key().public_numbers()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "the body is not JSON"),
        (b"[]", "not a JSON object"),
        (csr_body(app_id=None), "appId is missing"),
        (csr_body(csr=""), "csr is missing"),
        (csr_body(csr="-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"), "csr: "),
    ],
)
def test_a_bad_request_is_400_naming_what_is_wrong(body: bytes, message: str) -> None:
    with pytest.raises(SignError, match=message) as raised:
        parse_request(body)
    assert raised.value.status == 400


def review(**changes: Any) -> dict[str, Any]:
    status: dict[str, Any] = {
        "authenticated": True,
        "audiences": ["ottava.io/identity"],
        "user": {
            "username": "system:serviceaccount:shop:orders-sa",
            "extra": {
                "authentication.kubernetes.io/pod-name": ["orders-5d9-x2"],
                "authentication.kubernetes.io/pod-uid": ["uid-1"],
            },
        },
    }
    status.update(changes)
    return status


def test_a_pod_bound_token_names_the_caller() -> None:
    assert caller_of(review()) == Caller("shop", "orders-sa", "orders-5d9-x2", "uid-1")


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (
            review(authenticated=False, error="token has expired"),
            "not accepted for audience ottava.io/identity: token has expired",
        ),
        (review(audiences=["https://kubernetes.default.svc"]), "not for audience ottava.io/identity"),
        (review(user={"username": "alice"}), "'alice''s, not a service account's"),
        (review(user={"username": "system:serviceaccount:shop:orders-sa"}), "not bound to a pod"),
    ],
)
def test_a_token_that_is_not_a_pods_identity_token_is_401(status: dict[str, Any], message: str) -> None:
    with pytest.raises(SignError, match=message) as raised:
        caller_of(status)
    assert raised.value.status == 401


CALLER = Caller("shop", "orders-sa", "orders-5d9-x2", "uid-1")


def pod(**changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "metadata": {
            "name": "orders-5d9-x2",
            "namespace": "shop",
            "uid": "uid-1",
            "labels": {"ottava.io/sidecar-injected": "true", "ottava.io/app-id": "orders"},
        },
        "spec": {"serviceAccountName": "orders-sa"},
    }
    for key, value in changes.items():
        document[key].update(value)
    return document


def test_an_injected_pod_of_the_app_asked_for_passes() -> None:
    check_pod(pod(), CALLER, "orders")


@pytest.mark.parametrize(
    ("document", "app_id", "message"),
    [
        (None, "orders", "pod shop/orders-5d9-x2 does not exist"),
        (pod(metadata={"uid": "uid-2"}), "orders", "its uid differs"),
        (pod(metadata={"labels": {"ottava.io/app-id": "orders"}}), "orders", "is not an injected pod"),
        (pod(spec={"serviceAccountName": "billing-sa"}), "orders", "runs as service account 'billing-sa'"),
        (pod(), "billing-admin", "asked for app id 'billing-admin', but its ottava.io/app-id label is 'orders'"),
    ],
)
def test_a_pod_that_is_not_the_apps_is_403_naming_it(
    document: dict[str, Any] | None, app_id: str, message: str
) -> None:
    with pytest.raises(SignError, match=message) as raised:
        check_pod(document, CALLER, app_id)
    assert raised.value.status == 403


def test_the_trust_domain_comes_from_the_pods_configuration() -> None:
    assert trust_domain(None) == "public"
    assert trust_domain({"spec": {}}) == "public"
    assert trust_domain({"spec": {"accessControl": {"trustDomain": "corp.example"}}}) == "corp.example"


def test_the_serving_certificate_follows_the_signing_root(tmp_path: Path) -> None:
    serving = signer.ServingCertificate(("ottava-webhook.ottava-system.svc",), tmp_path)
    state = new_state(certs.now(), ROOT_TTL)
    assert serving.refresh(state) is True
    assert serving.refresh(state) is False
    served = certs.load_certs((tmp_path / "identity.crt").read_bytes())
    served[0].verify_directly_issued_by(state.issuer_cert)
    sans = served[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["ottava-webhook.ottava-system.svc"]
    # Aged past two thirds of its life: reissued.
    assert serving.refresh(state, certs.now() + signer.SERVING_TTL * 0.7) is True
    # A new signing root: reissued by it.
    rotated = new_state(certs.now(), ROOT_TTL)
    assert serving.refresh(rotated) is True
    certs.load_certs((tmp_path / "identity.crt").read_bytes())[0].verify_directly_issued_by(rotated.issuer_cert)


def test_the_rotation_threshold_is_a_third() -> None:
    assert pytest.approx(1 / 3) == identity_ca.RENEW_WHEN_LEFT
