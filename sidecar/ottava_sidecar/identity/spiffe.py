"""SPIFFE IDs of apps: `spiffe://<trust domain>/ns/<namespace>/<app id>` (DESIGN.md, "workload identity").

A certificate carries the ID as its URI SAN, which gRPC reads off the peer's certificate
(`peer_spiffe_id` in the auth context). It also carries a DNS name derived from the app
id and namespace (`server_name`): a caller checks that the sidecar it reached serves the
app it meant to call by verifying that name, as gRPC verifies a host name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SCHEME = "spiffe://"
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_TRUST_DOMAIN = re.compile(r"^[a-z0-9._-]{1,255}$")


class SpiffeIdError(ValueError):
    """A text that is not an app's SPIFFE ID; the message says which part is wrong."""


@dataclass(frozen=True, order=True)
class SpiffeId:
    trust_domain: str
    namespace: str
    app_id: str

    def __post_init__(self) -> None:
        if not _TRUST_DOMAIN.match(self.trust_domain):
            raise SpiffeIdError(f"trust domain {self.trust_domain!r} is not lower-case letters, digits, '.', '-', '_'")
        for part, value in (("namespace", self.namespace), ("app id", self.app_id)):
            if not value or "/" in value or any(c.isspace() or ord(c) < 32 for c in value):
                raise SpiffeIdError(f"{part} {value!r} cannot be part of a SPIFFE ID")

    @classmethod
    def parse(cls, text: str) -> SpiffeId:
        if not text.startswith(_SCHEME):
            raise SpiffeIdError(f"{text[:200]!r} is not a SPIFFE ID (spiffe://<trust domain>/ns/<namespace>/<app id>)")
        parts = text[len(_SCHEME) :].split("/")
        if len(parts) != 4 or parts[1] != "ns":
            raise SpiffeIdError(f"{text[:200]!r} is not of the form spiffe://<trust domain>/ns/<namespace>/<app id>")
        return cls(parts[0], parts[2], parts[3])

    def __str__(self) -> str:
        return f"{_SCHEME}{self.trust_domain}/ns/{self.namespace}/{self.app_id}"

    @property
    def server_name(self) -> str:
        return server_name(self.app_id, self.namespace)


def server_name(app_id: str, namespace: str) -> str:
    """The DNS name a sidecar's certificate carries for its app: `<app id>.<namespace>.ottava.internal`.

    An app id or namespace that is not a DNS label is written as `x--` and its UTF-8 in hex,
    so that every app still has a name a certificate can carry.
    """
    return f"{_dns_label(app_id)}.{_dns_label(namespace)}.ottava.internal"


def _dns_label(text: str) -> str:
    if _LABEL.match(text):
        return text
    encoded = "x--" + text.encode().hex()
    return encoded[:63]
