"""The limits that keep one careless or hostile client from taking the sidecar down.

Every limit has a default that suits a normal app, a flag of `ottava run` and a pod
annotation (docs/limits.md lists them). Dapr's names are used where Dapr has the limit
(`--max-body-size`, `--read-buffer-size`). Sizes are written as Kubernetes quantities
(`4Mi`, `512Ki`) or plain bytes; durations as seconds or Go-style durations (`30s`, `2m`).
"""

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Literal

__all__ = ["SETTINGS", "Limits", "Setting", "parse_count", "parse_seconds", "parse_size"]

KIB = 1024
MIB = 1024 * KIB

# Dapr parses TTLs as int32 seconds (ttlInSeconds); so do we, and refuse what it would refuse.
MAX_TTL_SECONDS = 2**31 - 1
# A lock's expiry, in seconds: Dapr's field is int32 too.
MAX_LOCK_EXPIRY_SECONDS = 2**31 - 1
# Extended metadata set by SetMetadata, all keys and values together: above this a
# GetMetadata answer would no longer fit a default client's 4 MiB message.
MAX_EXTENDED_METADATA_BYTES = 1 * MIB


@dataclass(frozen=True)
class Limits:
    # The largest request body (HTTP) or message (gRPC) the APIs accept, and the largest
    # gRPC message they send. Dapr: --max-body-size, default 4Mi.
    max_body_bytes: int = 4 * MIB
    # The largest request line plus headers an HTTP request may have. Dapr: --read-buffer-size.
    read_buffer_bytes: int = 8 * KIB
    # Seconds a client has to send an HTTP request's headers, then its whole body, and
    # that an idle keep-alive connection is kept open.
    header_timeout_seconds: float = 10.0
    read_timeout_seconds: float = 60.0
    idle_timeout_seconds: float = 120.0
    # Open HTTP connections, and calls in flight on the gRPC port (streams included),
    # above which new ones are refused with a retriable answer (429 + Retry-After,
    # RESOURCE_EXHAUSTED) instead of piling up.
    max_connections: int = 1024
    max_concurrent_calls: int = 1000
    # The largest bulk answer (GetBulkState, GetBulkSecret): above it the call fails with an
    # error that names this limit. As large as a message by default, since a gRPC answer
    # cannot be larger than max_body_bytes anyway (nor than a default client accepts).
    max_bulk_response_bytes: int = 4 * MIB
    # Bytes queued for one subscriber that does not read (a configuration subscription,
    # a pub/sub stream): above it the subscriber is dropped with a status that says why.
    subscriber_buffer_bytes: int = 1 * MIB

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def with_values(self, values: Mapping[str, str]) -> "Limits":
        """These limits with some replaced, from their texts by field name; ValueError naming a bad one."""
        by_field = {setting.field: setting for setting in SETTINGS}
        parsed: dict[str, float] = {}
        for name, text in values.items():
            setting = by_field[name]
            try:
                parsed[name] = setting.parse(text)
            except ValueError as err:
                raise ValueError(f"{setting.flag}: {err}") from None
        return replace(self, **parsed)  # type: ignore[arg-type]  # each parser returns its field's type


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?|[kMGT]B?|B)?\s*$")
_UNITS = {
    None: 1,
    "B": 1,
    "k": 1000,
    "K": 1000,
    "kB": 1000,
    "KB": 1000,
    "M": 1000**2,
    "MB": 1000**2,
    "G": 1000**3,
    "GB": 1000**3,
    "T": 1000**4,
    "TB": 1000**4,
    "Ki": KIB,
    "Mi": MIB,
    "Gi": 1024**3,
    "Ti": 1024**4,
}


def parse_size(text: str) -> int:
    """Bytes of a quantity such as `4Mi`, `512Ki`, `10MB` or `1048576`; ValueError naming it otherwise."""
    match = _SIZE.match(text)
    if match is None or match.group(2) not in _UNITS:
        raise ValueError(f"{text!r} is not a size (use bytes, or a quantity such as 4Mi or 512Ki)")
    value = float(match.group(1)) * _UNITS[match.group(2)]
    if not math.isfinite(value) or value < 1:
        raise ValueError(f"{text!r} is not a positive size")
    return int(value)


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_seconds(text: str) -> float:
    """Seconds of `30`, `2.5`, `30s`, `1m30s` or `500ms`; ValueError naming it otherwise."""
    stripped = text.strip()
    try:
        seconds = float(stripped)
    except ValueError:
        parts = _DURATION.findall(stripped)
        if not parts or "".join(n + u for n, u in parts) != stripped:
            raise ValueError(f"{text!r} is not a duration (use seconds, or such as 30s, 2m, 500ms)") from None
        seconds = sum(float(n) * _SECONDS[u] for n, u in parts)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{text!r} is not a positive duration")
    return seconds


def parse_count(text: str) -> int:
    """A positive whole number; ValueError naming it otherwise."""
    try:
        value = int(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise ValueError(f"{text!r} is not a positive number")
    return value


Kind = Literal["size", "duration", "count"]
_PARSERS: dict[Kind, Callable[[str], float]] = {"size": parse_size, "duration": parse_seconds, "count": parse_count}


@dataclass(frozen=True)
class Setting:
    """How users set one limit: the `ottava run` flag and the pod annotation, named alike."""

    field: str
    name: str  # the flag without "--", and the annotation after "ottava.io/"
    kind: Kind
    help: str

    @property
    def flag(self) -> str:
        return f"--{self.name}"

    @property
    def annotation(self) -> str:
        return f"ottava.io/{self.name}"

    def parse(self, text: str) -> float:
        return _PARSERS[self.kind](text)

    def default_text(self) -> str:
        value = getattr(Limits(), self.field)
        if self.kind == "size":
            for unit, size in (("Mi", MIB), ("Ki", KIB)):
                if value % size == 0:
                    return f"{value // size}{unit}"
            return str(value)
        if self.kind == "duration":
            return f"{value:g}s"
        return str(value)


# One row per Limits field: `ottava run` flags, pod annotations and docs/limits.md come from here.
SETTINGS = (
    Setting("max_body_bytes", "max-body-size", "size", "largest request body (HTTP) or message (gRPC), in and out"),
    Setting("read_buffer_bytes", "read-buffer-size", "size", "largest HTTP request line and headers"),
    Setting("header_timeout_seconds", "header-timeout", "duration", "time an HTTP client has to send its headers"),
    Setting("read_timeout_seconds", "read-timeout", "duration", "time an HTTP client has to send its whole request"),
    Setting("idle_timeout_seconds", "idle-timeout", "duration", "how long an idle keep-alive connection stays open"),
    Setting("max_connections", "max-connections", "count", "open HTTP connections; more get 429 with Retry-After"),
    Setting(
        "max_concurrent_calls",
        "max-concurrent-calls",
        "count",
        "calls in flight on the gRPC port, streams included; more get RESOURCE_EXHAUSTED",
    ),
    Setting(
        "max_bulk_response_bytes",
        "max-bulk-response-size",
        "size",
        "largest bulk answer (bulk state or secrets); larger fails, naming this limit (over gRPC, "
        "--max-body-size bounds it too)",
    ),
    Setting(
        "subscriber_buffer_bytes",
        "subscriber-buffer-size",
        "size",
        "bytes queued for one subscriber that does not read; above it the subscriber is dropped",
    ),
)
