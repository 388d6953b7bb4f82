"""The apiserver as a backend, shared by `secretstores.kubernetes` and `configuration.kubernetes`.

Credentials are the sidecar's own (the pod's service-account token, or KUBECONFIG out of
the cluster), so what a component may read is exactly what the sidecar's Role grants;
this module turns the apiserver's refusals into messages that say which rule is missing.
"""

import asyncio
import os
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field

from ottava_sidecar import contract
from ottava_sidecar.components.backends import retry
from ottava_sidecar.components.backends.options import RetryMetadata, Seconds
from ottava_sidecar.components.errors import AccessDeniedError, ComponentError

if TYPE_CHECKING:
    from ottava_sidecar.kube.client import KubeClient, KubeError


class KubernetesMetadata(RetryMetadata):
    namespace: str = Field(
        default="",
        description="Namespace to read. Default: the sidecar's own (env NAMESPACE, set by the injector), "
        "else the kubeconfig context's or the service account's namespace.",
    )
    kubeconfig_path: str = Field(
        default="",
        alias="kubeconfigPath",
        description="A kubeconfig to use instead of KUBECONFIG or the pod's service-account token.",
    )
    timeout: Seconds = Field(default=10.0, gt=0, description="How long one apiserver request may take.")


class KubernetesConnection:
    """A client with the sidecar's credentials, bound to one namespace."""

    def __init__(self, settings: KubernetesMetadata, component: str) -> None:
        self.settings = settings
        self.component = component
        self.namespace = ""
        self._client: KubeClient | None = None

    @property
    def client(self) -> "KubeClient":
        if self._client is None:
            raise ComponentError(f"{self.component} is not initialised")
        return self._client

    async def open(self) -> None:
        from ottava_sidecar.kube import client as kube
        from ottava_sidecar.kube import environment as kube_environment

        try:
            if self.settings.kubeconfig_path:
                path = Path(self.settings.kubeconfig_path)
                credentials = await asyncio.to_thread(kube.from_kubeconfig, path)
            else:
                credentials = await asyncio.to_thread(kube.from_environment)
        except kube.KubeError as err:
            raise ComponentError(f"{self.component}: no credentials for the apiserver: {err.message}") from None
        except (OSError, ValueError, KeyError, StopIteration, TypeError) as err:
            where = self.settings.kubeconfig_path or str(kube_environment.kubeconfig() or "")
            raise ComponentError(f"{self.component}: cannot read kubeconfig {where}: {err!r}") from None
        self.namespace = (
            self.settings.namespace or os.environ.get(contract.ENV_NAMESPACE, "") or credentials.namespace or ""
        )
        if not self.namespace:
            raise ComponentError(
                f"{self.component}: which namespace? Set the metadata field 'namespace' "
                f"(or env {contract.ENV_NAMESPACE}, as the injector does)"
            )
        self._client = kube.KubeClient(credentials, timeout=self.settings.timeout)
        where = credentials.server.removeprefix("https://").removeprefix("http://")
        client = self._client

        async def reach() -> None:
            await client.get("/version")  # readable by every identity; a bad token gets 401

        try:
            await retry.connect(
                f"apiserver at {where}",
                reach,
                self.settings,
                refused_credentials=lambda err: isinstance(err, kube.KubeError) and err.status == 401,
            )
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()

    def error(self, err: "KubeError", verb: str, what: str) -> ComponentError:
        """`verb what` failed (e.g. "get", "Secret 'db'"): say why, and which rule a 403 lacks."""
        if err.status == 403:
            return AccessDeniedError(
                f"{self.component}: the sidecar's Role does not allow it to {verb} {what} in namespace "
                f"{self.namespace} (apiserver: {err.message})"
            )
        if err.status == 401:
            return AccessDeniedError(
                f"{self.component}: the apiserver rejected the sidecar's credentials ({err.message})"
            )
        return ComponentError(f"{self.component}: cannot {verb} {what} in namespace {self.namespace}: {err}")
