"""The identity CA: the root that signs sidecars' workload certificates, kept in a Secret.

The operator generates the CA itself, in the Secret `ottava-identity-ca` of its own
namespace (`OperatorSettings.identity_secret`); no sidecar can read it (sidecars' Roles
exist only in app namespaces). The Secret holds:

* `tls.crt`, `tls.key`: the signing root;
* `ca.crt`: the trust bundle, every root a sidecar must trust;
* `next.crt`, `next.key`: during a rotation, the next root, already trusted, not yet signing.

The root rotates with an overlap, one phase per check (`advance`, a pure function of the
state and the time):

1. When the signing root has less than a third of its life left, a new root is made and
   added to the trust bundle at once, but does not sign yet.
2. Once it has been in the bundle for one workload-certificate TTL, every sidecar has
   renewed its certificate and learnt the new bundle with it: the new root signs.
3. The old root stays in the bundle until it expires (no workload certificate outlives
   its issuer, `certs.issue_workload` caps it), then drops out.

Bring your own CA: with `OperatorSettings.identity_ca_secret` set, that Secret (`tls.crt`:
the issuer, possibly an intermediate followed by its chain; `tls.key`; `ca.crt`: the roots
to trust) is read at every check and never written: an organisation rotates by updating
it, with the old and new roots in `ca.crt` for as long as both are in use.

Replicas share the Secret exactly as they share the webhook's (`certificates.py`): every
write is conditional, and a 409 (another replica created or replaced it first) starts
over from a fresh read.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import logging
from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from ottava_sidecar.identity import certs

from ottava_operator.settings import OperatorSettings

log = logging.getLogger(__name__)

RENEW_WHEN_LEFT = 1 / 3
CHECK_INTERVAL = 60.0
CONFLICT_RETRIES = 5

ISSUER_CERT, ISSUER_KEY, TRUST_BUNDLE = "tls.crt", "tls.key", "ca.crt"
NEXT_CERT, NEXT_KEY = "next.crt", "next.key"


class CaError(ValueError):
    """A CA that cannot sign (an incomplete or inconsistent Secret); the message says why."""


@dataclass(frozen=True)
class CaState:
    """What signs, and what is trusted."""

    issuer: bytes  # the signing certificate (PEM), possibly followed by its chain
    issuer_key: bytes
    trust_bundle: bytes  # every root to trust (PEM)
    next_root: bytes = b""  # the root being introduced: trusted, not yet signing
    next_key: bytes = b""

    @property
    def issuer_cert(self) -> x509.Certificate:
        return certs.load_certs(self.issuer)[0]

    @property
    def chain(self) -> bytes:
        """The issuer's chain as sent with a leaf: the issuer and its intermediates, no root."""
        return certs.bundle([c for c in certs.load_certs(self.issuer) if not _self_signed(c)])

    def roots(self) -> list[x509.Certificate]:
        return certs.load_certs(self.trust_bundle)

    def as_secret_data(self) -> dict[str, str]:
        data = {ISSUER_CERT: self.issuer, ISSUER_KEY: self.issuer_key, TRUST_BUNDLE: self.trust_bundle}
        if self.next_root:
            data |= {NEXT_CERT: self.next_root, NEXT_KEY: self.next_key}
        return {name: base64.b64encode(value).decode() for name, value in data.items()}

    @classmethod
    def from_secret_data(cls, data: dict[str, str], secret: str) -> CaState:
        """Read and check a CA Secret's data (ours, or an organisation's)."""
        missing = [k for k in (ISSUER_CERT, ISSUER_KEY, TRUST_BUNDLE) if not data.get(k)]
        if missing:
            raise CaError(f"Secret {secret} lacks {', '.join(missing)}")
        decoded = {k: base64.b64decode(v) for k, v in data.items()}
        state = cls(
            decoded[ISSUER_CERT],
            decoded[ISSUER_KEY],
            decoded[TRUST_BUNDLE],
            decoded.get(NEXT_CERT, b""),
            decoded.get(NEXT_KEY, b""),
        )
        try:
            state.check()
        except certs.CertificateError as err:
            raise CaError(f"Secret {secret}: {err}") from None
        return state

    def check(self) -> None:
        issuer = self.issuer_cert
        try:
            constraints = issuer.extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound:
            constraints = None
        if constraints is None or not constraints.ca:
            raise certs.CertificateError(f"{ISSUER_CERT} ({issuer.subject.rfc4514_string()}) is not a CA certificate")
        if _public(certs.load_key(self.issuer_key).public_key()) != _public(issuer.public_key()):
            raise certs.CertificateError(f"{ISSUER_KEY} is not the key of {ISSUER_CERT}")
        chain = certs.load_certs(self.issuer)
        root_subjects = {r.subject for r in self.roots()}
        if chain[-1].subject not in root_subjects and chain[-1].issuer not in root_subjects:
            raise certs.CertificateError(
                f"{ISSUER_CERT} does not lead to a root of {TRUST_BUNDLE} "
                f"(its chain ends at {chain[-1].subject.rfc4514_string()}, "
                f"issued by {chain[-1].issuer.rfc4514_string()})"
            )


