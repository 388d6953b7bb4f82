"""Sidecar injection: a pure function from a pod to the pod with its sidecar.

It takes and returns plain dicts (the admission request's object), talks to nothing, and
is covered by golden files (`tests/golden/injector/`). Ports, probe paths and names come
from `ottava_sidecar.contract`, the same constants the sidecar serves on.

The sidecar takes one of two forms, chosen by `settings.InjectorSettings.native_sidecar` (the
operator decides from the apiserver's version, see `main.py`):

* native (Kubernetes >= 1.29): the first init container, with `restartPolicy: Always`.
  The kubelet starts it before every other container and waits for its startupProbe
  before starting the next one, so the app (and any init container of the user's) starts
  only once the sidecar serves; it is stopped after the app containers, and it does not
  keep a Job's pod from completing. It goes *first*, before the user's init containers,
  as Istio and Linkerd put their proxies: the sidecar needs nothing from them (it reads
  its wiring from the apiserver), and they may need the sidecar (a migration or a
  config fetch through the Dapr API), which they could not use if it came after them.
* classic (older clusters): one more app container, as before native sidecars existed.

Workload identity (`IdentitySigner`: where the sidecar asks for its certificate, or None
when the chart turns it off): the sidecar gets a second token in its projected volume, for audience `ottava.io/identity`, which it
trades at the operator's signer for its certificate, and the signer's address, name and
the trust bundle in its environment. Without it the sidecar runs with `--disable-mtls`.
"""

import copy
from dataclasses import dataclass, field
from typing import Any

from ottava_sidecar import contract

from ottava_operator import annotations as pod_annotations
from ottava_operator.settings import InjectorSettings

Pod = dict[str, Any]

APP_ENV = {
    contract.ENV_DAPR_GRPC_PORT: str(contract.GRPC_PORT),
    contract.ENV_DAPR_HTTP_PORT: str(contract.HTTP_PORT),
    contract.ENV_OTTAVA_GRPC_PORT: str(contract.GRPC_PORT),
}


@dataclass(frozen=True)
class IdentitySigner:
    """Where a sidecar gets its certificate, and the roots it trusts (the CA's bundle at admission)."""

    endpoint: str  # https://<ClusterIP of the webhook Service>:<identity port>
    server_name: str  # the name on the signer's certificate: <service>.<namespace>.svc
    trust_anchors: str  # PEM


@dataclass
class Injection:
    """What the injector decided: the new pod (or None to leave it alone) and what to tell the user."""

    pod: Pod | None
    app_id: str = ""
    warnings: list[str] = field(default_factory=list)
    reason: str = ""


def inject(pod: Pod, settings: InjectorSettings, identity: IdentitySigner | None) -> Injection:
    metadata = pod.get("metadata") or {}
    parsed = pod_annotations.parse(metadata.get("annotations") or {})
    if not parsed.enabled:
        return Injection(None, reason=f"not opted in ({contract.ANNOTATION_ENABLED} is not 'true')")
    spec = pod.get("spec") or {}
    if any(c.get("name") == contract.SIDECAR_CONTAINER_NAME for c in _all_containers(spec)):
        return Injection(None, reason="already injected")

    app_id = parsed.app_id or default_app_id(metadata)
    result = copy.deepcopy(pod)
    result_spec = result.setdefault("spec", {})
    labels = result.setdefault("metadata", {}).setdefault("labels", {})
    labels[contract.LABEL_SIDECAR_INJECTED] = "true"
    labels[contract.LABEL_APP_ID] = app_id
    if parsed.app_version is not None:  # callers' TrafficRoutes pick by it (versions.py indexes it)
        labels[contract.LABEL_APP_VERSION] = parsed.app_version

    token_env = _api_token_env(parsed.api_token_secret)
    # App containers only: the user's init containers are not told where the sidecar is.
    for container in result_spec.get("containers") or []:
        env = container.setdefault("env", [])
        present = {e.get("name") for e in env}
        env.extend({"name": k, "value": v} for k, v in APP_ENV.items() if k not in present)
        env.extend(e for e in token_env if e["name"] not in present)

    sidecar = _sidecar_container(app_id, parsed, settings, token_env, identity)
    if settings.native_sidecar:
        sidecar["restartPolicy"] = "Always"
        result_spec["initContainers"] = [sidecar, *(result_spec.get("initContainers") or [])]
    else:
        result_spec.setdefault("containers", []).append(sidecar)
    result_spec.setdefault("volumes", []).append(_token_volume(identity is not None))
    return Injection(result, app_id=app_id, warnings=list(parsed.problems), reason="injected")


def _all_containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]


