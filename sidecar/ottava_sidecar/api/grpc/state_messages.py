"""State messages → Ottava's requests, for Dapr's and Layotto's protos alike.

Layotto copied Dapr's state messages field for field, so one translation serves both;
these protocols name the fields it reads.
"""

from collections.abc import Iterable, Mapping
from typing import Literal, Protocol

from ottava_sidecar.api import errors
from ottava_sidecar.api.state import parse_ttl
from ottava_sidecar.components.state.base import Concurrency, DeleteRequest, Operation, SetRequest

# StateOptions.StateConcurrency values, the same in both protos.
_CONCURRENCY = {0: Concurrency.LAST_WRITE, 1: Concurrency.FIRST_WRITE, 2: Concurrency.LAST_WRITE}


class EtagMessage(Protocol):
    @property
    def value(self) -> str: ...


class OptionsMessage(Protocol):
    @property
    def concurrency(self) -> int: ...


class StateItemMessage(Protocol):
    @property
    def key(self) -> str: ...
    @property
    def value(self) -> bytes: ...
    @property
    def etag(self) -> EtagMessage: ...
    @property
    def metadata(self) -> Mapping[str, str]: ...
    @property
    def options(self) -> OptionsMessage: ...
    def HasField(self, field_name: Literal["etag"]) -> bool: ...


class OperationMessage(Protocol):
    @property
    def operationType(self) -> str: ...
    @property
    def request(self) -> StateItemMessage: ...


def etag_of(message: StateItemMessage) -> str | None:
    return message.etag.value if message.HasField("etag") else None


def set_request(item: StateItemMessage) -> SetRequest:
    return SetRequest(
        key=item.key,
        value=item.value,
        etag=etag_of(item),
        concurrency=_CONCURRENCY.get(item.options.concurrency, Concurrency.LAST_WRITE),
        ttl_seconds=parse_ttl(item.metadata),
        content_type=item.metadata.get("contentType", ""),
    )


def delete_request(key: str, etag: str | None, options: OptionsMessage) -> DeleteRequest:
    return DeleteRequest(key, etag, _CONCURRENCY.get(options.concurrency, Concurrency.LAST_WRITE))


def operations(messages: Iterable[OperationMessage]) -> list[Operation]:
    result: list[Operation] = []
    for op in messages:
        item = op.request
        if op.operationType == "upsert":
            result.append(set_request(item))
        elif op.operationType == "delete":
            result.append(delete_request(item.key, etag_of(item), item.options))
        else:
            raise errors.invalid_argument(
                f"operation type {op.operationType!r} is not 'upsert' or 'delete'", "ERR_NOT_SUPPORTED_STATE_OPERATION"
            )
    return result
