"""The operator process: kopf handlers for admission, status and RBAC, plus certificates.

Admission runs on kopf's webhook server with the certificate from our Secret; the
webhook configurations themselves come from the Helm chart (with the CEL
`matchConditions`, `failurePolicy: Ignore` and namespace exclusions that kopf's
self-managed configurations do not offer), and the operator only keeps their `caBundle`
in step.

Replicas: every replica serves admission; one leads the watch-driven work (status, RBAC),
elected with kopf's peering (`peering.py`).

Workload identity: every replica also keeps the identity CA current (`identity_ca.py`)
and serves the signer (`signer.py`); the injector hands new pods the CA's trust bundle
of the moment, and the signer's address.
"""

import asyncio
import contextlib
import copy
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, cast

import kopf
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from ottava_sidecar import contract

from ottava_operator import (
    connection,
    functions,
    injection,
    peering,
    services,
    sidecar_form,
    status,
    validation,
    versions,
)
from ottava_operator.certificates import CertificateManager
from ottava_operator.events import EventPoster
from ottava_operator.identity_ca import CaState, IdentityCa
from ottava_operator.rbac import SidecarRbac
from ottava_operator.settings import InjectorSettings, OperatorSettings
from ottava_operator.signer import Signer

log = logging.getLogger(__name__)

GROUP, VERSION = contract.API_GROUP, contract.API_VERSION
NEVER_INJECTED = ("kube-system",)


class Clients:
    """API clients made on the operator's event loop at start-up."""

    api: client.ApiClient
    rbac: SidecarRbac
    events: EventPoster
    certificates: CertificateManager
    app_services: services.AppServices
    functions: functions.FunctionServices
    versions: versions.AppVersions
    injector: InjectorSettings  # the chart's defaults, in the form decided at start
    # What injected sidecars are told of workload identity (the CA's current bundle); None: off.
    identity: injection.IdentitySigner | None = None
    signer: Signer | None = None
    role: peering.Role | None = None


