"""How one operator process is configured, and every default it has.

The one place the operator's defaults are written: `ottava operator`'s flags take their
defaults from these models (`ottava_operator.cli`), the injector reads
`InjectorSettings`, and a test holds the Helm chart's `values.yaml` to the same values
(`tests/test_operator_defaults.py`).
"""

import datetime
import os
from dataclasses import dataclass, field
from pathlib import Path

from ottava_sidecar import __version__, contract

# `--native-sidecar`: "auto" (native from Kubernetes 1.29, read from GET /version at
# start), "true" (always native) or "false" (always a regular container).
NATIVE_SIDECAR_MODES = ("auto", "true", "false")


@dataclass(frozen=True)
class InjectorSettings:
    """Chart-wide defaults of injected sidecars; annotations on a pod override them."""

    image: str = f"ottava/ottava:{__version__}"
    image_pull_policy: str = "IfNotPresent"
    cpu_request: str = "100m"
    memory_request: str = "128Mi"
    cpu_limit: str | None = None
    memory_limit: str | None = "512Mi"
    log_level: str = "info"
    # The sidecar as a native sidecar (an init container with restartPolicy: Always),
    # or as a regular container (clusters before 1.29).
    native_sidecar: bool = False


def _default_cert_dir() -> Path:
    # Outside a pod the operator writes its serving certificate under the user's TMPDIR;
    # the chart passes a memory-backed volume instead.
    return Path(os.environ.get("TMPDIR", "/tmp")) / "ottava-webhook"


@dataclass(frozen=True)
class OperatorSettings:
    namespace: str = "ottava-system"  # where the operator runs; never injected into, holds the webhook Secret
    release: str = "ottava"  # prefix of the chart's object names
    webhook_address: str = "0.0.0.0"
    webhook_port: int = 9443
    # Names the serving certificate must carry: the webhook Service's DNS names, and any
    # host or IP an out-of-cluster operator is reached at (the chart's `webhook.url`).
    webhook_hosts: tuple[str, ...] = ()
    service_name: str = "ottava-webhook"
    cert_secret: str = "ottava-webhook-tls"
    mutating_webhook: str = "ottava-sidecar-injector"
    validating_webhook: str = "ottava-validator"
    cert_dir: Path = field(default_factory=_default_cert_dir)
    liveness_port: int = 8080
    # The ClusterKopfPeering the replicas elect their leader in (see peering.py); empty:
    # no election, this process does everything (a single operator, e.g. in development).
    peering_name: str = "ottava"
    # Seconds a replica's keep-alive stays valid: the bound on a handover after a leader
    # dies without saying so (SIGKILL, node lost).
    peering_lifetime: int = 15
    # The sidecar's form, one of NATIVE_SIDECAR_MODES.
    native_sidecar: str = "auto"
    # The image, resources and form of injected sidecars; `native_sidecar` above decides
    # the form at start, whatever this one says.
    injector: InjectorSettings = field(default_factory=InjectorSettings)
    # Workload identity (identity_ca.py, signer.py): sidecars get certificates from the
    # signer on `identity_port` (of the webhook Service) and talk mTLS. Off: sidecars
    # are injected with --disable-mtls.
    identity_enabled: bool = True
    identity_port: int = contract.IDENTITY_PORT
    # The Secret the operator keeps its generated CA in.
    identity_secret: str = "ottava-identity-ca"
    # An organisation's CA instead (tls.crt, tls.key, ca.crt), never written: the chart's
    # identity.ca.existingSecret. Empty: the operator makes and rotates its own.
    identity_ca_secret: str = ""
    workload_cert_ttl: datetime.timedelta = datetime.timedelta(hours=24)
    root_cert_ttl: datetime.timedelta = datetime.timedelta(days=365)
    # Where sidecars reach the signer; empty: https://<ClusterIP of the webhook Service>:<identity_port>.
    identity_url: str = ""

    @property
    def certificate_names(self) -> tuple[str, ...]:
        return (*self.service_names, *self.webhook_hosts)

    @property
    def service_names(self) -> tuple[str, ...]:
        """The webhook Service's DNS names (the signer's certificate carries these)."""
        service = f"{self.service_name}.{self.namespace}.svc"
        return (service, f"{service}.cluster.local")
