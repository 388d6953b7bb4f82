"""The webhook's serving certificate: generated once, kept in a Secret, rotated before expiry.

Replicas share one CA and certificate through the Secret, so the `caBundle` of the
webhook configurations is right whichever replica the apiserver reaches. The CA lives
five years and the serving certificate one; the serving certificate is reissued (by the
same CA, so the `caBundle` stays valid) when less than a third of its life is left.

Every replica runs this (all of them serve the webhooks), with no leader: replicas that
start together race to create the Secret, and later each checks it on its own schedule.
That is safe because the Secret is the one source of truth and every write to it is
conditional: a create that finds the Secret exists (409) and a replace that finds it
changed since it was read (409, stale resourceVersion) both start over from a fresh
read, adopting what the other replica wrote. A replica then serves, and writes into the
`caBundle`, only what the Secret holds, so the patches from several replicas agree; in
the one unlucky order (a replica read the Secret just before another replaced the CA)
the next check, a minute later, puts the right CA back.
"""

import asyncio
import base64
import datetime
import logging
from dataclasses import dataclass

from cryptography import x509
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from ottava_sidecar.identity import certs

from ottava_operator.settings import OperatorSettings

log = logging.getLogger(__name__)

CA_LIFETIME = datetime.timedelta(days=5 * 365)
SERVING_LIFETIME = datetime.timedelta(days=365)
RENEW_WHEN_LEFT = 1 / 3
# How often each replica re-reads the Secret and the caBundles: how soon it serves a
# certificate another replica reissued, or repairs a caBundle someone reset.
CHECK_INTERVAL = 60.0
# Conflicting writes in a row before giving up until the next check.
CONFLICT_RETRIES = 5


@dataclass(frozen=True)
class TlsMaterial:
    ca_cert: bytes
    ca_key: bytes
    cert: bytes
    key: bytes

    def as_secret_data(self) -> dict[str, str]:
        return {
            name: base64.b64encode(value).decode()
            for name, value in (
                ("ca.crt", self.ca_cert),
                ("ca.key", self.ca_key),
                ("tls.crt", self.cert),
                ("tls.key", self.key),
            )
        }

    @classmethod
    def from_secret_data(cls, data: dict[str, str]) -> "TlsMaterial":
        decoded = {k: base64.b64decode(v) for k, v in data.items()}
        return cls(decoded["ca.crt"], decoded["ca.key"], decoded["tls.crt"], decoded["tls.key"])


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def new_ca(common_name: str = "ottava-webhook-ca") -> tuple[bytes, bytes]:
    return certs.new_root(common_name, CA_LIFETIME)


def issue_serving(ca_cert_pem: bytes, ca_key_pem: bytes, names: tuple[str, ...]) -> tuple[bytes, bytes]:
    return certs.issue_server(ca_cert_pem, ca_key_pem, names, SERVING_LIFETIME)


def needs_renewal(material: TlsMaterial, names: tuple[str, ...], now: datetime.datetime | None = None) -> str | None:
    """Why the serving certificate must be reissued, or None when it is still good."""
    now = now or _now()
    cert = x509.load_pem_x509_certificate(material.cert)
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    if cert.not_valid_after_utc - now < lifetime * RENEW_WHEN_LEFT:
        return f"serving certificate expires {cert.not_valid_after_utc:%Y-%m-%d}"
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return "serving certificate has no subject alternative names"
    present = {str(v) for v in sans.get_values_for_type(x509.DNSName)} | {
        str(v) for v in sans.get_values_for_type(x509.IPAddress)
    }
    missing = [n for n in names if n not in present]
    if missing:
        return f"serving certificate lacks {', '.join(missing)}"
    return None


def build(names: tuple[str, ...], ca: tuple[bytes, bytes] | None = None) -> TlsMaterial:
    ca_cert, ca_key = ca or new_ca()
    cert, key = issue_serving(ca_cert, ca_key, names)
    return TlsMaterial(ca_cert, ca_key, cert, key)


