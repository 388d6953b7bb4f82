"""Dapr's state query language, evaluated on the items a store scans (`StateStore.scan`).

A query is JSON (Dapr's `QueryStateAlpha1`):

    {"filter": {"AND": [{"EQ": {"person.org": "Dev Ops"}}, {"IN": {"state": ["CA", "WA"]}}]},
     "sort": [{"key": "person.id", "order": "DESC"}],
     "page": {"limit": 10, "token": "10"}}

`filter` is one of `EQ` (one dotted key and a value), `IN` (one dotted key and an array of
values), `AND` and `OR` (arrays of at least two filters), as in Dapr's
components-contrib `state/query`. A dotted key is a path into the item's value, which
must be a JSON object to match anything. `sort` orders by dotted keys (`ASC`, the
default, or `DESC`); ties keep key order, so pages are stable. `page.limit` cuts the
answer (0 or absent: no limit); the answer's token, given back as `page.token`, starts
the next page. It is the position of the next item, as Dapr's SQL stores make it, and
is only given when more items match. JSON `null` for any of these fields is the field
not given, as Go's decoder reads it into Dapr's query struct.

Every store shares this evaluation, so a query means the same on each of them.
"""

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ottava_sidecar import gojson
from ottava_sidecar.components.state.base import StateItem

ASC, DESC = "ASC", "DESC"


class QueryError(ValueError):
    """A query that is not one of Dapr's query language; the message names what is wrong."""


@dataclass(frozen=True, slots=True)
class Eq:
    key: str
    value: Any


@dataclass(frozen=True, slots=True)
class In:
    key: str
    values: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class And:
    filters: tuple["Filter", ...]


@dataclass(frozen=True, slots=True)
class Or:
    filters: tuple["Filter", ...]


Filter = Eq | In | And | Or


@dataclass(frozen=True, slots=True)
class Sorting:
    key: str
    descending: bool = False


@dataclass(frozen=True, slots=True)
class Query:
    filter: Filter | None = None
    sort: tuple[Sorting, ...] = ()
    limit: int = 0  # 0: every match
    offset: int = 0  # from the page token


@dataclass(slots=True)
class QueryPage:
    items: list[StateItem]
    token: str = ""  # empty: no more matches


def parse(text: str | bytes) -> Query:
    """The query in `text`, or QueryError saying where it is wrong."""
    try:
        document = json.loads(text) if text else {}
    except (ValueError, UnicodeDecodeError) as err:
        raise QueryError(f"query is not JSON: {err}") from None
    if not isinstance(document, dict):
        raise QueryError("query must be a JSON object with 'filter', 'sort' and 'page'")
    document = gojson.given(document)
    unknown = sorted(set(document) - {"filter", "sort", "page"})
    if unknown:
        raise QueryError(f"query has unknown field(s) {', '.join(map(repr, unknown))}: 'filter', 'sort' and 'page' are")
    query_filter = _filter(document["filter"], "filter") if "filter" in document else None
    return Query(query_filter, _sort(document.get("sort", [])), *_page(document.get("page", {})))


def _filter(unit: Any, where: str) -> Filter:
    if not isinstance(unit, dict) or len(unit) != 1:
        raise QueryError(f"{where} must be an object with one of EQ, IN, AND, OR")
    ((operator, operand),) = unit.items()
    where = f"{where}.{operator}"
    if operator in ("EQ", "IN"):
        if not isinstance(operand, dict) or len(operand) != 1:
            raise QueryError(f"{where} must be an object with a single key and its value")
        ((key, value),) = operand.items()
        if not key:
            raise QueryError(f"{where} has an empty key")
        if operator == "EQ":
            return Eq(key, value)
        if not isinstance(value, list):
            raise QueryError(f"{where} value of {key!r} must be an array")
        return In(key, tuple(value))
    if operator in ("AND", "OR"):
        if not isinstance(operand, list) or len(operand) < 2:
            raise QueryError(f"{where} must be an array of at least two filters")
        filters = tuple(_filter(f, f"{where}[{n}]") for n, f in enumerate(operand))
        return And(filters) if operator == "AND" else Or(filters)
    raise QueryError(f"{where}: unsupported filter {operator!r} (EQ, IN, AND, OR are)")


