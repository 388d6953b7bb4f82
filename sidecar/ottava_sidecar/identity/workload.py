"""The sidecar's own workload certificate: obtained at start, renewed at half its life, served and presented.

A `WorkloadIdentity` holds the current key, certificate chain and trust bundle, and gets
a new certificate from its `IdentitySource` (the operator's CA in a cluster, the local CA
standalone) when half of the current one's life has passed, with a fresh key each time. A
failed renewal is retried with backoff while the current certificate is still valid, so
a CA that is briefly away costs nothing.

Calls never fail because of a renewal: the internal server's TLS credentials are dynamic
(gRPC asks `_server_config` at every handshake and gets the new certificate once there is
one), connections made before keep working, and callers build new channels for new calls
while the old ones drain (`invocation.internal.InternalClient`).
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, cast, runtime_checkable

import grpc

from ottava_sidecar import backoff, metrics
from ottava_sidecar.background import BackgroundTask
from ottava_sidecar.identity.issued import IdentityError, Issued, Leaf, now
from ottava_sidecar.identity.spiffe import SpiffeId

__all__ = ["IdentityError", "IdentitySource", "Issued", "KeyAndCertificateSource", "Material", "WorkloadIdentity"]

log = logging.getLogger(__name__)

# Renew when this fraction of the certificate's life has passed, give or take the jitter,
# so that the sidecars of one rollout do not all come back to the CA at the same moment.
RENEW_AT = 0.5
RENEW_JITTER = 0.1


class IdentitySource(Protocol):
    """Where certificates come from: the operator's CA, or the local CA of `ottava run`."""

    def describe(self) -> str:
        """For messages: 'the operator at https://…', 'the local CA in ~/.config/ottava/ca'."""
        ...

    async def issue(self, identity: SpiffeId, csr_pem: bytes) -> Issued:
        """A certificate for the key of `csr_pem`; `IdentityError` naming the reason when refused."""
        ...


@runtime_checkable
class KeyAndCertificateSource(Protocol):
    """A source that makes the key too (the local CA, in a child process: `local_issuer`)."""

    def describe(self) -> str: ...

    async def issue_key_and_certificate(self, identity: SpiffeId) -> tuple[bytes, Issued, Leaf]:
        """(key PEM, what the CA issued, its leaf's facts); `IdentityError` naming the reason when refused."""
        ...


@dataclass(frozen=True)
class Material:
    key: bytes
    chain: bytes
    bundle: bytes
    leaf: Leaf
    obtained: datetime.datetime

    def renew_after(self, rng: random.Random) -> datetime.datetime:
        # From when it was obtained, not from its notBefore, which CAs set a little in the past.
        life = self.leaf.not_after - max(self.obtained, self.leaf.not_before)
        fraction = RENEW_AT * (1 + RENEW_JITTER * rng.uniform(-1.0, 1.0))
        return self.obtained + life * fraction