class CertificateManager:
    """Keeps the Secret, the files kopf's webhook server reads, and the caBundles in step."""

    def __init__(self, settings: OperatorSettings, api: client.ApiClient) -> None:
        self.settings = settings
        self.core = client.CoreV1Api(api)
        self.admission = client.AdmissionregistrationV1Api(api)
        self.cert_file = settings.cert_dir / "tls.crt"
        self.key_file = settings.cert_dir / "tls.key"

    async def ensure(self) -> TlsMaterial:
        material = await self._load_or_create()
        self._write_files(material)
        await self._patch_ca_bundles(material.ca_cert)
        return material

    async def run(self, interval: float = CHECK_INTERVAL) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.ensure()
            except Exception:
                log.exception("checking the webhook certificate failed; will retry")

    async def _load_or_create(self) -> TlsMaterial:
        for attempt in range(CONFLICT_RETRIES):
            try:
                return await self._load_or_create_once()
            except ApiException as err:
                if err.status != 409:
                    raise
                # Another replica wrote the Secret first: read it again and adopt its material.
                log.info(
                    "the webhook Secret was written by another replica; reading it again", extra={"attempt": attempt}
                )
        raise RuntimeError(f"the webhook Secret kept changing during {CONFLICT_RETRIES} attempts to read it")

    async def _load_or_create_once(self) -> TlsMaterial:
        s = self.settings
        names = s.certificate_names
        try:
            secret = await self.core.read_namespaced_secret(s.cert_secret, s.namespace)
        except ApiException as err:
            if err.status != 404:
                raise
            material = build(names)
            body = client.V1Secret(
                metadata=client.V1ObjectMeta(name=s.cert_secret, labels={"app.kubernetes.io/part-of": "ottava"}),
                type="Opaque",
                data=material.as_secret_data(),
            )
            await self.core.create_namespaced_secret(s.namespace, body)  # 409: another replica was first
            log.info("created the webhook certificate", extra={"secret": s.cert_secret, "names": list(names)})
            return material
        data = secret.data or {}
        if not {"ca.crt", "ca.key", "tls.crt", "tls.key"} <= set(data):
            material = build(names)
            reason: str | None = "the Secret is incomplete"
        else:
            material = TlsMaterial.from_secret_data(data)
            reason = needs_renewal(material, names)
            if reason is not None:
                material = build(names, (material.ca_cert, material.ca_key))
        if reason is not None:
            secret.data = material.as_secret_data()
            # Carries the resourceVersion read above: 409 if another replica replaced it since.
            await self.core.replace_namespaced_secret(s.cert_secret, s.namespace, secret)
            log.info("reissued the webhook certificate", extra={"reason": reason})
        return material

    def _write_files(self, material: TlsMaterial) -> None:
        self.settings.cert_dir.mkdir(parents=True, exist_ok=True)
        for path, content in ((self.cert_file, material.cert), (self.key_file, material.key)):
            if not path.exists() or path.read_bytes() != content:
                tmp = path.with_suffix(".tmp")
                tmp.write_bytes(content)
                tmp.chmod(0o600)
                tmp.replace(path)

    async def _patch_ca_bundles(self, ca_cert: bytes) -> None:
        bundle = base64.b64encode(ca_cert).decode()
        s = self.settings
        for read, patch, name in (
            (
                self.admission.read_mutating_webhook_configuration,
                self.admission.patch_mutating_webhook_configuration,
                s.mutating_webhook,
            ),
            (
                self.admission.read_validating_webhook_configuration,
                self.admission.patch_validating_webhook_configuration,
                s.validating_webhook,
            ),
        ):
            try:
                current = await read(name)
            except ApiException as err:
                if err.status == 404:
                    log.warning("webhook configuration %s not found; is the chart installed?", name)
                    continue
                raise
            webhooks = current.webhooks or []
            if all(w.client_config.ca_bundle == bundle for w in webhooks):
                continue
            # A JSON patch (a list body) touches only the caBundles, whatever the chart set.
            ops = [
                {"op": "add", "path": f"/webhooks/{i}/clientConfig/caBundle", "value": bundle}
                for i in range(len(webhooks))
            ]
            await patch(name, ops)
            log.info("patched caBundle", extra={"webhookConfiguration": name})
