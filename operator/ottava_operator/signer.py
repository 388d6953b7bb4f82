"""The signer: `POST /v1/sign` on the identity port, where sidecars get their certificates.

A sidecar proves who it is with its pod's projected ServiceAccount token (audience
`ottava.io/identity`, bound to the pod). The signer:

1. checks the token with a TokenReview for that audience: it must be a service account's,
   bound to a pod (the pod's name and uid are in the review's `extra`) (else 401);
2. reads that pod: it must exist with that uid, be an injected pod, run as that service
   account, and its `ottava.io/app-id` label must be the app id asked for (else 403);
3. signs the request's public key for `spiffe://<trust domain>/ns/<namespace>/<app id>`,
   the trust domain being the pod's Configuration's `spec.accessControl.trustDomain`.

Nothing of the signing request but its key is used: the name is the signer's decision.
The decisions (`parse_request`, `caller_of`, `check_pod`, `trust_domain`) are pure
functions of the documents read. Every replica serves, with a serving certificate it
issues itself from the identity CA (for the webhook Service's names), reissued when the
signing root changes or a third of its life is left.
"""

from __future__ import annotations

import datetime
import json
import logging
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from ottava_sidecar import contract
from ottava_sidecar.identity import certs
from ottava_sidecar.identity.spiffe import SpiffeId, SpiffeIdError

from ottava_operator.identity_ca import CaState, IdentityCa
from ottava_operator.settings import OperatorSettings

log = logging.getLogger(__name__)

SERVING_TTL = datetime.timedelta(days=30)
RENEW_WHEN_LEFT = 1 / 3
MAX_BODY = 64 * 1024
EXTRA_POD_NAME = "authentication.kubernetes.io/pod-name"
EXTRA_POD_UID = "authentication.kubernetes.io/pod-uid"
_SA_PREFIX = "system:serviceaccount:"


class SignError(Exception):
    """A refused request: the HTTP status and a message naming what is wrong."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class SignRequest:
    public_key: ec.EllipticCurvePublicKey
    app_id: str


@dataclass(frozen=True)
class Caller:
    """Who the token says it is: a service account, in a pod."""

    namespace: str
    service_account: str
    pod_name: str
    pod_uid: str

    @property
    def pod(self) -> str:
        return f"{self.namespace}/{self.pod_name}"


def parse_request(body: bytes) -> SignRequest:
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise SignError(400, 'the body is not JSON: send {"csr": "<PEM>", "appId": "<app id>"}') from None
    if not isinstance(document, dict):
        raise SignError(400, 'the body is not a JSON object: send {"csr": "<PEM>", "appId": "<app id>"}')
    csr, app_id = document.get("csr"), document.get("appId")
    if not isinstance(app_id, str) or not app_id:
        raise SignError(400, "appId is missing or not a string")
    if not isinstance(csr, str) or not csr:
        raise SignError(400, "csr is missing or not a string")
    try:
        key = certs.request_public_key(csr.encode())
    except certs.CertificateError as err:
        raise SignError(400, f"csr: {err}") from None
    return SignRequest(key, app_id)


def caller_of(review_status: dict[str, Any]) -> Caller:
    """The caller a TokenReview's status names, or 401 saying why the token is not accepted."""
    if not review_status.get("authenticated"):
        error = review_status.get("error") or "not authenticated"
        raise SignError(401, f"the token is not accepted for audience {contract.IDENTITY_AUDIENCE}: {error}")
    if contract.IDENTITY_AUDIENCE not in (review_status.get("audiences") or []):
        raise SignError(401, f"the token is not for audience {contract.IDENTITY_AUDIENCE}")
    user = review_status.get("user") or {}
    username = str(user.get("username") or "")
    parts = username.removeprefix(_SA_PREFIX).split(":")
    if not username.startswith(_SA_PREFIX) or len(parts) != 2:
        raise SignError(401, f"the token is {username!r}'s, not a service account's")
    extra = user.get("extra") or {}
    pod_name, pod_uid = ((extra.get(key) or [""])[0] for key in (EXTRA_POD_NAME, EXTRA_POD_UID))
    if not pod_name or not pod_uid:
        raise SignError(401, f"the token of {username} is not bound to a pod (use the pod's projected token)")
    return Caller(parts[0], parts[1], pod_name, pod_uid)


