"""`bindings.postgresql`: Dapr's PostgreSQL output binding — run SQL the app sends.

The request metadata holds `sql` and, optionally, `params`: a JSON array bound to `$1`,
`$2`, … (asyncpg binds typed values: a number for an integer column, text for text).
exec answers no data and metadata with `rows-affected`; query answers the rows as a
JSON array of arrays, as Dapr does; both answer `operation`, `sql`, `start-time`,
`end-time` and `duration`. close closes the connection pool; the next call opens it
again.
"""

import datetime
import decimal
import json
import time
import uuid
from typing import Any

from ottava_sidecar.components.backends.postgresql import PostgresConnection, PostgresMetadata
from ottava_sidecar.components.bindings.base import (
    BindingMetadata,
    BindingRequest,
    BindingRequestError,
    BindingResponse,
    OutputBinding,
)
from ottava_sidecar.components.registration import register

SQL = "sql"
PARAMS = "params"


class PostgresBindingMetadata(PostgresMetadata, BindingMetadata):
    pass


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal | uuid.UUID | datetime.timedelta):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    return str(value)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat()


@register("bindings.postgresql", PostgresBindingMetadata)
class PostgresBinding(OutputBinding[PostgresBindingMetadata]):
    """SQL on PostgreSQL: exec (rows affected), query (rows as JSON) and close."""

    operations = ("exec", "query", "close")

    def __init__(self, name: str, settings: PostgresBindingMetadata, *, app_id: str) -> None:
        super().__init__(name, settings, app_id=app_id)
        self.db = PostgresConnection(settings, f"binding {name}")
        self._open = False

    async def init(self) -> None:
        await self.db.open()
        self._open = True

    async def close(self) -> None:
        await self.db.close()
        self._open = False

    def _statement(self, request: BindingRequest) -> tuple[str, list[Any]]:
        sql = request.metadata.get(SQL, "")
        if not sql.strip():
            raise BindingRequestError(f"binding {self.name}: operation {request.operation} needs metadata {SQL}")
        text = request.metadata.get(PARAMS, "")
        if not text:
            return sql, []
        try:
            params = json.loads(text)
        except ValueError as err:
            raise BindingRequestError(f"binding {self.name}: metadata {PARAMS} is not JSON: {err}") from None
        if not isinstance(params, list):
            raise BindingRequestError(f'binding {self.name}: metadata {PARAMS} must be a JSON array, as [1, "a"]')
        return sql, params

    async def invoke(self, request: BindingRequest) -> BindingResponse:
        if request.operation == "close":
            await self.close()
            return BindingResponse()
        sql, params = self._statement(request)
        if not self._open:
            await self.init()
        started, start_time = time.perf_counter(), _now()
        doing = f"{request.operation} of {sql!r}"
        if request.operation == "exec":
            status = await self.db.run(doing, lambda c: c.execute(sql, *params))
            data = b""
            extra = {"rows-affected": _rows_affected(status)}
        else:
            rows = await self.db.run(doing, lambda c: c.fetch(sql, *params))
            data = json.dumps([list(row.values()) for row in rows], default=_json_default).encode()
            extra = {}
        metadata = {
            "operation": request.operation,
            "sql": sql,
            "start-time": start_time,
            "end-time": _now(),
            "duration": f"{(time.perf_counter() - started) * 1000:.3f}ms",
            **extra,
        }
        return BindingResponse(data, metadata)


def _rows_affected(status: str) -> str:
    """asyncpg's command tag ("INSERT 0 3", "UPDATE 2") ends with the row count."""
    last = status.rsplit(" ", 1)[-1] if status else ""
    return last if last.isdigit() else "0"