def _sort(sort: Any) -> tuple[Sorting, ...]:
    if not isinstance(sort, list):
        raise QueryError("sort must be an array of {'key': ..., 'order': 'ASC' or 'DESC'}")
    result = []
    for n, entry in enumerate(sort):
        entry = gojson.given(entry)
        if not isinstance(entry, dict) or not isinstance(entry.get("key"), str) or not entry["key"]:
            raise QueryError(f"sort[{n}] must be an object with a non-empty 'key'")
        order = entry.get("order") or ASC
        if order not in (ASC, DESC) or set(entry) - {"key", "order"}:
            raise QueryError(f"sort[{n}] order must be 'ASC' or 'DESC', not {order!r}")
        result.append(Sorting(entry["key"], order == DESC))
    return tuple(result)


def _page(page: Any) -> tuple[int, int]:
    page = gojson.given(page)
    if not isinstance(page, dict) or set(page) - {"limit", "token"}:
        raise QueryError("page must be an object with 'limit' and 'token'")
    limit = page.get("limit", 0)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise QueryError(f"page.limit must be a whole number, 0 or more, not {limit!r}")
    token = page.get("token", "")
    if not isinstance(token, str) or (token and not (token.isascii() and token.isdigit() and len(token) <= 18)):
        raise QueryError(f"page.token {token!r} is not a token a query answered")
    return limit, int(token or 0)


# ---------------------------------------------------------------------------- evaluation

_MISSING = object()
_RANK_MISSING = 4


def _lookup(document: Any, key: str) -> Any:
    for part in key.split("."):
        if not isinstance(document, dict) or part not in document:
            return _MISSING
        document = document[part]
    return document


def _same(a: Any, b: Any) -> bool:
    """JSON equality: 1 equals 1.0, but true is not 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and bool(a == b)


def matches(query_filter: Filter, document: Mapping[str, Any]) -> bool:
    match query_filter:
        case Eq(key, value):
            found = _lookup(document, key)
            return found is not _MISSING and _same(found, value)
        case In(key, values):
            found = _lookup(document, key)
            return found is not _MISSING and any(_same(found, v) for v in values)
        case And(filters):
            return all(matches(f, document) for f in filters)
        case Or(filters):
            return any(matches(f, document) for f in filters)


def _rank(value: Any) -> tuple[int, Any]:
    """Sort key of one value: numbers, then strings, then booleans, then anything else; missing last."""
    if value is _MISSING or value is None:
        return (_RANK_MISSING, 0)
    if isinstance(value, bool):
        return (2, value)
    if isinstance(value, int | float):
        return (0, value)
    if isinstance(value, str):
        return (1, value)
    return (3, json.dumps(value, sort_keys=True))


@dataclass(slots=True)
class Selection:
    """Collects the items a scan yields that match the query, then sorts and pages them."""

    query: Query
    matched: list[tuple[StateItem, Any]] = field(default_factory=list)  # item, its decoded value
    matched_bytes: int = 0  # of the matches' keys and values

    def add(self, items: Iterable[StateItem]) -> None:
        query_filter = self.query.filter
        for item in items:
            document = _decode(item.value)
            if query_filter is not None and not (isinstance(document, dict) and matches(query_filter, document)):
                continue
            self.matched.append((item, document))
            self.matched_bytes += len(item.key) + len(item.value)

    @property
    def enough(self) -> bool:
        """Whether more items cannot change the answer: unsorted, the page and one more are in."""
        query = self.query
        return not query.sort and query.limit > 0 and len(self.matched) > query.offset + query.limit

    def page(self) -> QueryPage:
        matched = sorted(self.matched, key=lambda m: m[0].key)
        for sorting in reversed(self.query.sort):  # stable sorts, last key first
            ranks = {id(item): _rank(_lookup(document, sorting.key)) for item, document in matched}
            matched.sort(key=lambda m: ranks[id(m[0])], reverse=sorting.descending)
            if sorting.descending:  # reverse=True keeps ties in order, but missing values must stay last
                matched.sort(key=lambda m: ranks[id(m[0])][0] == _RANK_MISSING)
        start = self.query.offset
        end = start + self.query.limit if self.query.limit else len(matched)
        token = str(end) if end < len(matched) else ""
        return QueryPage([item for item, _ in matched[start:end]], token)


def _decode(value: bytes) -> Any:
    try:
        return json.loads(value)
    except (ValueError, UnicodeDecodeError):
        return _MISSING  # not JSON: matches no filter, sorts last


def select(query: Query, items: Sequence[StateItem]) -> QueryPage:
    """The page of `items` that `query` answers (for a store that has them all at hand)."""
    selection = Selection(query)
    selection.add(items)
    return selection.page()