def _public(key: object) -> bytes:
    assert hasattr(key, "public_bytes")
    value: bytes = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return value


def _self_signed(cert: x509.Certificate) -> bool:
    return cert.subject == cert.issuer


def _root_name(now: datetime.datetime) -> str:
    return f"ottava identity root {now:%Y-%m-%dT%H:%M:%SZ}"


def new_state(now: datetime.datetime, root_ttl: datetime.timedelta) -> CaState:
    """A fresh CA: one root that signs and is the whole trust bundle."""
    cert, key = certs.new_root(_root_name(now), root_ttl, at=now)
    return CaState(cert, key, cert)


def in_bundle_since(root: x509.Certificate) -> datetime.datetime:
    """When a root we made entered the trust bundle: it is added the moment it is made."""
    return root.not_valid_before_utc + certs.CLOCK_SKEW


def advance(
    state: CaState, now: datetime.datetime, root_ttl: datetime.timedelta, workload_ttl: datetime.timedelta
) -> tuple[CaState, list[str]]:
    """The generated CA's next state at `now`, and what changed (nothing: the same state, [])."""
    issuer, issuer_key = state.issuer, state.issuer_key
    next_root, next_key = state.next_root, state.next_key
    changes: list[str] = []
    signing = certs.load_certs(issuer)[0]
    if next_root:
        pending = certs.load_certs(next_root)[0]
        trusted_for = now - in_bundle_since(pending)
        if trusted_for >= workload_ttl or signing.not_valid_after_utc <= now:
            issuer, issuer_key, next_root, next_key = next_root, next_key, b"", b""
            changes.append(f"the next root has been trusted for {trusted_for}: it signs from now on")
    elif signing.not_valid_after_utc <= now:
        issuer, issuer_key = certs.new_root(_root_name(now), root_ttl, at=now)
        changes.append("the signing root had expired: a new root signs at once")
    else:
        lifetime = signing.not_valid_after_utc - signing.not_valid_before_utc
        if signing.not_valid_after_utc - now < lifetime * RENEW_WHEN_LEFT:
            next_root, next_key = certs.new_root(_root_name(now), root_ttl, at=now)
            changes.append(
                f"the signing root expires {signing.not_valid_after_utc:%Y-%m-%d}: a new root is trusted "
                f"now and signs in {workload_ttl}"
            )
    required = [certs.load_certs(issuer)[0], *(certs.load_certs(next_root) if next_root else [])]
    bundle = _bundle(state.roots(), required, now)
    if bundle != state.trust_bundle:
        dropped = [r for r in state.roots() if r.not_valid_after_utc <= now]
        changes.extend(f"dropped the expired root {r.subject.rfc4514_string()}" for r in dropped)
        if not changes:
            changes.append("the trust bundle lacked a root in use: added it")
    if not changes:
        return state, []
    return CaState(issuer, issuer_key, bundle, next_root, next_key), changes


