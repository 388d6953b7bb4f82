"""How the operator reaches the apiserver: its pod's ServiceAccount in a cluster, a
kubeconfig elsewhere (`KUBECONFIG` set, e.g. an operator run out of cluster).

Which of the two, and where the pod's credentials are, is decided by the sidecar's
`ottava_sidecar.kube.environment`, the rule every Ottava process follows; this module
only turns the answer into what each client takes.

Two clients connect: kopf (watches, admission, peering) and `kubernetes_asyncio`
(certificates, RBAC, Events). Both must take the same path. kopf's own
`login_with_service_account` dials `https://kubernetes.default.svc`, which needs cluster
DNS; client-go and `kubernetes_asyncio` dial `KUBERNETES_SERVICE_HOST:PORT`, which the
kubelet sets in every pod, so the operator does the same and works in clusters without
DNS too. kopf calls the login again after a 401, so a rotated token is re-read.
"""

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import kopf
from kubernetes_asyncio import client, config
from ottava_sidecar.kube import environment

# Seconds between kopf's retries of a failed API request (kopf's default sequence, then
# every 30 s), about 10 minutes in all. kopf's default gives up after 54 s, and a
# peering keep-alive that gives up stops the whole operator: every apiserver restart
# longer than a minute (a control-plane upgrade) would kill it. This rides those out;
# an outage beyond 10 minutes still ends in an exit and a restart by the kubelet.
API_RETRY_BACKOFFS: tuple[float, ...] = (1, 1, 2, 3, 5, 8, 13, 21) + (30,) * 18


def service_account_login(
    environ: Mapping[str, str] = os.environ, directory: Path = environment.SERVICE_ACCOUNT_DIR
) -> kopf.ConnectionInfo | None:
    """kopf's credentials from the pod's ServiceAccount, or None outside a pod."""
    server = environment.service_server(environ)
    folder = environment.token_folder([directory])
    if server is None or folder is None:
        return None
    ca = folder / "ca.crt"
    return kopf.ConnectionInfo(
        server=server,
        ca_path=str(ca) if ca.exists() else None,
        token=(folder / "token").read_text(encoding="utf-8").strip() or None,
        default_namespace=environment.folder_namespace(folder),
    )


def kopf_login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    if environment.in_cluster():
        return service_account_login()
    return kopf.login_with_kubeconfig(**kwargs)


async def api_client() -> client.ApiClient:
    """A `kubernetes_asyncio` client on the same credentials as kopf's."""
    if environment.in_cluster():
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    else:
        await config.load_kube_config()
    return client.ApiClient()
