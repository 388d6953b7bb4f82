"""What a CA issues, as the sidecar holds it: PEM bytes and the leaf's facts.

Nothing here needs the `cryptography` package (nor grpc), so a standalone sidecar, whose
certificates are made in a child process (`local_issuer`), never loads it.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from ottava_sidecar.identity.spiffe import SpiffeId


class IdentityError(Exception):
    """No certificate could be obtained; the message says from where and why."""


@dataclass(frozen=True)
class Issued:
    """What a CA answers: the certificate chain (leaf first) and the roots to trust."""

    chain: bytes
    bundle: bytes


@dataclass(frozen=True)
class Leaf:
    """What a peer needs to know of a workload certificate (`certs.Leaf.read` reads it from one)."""

    identity: SpiffeId
    not_before: datetime.datetime
    not_after: datetime.datetime
    serial: int

    @classmethod
    def read(cls, chain_pem: bytes) -> Leaf:
        """From a certificate chain, leaf first; `certs.CertificateError` if it is no workload certificate."""
        from ottava_sidecar.identity import certs  # late: the one part that needs cryptography

        return certs.read_leaf(chain_pem)


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)