def default_app_id(metadata: dict[str, Any]) -> str:
    """The owning Deployment's name, as `kubectl` users name their apps.

    A Deployment's pods are owned by a ReplicaSet named `<deployment>-<pod-template-hash>`;
    the hash is also a label of the pod, so the Deployment's name is recovered without
    asking the apiserver.
    """
    template_hash = (metadata.get("labels") or {}).get("pod-template-hash")
    for owner in metadata.get("ownerReferences") or []:
        name = str(owner.get("name", ""))
        if owner.get("kind") == "ReplicaSet" and template_hash and name.endswith(f"-{template_hash}"):
            return name[: -len(template_hash) - 1]
        if name:
            return name
    if metadata.get("name"):
        return str(metadata["name"])
    return str(metadata.get("generateName", "app")).rstrip("-") or "app"


def _api_token_env(secret: str | None) -> list[dict[str, Any]]:
    if secret is None:
        return []
    return [{"name": contract.ENV_API_TOKEN, "valueFrom": {"secretKeyRef": {"name": secret, "key": "token"}}}]


def _sidecar_container(
    app_id: str,
    parsed: pod_annotations.PodAnnotations,
    settings: InjectorSettings,
    token_env: list[dict[str, Any]],
    identity: IdentitySigner | None,
) -> dict[str, Any]:
    env: list[dict[str, Any]] = [
        {"name": contract.ENV_POD_NAME, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": contract.ENV_NAMESPACE, "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": contract.ENV_APP_ID, "value": app_id},
        {"name": contract.ENV_APP_PROTOCOL, "value": parsed.app_protocol},
    ]
    if parsed.app_port is not None:
        env.append({"name": contract.ENV_APP_PORT, "value": str(parsed.app_port)})
    if parsed.app_version is not None:
        env.append({"name": contract.ENV_APP_VERSION, "value": parsed.app_version})
    if parsed.config is not None:
        env.append({"name": contract.ENV_CONFIG, "value": parsed.config})
    env.extend(token_env)
    if identity is not None:
        env.extend(
            [
                {"name": contract.ENV_IDENTITY_ENDPOINT, "value": identity.endpoint},
                {"name": contract.ENV_IDENTITY_SERVER_NAME, "value": identity.server_name},
                {"name": contract.ENV_TRUST_ANCHORS, "value": identity.trust_anchors},
            ]
        )

    requests = {
        "cpu": parsed.cpu_request or settings.cpu_request,
        "memory": parsed.memory_request or settings.memory_request,
    }
    limits = {
        k: v
        for k, v in (
            ("cpu", parsed.cpu_limit or settings.cpu_limit),
            ("memory", parsed.memory_limit or settings.memory_limit),
        )
        if v
    }
    return {
        "name": contract.SIDECAR_CONTAINER_NAME,
        "image": parsed.sidecar_image or settings.image,
        "imagePullPolicy": settings.image_pull_policy,
        "args": [
            "run",
            "--mode",
            "kubernetes",
            "--log-level",
            parsed.log_level,
            "--log-format",
            "json",
            *(word for flag, value in parsed.limit_flags.items() for word in (flag, value)),
            *([] if identity is not None else ["--disable-mtls"]),
        ],
        "env": env,
        "ports": [
            {"name": "ottava-grpc", "containerPort": contract.GRPC_PORT, "protocol": "TCP"},
            {"name": "ottava-http", "containerPort": contract.HTTP_PORT, "protocol": "TCP"},
            {"name": "ottava-metrics", "containerPort": contract.METRICS_PORT, "protocol": "TCP"},
            {"name": "ottava-internal", "containerPort": contract.INTERNAL_GRPC_PORT, "protocol": "TCP"},
        ],
        "startupProbe": _probe(contract.LIVENESS_PATH, period=1, failures=30),
        "livenessProbe": _probe(contract.LIVENESS_PATH, period=10, failures=3),
        "readinessProbe": _probe(contract.READINESS_PATH, period=5, failures=3),
        "resources": {"requests": requests, **({"limits": limits} if limits else {})},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "privileged": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": contract.SIDECAR_UID,
            "runAsGroup": contract.SIDECAR_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": contract.TOKEN_VOLUME, "mountPath": contract.TOKEN_MOUNT_PATH, "readOnly": True}],
    }


def _probe(path: str, *, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": contract.HTTP_PORT},
        "periodSeconds": period,
        "failureThreshold": failures,
        "timeoutSeconds": 1,
    }


def _token_volume(identity: bool) -> dict[str, Any]:
    """The pod's service-account token, projected for the sidecar alone (works without automount),
    and with workload identity a second one that only the signer accepts (its audience)."""
    identity_token = {
        "serviceAccountToken": {
            "audience": contract.IDENTITY_AUDIENCE,
            "path": contract.IDENTITY_TOKEN_FILE,
            "expirationSeconds": 3600,
        }
    }
    return {
        "name": contract.TOKEN_VOLUME,
        "projected": {
            "sources": [
                {"serviceAccountToken": {"path": "token", "expirationSeconds": 3600}},
                *([identity_token] if identity else []),
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
            ]
        },
    }
