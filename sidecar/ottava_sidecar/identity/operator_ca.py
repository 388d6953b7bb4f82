"""The operator's CA as a sidecar in a cluster sees it: a signing endpoint it proves itself to.

The sidecar sends a certificate signing request with its projected ServiceAccount token
(audience `ottava.io/identity`, bound to its pod); the operator checks the token with a
TokenReview and the app id against the pod, and answers with the certificate and the
roots to trust (DESIGN.md, "workload identity"). The endpoint's own certificate is
verified against the trust anchors the injector gave the sidecar, updated from each
answer, so a root rotation reaches sidecars that started before it.

The token file is read at every request: the kubelet replaces it before it expires.
"""

from __future__ import annotations

import json
import ssl
from pathlib import Path
from typing import Any

import aiohttp

from ottava_sidecar import contract
from ottava_sidecar.identity import certs
from ottava_sidecar.identity.spiffe import SpiffeId
from ottava_sidecar.identity.workload import IdentityError, Issued

REQUEST_SECONDS = 10.0


class OperatorCa:
    def __init__(self, endpoint: str, server_name: str, trust_anchors: bytes, token_file: Path) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.server_name = server_name
        self.anchors = trust_anchors
        self.token_file = token_file

    def describe(self) -> str:
        return f"the operator's CA at {self.endpoint}"

    def _tls(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cadata=self.anchors.decode())
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context

    async def issue(self, identity: SpiffeId, csr_pem: bytes) -> Issued:
        try:
            token = self.token_file.read_text().strip()
        except OSError as err:
            raise IdentityError(f"cannot read the identity token {self.token_file}: {err.strerror}") from None
        body = {"csr": csr_pem.decode(), "appId": identity.app_id}
        url = f"{self.endpoint}{contract.IDENTITY_SIGN_PATH}"
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_SECONDS)) as session,
                session.post(
                    url,
                    json=body,
                    headers={"Authorization": f"Bearer {token}"},
                    ssl=self._tls(),
                    server_hostname=self.server_name,
                ) as response,
            ):
                text = await response.text()
                status = response.status
        except (aiohttp.ClientError, TimeoutError, ssl.SSLError, OSError) as err:
            raise IdentityError(f"cannot reach {self.describe()}: {err or type(err).__name__}") from None
        answer = _json(text)
        if status != 200:
            reason = answer.get("error") if isinstance(answer, dict) else None
            raise IdentityError(f"{self.describe()} refused (HTTP {status}): {reason or text[:300]}")
        try:
            chain = str(answer["certificateChain"]).encode()
            bundle = str(answer["trustBundle"]).encode()
            certs.load_certs(bundle)
        except (KeyError, TypeError, certs.CertificateError) as err:
            raise IdentityError(f"{self.describe()} answered without a usable chain and bundle: {err}") from None
        self.anchors = bundle
        return Issued(chain=chain, bundle=bundle)


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return {}
