"""How one operator process is configured (from `ottava operator` flags, set by the chart)."""

from dataclasses import dataclass, field
from pathlib import Path

from ottava_operator.injection import InjectorSettings


@dataclass(frozen=True)
class OperatorSettings:
    namespace: str  # where the operator runs; never injected into, holds the webhook Secret
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
    cert_dir: Path = Path("/tmp/ottava-webhook")
    liveness_port: int = 8080
    # The ClusterKopfPeering the replicas elect their leader in (see peering.py); empty:
    # no election, this process does everything (a single operator, e.g. in development).
    peering_name: str = "ottava"
    # Seconds a replica's keep-alive stays valid: the bound on a handover after a leader
    # dies without saying so (SIGKILL, node lost).
    peering_lifetime: int = 15
    # The sidecar's form: "auto" (native from Kubernetes 1.29, read from GET /version at
    # start), "true" (always native) or "false" (always a regular container).
    native_sidecar: str = "auto"
    # The image, resources and form of injected sidecars; `native_sidecar` above decides
    # the form at start, whatever this one says.
    injector: InjectorSettings = field(default_factory=InjectorSettings)

    @property
    def certificate_names(self) -> tuple[str, ...]:
        service = f"{self.service_name}.{self.namespace}.svc"
        return (service, f"{service}.cluster.local", *self.webhook_hosts)
