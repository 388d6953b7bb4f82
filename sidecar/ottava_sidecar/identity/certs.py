"""Make and read the X.509 certificates of workload identity (ECDSA P-256, SHA-256).

Roots sign workload certificates directly (or an organisation's intermediate does, with
its chain sent along). A workload certificate has no subject, a critical SAN with the
SPIFFE ID and the app's DNS name (`spiffe.server_name`), and may be used both to serve
and to call: every sidecar is both.
"""

from __future__ import annotations

import datetime
import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ottava_sidecar.identity import issued
from ottava_sidecar.identity.spiffe import SpiffeId

# Certificates start a little in the past, so a peer whose clock is behind still accepts them.
CLOCK_SKEW = datetime.timedelta(minutes=1)


class CertificateError(ValueError):
    """A certificate, key or request that cannot be used; the message says why."""


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_key(pem: bytes) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as err:
        raise CertificateError(f"not a PEM private key: {err}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertificateError("the private key is not an ECDSA key")
    return key


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def load_certs(pem: bytes) -> list[x509.Certificate]:
    """Every certificate of a PEM bundle, in order; at least one."""
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError as err:
        raise CertificateError(f"not a PEM certificate bundle: {err}") from None
    if not certs:
        raise CertificateError("the PEM bundle holds no certificate")
    return certs


def bundle(certs: list[x509.Certificate]) -> bytes:
    return b"".join(cert_pem(c) for c in certs)


def new_root(
    common_name: str, lifetime: datetime.timedelta, *, at: datetime.datetime | None = None
) -> tuple[bytes, bytes]:
    """A self-signed root that may sign workload certificates (and nothing else): (cert PEM, key PEM)."""
    key = new_key()
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ottava"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    start = at or now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - CLOCK_SKEW)
        .not_valid_after(start + lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert_pem(cert), key_pem(key)


def new_request(key: ec.EllipticCurvePrivateKey, identity: SpiffeId) -> bytes:
    """A certificate signing request for `identity` (PEM); the signer decides what it grants."""
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(str(identity))]), critical=True)
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def request_public_key(csr_pem: bytes) -> ec.EllipticCurvePublicKey:
    """The key of a signing request whose signature checks out; nothing else of it is trusted."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError as err:
        raise CertificateError(f"not a PEM certificate signing request: {err}") from None
    if not csr.is_signature_valid:
        raise CertificateError("the signing request's signature does not match its key")
    key = csr.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise CertificateError("the signing request's key is not an ECDSA key")
    return key


def issue_workload(
    issuer_cert_pem: bytes,
    issuer_key_pem: bytes,
    public_key: ec.EllipticCurvePublicKey,
    identity: SpiffeId,
    ttl: datetime.timedelta,
    *,
    at: datetime.datetime | None = None,
) -> bytes:
    """A workload certificate for `identity` (PEM, the leaf alone), never outliving its issuer."""
    issuer = load_certs(issuer_cert_pem)[0]
    issuer_key = load_key(issuer_key_pem)
    start = at or now()
    end = min(start + ttl, issuer.not_valid_after_utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(issuer.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(max(start - CLOCK_SKEW, issuer.not_valid_before_utc))
        .not_valid_after(end)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(str(identity)), x509.DNSName(identity.server_name)]
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .add_extension(x509.KeyUsage(True, False, True, False, False, False, False, False, False), critical=True)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
        .sign(issuer_key, hashes.SHA256())
    )
    return cert_pem(cert)


def issue_server(
    issuer_cert_pem: bytes, issuer_key_pem: bytes, names: tuple[str, ...], ttl: datetime.timedelta
) -> tuple[bytes, bytes]:
    """A serving certificate for DNS names and IP addresses (the operator's endpoints): (cert PEM, key PEM)."""
    issuer = load_certs(issuer_cert_pem)[0]
    issuer_key = load_key(issuer_key_pem)
    key = new_key()
    start = now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(issuer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - CLOCK_SKEW)
        .not_valid_after(min(start + ttl, issuer.not_valid_after_utc))
        .add_extension(x509.SubjectAlternativeName([_general_name(n) for n in names]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(issuer_key, hashes.SHA256())
    )
    return cert_pem(cert), key_pem(key)


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


# What a peer needs to know of a workload certificate (`Leaf.read` reads it with `read_leaf`).
Leaf = issued.Leaf


def read_leaf(chain_pem: bytes) -> Leaf:
    """The facts of the first certificate of a chain; `CertificateError` if it is no workload certificate."""
    cert = load_certs(chain_pem)[0]
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise CertificateError("the certificate has no subject alternative name") from None
    uris = sans.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1:
        raise CertificateError(f"the certificate has {len(uris)} URI SANs; a workload certificate has one")
    return Leaf(SpiffeId.parse(uris[0]), cert.not_valid_before_utc, cert.not_valid_after_utc, cert.serial_number)
