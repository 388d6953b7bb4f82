"""Which version each pod of an app serves, written where callers' sidecars can read it.

Traffic routing (docs/routing.md) sends a call to a version of the target app: the pod
label `ottava.io/app-version` that the injector copies from the annotation. A caller's
sidecar resolves app ids from the EndpointSlices of `<app-id>-ottava`, which carry no pod
labels, and sidecars may not read pods. The operator, which already watches the injected
pods (services.py), writes per app and per version one more EndpointSlice (per address
family) listing the pods of that version: their addresses and pod uid, labelled
`ottava.io/app-id`, `ottava.io/app-version` and `app.kubernetes.io/managed-by: ottava`, so
the sidecars' existing watch receives them. They name no Service (no
`kubernetes.io/service-name`): DNS and kube-proxy ignore them, and a sidecar uses them only
as an index from pod to version; readiness still comes from the Service's own slices,
which the EndpointSlice controller keeps. They are owned by the app's Service, so they go
with it.

A reconcile lists the app's live injected pods and its version slices, and writes the
difference. It runs on the events of a pod that has a version, of an app that had one,
and once for every app after the operator starts (the first listing of the pod watch), so
slices left behind while it was down are removed.
"""

import asyncio
import hashlib
import logging
from collections import defaultdict
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from ottava_sidecar import contract

from ottava_operator import functions, services

log = logging.getLogger(__name__)

_LIVE_PODS = "status.phase!=Succeeded,status.phase!=Failed"
_CONFLICT_ATTEMPTS = 3
MAX_ENDPOINTS = 1000  # per slice, as the API allows


def slice_name(app_id: str, version: str, address_type: str) -> str:
    """A version's slice name: versions may hold upper case and '_', which names may not, hence a digest."""
    digest = hashlib.sha256(version.encode()).hexdigest()[:10]
    return f"{contract.app_service_name(app_id)}-version-{digest}-{address_type.lower()}"


def version_selector(app_id: str) -> str:
    """The label selector of an app's version slices."""
    return (
        f"{contract.LABEL_APP_ID}={app_id},{contract.LABEL_APP_VERSION},"
        f"{functions.SLICE_MANAGER_LABEL}={functions.SLICE_MANAGER}"
    )


def _addresses(pod: dict[str, Any]) -> list[tuple[str, str]]:
    """(address type, address) of each of the pod's IPs."""
    status = pod.get("status") or {}
    ips = [str(p.get("ip")) for p in status.get("podIPs") or [] if p.get("ip")]
    if not ips and status.get("podIP"):
        ips = [str(status["podIP"])]
    return [("IPv6" if ":" in ip else "IPv4", ip) for ip in ips]


def version_slices(namespace: str, app_id: str, pods: list[dict[str, Any]], owner_uid: str) -> list[dict[str, Any]]:
    """The version slices of `app_id` for its pods as listed: one per version and address type.

    Pods without a version, without an IP yet, or being deleted are left out.
    """
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for pod in sorted(pods, key=lambda p: str((p.get("metadata") or {}).get("name", ""))):
        metadata = pod.get("metadata") or {}
        version = (metadata.get("labels") or {}).get(contract.LABEL_APP_VERSION)
        if not version or metadata.get("deletionTimestamp"):
            continue
        for address_type, address in _addresses(pod):
            grouped[(str(version), address_type)].append(
                {
                    "addresses": [address],
                    "targetRef": {
                        "kind": "Pod",
                        "namespace": namespace,
                        "name": str(metadata.get("name", "")),
                        "uid": str(metadata.get("uid", "")),
                    },
                }
            )
    slices = []
    for (version, address_type), endpoints in sorted(grouped.items()):
        slice_metadata: dict[str, Any] = {
            "name": slice_name(app_id, version, address_type),
            "namespace": namespace,
            "labels": {
                contract.LABEL_MANAGED_BY: contract.MANAGED_BY,
                functions.SLICE_MANAGER_LABEL: functions.SLICE_MANAGER,
                contract.LABEL_APP_ID: app_id,
                contract.LABEL_APP_VERSION: version,
            },
        }
        if owner_uid:
            slice_metadata["ownerReferences"] = [
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "name": contract.app_service_name(app_id),
                    "uid": owner_uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ]
        slices.append(
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": slice_metadata,
                "addressType": address_type,
                "endpoints": endpoints[:MAX_ENDPOINTS],
                "ports": [],
            }
        )
    return slices


