"""Request bodies of Dapr's HTTP API, validated by pydantic as they enter.

Field names are Dapr's JSON names. Unknown fields are ignored, as Dapr's JSON decoding
ignores them, so clients written for Dapr keep working; numbers where Dapr expects
strings (an ETag, a metadata value) are accepted as their text. JSON `null` for a field
is the field not given, and a `null` metadata value is the empty text, as Go's decoder
leaves a field or map value at its zero value for `null` (the JavaScript SDK sends
`"metadata": null` with every state transaction; see `gojson`). Every body model derives
from `RequestBody`; each route names its body (`Route.body`), so the tests try `null` in
every field of every route's body.
"""

import math
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    Strict,
    TypeAdapter,
    ValidationError,
)

from ottava_sidecar import gojson
from ottava_sidecar.api import errors

T = TypeVar("T")


class RequestBody(gojson.Model):
    """A JSON object of a request body: the base of every body model of the HTTP API."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True, coerce_numbers_to_str=True)


def _metadata_values(metadata: Any) -> Any:
    """NaN and Infinity are not JSON; Python's parser takes them, so they are refused here
    rather than turned into the text 'NaN' or 'inf' by the number-to-text coercion. A
    null value is the empty text, as Go decodes it into a `map[string]string`."""
    if isinstance(metadata, dict):
        for name, value in metadata.items():
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"metadata {name!r} is {value}, not a finite number")
        if None in metadata.values():
            return {name: "" if value is None else value for name, value in metadata.items()}
    return metadata


Metadata = Annotated[dict[str, str], BeforeValidator(_metadata_values)]


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


class StateOptions(RequestBody):
    concurrency: str = ""  # checked by `state.parse_concurrency`, whose message names the value
    consistency: Literal["", "eventual", "strong"] = ""


class StateEntry(RequestBody):
    key: Key
    value: JsonValue = None
    etag: str | None = None
    options: StateOptions = Field(default_factory=StateOptions)
    metadata: Metadata = Field(default_factory=dict)


class BulkGet(RequestBody):
    keys: list[Key]
    parallelism: int = Field(default=0, ge=0)  # accepted for compatibility; the store decides


class TransactionOperation(RequestBody):
    operation: str  # checked by `state.operations`, so an unknown one gets Dapr's error code
    request: StateEntry


class Transaction(RequestBody):
    operations: list[TransactionOperation]
    metadata: Metadata = Field(default_factory=dict)


class TryLock(RequestBody):
    # Defaults rather than required: `LockApi` names the empty field and the store.
    resource_id: str = Field(default="", alias="resourceId")
    lock_owner: str = Field(default="", alias="lockOwner")
    expiry_in_seconds: int = Field(default=0, alias="expiryInSeconds")


class Unlock(RequestBody):
    resource_id: str = Field(default="", alias="resourceId")
    lock_owner: str = Field(default="", alias="lockOwner")


class Body(Generic[T]):
    """The JSON body of a route: a `RequestBody` model, or a list of them (`shape`), and
    how the error message describes it (`what`)."""

    def __init__(self, shape: Any, what: str) -> None:
        self.shape = shape
        self.what = what
        self._adapter: TypeAdapter[T] = TypeAdapter(shape)

    def parse(self, body: bytes) -> T:
        """The validated body, or 400 ERR_MALFORMED_REQUEST saying where it is wrong."""
        try:
            return self._adapter.validate_json(body)
        except ValidationError as err:
            problems = [_describe(e["loc"], e["msg"]) for e in err.errors(include_url=False)]
            shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
            raise errors.invalid_argument(f"malformed request body ({self.what}): {shown}") from None


SAVE_STATE: Body[list[StateEntry]] = Body(list[StateEntry], "a JSON array of state items")
BULK_GET: Body[BulkGet] = Body(BulkGet, '{"keys": [...]}')
TRANSACTION: Body[Transaction] = Body(Transaction, '{"operations": [...]}')
TRY_LOCK: Body[TryLock] = Body(TryLock, "lock request")
UNLOCK: Body[Unlock] = Body(Unlock, "unlock request")


def _describe(loc: tuple[int | str, ...], msg: str) -> str:
    if not loc:
        return msg
    path = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")
    return f"{path}: {msg}"
