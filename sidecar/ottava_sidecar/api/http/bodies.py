"""Request bodies of Dapr's HTTP API, validated by pydantic as they enter.

Field names are Dapr's JSON names. Unknown fields are ignored, as Dapr's JSON decoding
ignores them, so clients written for Dapr keep working; numbers where Dapr expects
strings (an ETag, a metadata value) are accepted as their text.
"""

import math
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    Strict,
    TypeAdapter,
    ValidationError,
)

from ottava_sidecar.api import errors

T = TypeVar("T")


class _RequestBody(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True, coerce_numbers_to_str=True)


def _finite_numbers(metadata: Any) -> Any:
    """NaN and Infinity are not JSON; Python's parser takes them, so they are refused here
    rather than turned into the text 'NaN' or 'inf' by the number-to-text coercion."""
    if isinstance(metadata, dict):
        for name, value in metadata.items():
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"metadata {name!r} is {value}, not a finite number")
    return metadata


Metadata = Annotated[dict[str, str], BeforeValidator(_finite_numbers)]


def _finite_json(value: JsonValue) -> JsonValue:
    """NaN and Infinity anywhere in a JSON value: refused, since no client could read them back."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, float) and not math.isfinite(item):
            raise ValueError(f"{item} is not JSON (numbers must be finite)")
        if isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return value


FiniteJson = Annotated[JsonValue, AfterValidator(_finite_json)]
# A key is a JSON string, as in Dapr (whose decoder refuses a number there): the text
# coercion above would turn 5 into "5" and NaN into "nan", a key the client never named.
Key = Annotated[str, Strict()]


class StateOptions(_RequestBody):
    concurrency: str = ""  # checked by `state.parse_concurrency`, whose message names the value
    consistency: Literal["", "eventual", "strong"] = ""


class StateEntry(_RequestBody):
    key: Key
    value: JsonValue = None
    etag: str | None = None
    options: StateOptions = Field(default_factory=StateOptions)
    metadata: Metadata = Field(default_factory=dict)


class BulkGet(_RequestBody):
    keys: list[Key]
    parallelism: int = Field(default=0, ge=0)  # accepted for compatibility; the store decides


class TransactionOperation(_RequestBody):
    operation: str  # checked by `state.operations`, so an unknown one gets Dapr's error code
    request: StateEntry


class Transaction(_RequestBody):
    operations: list[TransactionOperation]
    metadata: Metadata = Field(default_factory=dict)


class TryLock(_RequestBody):
    # Defaults rather than required: `LockApi` names the empty field and the store.
    resource_id: str = Field(default="", alias="resourceId")
    lock_owner: str = Field(default="", alias="lockOwner")
    expiry_in_seconds: int = Field(default=0, alias="expiryInSeconds")


class Unlock(_RequestBody):
    resource_id: str = Field(default="", alias="resourceId")
    lock_owner: str = Field(default="", alias="lockOwner")


SAVE_STATE = TypeAdapter(list[StateEntry])
BULK_GET = TypeAdapter(BulkGet)
TRANSACTION = TypeAdapter(Transaction)
TRY_LOCK = TypeAdapter(TryLock)
UNLOCK = TypeAdapter(Unlock)


def parse(adapter: TypeAdapter[T], body: bytes, what: str) -> T:
    """The validated body, or 400 ERR_MALFORMED_REQUEST saying where it is wrong."""
    try:
        return adapter.validate_json(body)
    except ValidationError as err:
        problems = [_describe(e["loc"], e["msg"]) for e in err.errors(include_url=False)]
        shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
        raise errors.invalid_argument(f"malformed request body ({what}): {shown}") from None


def _describe(loc: tuple[int | str, ...], msg: str) -> str:
    if not loc:
        return msg
    path = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")
    return f"{path}: {msg}"