def _listed(slice_: dict[str, Any]) -> list[tuple[tuple[str, ...], str]]:
    return sorted(
        (tuple(e.get("addresses") or ()), str((e.get("targetRef") or {}).get("uid", "")))
        for e in slice_.get("endpoints") or []
    )


def differs(current: dict[str, Any], desired: dict[str, Any]) -> bool:
    """Whether a slice as read lists other pods (or carries other labels) than the one desired."""
    labels = (current.get("metadata") or {}).get("labels") or {}
    if any(labels.get(k) != v for k, v in desired["metadata"]["labels"].items()):
        return True
    if _owner(current) != _owner(desired):
        return True
    return current.get("addressType") != desired["addressType"] or _listed(current) != _listed(desired)


def _owner(slice_: dict[str, Any]) -> str:
    owners = (slice_.get("metadata") or {}).get("ownerReferences") or [{}]
    return str(owners[0].get("uid", ""))


class AppVersions:
    """Keeps each app's version slices in step with its pods, one reconcile per app at a time."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.discovery = client.DiscoveryV1Api(api)
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._dirty: set[tuple[str, str]] = set()
        self._versioned: set[tuple[str, str]] = set()  # apps that have (or had) version slices
        self._seen: set[tuple[str, str]] = set()  # apps reconciled at least once since start

    async def pod_event(self, pod: dict[str, Any]) -> None:
        metadata = pod.get("metadata") or {}
        labels = metadata.get("labels") or {}
        namespace, app_id = metadata.get("namespace"), labels.get(contract.LABEL_APP_ID)
        if not namespace or not app_id:
            return
        key = (str(namespace), str(app_id))
        if labels.get(contract.LABEL_APP_VERSION) or key in self._versioned or key not in self._seen:
            await self.reconcile(*key)

    async def reconcile(self, namespace: str, app_id: str) -> None:
        key = (namespace, app_id)
        self._dirty.add(key)
        async with self._locks.setdefault(key, asyncio.Lock()):
            if key not in self._dirty:
                return  # a run that started after our event has covered it
            self._dirty.discard(key)
            self._seen.add(key)
            for attempt in range(1, _CONFLICT_ATTEMPTS + 1):
                try:
                    await self._reconcile(namespace, app_id)
                    return
                except ApiException as err:
                    if err.status not in (409, 404) or attempt == _CONFLICT_ATTEMPTS:
                        raise
                    # Written or deleted between our read and our write: read again.

    async def _reconcile(self, namespace: str, app_id: str) -> None:
        selector = f"{contract.LABEL_APP_ID}={app_id},{services.INJECTED_PODS}"
        pods = await self.core.list_namespaced_pod(namespace, label_selector=selector, field_selector=_LIVE_PODS)
        listed = [self.api.sanitize_for_serialization(p) for p in pods.items]
        slices = await self.discovery.list_namespaced_endpoint_slice(namespace, label_selector=version_selector(app_id))
        current = {s["metadata"]["name"]: s for s in (self.api.sanitize_for_serialization(x) for x in slices.items)}
        owner = await self._service_uid(namespace, app_id) if any(_versioned(p) for p in listed) else ""
        desired = {s["metadata"]["name"]: s for s in version_slices(namespace, app_id, listed, owner)}
        key = (namespace, app_id)
        if desired:
            self._versioned.add(key)
        elif not current:
            self._versioned.discard(key)
            return
        await services.write_slices(self.discovery, namespace, desired, current, differs)
        log.info(
            "version slices of an app written",
            extra={
                "namespace": namespace,
                "appId": app_id,
                "versions": sorted({_version(s) for s in desired.values()}),
            },
        )

    async def _service_uid(self, namespace: str, app_id: str) -> str:
        """The uid of the app's Service (ours), which owns the version slices; empty when there is none yet."""
        try:
            service = await self.core.read_namespaced_service(contract.app_service_name(app_id), namespace)
        except ApiException as err:
            if err.status != 404:
                raise
            return ""
        document = self.api.sanitize_for_serialization(service)
        return str(document["metadata"].get("uid", "")) if services.ours(document) else ""


def _versioned(pod: dict[str, Any]) -> bool:
    return bool(((pod.get("metadata") or {}).get("labels") or {}).get(contract.LABEL_APP_VERSION))


def _version(slice_: dict[str, Any]) -> str:
    return str(((slice_.get("metadata") or {}).get("labels") or {}).get(contract.LABEL_APP_VERSION, ""))
