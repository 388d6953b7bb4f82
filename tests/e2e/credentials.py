"""Kubeconfigs that carry a ServiceAccount's identity, as a pod would.

The operator and the sidecar run in a pod with a projected ServiceAccount
token and nothing more. Tests that run them as admin would hide every missing
RBAC rule in the chart; with these kubeconfigs they get exactly what their Role
grants, minted the way the kubelet mints a pod's token (the TokenRequest API).
"""

from __future__ import annotations

import base64
from pathlib import Path

import yaml
from kubernetes import client


def service_account_token(api: client.ApiClient, namespace: str, name: str, *, expiration_seconds: int = 3600) -> str:
    """Mint a bound token for ServiceAccount ``namespace/name`` through the TokenRequest API."""
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=expiration_seconds)
    )
    response = client.CoreV1Api(api).create_namespaced_service_account_token(name, namespace, request)
    if response.status is None or not response.status.token:
        raise RuntimeError(f"TokenRequest for ServiceAccount {namespace}/{name} returned no token")
    return str(response.status.token)


def service_account_kubeconfig(
    api: client.ApiClient, namespace: str, name: str, dest: Path, *, expiration_seconds: int = 3600
) -> Path:
    """Write a kubeconfig for ServiceAccount ``namespace/name`` to ``dest`` and return its path.

    The server address and CA come from ``api`` (normally the admin client), so
    the file points at the same cluster; the credentials are only the token.
    The namespace is the context's default, as it is for a pod.
    """
    token = service_account_token(api, namespace, name, expiration_seconds=expiration_seconds)
    cfg = api.configuration
    ca_pem = Path(cfg.ssl_ca_cert).read_bytes()
    user = f"system:serviceaccount:{namespace}:{name}"
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "ottava-e2e",
                "cluster": {
                    "server": cfg.host,
                    "certificate-authority-data": base64.b64encode(ca_pem).decode(),
                },
            }
        ],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": user, "context": {"cluster": "ottava-e2e", "user": user, "namespace": namespace}}],
        "current-context": user,
    }
    dest.write_text(yaml.safe_dump(kubeconfig))
    dest.chmod(0o600)
    return dest