def _bundle(current: list[x509.Certificate], required: list[x509.Certificate], now: datetime.datetime) -> bytes:
    """The roots still valid, with the signing and next roots, each once, oldest first."""
    roots: list[x509.Certificate] = []
    for cert in [*current, *required]:
        if cert.not_valid_after_utc > now and cert not in roots:
            roots.append(cert)
    return certs.bundle(roots)


class IdentityCa:
    """Keeps the CA Secret current and the CA this replica signs with in memory."""

    def __init__(self, settings: OperatorSettings, api: client.ApiClient) -> None:
        self.settings = settings
        self.core = client.CoreV1Api(api)
        self.state: CaState | None = None  # None until the first good read: the signer answers 503
        self._listeners: list[Callable[[CaState], None]] = []

    @property
    def bring_your_own(self) -> bool:
        return bool(self.settings.identity_ca_secret)

    @property
    def secret_name(self) -> str:
        return self.settings.identity_ca_secret or self.settings.identity_secret

    def after_check(self, listener: Callable[[CaState], None]) -> None:
        """Call `listener` with the state after every check, changed or not (the signer renews its
        serving certificate as it ages, the injector takes the bundle)."""
        self._listeners.append(listener)

    async def ensure(self, now: datetime.datetime | None = None) -> CaState:
        now = now or certs.now()
        if self.bring_your_own:
            state = await self._read_existing()
        else:
            state = await self._load_or_create(now)
        if state != self.state:
            log.info(
                "identity CA loaded",
                extra={"secret": self.secret_name, "signer": state.issuer_cert.subject.rfc4514_string()},
            )
        self.state = state
        for listener in self._listeners:
            listener(state)
        return state

    async def run(self, interval: float = CHECK_INTERVAL) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.ensure()
            except Exception:
                log.exception("checking the identity CA failed; will retry", extra={"secret": self.secret_name})

    async def _read_existing(self) -> CaState:
        name, namespace = self.secret_name, self.settings.namespace
        try:
            secret = await self.core.read_namespaced_secret(name, namespace)
        except ApiException as err:
            if err.status == 404:
                raise CaError(
                    f"the identity CA Secret {namespace}/{name} (identity.ca.existingSecret) does not exist"
                ) from None
            raise
        return CaState.from_secret_data(secret.data or {}, f"{namespace}/{name}")

    async def _load_or_create(self, now: datetime.datetime) -> CaState:
        for attempt in range(CONFLICT_RETRIES):
            try:
                return await self._load_or_create_once(now)
            except ApiException as err:
                if err.status != 409:
                    raise
                log.info(
                    "the identity CA Secret was written by another replica; reading it again",
                    extra={"attempt": attempt},
                )
        raise RuntimeError(f"the identity CA Secret kept changing during {CONFLICT_RETRIES} attempts to read it")

    async def _load_or_create_once(self, now: datetime.datetime) -> CaState:
        s = self.settings
        name, namespace = s.identity_secret, s.namespace
        try:
            secret = await self.core.read_namespaced_secret(name, namespace)
        except ApiException as err:
            if err.status != 404:
                raise
            state = new_state(now, s.root_cert_ttl)
            body = client.V1Secret(
                metadata=client.V1ObjectMeta(name=name, labels={"app.kubernetes.io/part-of": "ottava"}),
                type="Opaque",
                data=state.as_secret_data(),
            )
            await self.core.create_namespaced_secret(namespace, body)  # 409: another replica was first
            log.info(
                "created the identity CA",
                extra={"secret": name, "root": state.issuer_cert.subject.rfc4514_string()},
            )
            return state
        try:
            current = CaState.from_secret_data(secret.data or {}, f"{namespace}/{name}")
        except CaError as err:
            # Never signed anything we can recover: start a new CA (sidecars renew within a TTL).
            state, changes = new_state(now, s.root_cert_ttl), [f"{err}: made a new CA"]
        else:
            state, changes = advance(current, now, s.root_cert_ttl, s.workload_cert_ttl)
        if changes:
            secret.data = state.as_secret_data()
            # Carries the resourceVersion read above: 409 if another replica replaced it since.
            await self.core.replace_namespaced_secret(name, namespace, secret)
            for change in changes:
                log.info("identity CA: %s", change, extra={"secret": name})
        return state
