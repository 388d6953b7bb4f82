"""`ottava operator`: the operator's command, its flags and how they become settings.

`ottava_cli` puts this command beside the sidecar's `ottava run`. kopf and the
Kubernetes client are imported only when the operator runs, so that `ottava run` (and
`ottava --help`) do not pay for them.
"""

import argparse
import asyncio
import contextlib
import datetime
import os
from pathlib import Path

from ottava_sidecar import cli as sidecar_cli
from ottava_sidecar.resources.models import parse_duration

from ottava_operator.settings import NATIVE_SIDECAR_MODES, InjectorSettings, OperatorSettings


def _peering_lifetime(text: str) -> int:
    value = int(text)
    # kopf renews 5 to 10 s before the record expires; a shorter lifetime leaves no margin.
    if value < 12:
        raise argparse.ArgumentTypeError(f"{value} s is too short: keep-alives go out 5-10 s before expiry (min 12)")
    return value


def _duration(text: str) -> datetime.timedelta:
    try:
        value = parse_duration(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    if value <= datetime.timedelta(0):
        raise argparse.ArgumentTypeError(f"{text} is not a positive duration")
    return value


def format_duration(value: datetime.timedelta) -> str:
    """A duration as the chart writes it: whole hours when it is some ("24h", "8760h")."""
    seconds = int(value.total_seconds())
    return f"{seconds // 3600}h" if seconds % 3600 == 0 else f"{seconds}s"


def _on_off(text: str) -> bool:
    if text not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"{text!r} is not true or false")
    return text == "true"