class Background:
    """Tasks the operator runs beside kopf's handlers (certificate rotation, the leader
    role, Events), kept referenced while they run and cancelled at cleanup."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def cancel(self) -> None:
        for task in list(self._tasks):
            task.cancel()


def build_registry(ours: OperatorSettings, identity: str = "") -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    clients = Clients()
    background = Background()
    _register_lifecycle(registry, ours, identity, clients, background)
    _register_admission(registry, ours, clients, background)
    _register_resiliency_admission(registry)
    _register_status(registry, ours, clients)
    _register_app_services(registry, clients)
    _register_traffic_routes(registry)
    return registry


def _configure_kopf(settings: kopf.OperatorSettings, ours: OperatorSettings) -> None:
    """Where kopf keeps its state, how it retries the apiserver, and its webhook server."""
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="operator.ottava.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="operator.ottava.io", key="last-handled-configuration"
    )
    settings.admission.managed = None
    settings.networking.error_backoffs = connection.API_RETRY_BACKOFFS
    settings.admission.server = kopf.WebhookServer(
        addr=ours.webhook_address,
        port=ours.webhook_port,
        certfile=str(ours.cert_dir / "tls.crt"),
        pkeyfile=str(ours.cert_dir / "tls.key"),
        file_check_interval=30,
    )
    # Server-side selectors: only injected pods and our own Services are watched.
    settings.watching.label_selectors["v1", "pods"] = services.INJECTED_PODS
    settings.watching.label_selectors["v1", "services"] = services.OUR_SERVICES
    settings.watching.label_selectors["discovery.k8s.io", "endpointslices"] = services.OUR_SERVICES


async def _join_election(
    settings: kopf.OperatorSettings, ours: OperatorSettings, identity: str, clients: Clients, background: Background
) -> None:
    settings.peering.lifetime = ours.peering_lifetime
    settings.peering.stealth = True
    await peering.ensure_peering_object(clients.api, ours.peering_name)
    clients.role = peering.Role(clients.api, ours.peering_name, identity)
    background.spawn(clients.role.run())


def _register_lifecycle(
    registry: kopf.OperatorRegistry, ours: OperatorSettings, identity: str, clients: Clients, background: Background
) -> None:
    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # An explicit kubeconfig wins (operator run out of cluster); in a pod, the token.
        return connection.kopf_login(**kwargs)

    @kopf.on.startup(registry=registry)
    async def start(settings: kopf.OperatorSettings, **_: Any) -> None:
        _configure_kopf(settings, ours)
        clients.api = await connection.api_client()
        clients.rbac = SidecarRbac(clients.api)
        clients.events = EventPoster(clients.api)
        clients.app_services = services.AppServices(clients.api, clients.rbac, clients.events)
        clients.functions = functions.FunctionServices(clients.api, clients.events)
        clients.versions = versions.AppVersions(clients.api)
        clients.certificates = CertificateManager(ours, clients.api)
        await clients.certificates.ensure()
        background.spawn(clients.certificates.run())
        native = await sidecar_form.decide(ours.native_sidecar, clients.api)
        clients.injector = dataclasses.replace(ours.injector, native_sidecar=native)
        if ours.identity_enabled:
            await _start_identity(ours, clients, background)
        if ours.peering_name:
            await _join_election(settings, ours, identity, clients, background)
        log.info(
            "operator started",
            extra={"namespace": ours.namespace, "webhookPort": ours.webhook_port, "peer": identity},
        )

    @kopf.on.cleanup(registry=registry)
    async def stop(**_: Any) -> None:
        background.cancel()
        if clients.signer is not None:
            with contextlib.suppress(Exception):
                await clients.signer.stop()
        with contextlib.suppress(Exception):
            await clients.api.close()


async def _start_identity(ours: OperatorSettings, clients: Clients, background: Background) -> None:
    """The identity CA (read or made), the signer serving, and the injector told where it is."""
    endpoint = await identity_endpoint(ours, clients.api)
    server_name = ours.service_names[0]
    ca = IdentityCa(ours, clients.api)
    signer = Signer(ours, clients.api, ca)

    def checked(state: CaState) -> None:
        signer.ca_checked(state)
        clients.identity = injection.IdentitySigner(endpoint, server_name, state.trust_bundle.decode())

    ca.after_check(checked)
    await ca.ensure()
    await signer.start()
    clients.signer = signer
    background.spawn(ca.run())
    log.info(
        "workload identity: the signer serves",
        extra={"endpoint": endpoint, "serverName": server_name, "caSecret": ca.secret_name},
    )


async def identity_endpoint(ours: OperatorSettings, api: client.ApiClient) -> str:
    """`https://<ClusterIP of the webhook Service>:<identity port>`, unless set (pods here may have no DNS)."""
    if ours.identity_url:
        return ours.identity_url
    try:
        service = await client.CoreV1Api(api).read_namespaced_service(ours.service_name, ours.namespace)
        address = str(service.spec.cluster_ip or "")
    except ApiException as err:
        log.warning(
            "cannot read the webhook Service for the signer's address; sidecars get its DNS name",
            extra={"service": ours.service_name, "status": err.status},
        )
        address = ""
    if not address or address == "None":
        return f"https://{ours.service_names[0]}:{ours.identity_port}"
    host = f"[{address}]" if ":" in address else address
    return f"https://{host}:{ours.identity_port}"


def _register_admission(
    registry: kopf.OperatorRegistry, ours: OperatorSettings, clients: Clients, background: Background
) -> None:
    @kopf.on.validate(GROUP, VERSION, "components", id="validate-component", registry=registry)
    async def validate_component(body: kopf.Body, **_: Any) -> None:
        problems = validation.component_problems(dict(body))
        if problems:
            raise kopf.AdmissionError(f"Component {body.metadata.name!r} is invalid: " + "; ".join(problems), code=422)

    @kopf.on.validate(GROUP, VERSION, "configurations", id="validate-configuration", registry=registry)
    async def validate_configuration(body: kopf.Body, **_: Any) -> None:
        problems = validation.configuration_problems(dict(body))
        if problems:
            raise kopf.AdmissionError(
                f"Configuration {body.metadata.name!r} is invalid: " + "; ".join(problems), code=422
            )

    @kopf.on.validate(GROUP, VERSION, "subscriptions", id="validate-subscription", registry=registry)
    async def validate_subscription(body: kopf.Body, **_: Any) -> None:
        problems = validation.subscription_problems(dict(body))
        if problems:
            raise kopf.AdmissionError(
                f"Subscription {body.metadata.name!r} is invalid: " + "; ".join(problems), code=422
            )

    @kopf.on.mutate("", "v1", "pods", operations=["CREATE"], id="inject-sidecar", registry=registry)
    async def inject_sidecar(body: kopf.Body, patch: kopf.Patch, warnings: list[str], dryrun: bool, **_: Any) -> None:
        pod = copy.deepcopy(dict(body))
        namespace = pod.get("metadata", {}).get("namespace") or ""
        owners: list[dict[str, Any]] = pod.get("metadata", {}).get("ownerReferences") or []
        owner = str(owners[0].get("name", "")) if owners else ""
        log.info("injector called", extra={"namespace": namespace, "owner": owner, "dryRun": dryrun})
        if namespace in (*NEVER_INJECTED, ours.namespace):
            return
        if ours.identity_enabled and clients.identity is None:
            raise kopf.AdmissionError("the identity CA is not ready: the sidecar could not get a certificate", code=503)
        result = injection.inject(pod, clients.injector, clients.identity if ours.identity_enabled else None)
        warnings.extend(result.warnings)
        if result.warnings and not dryrun:
            background.spawn(clients.events.warn(namespace, pod, "BadOttavaAnnotation", "; ".join(result.warnings)))
        if result.pod is not None:
            _replace_pod(patch, result.pod)
            log.info("injected the sidecar", extra={"namespace": namespace, "appId": result.app_id})


def _replace_pod(patch: kopf.Patch, injected: dict[str, Any]) -> None:
    """Make kopf's patch turn the admitted pod into `injected`."""

    def replace(target: kopf.RawBody) -> None:
        raw = cast(dict[str, Any], target)
        raw.clear()
        raw.update(copy.deepcopy(injected))

    patch.fns.append(replace)


