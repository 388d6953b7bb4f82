"""`ottava run`: the sidecar's command.

`ottava run [options] [-- COMMAND ...]` starts a standalone sidecar; with a command, it
also starts the app with the sidecar's ports in its environment, forwards signals to
it, and exits with its status (as `dapr run` does).

The `ottava` program itself (with `ottava operator` beside `run`) is `ottava_cli`, which
sits above both packages: the operator imports the sidecar, never the other way round,
so nothing here may import `ottava_operator`. `python -m ottava_sidecar` runs `main`
below, the sidecar's command alone.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ottava_sidecar import __version__, contract, limits, logs

# What only some runs need is imported where it is used (the manifests' YAML, invocation
# filters, the kube client): a sidecar's start-up pays only for what it runs. asyncio too,
# so that the local CA's child process (`_prepare_local_issuer`) starts as early as it can.
if TYPE_CHECKING:
    import asyncio

    from ottava_sidecar.identity.local_issuer import LocalIssuer
    from ottava_sidecar.invocation.filters import InvocationFilter
    from ottava_sidecar.resources.models import Component, Configuration, DeclarativeSubscription, TrafficRoute
    from ottava_sidecar.resources.resiliency import Resiliency
    from ottava_sidecar.runtime.sidecar import BoundPorts, Options, Sidecar

log = logging.getLogger("ottava")


def port(text: str) -> int:
    """An argparse type: a TCP port number (0 picks a free port)."""
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port number (0-65535; 0 picks a free port)")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The `ottava` parser with the sidecar's command only (`python -m ottava_sidecar`)."""
    parser = argparse.ArgumentParser(prog="ottava", description="Ottava: a multi-runtime sidecar.")
    parser.add_argument("--version", action="version", version=f"ottava {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    add_command(commands)
    return parser


def add_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `run` and its flags to the subcommands of an `ottava` parser."""
    sidecar = commands.add_parser(
        "run",
        help="start a standalone sidecar (and optionally the app after --)",
        description="Start a standalone sidecar. Anything after -- is the app's command line.",
    )
    env = os.environ.get
    sidecar.add_argument(
        "--mode",
        choices=("standalone", "kubernetes"),
        default="standalone",
        help="where the wiring comes from: --resources-path (standalone) or the cluster's CRDs (kubernetes)",
    )
    sidecar.add_argument(
        "--app-id",
        default=env(contract.ENV_APP_ID) or env("APP_ID", "ottava"),
        help="the app's id (default: $OTTAVA_APP_ID, then ottava)",
    )
    sidecar.add_argument(
        "--config",
        metavar="FILE|NAME",
        help="the Configuration to apply (API rules, secret scopes, access control, tracing, ...): standalone, "
        "a manifest FILE, as `dapr run --config`; kubernetes mode, the NAME of one in the pod's namespace "
        "(default: $OTTAVA_CONFIG)",
    )
    sidecar.add_argument(
        "--namespace",
        default=env(contract.ENV_NAMESPACE) or None,
        help="kubernetes mode: the pod's namespace (default: $NAMESPACE, then the credentials')",
    )
    sidecar.add_argument(
        "--resources-path",
        type=Path,
        help="folder of Component/Configuration manifests; without it, in-memory defaults are loaded",
    )
    sidecar.add_argument(
        "--app-port",
        type=port,
        default=env(contract.ENV_APP_PORT) or None,  # argparse converts a string default with `type`
        help="port the app listens on, for callbacks (default: $OTTAVA_APP_PORT)",
    )
    sidecar.add_argument("--app-protocol", choices=("http", "grpc"), default=env(contract.ENV_APP_PROTOCOL) or "http")
    sidecar.add_argument(
        "--app-version",
        type=_app_version,
        default=env(contract.ENV_APP_VERSION) or "",
        help="the version of the app this sidecar serves, which callers' TrafficRoutes pick by (docs/routing.md; "
        "default: $OTTAVA_APP_VERSION)",
    )
    sidecar.add_argument("--grpc-port", type=port, default=contract.GRPC_PORT)
    sidecar.add_argument("--http-port", type=port, default=contract.HTTP_PORT)
    sidecar.add_argument("--metrics-port", type=port, default=contract.METRICS_PORT)
    sidecar.add_argument("--disable-metrics", action="store_true", help="do not serve Prometheus metrics")
    sidecar.add_argument(
        "--listen-address",
        default="127.0.0.1",
        help="address the APIs listen on (default loopback: other pods must not reach this app's sidecar)",
    )
    sidecar.add_argument(
        "--http-listen-address",
        help="address of the HTTP port (default: --listen-address; in kubernetes mode 0.0.0.0 so kubelet can "
        "probe it, with the app-facing routes still answering loopback callers only)",
    )
    sidecar.add_argument(
        "--metrics-listen-address", help="address of the metrics port (default: --listen-address; kubernetes: 0.0.0.0)"
    )
    sidecar.add_argument("--log-level", choices=("debug", "info", "warn", "error"), default="info")
    sidecar.add_argument("--log-format", choices=("text", "json"), default="text")
    sidecar.add_argument("--shutdown-grace", type=float, default=5.0, help="seconds to drain in-flight calls on stop")
    sidecar.add_argument(
        "--internal-grpc-port",
        type=port,
        help=f"sidecar-to-sidecar port for service invocation (default: a free port, so several sidecars run "
        f"side by side; kubernetes mode: {contract.INTERNAL_GRPC_PORT})",
    )
    sidecar.add_argument(
        "--internal-listen-address", help="address the internal port listens on (default: --listen-address)"
    )
    sidecar.add_argument(
        "--app-timeout",
        type=float,
        default=60.0,
        help="seconds to wait for the app to answer a pub/sub delivery or a service invocation",
    )
    sidecar.add_argument(
        "--invocation-filter",
        action="append",
        default=[],
        metavar="MODULE:CLASS",
        help="a filter around outbound service invocations (repeatable; see docs/invocation.md)",
    )
    _add_identity_flags(sidecar)
    _add_limit_flags(sidecar)


def _add_identity_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("mTLS", "workload identity on the internal port (docs/security.md)")
    group.add_argument(
        "--disable-mtls",
        action="store_true",
        help="serve the internal port in plaintext and call other sidecars so: any process that reaches the "
        "port can then call the app under any caller id",
    )
    group.add_argument(
        "--workload-cert-ttl",
        type=_duration,
        default=24 * 3600.0,
        metavar="DURATION",
        help="standalone: lifetime of the certificates of the local CA, renewed at half of it (default 24h)",
    )


def _app_version(text: str) -> str:
    import re

    from ottava_sidecar.resources.models import VERSION_PATTERN

    if text and not re.match(VERSION_PATTERN, text):  # empty: none declared
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a version: at most 63 letters, digits, '-', '_' or '.', starting and ending with a "
            "letter or digit (a Kubernetes label value)"
        )
    return text


def _duration(text: str) -> float:
    from ottava_sidecar.resources.models import parse_duration

    try:
        seconds = parse_duration(text).total_seconds()
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    if seconds < 10:
        raise argparse.ArgumentTypeError(f"{text!r} is too short: at least 10s")
    return seconds


def _add_limit_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("limits", "what one client may cost the sidecar (docs/limits.md)")
    for setting in limits.SETTINGS:
        group.add_argument(
            setting.flag,
            dest=f"limit_{setting.field}",
            type=_checked(setting),
            metavar=setting.kind.upper(),
            help=f"{setting.help} (default {setting.default_text()})",
        )


def _checked(setting: limits.Setting) -> Callable[[str], str]:
    def check(text: str) -> str:
        try:
            setting.parse(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
        return text

    return check


def _limits(args: argparse.Namespace) -> limits.Limits:
    given = {s.field: value for s in limits.SETTINGS if (value := getattr(args, f"limit_{s.field}")) is not None}
    return limits.Limits().with_values(given)


def split_app_command(argv: Sequence[str] | None = None) -> tuple[list[str], list[str]]:
    """`ottava`'s own arguments, and the app's command line after `--` (empty without one)."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if "--" not in arguments:
        return arguments, []
    split = arguments.index("--")
    return arguments[:split], arguments[split + 1 :]


def main(argv: Sequence[str] | None = None) -> int:
    arguments, command = split_app_command(argv)
    args = build_parser().parse_args(arguments)
    logs.configure(args.log_level, args.log_format)
    return run(args, command)


def run(args: argparse.Namespace, command: list[str]) -> int:
    """Run the sidecar as `ottava run` was told (and the app in `command`, if any); the exit status."""
    issuer = _prepare_local_issuer(args)
    from ottava_sidecar.runtime import memory  # after the child is started: it imports asyncio

    memory.hold_collections()  # until start-up is over (`Sidecar.serve` settles)
    try:
        return _run(args, command, issuer)
    finally:
        if issuer is not None:
            issuer.close()  # a child that was never asked (start-up stopped early) ends here


def _prepare_local_issuer(args: argparse.Namespace) -> LocalIssuer | None:
    """Standalone with mTLS: start the local CA's child process first thing (identity/local_issuer.py).

    It makes the workload key and loads the CA on the other core while this process
    loads the rest, so the certificate is there when the sidecar asks for it.
    """
    if args.mode == "kubernetes" or args.disable_mtls:
        return None
    import datetime

    from ottava_sidecar.identity.local_issuer import LocalIssuer

    issuer = LocalIssuer(None, datetime.timedelta(seconds=args.workload_cert_ttl))
    issuer.prepare()
    return issuer


def _run(args: argparse.Namespace, command: list[str], issuer: LocalIssuer | None) -> int:
    from ottava_sidecar.runtime.sidecar import Options

    kubernetes = args.mode == "kubernetes"
    if kubernetes and args.resources_path is not None:
        print(
            "ottava: --resources-path is for standalone mode; in kubernetes mode the wiring comes from the cluster",
            file=sys.stderr,
        )
        return 2
    subscriptions: list[DeclarativeSubscription] = []
    traffic_routes: list[TrafficRoute] = []
    resiliencies: list[Resiliency] = []
    if kubernetes:
        components: list[Component] = []
    elif args.resources_path is not None:
        from ottava_sidecar.components import catalogue
        from ottava_sidecar.resources.manifests import ManifestError, load_folder

        try:
            manifests = load_folder(args.resources_path, check=catalogue.manifest_problems)
        except ManifestError as err:
            print(f"ottava: invalid manifest: {err}", file=sys.stderr)
            return 2
        components = [component for _, component in manifests.components]
        subscriptions = [subscription for _, subscription in manifests.subscriptions]
        traffic_routes = [route for _, route in manifests.traffic_routes]
        resiliencies = [resiliency for _, resiliency in manifests.resiliencies]
        problem = _subscription_problem(subscriptions)
        if problem:
            print(f"ottava: invalid manifest: {problem}", file=sys.stderr)
            return 2
    else:
        from ottava_sidecar.runtime.defaults import default_components

        components = default_components()
    configuration: Configuration | None = None
    if not kubernetes and args.config is not None:
        from ottava_sidecar.resources.manifests import ManifestError, load_configuration_file

        try:
            configuration = load_configuration_file(Path(args.config))
        except ManifestError as err:
            print(f"ottava: invalid --config: {err}", file=sys.stderr)
            return 2
    try:
        invocation_filters = _invocation_filters(args.invocation_filter)
    except ValueError as err:
        print(f"ottava: {err}", file=sys.stderr)
        return 2
    options = Options(
        app_id=args.app_id,
        resources_path=args.resources_path,
        app_port=args.app_port,
        app_protocol=args.app_protocol,
        listen_address=args.listen_address,
        grpc_port=args.grpc_port,
        http_port=args.http_port,
        metrics_port=args.metrics_port,
        enable_metrics=not args.disable_metrics,
        api_token=os.environ.get(contract.ENV_API_TOKEN) or None,
        app_api_token=os.environ.get(contract.ENV_APP_API_TOKEN) or None,
        shutdown_grace_seconds=args.shutdown_grace,
        internal_grpc_port=_internal_port(args.internal_grpc_port, kubernetes=kubernetes),
        app_timeout_seconds=args.app_timeout,
        invocation_filters=invocation_filters,
        mode=args.mode,
        namespace=args.namespace or (_credentials_namespace() if kubernetes else None),
        configuration_name=(args.config or os.environ.get(contract.ENV_CONFIG) or None) if kubernetes else None,
        configuration=configuration,
        subscriptions=subscriptions,
        traffic_routes=traffic_routes,
        app_version=args.app_version,
        resiliencies=resiliencies,
        http_listen_address=args.http_listen_address or ("0.0.0.0" if kubernetes else None),
        metrics_listen_address=args.metrics_listen_address or ("0.0.0.0" if kubernetes else None),
        internal_listen_address=args.internal_listen_address or ("0.0.0.0" if kubernetes else None),
        limits=_limits(args),
        mtls=not args.disable_mtls,
        workload_cert_ttl_seconds=args.workload_cert_ttl,
        identity_endpoint=os.environ.get(contract.ENV_IDENTITY_ENDPOINT, ""),
        identity_server_name=os.environ.get(contract.ENV_IDENTITY_SERVER_NAME, ""),
        trust_anchors=os.environ.get(contract.ENV_TRUST_ANCHORS, "").encode(),
        local_issuer=issuer,
    )
    import asyncio

    try:
        return asyncio.run(_serve(options, components, command))
    except OSError as err:
        print(f"ottava: {err}", file=sys.stderr)
        return 1


def _subscription_problem(subscriptions: list[DeclarativeSubscription]) -> str:
    """What is wrong with the folder's Subscriptions beyond their schema: a routing rule outside the CEL subset."""
    if not subscriptions:
        return ""
    from ottava_sidecar.messaging.routing import RuleError
    from ottava_sidecar.messaging.subscriptions import SubscriptionSpec

    for subscription in subscriptions:
        try:
            SubscriptionSpec.declared(subscription)
        except RuleError as err:
            return str(err)
    return ""


async def _serve(options: Options, components: list[Component], command: list[str]) -> int:
    import asyncio

    from ottava_sidecar.runtime.sidecar import Sidecar

    stop = asyncio.Event()
    try:
        sidecar = Sidecar(options, components, on_shutdown_request=stop.set)
    except ValueError as err:  # e.g. mTLS in a pod without what the injector sets
        print(f"ottava: {err}", file=sys.stderr)
        return 2
    loop = asyncio.get_running_loop()
    received: list[signal.Signals] = []

    def on_signal(sig: signal.Signals) -> None:
        received.append(sig)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)

    if not await _start(sidecar, stop):
        await sidecar.stop()
        return 0

    app: asyncio.subprocess.Process | None = None
    if command:
        env = {**os.environ, **_app_environment(options, sidecar.ports)}
        try:
            app = await asyncio.create_subprocess_exec(*command, env=env)
        except OSError as err:
            print(f"ottava: cannot start the app {command[0]!r}: {err.strerror}", file=sys.stderr)
            await sidecar.stop()
            return 127
        log.info("app started", extra={"pid": app.pid, "command": " ".join(command)})

    exit_code = 0
    if app is None:
        await stop.wait()
    else:
        app_exit = asyncio.create_task(app.wait())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({app_exit, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not app_exit.done():
            # Forward the signal we got (SIGTERM for the shutdown API) and wait for the app,
            # as long as the grace allows: an app that ignores the signal is killed.
            with contextlib.suppress(ProcessLookupError):
                app.send_signal(received[-1] if received else signal.SIGTERM)
            done, _ = await asyncio.wait({app_exit}, timeout=options.shutdown_grace_seconds)
            if not done:
                log.warning("the app did not exit within the shutdown grace; killing it", extra={"pid": app.pid})
                with contextlib.suppress(ProcessLookupError):
                    app.kill()
                await app_exit
        stopping.cancel()
        exit_code = _exit_status(app_exit.result())
        log.info("app exited", extra={"status": exit_code})

    log.info("shutting down: draining in-flight calls", extra={"grace_seconds": options.shutdown_grace_seconds})
    await sidecar.stop()
    log.info("stopped")
    return exit_code


def _invocation_filters(references: list[str]) -> list[InvocationFilter]:
    if not references:
        return []
    from ottava_sidecar.invocation import filters

    return [filters.load(reference) for reference in references]


async def _start(sidecar: Sidecar, stop: asyncio.Event) -> bool:
    """Start the sidecar and print the ready line; False when a stop came first."""
    import asyncio

    try:
        await sidecar.open()
        if sidecar.loaded():
            # Standalone: every port is bound and the components are loaded, so what the line
            # says holds; a call that arrives while `serve` loads the APIs waits for them.
            print(sidecar.status_line(), flush=True)
        await sidecar.serve()
    except BaseException:
        await sidecar.stop()
        raise
    if sidecar.loaded():
        return True
    # In a cluster the wiring arrives when the apiserver answers; a stop may come first.
    loaded = asyncio.create_task(sidecar.wait_loaded())
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({loaded, stopping}, return_when=asyncio.FIRST_COMPLETED)
    loaded.cancel()
    stopping.cancel()
    if stop.is_set():
        return False
    print(sidecar.status_line(), flush=True)
    return True


def _internal_port(given: int | None, *, kubernetes: bool) -> int:
    """In a pod, the fixed port the per-app Service names; on a laptop a free one, as `dapr run` picks."""
    if given is not None:
        return given
    return contract.INTERNAL_GRPC_PORT if kubernetes else 0


def _app_environment(options: Options, ports: BoundPorts) -> dict[str, str]:
    """Where the app's Dapr SDK finds this sidecar.

    The SDKs prefer DAPR_GRPC_ENDPOINT and DAPR_HTTP_ENDPOINT over the ports when set, so
    both are set: an endpoint left in the user's shell would point the app elsewhere.
    """
    grpc_host = _reachable(options.listen_address)
    http_host = _reachable(options.http_listen_address or options.listen_address)
    environment = {
        contract.ENV_DAPR_GRPC_PORT: str(ports.grpc),
        contract.ENV_DAPR_HTTP_PORT: str(ports.http),
        contract.ENV_DAPR_GRPC_ENDPOINT: f"{grpc_host}:{ports.grpc}",
        contract.ENV_DAPR_HTTP_ENDPOINT: f"http://{http_host}:{ports.http}",
        contract.ENV_OTTAVA_GRPC_PORT: str(ports.grpc),
        "APP_ID": options.app_id,
    }
    if options.app_port is not None:
        environment["APP_PORT"] = str(options.app_port)
    return environment


def _reachable(address: str) -> str:
    """An address the app can dial for a listen address (a wildcard means loopback will do)."""
    if address in ("0.0.0.0", ""):
        return "127.0.0.1"
    if address == "::":
        return "[::1]"
    return f"[{address}]" if ":" in address else address


def _credentials_namespace() -> str | None:
    from ottava_sidecar.kube import client as kube_client

    try:
        return kube_client.from_environment().namespace
    except (kube_client.KubeError, OSError, KeyError, StopIteration):
        return None


def _exit_status(returncode: int) -> int:
    # A child killed by a signal reports -N; shells report 128+N.
    return 128 - returncode if returncode < 0 else returncode
