"""The apiserver calls mutating admission webhooks, as Ottava's injector needs.

Two ways to reach a webhook, both used by Ottava: behind a Service (the chart's
in-cluster operator), where the webhook runs on a test host in a network
namespace and the Service's EndpointSlice names that host; and by URL on
loopback (an operator run out of cluster during development).
"""

from __future__ import annotations

import base64
import uuid
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from . import cluster as cluster_mod
from . import netns, tls, webhook

pytestmark = pytest.mark.e2e

LABEL = "e2e.ottava.io/mutated-by"
WEBHOOK_PORT = 8443


def pod(name: str) -> client.V1Pod:
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, labels={"app": "webhook-test"}),
        spec=client.V1PodSpec(containers=[client.V1Container(name="app", image="ottava-e2e/app:unused")]),
    )


def webhook_configuration(
    name: str, namespace: str, ca_pem: bytes, client_config: client.AdmissionregistrationV1WebhookClientConfig
) -> client.V1MutatingWebhookConfiguration:
    """A MutatingWebhookConfiguration for Pod CREATE, confined to one namespace.

    ``failurePolicy: Fail`` so that a webhook the apiserver cannot reach makes
    the test fail loudly instead of silently admitting the pod unpatched.
    """
    client_config.ca_bundle = base64.b64encode(ca_pem).decode()
    return client.V1MutatingWebhookConfiguration(
        metadata=client.V1ObjectMeta(name=name),
        webhooks=[
            client.V1MutatingWebhook(
                name="label.e2e.ottava.io",
                client_config=client_config,
                rules=[
                    client.V1RuleWithOperations(
                        api_groups=[""], api_versions=["v1"], operations=["CREATE"], resources=["pods"]
                    )
                ],
                namespace_selector=client.V1LabelSelector(match_labels={"kubernetes.io/metadata.name": namespace}),
                failure_policy="Fail",
                side_effects="None",
                admission_review_versions=["v1"],
                timeout_seconds=5,
            )
        ],
    )


def create_patched_pod(kube: client.ApiClient, namespace: str, name: str, expected: str) -> Any:
    """Create a pod once the webhook is in effect; return the pod as stored.

    A new webhook configuration, Service or EndpointSlice reaches the
    apiserver's admission chain through informers, a moment after it is
    stored. So dry-run creates are polled until one comes back patched, and
    only then is the real pod created.
    """
    core = client.CoreV1Api(kube)

    def dry_run_patched() -> bool:
        try:
            created = core.create_namespaced_pod(namespace, pod(name), dry_run="All")
        except ApiException as exc:
            if exc.status == 500 and "failed calling webhook" in (exc.body or ""):
                return False  # the Service's endpoints are not visible to the apiserver yet
            raise
        return bool((created.metadata.labels or {}).get(LABEL) == expected)

    cluster_mod.poll(dry_run_patched, timeout=60, what="the webhook to patch a dry-run pod")
    core.create_namespaced_pod(namespace, pod(name))
    return core.read_namespaced_pod(name, namespace)


def test_webhook_behind_a_service_patches_created_pods(kube: client.ApiClient, namespace: str, tmp_path: Path) -> None:
    core = client.CoreV1Api(kube)
    discovery = client.DiscoveryV1Api(kube)
    admission = client.AdmissionregistrationV1Api(kube)
    service = "label-webhook"
    token = f"service-{uuid.uuid4().hex[:8]}"
    cert = tls.make_serving_cert(tmp_path / "tls", [f"{service}.{namespace}.svc"])

    with (
        netns.netns_host() as host,
        webhook.run_webhook(cert, host.address, WEBHOOK_PORT, f"{LABEL}={token}", wrap=host.command) as server,
    ):
        server.wait_listening()
        # A selector-less Service with a hand-made EndpointSlice: exactly what
        # the apiserver resolves (--enable-aggregator-routing), no kube-proxy.
        core.create_namespaced_service(
            namespace,
            client.V1Service(
                metadata=client.V1ObjectMeta(name=service),
                spec=client.V1ServiceSpec(
                    ports=[client.V1ServicePort(name="https", port=443, target_port=WEBHOOK_PORT)]
                ),
            ),
        )
        discovery.create_namespaced_endpoint_slice(
            namespace,
            client.V1EndpointSlice(
                metadata=client.V1ObjectMeta(name=f"{service}-1", labels={"kubernetes.io/service-name": service}),
                address_type="IPv4",
                endpoints=[
                    client.V1Endpoint(addresses=[host.address], conditions=client.V1EndpointConditions(ready=True))
                ],
                ports=[client.DiscoveryV1EndpointPort(name="https", port=WEBHOOK_PORT, protocol="TCP")],
            ),
        )
        config_name = f"e2e-{namespace}"
        admission.create_mutating_webhook_configuration(
            webhook_configuration(
                config_name,
                namespace,
                cert.ca_pem,
                client.AdmissionregistrationV1WebhookClientConfig(
                    service=client.AdmissionregistrationV1ServiceReference(
                        namespace=namespace, name=service, port=443, path="/mutate"
                    )
                ),
            )
        )
        try:
            stored = create_patched_pod(kube, namespace, "patched", token)
        finally:
            admission.delete_mutating_webhook_configuration(config_name)

        assert stored.metadata.labels == {"app": "webhook-test", LABEL: token}
        calls = [r for r in server.reviews() if r["name"] == "patched" and not r["dryRun"]]
        assert len(calls) == 1
        assert calls[0] | {"uid": None} == {
            "path": "/mutate",
            "uid": None,
            "kind": "Pod",
            "operation": "CREATE",
            "namespace": namespace,
            "name": "patched",
            "dryRun": False,
        }


def test_webhook_by_url_on_loopback_patches_created_pods(
    kube: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    admission = client.AdmissionregistrationV1Api(kube)
    token = f"url-{uuid.uuid4().hex[:8]}"
    cert = tls.make_serving_cert(tmp_path / "tls", [], ips=["127.0.0.1"])
    with webhook.run_webhook(cert, "127.0.0.1", 0, f"{LABEL}={token}") as server:
        address = server.wait_listening()
        config_name = f"e2e-{namespace}"
        admission.create_mutating_webhook_configuration(
            webhook_configuration(
                config_name,
                namespace,
                cert.ca_pem,
                client.AdmissionregistrationV1WebhookClientConfig(url=f"https://{address}/mutate"),
            )
        )
        try:
            stored = create_patched_pod(kube, namespace, "patched", token)
        finally:
            admission.delete_mutating_webhook_configuration(config_name)
        assert stored.metadata.labels == {"app": "webhook-test", LABEL: token}
        assert any(r["name"] == "patched" and not r["dryRun"] for r in server.reviews())