def _register_resiliency_admission(registry: kopf.OperatorRegistry) -> None:
    """Refuse a Resiliency whose trip is not CEL or whose targets name undefined policies (docs/resiliency.md)."""

    @kopf.on.validate(GROUP, VERSION, "resiliencies", id="validate-resiliency", registry=registry)
    async def validate_resiliency(body: kopf.Body, **_: Any) -> None:
        problems = validation.resiliency_problems(dict(body))
        if problems:
            raise kopf.AdmissionError(f"Resiliency {body.metadata.name!r} is invalid: " + "; ".join(problems), code=422)


def _register_status(registry: kopf.OperatorRegistry, ours: OperatorSettings, clients: Clients) -> None:
    async def write_status(body: kopf.Body, patch: kopf.Patch, problems: list[str]) -> None:
        previous = (body.get("status") or {}).get("conditions")
        generation = body.metadata.get("generation")
        patch.status["conditions"] = [status.ready_condition(problems, generation, previous)]
        patch.status["observedGeneration"] = generation

    # Each kind's Ready condition follows its spec: at start (resume), when created, when edited.
    # The handler ids are the names these handlers had, which kopf keeps in its annotations.
    checks: dict[str, tuple[str, Callable[[dict[str, Any]], list[str]]]] = {
        "components": ("component_status", validation.component_problems),
        "configurations": ("configuration_status", validation.configuration_problems),
        "subscriptions": ("subscription_status", validation.subscription_problems),
        "trafficroutes": ("traffic_route_status", validation.traffic_route_problems),
        "resiliencies": ("resiliency_status", validation.resiliency_problems),
    }
    for plural, (handler_id, problems) in checks.items():
        _follow_status(registry, plural, handler_id, problems, write_status)

    @kopf.on.event(GROUP, VERSION, "components", registry=registry)
    async def component_event(event: kopf.RawEvent, namespace: str | None, **_: Any) -> None:
        # Every watch event, deletions included (no finalizer needed): the Role follows the
        # namespace's Components as they are now. Never in the operator's own namespace:
        # sidecar Roles there could reach the identity CA's Secret.
        if namespace and namespace != ours.namespace:
            await clients.rbac.reconcile(namespace)
            await clients.functions.component_event(event.get("type"), dict(event["object"]))


