"""Which apps may invoke this app: `Configuration.spec.accessControl`, enforced by the callee.

Dapr's schema and semantics: a policy per calling app (matched on its app id, trust domain
and namespace, all taken from the caller's certificate), rules per operation and HTTP
verb, and default actions for what no rule names. The internal server asks `check` for
every call it receives, before the app sees it.

What decides, most specific first (Dapr's "policy priority"):

1. the caller's policy's first operation rule whose name matches the call's method and,
   over HTTP, whose `httpVerb` lists the call's verb or `*` (a gRPC call has no verb:
   the first rule whose name matches decides, its verbs unread);
2. that policy's `defaultAction`;
3. the global `defaultAction`; unset, it is deny when policies are listed, else allow.

A caller without a verified identity (mTLS off) gets the global default only. Operation
names get a leading '/' when missing, as in Dapr; over HTTP they match without regard
to case (Dapr lower-cases both sides for HTTP apps). Where Dapr keeps only the first of
several rules with the same name, every rule is read here, in order, so that
`{name: /admin, httpVerb: [GET], action: allow}` and `{name: /admin, httpVerb: [POST],
action: deny}` both take effect.

The policy is compiled once per Configuration: a check is one dict lookup and a few
precompiled regular expressions, and with no accessControl it returns at once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ottava_sidecar import metrics
from ottava_sidecar.identity.spiffe import SpiffeId
from ottava_sidecar.resources.models import AccessControl, AppOperation, AppPolicy

# What decided a denial, the `decided_by` label of metrics.ACCESS_DENIALS.
BY_OPERATION = "operation"
BY_APP_DEFAULT = "app-default"
BY_DEFAULT = "default"
BY_NO_IDENTITY = "no-identity"


@dataclass(frozen=True)
class Denial:
    """Why a call was refused: `rule` names the rule that decided, `message` is what the caller reads."""

    rule: str
    message: str


def compile_operation(name: str) -> str:
    """The regular expression of an operation name, for methods that start with '/'.

    A segment `**` matches any number of segments (none included), `*` inside a segment
    any characters but '/'; a last segment `*` also matches the path without it, as
    Dapr's matcher does (`/orders/*` covers `/orders` and `/orders/1`, not
    `/orders/1/items`).
    """
    segments = _with_slash(name).split("/")[1:]
    parts: list[str] = []
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == "**":
            parts.append("(?:/.*)?")
        elif segment == "*" and last:
            parts.append("(?:/[^/]*)?")
        else:
            parts.append("/" + "[^/]*".join(re.escape(piece) for piece in re.split(r"\*+", segment)))
    return "".join(parts)


def _with_slash(operation: str) -> str:
    return operation if operation.startswith("/") else "/" + operation


@dataclass(frozen=True)
class _Rule:
    where: str  # "policies[0].operations[1]"
    described: str  # "name /admin/**, httpVerb [POST], action deny"
    exact: re.Pattern[str]  # gRPC: case matters
    folded: re.Pattern[str]  # HTTP: case does not
    verbs: frozenset[str]  # upper case; "*" for every verb
    allow: bool

    @classmethod
    def of(cls, where: str, operation: AppOperation) -> _Rule:
        pattern = compile_operation(operation.name)
        return cls(
            where,
            f"name {operation.name}, httpVerb [{', '.join(operation.http_verb)}], action {operation.action}",
            re.compile(pattern),
            re.compile(pattern, re.IGNORECASE),
            frozenset(verb.upper() for verb in operation.http_verb),
            operation.action == "allow",
        )

    def matches(self, operation: str, verb: str) -> bool:
        if not verb:
            return self.exact.fullmatch(operation) is not None
        return ("*" in self.verbs or verb in self.verbs) and self.folded.fullmatch(operation) is not None


@dataclass(frozen=True)
class _CallerPolicy:
    where: str  # "policies[0]"
    app_id: str
    default_allow: bool | None  # None: the global default
    rules: tuple[_Rule, ...]

    @classmethod
    def of(cls, index: int, policy: AppPolicy) -> _CallerPolicy:
        where = f"policies[{index}]"
        default = None if policy.default_action is None else policy.default_action == "allow"
        rules = tuple(_Rule.of(f"{where}.operations[{i}]", op) for i, op in enumerate(policy.operations))
        return cls(where, policy.app_id, default, rules)


@dataclass(frozen=True)
class AccessPolicy:
    source: str = ""  # e.g. "Configuration appconfig", for messages
    active: bool = False  # False: every caller may call everything, `check` returns at once
    default_allow: bool = True
    default_described: str = "defaultAction allow"
    _callers: dict[tuple[str, str, str], _CallerPolicy] = field(default_factory=dict)

    @classmethod
    def from_configuration(cls, spec: AccessControl | None, source: str) -> AccessPolicy:
        if spec is None:
            return cls(source)
        action = spec.effective_default_action
        described = (
            f"defaultAction {action}"
            if spec.default_action is not None
            else f"defaultAction unset, so {action} as policies are {'listed' if spec.policies else 'not listed'}"
        )
        callers = {(p.app_id, p.namespace, p.trust_domain): _CallerPolicy.of(i, p) for i, p in enumerate(spec.policies)}
        return cls(
            source,
            active=bool(callers) or action == "deny",
            default_allow=action == "allow",
            default_described=described,
            _callers=callers,
        )

    def check(self, caller: SpiffeId | None, operation: str, verb: str) -> Denial | None:
        """None when `caller` may call `operation` with `verb` (empty over gRPC), else the Denial."""
        if not self.active:
            return None
        if caller is None:
            if self.default_allow:
                return None
            return self._deny(
                None,
                operation,
                verb,
                BY_NO_IDENTITY,
                "defaultAction",
                f"{self.default_described}; a caller "
                "without a verified identity (mTLS is off) gets the global default only",
            )
        policy = self._callers.get((caller.app_id, caller.namespace, caller.trust_domain))
        if policy is None:
            if self.default_allow:
                return None
            return self._deny(
                caller,
                operation,
                verb,
                BY_DEFAULT,
                "defaultAction",
                f"{self.default_described}; no policy names "
                f"appId {caller.app_id} in namespace {caller.namespace}, trustDomain {caller.trust_domain}",
            )
        method = _with_slash(operation)
        verb = verb.upper()
        for rule in policy.rules:
            if rule.matches(method, verb):
                return (
                    None
                    if rule.allow
                    else self._deny(caller, operation, verb, BY_OPERATION, rule.where, rule.described)
                )
        if policy.default_allow is not None:
            if policy.default_allow:
                return None
            return self._deny(
                caller,
                operation,
                verb,
                BY_APP_DEFAULT,
                f"{policy.where}.defaultAction",
                f"appId {policy.app_id}, action deny; none of its operations matched",
            )
        if self.default_allow:
            return None
        return self._deny(
            caller,
            operation,
            verb,
            BY_DEFAULT,
            "defaultAction",
            f"{self.default_described}; {policy.where} has no defaultAction and none of its operations matched",
        )

    def _deny(
        self, caller: SpiffeId | None, operation: str, verb: str, decided_by: str, rule: str, described: str
    ) -> Denial:
        metrics.ACCESS_DENIALS.labels(caller.app_id if caller else "", decided_by).inc()
        who = f'app "{caller.app_id}" ({caller})' if caller else "a caller without a verified identity"
        call = f"{verb or 'gRPC'} {_with_slash(operation)}"
        return Denial(rule, f"access control of {self.source} denied {who} {call}: {rule} ({described})")
