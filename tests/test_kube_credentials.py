"""Every Ottava process takes its apiserver credentials by one rule (`ottava_sidecar.kube.environment`):
a kubeconfig named by KUBECONFIG first, else, in a pod, the pod's ServiceAccount."""

from pathlib import Path

import pytest
import yaml
from ottava_operator import connection
from ottava_sidecar.kube import client as kube_client
from ottava_sidecar.kube import environment as kube_environment


def write_kubeconfig(path: Path) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "dev",
        "contexts": [{"name": "dev", "context": {"cluster": "dev", "user": "dev", "namespace": "shop"}}],
        "clusters": [
            {"name": "dev", "cluster": {"server": "https://dev.example:6443", "insecure-skip-tls-verify": True}}
        ],
        "users": [{"name": "dev", "user": {"token": "t0ken"}}],
    }
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def test_a_named_kubeconfig_wins_inside_a_pod_for_sidecar_and_operator_alike(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "config")))
    credentials = kube_client.from_environment()
    assert (credentials.server, credentials.namespace, credentials.authorization()) == (
        "https://dev.example:6443",
        "shop",
        "Bearer t0ken",
    )
    # The operator's kopf login and its kubernetes_asyncio client take the kubeconfig too.
    assert not kube_environment.in_cluster()


def test_in_a_pod_the_service_account_folder_gives_server_token_and_namespace(tmp_path: Path) -> None:
    empty, mounted = tmp_path / "empty", tmp_path / "mounted"
    empty.mkdir()
    mounted.mkdir()
    (mounted / "token").write_text("tok\n")
    (mounted / "namespace").write_text("shop\n")
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "6443"}
    assert kube_environment.in_cluster(env)
    assert kube_environment.service_server(env) == "https://10.96.0.1:6443"
    assert kube_environment.token_folder([empty, mounted]) == mounted
    assert kube_environment.folder_namespace(mounted) == "shop"
    assert kube_environment.folder_namespace(empty) is None
    # The operator's kopf login reads the same folder the same way (no ca.crt: the system CAs).
    login = connection.service_account_login(env, mounted)
    assert login is not None
    assert (login.server, login.token, login.ca_path, login.default_namespace) == (
        "https://10.96.0.1:6443",
        "tok",
        None,
        "shop",
    )


def test_outside_a_pod_without_a_kubeconfig_the_sidecar_says_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(kube_client.KubeError, match="neither KUBECONFIG nor KUBERNETES_SERVICE_HOST is set"):
        kube_client.from_environment()
