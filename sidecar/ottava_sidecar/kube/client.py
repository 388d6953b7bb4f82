"""Connecting to the apiserver: credentials from a kubeconfig or from the pod, and requests."""

import asyncio
import base64
import json
import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from ottava_sidecar import contract
from ottava_sidecar.kube import environment

# The injector's projected token first (it works without automount), then the kubelet's.
SERVICE_ACCOUNT_DIRS = (Path(contract.TOKEN_MOUNT_PATH), environment.SERVICE_ACCOUNT_DIR)


class KubeError(Exception):
    """The apiserver answered with an error status, or could not be reached (status 0)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}" if status else message)
        self.status = status
        self.reason = reason
        self.message = message


@dataclass
class Credentials:
    server: str
    ssl_context: ssl.SSLContext | bool
    token: str | None = None
    token_file: Path | None = None  # re-read on every request: projected tokens rotate
    namespace: str | None = None

    def authorization(self) -> str | None:
        if self.token_file is not None:
            return f"Bearer {self.token_file.read_text(encoding='utf-8').strip()}"
        if self.token:
            return f"Bearer {self.token}"
        return None


def _ssl_from(
    ca_data: bytes | None, ca_file: str | None, cert: bytes | None, key: bytes | None, insecure: bool
) -> ssl.SSLContext | bool:
    if insecure:
        return False
    context = ssl.create_default_context(cadata=ca_data.decode() if ca_data else None, cafile=ca_file)
    if cert and key:
        # ssl loads client certificates only from files.
        with tempfile.NamedTemporaryFile("wb", delete=False, suffix=".crt") as cert_file:
            cert_file.write(cert)
        with tempfile.NamedTemporaryFile("wb", delete=False, suffix=".key") as key_file:
            key_file.write(key)
        try:
            context.load_cert_chain(cert_file.name, key_file.name)
        finally:
            os.unlink(cert_file.name)
            os.unlink(key_file.name)
    return context


def from_kubeconfig(path: Path) -> Credentials:
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    current = config.get("current-context")
    context = next(c["context"] for c in config["contexts"] if c["name"] == current)
    cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
    user: dict[str, Any] = next((u["user"] for u in config.get("users", []) if u["name"] == context.get("user")), {})

    def data(item: dict[str, Any], key: str) -> bytes | None:
        if item.get(f"{key}-data"):
            return base64.b64decode(str(item[f"{key}-data"]))
        if item.get(key):
            return (path.parent / str(item[key])).read_bytes()
        return None

    ssl_context = _ssl_from(
        data(cluster, "certificate-authority"),
        None,
        data(user, "client-certificate"),
        data(user, "client-key"),
        bool(cluster.get("insecure-skip-tls-verify")),
    )
    token_file = Path(user["tokenFile"]) if user.get("tokenFile") else None
    return Credentials(cluster["server"], ssl_context, user.get("token"), token_file, context.get("namespace"))


def in_cluster() -> Credentials:
    server = environment.service_server()
    if server is None:
        raise KubeError(0, "NoCluster", "neither KUBECONFIG nor KUBERNETES_SERVICE_HOST is set")
    folder = environment.token_folder(SERVICE_ACCOUNT_DIRS)
    if folder is None:
        raise KubeError(0, "NoToken", f"no service-account token in {' or '.join(map(str, SERVICE_ACCOUNT_DIRS))}")
    return Credentials(
        server,
        _ssl_from(None, str(folder / "ca.crt"), None, None, False),
        None,
        folder / "token",
        environment.folder_namespace(folder),
    )


def from_environment() -> Credentials:
    """KUBECONFIG when set (tests, out-of-cluster runs), the pod's service account otherwise."""
    kubeconfig = environment.kubeconfig()
    return from_kubeconfig(kubeconfig) if kubeconfig is not None else in_cluster()


class KubeClient:
    def __init__(self, credentials: Credentials, *, timeout: float = 10.0, connections: int = 4) -> None:
        """`connections` bounds the open connections; each watch holds one for as long as it runs."""
        self.credentials = credentials
        self._timeout = timeout
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    def _headers(self, content_type: str | None = None) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "ottava-sidecar"}
        if (auth := self.credentials.authorization()) is not None:
            headers["Authorization"] = auth
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._closed:
            # A request racing the close (a save, a watch's retry) must not open a new
            # session that nobody would close: its connections would leak.
            raise KubeError(0, "", "the Kubernetes client is closed")
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=self.credentials.ssl_context, limit=self._connections)
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: Any = None,
        content_type: str | None = None,
    ) -> dict[str, Any]:
        url = self.credentials.server + path
        data = json.dumps(body) if body is not None else None
        try:
            async with self.session.request(
                method,
                url,
                params=params,
                data=data,
                headers=self._headers(content_type or ("application/json" if data else None)),
                timeout=aiohttp.ClientTimeout(total=self._timeout),
            ) as response:
                payload = await response.read()
                if response.status >= 400:
                    raise _error(response.status, payload)
                result: dict[str, Any] = json.loads(payload) if payload else {}
                return result
        except (aiohttp.ClientError, TimeoutError, OSError) as err:
            raise KubeError(
                0,
                "Unreachable",
                f"cannot reach the apiserver at {self.credentials.server}: {_reason(err, self._timeout)}",
            ) from None

    async def get(self, path: str, **params: str) -> dict[str, Any]:
        return await self.request("GET", path, params=params or None)

    async def stream(self, path: str, params: dict[str, str]) -> aiohttp.ClientResponse:
        """An open watch response; the caller reads lines and closes it."""
        try:
            response = await self.session.get(
                self.credentials.server + path,
                params=params,
                headers=self._headers(),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self._timeout, sock_read=None),
            )
        except (aiohttp.ClientError, TimeoutError, OSError) as err:
            raise KubeError(
                0,
                "Unreachable",
                f"cannot reach the apiserver at {self.credentials.server}: {_reason(err, self._timeout)}",
            ) from None
        if response.status >= 400:
            payload = await response.read()
            response.release()
            raise _error(response.status, payload)
        return response

    async def close(self) -> None:
        self._closed = True
        if self._session is not None and not self._session.closed:
            await self._session.close()
            if self.credentials.server.startswith("https:"):
                # An SSL connection closes its socket only once the TLS shutdown ran on the loop
                # (aiohttp's "graceful shutdown"): give it that turn, or a loop that ends now
                # leaves the socket open until the garbage collector finds it.
                await asyncio.sleep(_TLS_SHUTDOWN_SECONDS)


_TLS_SHUTDOWN_SECONDS = 0.25


def _error(status: int, payload: bytes) -> KubeError:
    try:
        document = json.loads(payload)
        return KubeError(status, document.get("reason", ""), document.get("message", payload.decode(errors="replace")))
    except (ValueError, AttributeError):
        return KubeError(status, "", payload.decode(errors="replace")[:500])


def _reason(err: BaseException, timeout: float) -> str:
    """Why a request did not get an answer; a timeout's own message is empty."""
    if isinstance(err, TimeoutError):
        return f"no answer within {timeout:g}s (or no free connection: each watch holds one)"
    return str(err) or type(err).__name__