def check_pod(pod: dict[str, Any] | None, caller: Caller, app_id: str) -> None:
    """403 unless the pod behind the token is an injected pod of the app id asked for."""
    if pod is None:
        raise SignError(403, f"pod {caller.pod} does not exist")
    metadata = pod.get("metadata") or {}
    if metadata.get("uid") != caller.pod_uid:
        raise SignError(403, f"pod {caller.pod} is not the pod the token was issued to (its uid differs)")
    labels = metadata.get("labels") or {}
    if labels.get(contract.LABEL_SIDECAR_INJECTED) != "true":
        raise SignError(
            403, f"pod {caller.pod} is not an injected pod ({contract.LABEL_SIDECAR_INJECTED} is not 'true')"
        )
    account = (pod.get("spec") or {}).get("serviceAccountName") or "default"
    if account != caller.service_account:
        raise SignError(
            403, f"pod {caller.pod} runs as service account {account!r}, the token is {caller.service_account!r}'s"
        )
    label = labels.get(contract.LABEL_APP_ID)
    if label != app_id:
        raise SignError(
            403, f"pod {caller.pod} asked for app id {app_id!r}, but its {contract.LABEL_APP_ID} label is {label!r}"
        )


def trust_domain(configuration: dict[str, Any] | None) -> str:
    """The trust domain of a pod's Configuration (`spec.accessControl.trustDomain`)."""
    access = ((configuration or {}).get("spec") or {}).get("accessControl") or {}
    return str(access.get("trustDomain") or contract.DEFAULT_TRUST_DOMAIN)


def _rfc3339(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).isoformat().replace("+00:00", "Z")


class ServingCertificate:
    """The signer's TLS certificate, one SSL context whose certificate is swapped in place."""

    def __init__(self, names: tuple[str, ...], directory: Path) -> None:
        self.names = names
        self.directory = directory
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._issuer: bytes = b""
        self._expires: datetime.datetime | None = None
        self._lifetime = SERVING_TTL

    @property
    def loaded(self) -> bool:
        return self._expires is not None

    def refresh(self, state: CaState, now: datetime.datetime | None = None) -> bool:
        """Reissue when the signing certificate changed or a third of the life is left; True when it did."""
        now = now or certs.now()
        if (
            self._issuer == state.issuer
            and self._expires is not None
            and self._expires - now >= self._lifetime * RENEW_WHEN_LEFT
        ):
            return False
        cert, key = certs.issue_server(state.issuer, state.issuer_key, self.names, SERVING_TTL)
        leaf = certs.load_certs(cert)[0]
        self.directory.mkdir(parents=True, exist_ok=True)
        cert_file, key_file = self.directory / "identity.crt", self.directory / "identity.key"
        for path, content in ((cert_file, cert + state.chain), (key_file, key)):
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(content)
            tmp.chmod(0o600)
            tmp.replace(path)
        # New handshakes use the new certificate; connections open keep theirs.
        self.context.load_cert_chain(cert_file, key_file)
        self._issuer = state.issuer
        self._expires = leaf.not_valid_after_utc
        self._lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
        log.info("identity signer: serving certificate issued", extra={"expires": _rfc3339(leaf.not_valid_after_utc)})
        return True