class WorkloadIdentity(BackgroundTask):
    """The sidecar's certificate; `start()` (after `obtain`) renews it in the background until `stop()`."""

    name = "identity-renewal"

    def __init__(self, identity: SpiffeId, source: IdentitySource | KeyAndCertificateSource) -> None:
        super().__init__()
        self.requested = identity
        self.source = source
        self._material: Material | None = None
        self.generation = 0  # goes up with every new certificate
        self._served_generation = 0
        self._rng = random.Random()
        self._listeners: list[Callable[[str | None], None]] = []

    @property
    def material(self) -> Material:
        if self._material is None:
            raise IdentityError("the sidecar has no workload certificate yet")
        return self._material

    @property
    def identity(self) -> SpiffeId:
        """The identity certified (the CA may set the trust domain)."""
        return self.material.leaf.identity

    async def obtain(self) -> Material:
        """A new key and certificate, in use from now on; `IdentityError` when the source refuses."""
        try:
            if isinstance(self.source, KeyAndCertificateSource):
                key, issued, leaf = await self.source.issue_key_and_certificate(self.requested)
            else:
                key, issued, leaf = await self._request(self.source)
        except IdentityError:
            _count_renewal("failure")
            raise
        if (leaf.identity.namespace, leaf.identity.app_id) != (self.requested.namespace, self.requested.app_id):
            _count_renewal("failure")
            raise IdentityError(
                f"{self.source.describe()} certified {leaf.identity}, not app {self.requested.app_id!r}"
            )
        self._material = Material(key, issued.chain, issued.bundle, leaf, now())
        self.generation += 1
        _count_renewal("success", expiry=leaf.not_after.timestamp())
        log.info(
            "workload certificate obtained",
            extra={"spiffeId": str(leaf.identity), "serial": f"{leaf.serial:x}", "expires": leaf.not_after.isoformat()},
        )
        return self._material

    async def _request(self, source: IdentitySource) -> tuple[bytes, Issued, Leaf]:
        """A fresh key, and a certificate for it from `source`, checked."""
        from ottava_sidecar.identity import certs  # late: a standalone sidecar never needs cryptography

        key = certs.new_key()
        try:
            issued = await source.issue(self.requested, certs.new_request(key, self.requested))
            leaf = certs.Leaf.read(issued.chain)
            certs.load_certs(issued.bundle)
        except certs.CertificateError as err:
            raise IdentityError(f"{source.describe()} answered with an unusable certificate: {err}") from None
        return certs.key_pem(key), issued, leaf

    # --- TLS credentials -------------------------------------------------------------

    def server_credentials(self) -> grpc.ServerCredentials:
        """mTLS-only credentials that follow renewals: a client without a certificate from the bundle is refused."""
        self._served_generation = self.generation
        # grpc's stubs say the fetcher returns a configuration; gRPC itself takes None as "unchanged".
        fetcher = cast(Callable[[], grpc.ServerCertificateConfiguration], self._server_config)
        return grpc.dynamic_ssl_server_credentials(
            self._server_configuration(), fetcher, require_client_authentication=True
        )

    def _server_configuration(self) -> grpc.ServerCertificateConfiguration:
        m = self.material
        return grpc.ssl_server_certificate_configuration([(m.key, m.chain)], root_certificates=m.bundle)

    def _server_config(self) -> grpc.ServerCertificateConfiguration | None:
        # Called by gRPC on each handshake, from its own thread: None keeps the current one.
        if self._served_generation == self.generation:
            return None
        self._served_generation = self.generation
        return self._server_configuration()

    def channel_credentials(self) -> grpc.ChannelCredentials:
        m = self.material
        return grpc.ssl_channel_credentials(root_certificates=m.bundle, private_key=m.key, certificate_chain=m.chain)

    # --- renewal ---------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            due = self.material.renew_after(self._rng)
            await asyncio.sleep(max(0.0, (due - now()).total_seconds()))
            await self._renew()

    async def _renew(self) -> None:
        delays = backoff.IDENTITY_RENEWAL.delays()
        expired = False
        while True:
            try:
                await self.obtain()
                if expired:
                    self._tell(None)
                return
            except IdentityError as err:
                left = (self.material.leaf.not_after - now()).total_seconds()
                delay = min(next(delays), max(left / 4, 0.5))
                if left <= 0 and not expired:
                    # Peers refuse an expired certificate: say so (readiness), keep asking.
                    expired = True
                    self._tell(f"the workload certificate expired at {self.material.leaf.not_after:%H:%M:%S}Z: {err}")
                log.warning(
                    "renewing the workload certificate failed; retrying in %.1fs (the current one is valid for %.0fs): %s",
                    delay,
                    left,
                    err,
                )
                await asyncio.sleep(delay)

    def on_trouble(self, listener: Callable[[str | None], None]) -> None:
        """`listener(reason)` when the certificate expired unrenewed; `listener(None)` once renewed again."""
        self._listeners.append(listener)

    def _tell(self, reason: str | None) -> None:
        for listener in self._listeners:
            listener(reason)


def _count_renewal(outcome: str, expiry: float | None = None) -> None:
    # The first certificate is obtained before the ready line: counted once prometheus_client
    # is loaded (`metrics.once_defined`), which start-up does not wait for.
    def count() -> None:
        metrics.IDENTITY_RENEWALS.labels(outcome).inc()
        if expiry is not None:
            metrics.IDENTITY_CERT_EXPIRY.set(expiry)

    metrics.once_defined(count)
