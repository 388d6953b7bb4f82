"""Inputs a careless or hostile client sends, as hypothesis strategies.

Pools are small on purpose: keys and resources drawn from a handful of values collide,
so a sequence overwrites, deletes and re-creates the same items, where bugs live.
Everything a machine names is prefixed with its own tag (see `Tagged`), so the
sequences of one run never see each other's items in the shared sidecar.
"""

import math
import re

from hypothesis import strategies as st


class Repeated(str):
    """A long run of one character, shown as `'X' * 20000` in hypothesis's reports."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"{self[0]!r} * {len(self)}"


def repeated(char: str, count: int) -> str:
    return Repeated(char * count)


MAX_TTL_SECONDS = 2**31 - 1  # limits.MAX_TTL_SECONDS (and MAX_LOCK_EXPIRY_SECONDS): Dapr's int32
INT32_MIN = -(2**31)

# Key suffixes (after the machine's tag). None stands for the empty key.
KEY_SUFFIXES: list[str | None] = [
    "a",
    "b",
    None,
    "ключ-🔑",
    "with space",
    "cr\r\nlf",
    "slash/key",
    "pct%2Fkey",
    "dot/../x",
    "a||b",  # refused: `||` separates the app id from the key
    repeated("L", 5_000),  # fits in a URL
    repeated("X", 20_000),  # does not fit in a URL; fine in a body
]
keys = st.one_of(
    st.sampled_from(KEY_SUFFIXES),
    st.text(st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=12),
)

# ttlInSeconds as Dapr reads it: strconv.ParseInt into an int32 number of seconds. The
# valid ones are long enough that nothing expires while a sequence runs.
VALID_TTLS = ["", "-1", "3600", "+7200", str(MAX_TTL_SECONDS)]
INVALID_TTLS = [
    "-2",
    str(INT32_MIN),
    str(MAX_TTL_SECONDS + 1),
    str(2**63),
    "99999999999999999999999999",
    "1.5",
    "1e3",
    "NaN",
    "nan",
    "inf",
    "-Infinity",
    "soon",
    " 60",
    "1_000",
    "٣٠",  # Arabic-Indic digits: Python's int() reads them, Go's ParseInt does not
    "0x10",
]
ttls = st.one_of(st.none(), st.sampled_from(VALID_TTLS), st.sampled_from(INVALID_TTLS))
_GO_INT = re.compile(r"[+-]?[0-9]+")


def ttl_is_valid(ttl: str | None) -> bool:
    """Whether Dapr would accept this ttlInSeconds (and so must Ottava): -1 … 2^31-1, in ASCII digits."""
    if ttl is None or ttl == "":
        return True
    if not _GO_INT.fullmatch(ttl):
        return False
    return -1 <= int(ttl) <= MAX_TTL_SECONDS


# JSON values as an app sends them over HTTP; `finite_json` only has what JSON allows.
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
finite_json = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=6,
)
_non_finite = st.sampled_from([math.nan, math.inf, -math.inf])
json_values = st.one_of(
    finite_json,
    finite_json,
    finite_json,
    _non_finite,
    st.lists(st.one_of(_scalars, _non_finite), min_size=1, max_size=3),
    st.dictionaries(st.sampled_from(["n", "m"]), _non_finite, min_size=1),
)


def has_non_finite(value: object) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, list):
        return any(has_non_finite(v) for v in value)
    if isinstance(value, dict):
        return any(has_non_finite(v) for v in value.values())
    return False


# Raw values over gRPC: any bytes, including ones that look like (bad) JSON.
raw_values = st.one_of(
    st.binary(max_size=48),
    st.sampled_from([b"", b"NaN", b"Infinity", b'{"x": -Infinity}', b"\xff\xfe", b'"quoted"', b"[1, 2]", b"null"]),
)

# Which ETag to send: none, the item's current one, an old one, or one no store issues.
ETAG_CHOICES = ["none", "none", "current", "current", "stale", "garbage", "empty"]
GARBAGE_ETAGS = ["abc", "-1", "1.5", "99999999999999999999", "x 7", "é", "NaN"]
etag_choices = st.sampled_from(ETAG_CHOICES)
garbage_etags = st.sampled_from(GARBAGE_ETAGS)

# Transaction operation types: Dapr's two, and what a typo or an attacker sends.
OPERATION_TYPES = ["upsert", "upsert", "upsert", "delete", "delete", "get", "", "UPSERT", "Delete", "upsert "]
operation_types = st.sampled_from(OPERATION_TYPES)

# Store names: the configured one, and ones no component has.
MISSING_STORES = ["", "nostore", "Statestore", "store/../x", "仓库"]

# Lock expiry over gRPC (an int32 field) and over HTTP (any JSON number, or worse).
GRPC_EXPIRIES = [INT32_MIN, -1, 0, 600, 3600, MAX_TTL_SECONDS]
HTTP_EXPIRIES: list[object] = [
    *GRPC_EXPIRIES,
    MAX_TTL_SECONDS + 1,
    2**40,
    2**63,
    2**64 + 1,
    1.5,
    1e10,
    -0.5,
    math.nan,
    math.inf,
    None,
]


def expiry_is_valid(expiry: object) -> bool:
    """1 … 2^31-1 whole seconds (a JSON number without a fraction, as Dapr's int32 reads it)."""
    return isinstance(expiry, int) and not isinstance(expiry, bool) and 1 <= expiry <= MAX_TTL_SECONDS