class Signer:
    def __init__(self, settings: OperatorSettings, api: client.ApiClient, ca: IdentityCa) -> None:
        self.settings = settings
        self.ca = ca
        self.core = client.CoreV1Api(api)
        self.auth = client.AuthenticationV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.api = api
        self.serving = ServingCertificate(settings.service_names, settings.cert_dir / "identity")
        self._runner: web.AppRunner | None = None

    def ca_checked(self, state: CaState) -> None:
        self.serving.refresh(state)

    async def start(self) -> None:
        if self.ca.state is not None:
            self.serving.refresh(self.ca.state)
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_post(contract.IDENTITY_SIGN_PATH, self.handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(
            self._runner, self.settings.webhook_address, self.settings.identity_port, ssl_context=self.serving.context
        )
        await site.start()
        log.info("identity signer serving", extra={"port": self.settings.identity_port})

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def handle(self, request: web.Request) -> web.Response:
        remote = request.remote or ""
        try:
            if request.content_length is not None and request.content_length > MAX_BODY:
                raise SignError(400, f"the body is larger than {MAX_BODY} bytes")
            header = request.headers.get("Authorization", "")
            if not header.startswith("Bearer ") or not header[7:].strip():
                raise SignError(401, "no bearer token: send the pod's projected token for audience ottava.io/identity")
            answer = await self.sign(header[7:].strip(), await request.read())
        except SignError as err:
            log.warning(
                "identity signer: refused a certificate",
                extra={"status": err.status, "reason": err.message, "remote": remote},
            )
            return web.json_response({"error": err.message}, status=err.status)
        return web.json_response(answer)

    async def sign(self, token: str, body: bytes) -> dict[str, str]:
        state = self.ca.state
        if state is None:
            raise SignError(503, "the identity CA is not ready yet; retry")
        wanted = parse_request(body)
        caller = caller_of(await self._review(token))
        pod = await self._read(self.core.read_namespaced_pod, caller.pod_name, caller.namespace)
        check_pod(pod, caller, wanted.app_id)
        assert pod is not None
        domain = trust_domain(await self._configuration(pod, caller.namespace))
        try:
            identity = SpiffeId(domain, caller.namespace, wanted.app_id)
        except SpiffeIdError as err:
            raise SignError(400, str(err)) from None
        leaf = certs.issue_workload(
            state.issuer, state.issuer_key, wanted.public_key, identity, self.settings.workload_cert_ttl
        )
        issued = certs.Leaf.read(leaf)
        log.info(
            "identity signer: issued a workload certificate",
            extra={
                "namespace": caller.namespace,
                "pod": caller.pod_name,
                "spiffeId": str(identity),
                "serial": f"{issued.serial:x}",
                "expiresAt": _rfc3339(issued.not_after),
            },
        )
        return {
            "spiffeId": str(identity),
            "certificateChain": (leaf + state.chain).decode(),
            "trustBundle": state.trust_bundle.decode(),
            "expiresAt": _rfc3339(issued.not_after),
        }

    async def _review(self, token: str) -> dict[str, Any]:
        body = client.V1TokenReview(spec=client.V1TokenReviewSpec(token=token, audiences=[contract.IDENTITY_AUDIENCE]))
        try:
            review = await self.auth.create_token_review(body)
        except ApiException as err:
            raise SignError(503, f"cannot review the token: the apiserver answered {err.status} {err.reason}") from None
        status: dict[str, Any] = self.api.sanitize_for_serialization(review.status) or {}
        return status

    async def _configuration(self, pod: dict[str, Any], namespace: str) -> dict[str, Any] | None:
        name = ((pod.get("metadata") or {}).get("annotations") or {}).get(contract.ANNOTATION_CONFIG)
        if not name:
            return None
        try:
            found: dict[str, Any] = await self.custom.get_namespaced_custom_object(
                contract.API_GROUP, contract.API_VERSION, namespace, "configurations", name
            )
        except ApiException as err:
            if err.status == 404:
                # The sidecar runs without it too (and says so): the default trust domain.
                return None
            raise SignError(503, f"cannot read Configuration {namespace}/{name}: {err.status} {err.reason}") from None
        return found

    async def _read(self, read: Any, name: str, namespace: str) -> dict[str, Any] | None:
        try:
            found = await read(name, namespace)
        except ApiException as err:
            if err.status == 404:
                return None
            raise SignError(503, f"cannot read {namespace}/{name}: {err.status} {err.reason}") from None
        document: dict[str, Any] = self.api.sanitize_for_serialization(found)
        return document