def add_command(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add `operator` and its flags (the ones the Helm chart passes) to an `ottava` parser.

    Every default comes from `OperatorSettings` (the chart's values.yaml is tested
    against the same model), so no default is written twice.
    """
    env = os.environ.get
    defaults = OperatorSettings()
    injector = defaults.injector
    op = commands.add_parser(
        "operator",
        help="run the operator (admission webhooks, status, certificates, sidecar RBAC)",
        description="Run Ottava's operator. The Helm chart starts it with these flags.",
    )
    op.add_argument(
        "--namespace", default=env("POD_NAMESPACE", defaults.namespace), help="the operator's own namespace"
    )
    op.add_argument(
        "--webhook-address", default=defaults.webhook_address, help="address the admission webhook listens on"
    )
    op.add_argument("--webhook-port", type=sidecar_cli.port, default=defaults.webhook_port)
    op.add_argument(
        "--webhook-host",
        action="append",
        default=[],
        help="extra host or IP for the serving certificate (repeatable), e.g. 127.0.0.1 for an operator run out of cluster",
    )
    op.add_argument(
        "--service-name",
        default=defaults.service_name,
        help="the webhook Service (its DNS names go in the certificate)",
    )
    op.add_argument(
        "--cert-secret", default=defaults.cert_secret, help="Secret that holds the webhook CA and certificate"
    )
    op.add_argument(
        "--mutating-webhook",
        default=defaults.mutating_webhook,
        help="MutatingWebhookConfiguration to keep the caBundle of",
    )
    op.add_argument(
        "--validating-webhook",
        default=defaults.validating_webhook,
        help="ValidatingWebhookConfiguration to keep the caBundle of",
    )
    op.add_argument("--cert-dir", type=Path, default=defaults.cert_dir)
    op.add_argument("--liveness-port", type=sidecar_cli.port, default=defaults.liveness_port)
    op.add_argument(
        "--peering-name",
        default=defaults.peering_name,
        help="ClusterKopfPeering in which replicas elect the one that runs status and RBAC ('' for no election)",
    )
    op.add_argument(
        "--peering-lifetime",
        type=_peering_lifetime,
        default=defaults.peering_lifetime,
        help="seconds a replica's keep-alive stays valid: the longest a standby waits for a leader that died",
    )
    op.add_argument(
        "--native-sidecar",
        choices=NATIVE_SIDECAR_MODES,
        default=defaults.native_sidecar,
        help="inject the sidecar as a native sidecar (init container, restartPolicy: Always); "
        "auto: when the apiserver is 1.29 or later",
    )
    op.add_argument("--sidecar-image", default=None, help="default image of injected sidecars")
    op.add_argument("--sidecar-cpu-request", default=injector.cpu_request)
    op.add_argument("--sidecar-memory-request", default=injector.memory_request)
    op.add_argument("--sidecar-cpu-limit", default=injector.cpu_limit or "")
    op.add_argument("--sidecar-memory-limit", default=injector.memory_limit or "")
    _add_identity_flags(op, defaults)
    op.add_argument("--log-level", choices=("debug", "info", "warn", "error"), default="info")
    op.add_argument("--log-format", choices=("text", "json"), default="text")


def _add_identity_flags(op: argparse.ArgumentParser, defaults: OperatorSettings) -> None:
    op.add_argument(
        "--identity",
        type=_on_off,
        default=defaults.identity_enabled,
        metavar="true|false",
        help="workload identity: run the CA and the signer, and inject sidecars with mTLS (false: --disable-mtls)",
    )
    op.add_argument(
        "--identity-port",
        type=sidecar_cli.port,
        default=defaults.identity_port,
        help="port of the signer sidecars get their certificates from",
    )
    op.add_argument(
        "--identity-secret",
        default=defaults.identity_secret,
        help="Secret (in --namespace) the operator keeps its generated identity CA in",
    )
    op.add_argument(
        "--identity-ca-secret",
        default=defaults.identity_ca_secret,
        help="an organisation's CA to sign with instead (tls.crt, tls.key, ca.crt; re-read every minute, never written)",
    )
    op.add_argument(
        "--workload-cert-ttl",
        type=_duration,
        default=defaults.workload_cert_ttl,
        help=f"lifetime of sidecars' certificates (default {format_duration(defaults.workload_cert_ttl)})",
    )
    op.add_argument(
        "--root-cert-ttl",
        type=_duration,
        default=defaults.root_cert_ttl,
        help=f"lifetime of a generated root (default {format_duration(defaults.root_cert_ttl)}); "
        "a new one is introduced when a third is left",
    )
    op.add_argument(
        "--identity-url",
        default=defaults.identity_url,
        help="where sidecars reach the signer (default https://<webhook Service ClusterIP>:<identity port>)",
    )


def settings_from(args: argparse.Namespace) -> OperatorSettings:
    """The operator's settings from the flags of `ottava operator`."""
    defaults = InjectorSettings()
    return OperatorSettings(
        namespace=args.namespace,
        webhook_address=args.webhook_address,
        webhook_port=args.webhook_port,
        webhook_hosts=tuple(args.webhook_host),
        service_name=args.service_name,
        cert_secret=args.cert_secret,
        mutating_webhook=args.mutating_webhook,
        validating_webhook=args.validating_webhook,
        cert_dir=args.cert_dir,
        liveness_port=args.liveness_port,
        peering_name=args.peering_name,
        peering_lifetime=args.peering_lifetime,
        native_sidecar=args.native_sidecar,
        identity_enabled=args.identity,
        identity_port=args.identity_port,
        identity_secret=args.identity_secret,
        identity_ca_secret=args.identity_ca_secret,
        workload_cert_ttl=args.workload_cert_ttl,
        root_cert_ttl=args.root_cert_ttl,
        identity_url=args.identity_url,
        injector=InjectorSettings(
            image=args.sidecar_image or defaults.image,
            cpu_request=args.sidecar_cpu_request,
            memory_request=args.sidecar_memory_request,
            cpu_limit=args.sidecar_cpu_limit or None,
            memory_limit=args.sidecar_memory_limit or None,
        ),
    )


def run(args: argparse.Namespace) -> int:
    """Run the operator until it is stopped; the exit status."""
    # Imported here: `ottava run` must not pay for kopf and the Kubernetes client.
    from ottava_operator import main as operator_main

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(operator_main.run(settings_from(args)))
    return 0