def _follow_status(
    registry: kopf.OperatorRegistry,
    plural: str,
    handler_id: str,
    problems: Callable[[dict[str, Any]], list[str]],
    write_status: Callable[[kopf.Body, kopf.Patch, list[str]], Awaitable[None]],
) -> None:
    """Write the Ready condition of every `plural` resource from `problems` of its body."""

    async def status_handler(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
        await write_status(body, patch, problems(dict(body)))

    kopf.on.resume(GROUP, VERSION, plural, id=handler_id, registry=registry)(status_handler)
    kopf.on.create(GROUP, VERSION, plural, id=handler_id, registry=registry)(status_handler)
    kopf.on.update(GROUP, VERSION, plural, field="spec", id=handler_id, registry=registry)(status_handler)


def _register_traffic_routes(registry: kopf.OperatorRegistry) -> None:
    """TrafficRoutes (docs/routing.md) are refused at `kubectl apply` when they cannot route (their
    Ready condition is `_register_status`'s)."""

    @kopf.on.validate(GROUP, VERSION, "trafficroutes", id="validate-trafficroute", registry=registry)
    async def validate_traffic_route(body: kopf.Body, **_: Any) -> None:
        problems = validation.traffic_route_problems(dict(body))
        if problems:
            raise kopf.AdmissionError(
                f"TrafficRoute {body.metadata.name!r} is invalid: " + "; ".join(problems), code=422
            )


def _register_app_services(registry: kopf.OperatorRegistry, clients: Clients) -> None:
    """The per-app Services (services.py) and the apps' version slices (versions.py), on the events
    of injected pods and of our Services; the functions' Services (functions.py), also on the
    events of the apps' EndpointSlices."""

    @kopf.on.event("", "v1", "pods", labels={contract.LABEL_SIDECAR_INJECTED: "true"}, registry=registry)
    async def app_pod_event(event: kopf.RawEvent, **_: Any) -> None:
        await clients.app_services.pod_event(dict(event["object"]))
        await clients.versions.pod_event(dict(event["object"]))

    @kopf.on.event("", "v1", "services", labels={contract.LABEL_MANAGED_BY: contract.MANAGED_BY}, registry=registry)
    async def app_service_event(event: kopf.RawEvent, **_: Any) -> None:
        service = dict(event["object"])
        if functions.is_function_service(service):
            await clients.functions.service_event(service)
        else:
            await clients.app_services.service_event(service)

    @kopf.on.event(
        "discovery.k8s.io",
        "v1",
        "endpointslices",
        labels={contract.LABEL_MANAGED_BY: contract.MANAGED_BY},
        registry=registry,
    )
    async def app_slice_event(event: kopf.RawEvent, **_: Any) -> None:
        await clients.functions.slice_event(dict(event["object"]))


async def run(settings: OperatorSettings) -> None:
    identity = peering.identity()
    registry = build_registry(settings, identity)
    elect = bool(settings.peering_name)
    await kopf.operator(
        registry=registry,
        clusterwide=True,
        standalone=not elect,
        peering_name=settings.peering_name if elect else None,
        priority=peering.priority() if elect else None,
        # kopf's type for it is a NewType of str that kopf does not export.
        identity=cast(Any, identity) if elect else None,
        liveness_endpoint=f"http://0.0.0.0:{settings.liveness_port}/healthz",
    )
