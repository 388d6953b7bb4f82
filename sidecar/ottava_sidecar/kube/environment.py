"""Which credentials a process uses for the apiserver: the one rule, written once.

A kubeconfig named by `KUBECONFIG` comes first (tests, a sidecar or an operator run out
of the cluster); otherwise, in a pod (the kubelet sets `KUBERNETES_SERVICE_HOST`), the
pod's ServiceAccount token. The sidecar's own client (`client.py`) and the operator's
two clients (kopf and `kubernetes_asyncio`, `ottava_operator.connection`) all decide
with these functions and only differ in the object they build from the result.

In-cluster, the apiserver is dialled at `KUBERNETES_SERVICE_HOST:PORT` (as client-go
does), not at `kubernetes.default.svc`, so clusters without DNS work too.
"""

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

KUBECONFIG = "KUBECONFIG"
SERVICE_HOST = "KUBERNETES_SERVICE_HOST"
SERVICE_PORT = "KUBERNETES_SERVICE_PORT"
# Where the kubelet mounts a pod's ServiceAccount token, CA and namespace by default.
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


def kubeconfig(environ: Mapping[str, str] = os.environ) -> Path | None:
    """The kubeconfig named by `KUBECONFIG`, if any."""
    path = environ.get(KUBECONFIG)
    return Path(path) if path else None


def in_cluster(environ: Mapping[str, str] = os.environ) -> bool:
    """True when the pod's ServiceAccount is the source: in a pod, and no kubeconfig named."""
    return bool(environ.get(SERVICE_HOST)) and kubeconfig(environ) is None


def service_server(environ: Mapping[str, str] = os.environ) -> str | None:
    """The apiserver's URL inside a pod, from the variables the kubelet sets; None outside one."""
    host = environ.get(SERVICE_HOST)
    if not host:
        return None
    port = environ.get(SERVICE_PORT, "443")
    return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"


def token_folder(folders: Iterable[Path]) -> Path | None:
    """The first of `folders` that holds a ServiceAccount token (beside it: `ca.crt`, `namespace`)."""
    return next((folder for folder in folders if (folder / "token").exists()), None)


def folder_namespace(folder: Path) -> str | None:
    """The namespace written beside a token, if it is."""
    path = folder / "namespace"
    return path.read_text(encoding="utf-8").strip() if path.exists() else None
