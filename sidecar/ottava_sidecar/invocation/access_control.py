"""Which apps may invoke this app: `Configuration.spec.accessControl`, enforced by the callee.

Dapr's schema and semantics: a policy per calling app (matched on its app id, trust domain
and namespace, all taken from the caller's certificate), rules per operation and HTTP
verb, and default actions for what no rule names. The internal server asks `check` for
every call it receives, before the app sees it.

STUB: replaced by the real policy (this file's owner fills it in); until then it allows all.
"""

from __future__ import annotations

from dataclasses import dataclass

from ottava_sidecar.identity.spiffe import SpiffeId
from ottava_sidecar.resources.models import AccessControl


@dataclass(frozen=True)
class Denial:
    """Why a call was refused: `rule` names the rule that decided, `message` is what the caller reads."""

    rule: str
    message: str


@dataclass(frozen=True)
class AccessPolicy:
    source: str = ""  # e.g. "Configuration appconfig", for messages
    active: bool = False

    @classmethod
    def from_configuration(cls, spec: AccessControl | None, source: str) -> AccessPolicy:
        return cls(source, active=spec is not None)

    def check(self, caller: SpiffeId | None, operation: str, verb: str) -> Denial | None:
        """None when `caller` may call `operation` with `verb` (empty over gRPC), else the Denial."""
        return None
