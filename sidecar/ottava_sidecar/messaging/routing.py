"""Routing rules of a subscription: which app route gets an event.

Dapr writes rules in CEL over the CloudEvent (`event.type == "widget"`). Ottava
understands the subset that routing rules use in practice: `event.<attribute>` paths
(into `event.data` too), string/number/bool/null literals, `== != < <= > >=`,
`&& || !`, parentheses, and the string methods `startsWith`, `endsWith`, `contains`.
An expression outside that subset is rejected when the subscription is read, naming
the expression; one that reads a missing attribute does not match.
"""

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Expression", "RuleError", "compile_rule"]

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<number>\d+(?:\.\d+)?)
      | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
      | (?P<op>==|!=|<=|>=|&&|\|\||[<>!().,])
      | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
    )""",
    re.VERBOSE,
)
_METHODS: dict[str, Callable[[str, str], bool]] = {
    "startsWith": str.startswith,
    "endsWith": str.endswith,
    "contains": lambda text, part: part in text,
}
_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "==": lambda a, b: bool(a == b),
    "!=": lambda a, b: bool(a != b),
    "<": lambda a, b: bool(a < b),
    "<=": lambda a, b: bool(a <= b),
    ">": lambda a, b: bool(a > b),
    ">=": lambda a, b: bool(a >= b),
}


class RuleError(ValueError):
    pass


class _Missing(Exception):
    """An attribute the event does not have: the rule does not match."""


Node = Callable[[Mapping[str, Any]], Any]


@dataclass(frozen=True)
class Expression:
    text: str
    _evaluate: Node

    def matches(self, event: Mapping[str, Any]) -> bool:
        try:
            return self._evaluate({"event": event}) is True
        except (_Missing, TypeError):
            return False


def compile_rule(text: str) -> Expression:
    tokens = _tokenize(text)
    parser = _Parser(text, tokens)
    node = parser.expression()
    if parser.position != len(tokens):
        raise RuleError(f"routing rule {text!r}: unexpected {tokens[parser.position][1]!r}")
    return Expression(text, node)


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    position = 0
    while position < len(text):
        if text[position:].strip() == "":
            break
        match = _TOKEN.match(text, position)
        if match is None or match.lastgroup is None:
            raise RuleError(f"routing rule {text!r}: cannot read {text[position:].strip()!r}")
        tokens.append((match.lastgroup, match.group(match.lastgroup)))
        position = match.end()
    return tokens


class _Parser:
    def __init__(self, text: str, tokens: list[tuple[str, str]]) -> None:
        self.text = text
        self.tokens = tokens
        self.position = 0

    def _peek(self) -> tuple[str, str] | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def _take(self, value: str) -> bool:
        token = self._peek()
        if token is not None and token[0] in ("op", "name") and token[1] == value:
            self.position += 1
            return True
        return False

    def _fail(self, what: str) -> RuleError:
        token = self._peek()
        found = repr(token[1]) if token else "the end"
        return RuleError(f"routing rule {self.text!r}: expected {what}, found {found}")

    def expression(self) -> Node:
        left = self._and()
        while self._take("||"):
            right = self._and()
            left = (lambda a, b: lambda env: a(env) is True or b(env) is True)(left, right)
        return left

    def _and(self) -> Node:
        left = self._unary()
        while self._take("&&"):
            right = self._unary()
            left = (lambda a, b: lambda env: a(env) is True and b(env) is True)(left, right)
        return left

    def _unary(self) -> Node:
        if self._take("!"):
            inner = self._unary()
            return lambda env: inner(env) is not True
        return self._comparison()

    def _comparison(self) -> Node:
        left = self._primary()
        token = self._peek()
        if token is not None and token[0] == "op" and token[1] in _COMPARE:
            self.position += 1
            compare = _COMPARE[token[1]]
            right = self._primary()
            return lambda env: compare(left(env), right(env))
        return left

    def _primary(self) -> Node:
        token = self._peek()
        if token is None:
            raise self._fail("a value")
        kind, value = token
        if kind == "number":
            self.position += 1
            number = float(value) if "." in value else int(value)
            return lambda env: number
        if kind == "string":
            self.position += 1
            text = bytes(value[1:-1], "utf-8").decode("unicode_escape")
            return lambda env: text
        if kind == "op" and value == "(":
            self.position += 1
            inner = self.expression()
            if not self._take(")"):
                raise self._fail("')'")
            return inner
        if kind == "name":
            self.position += 1
            literals = {"true": True, "false": False, "null": None}
            if value in literals:
                constant = literals[value]
                return lambda env: constant
            return self._path([value])
        raise self._fail("a value")

    def _path(self, parts: list[str]) -> Node:
        while self._take("."):
            token = self._peek()
            if token is None or token[0] != "name":
                raise self._fail("an attribute name after '.'")
            self.position += 1
            if self._take("("):
                return self._method(parts, token[1])
            parts.append(token[1])
        return _lookup(tuple(parts))

    def _method(self, parts: list[str], name: str) -> Node:
        method = _METHODS.get(name)
        if method is None:
            raise RuleError(f"routing rule {self.text!r}: unknown function {name!r} (known: {', '.join(_METHODS)})")
        argument = self.expression()
        if not self._take(")"):
            raise self._fail("')'")
        target = _lookup(tuple(parts))

        def call(env: Mapping[str, Any]) -> bool:
            subject, part = target(env), argument(env)
            if not isinstance(subject, str) or not isinstance(part, str):
                raise TypeError(name)
            return method(subject, part)

        return call


def _lookup(parts: tuple[str, ...]) -> Node:
    def get(env: Mapping[str, Any]) -> Any:
        value: Any = env
        for part in parts:
            if not isinstance(value, Mapping) or part not in value:
                raise _Missing(".".join(parts))
            value = value[part]
        return value

    return get
