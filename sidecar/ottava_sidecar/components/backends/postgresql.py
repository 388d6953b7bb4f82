"""PostgreSQL connections, shared by `state.postgresql` and `sequencer.postgresql`.

Client: asyncpg, an asyncio-native driver speaking PostgreSQL's binary protocol (no
thread pool, no libpq), actively maintained, with a connection pool that replaces
broken connections by itself; typed through asyncpg-stubs.
"""

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from pydantic import Field, field_validator

from ottava_sidecar.components.backends import retry
from ottava_sidecar.components.backends.options import RetryMetadata, Seconds, TlsMetadata
from ottava_sidecar.components.errors import ComponentError

if TYPE_CHECKING:
    import asyncpg

T = TypeVar("T")


class PostgresMetadata(RetryMetadata, TlsMetadata):
    """Where the database is (field names as in Dapr's PostgreSQL components)."""

    connection_string: str = Field(
        alias="connectionString",
        min_length=1,
        description="postgresql://user:password@host:5432/database?sslmode=… (a URI, as libpq accepts).",
    )
    password: str = Field(
        default="", description="Password, when it is not in the connection string; use a secretKeyRef."
    )
    max_conns: int = Field(default=10, ge=1, alias="maxConns", description="Most connections in the pool.")
    timeout: Seconds = Field(default=20.0, gt=0, alias="timeout", description="How long one statement may run.")

    @field_validator("connection_string")
    @classmethod
    def _uri(cls, value: str) -> str:
        if not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("must be a URI such as postgresql://user:password@host:5432/database")
        return value


class PostgresConnection:
    def __init__(self, settings: PostgresMetadata, component: str) -> None:
        self.settings = settings
        self.component = component
        self.where = f"postgresql at {_host_of(settings.connection_string)}"
        self._pool: asyncpg.Pool | None = None

    @property
    def pool(self) -> "asyncpg.Pool":
        if self._pool is None:
            raise ComponentError(f"{self.component}: not connected to {self.where}")
        return self._pool

    async def open(self) -> "asyncpg.Pool":
        import asyncpg

        s = self.settings

        async def attempt() -> asyncpg.Pool:
            pool = await asyncpg.create_pool(
                s.connection_string,
                password=s.password or None,
                ssl=s.ssl_context(),
                min_size=1,
                max_size=s.max_conns,
                timeout=s.dial_timeout,
                command_timeout=s.timeout,
            )
            assert pool is not None
            return pool

        def refused(err: BaseException) -> bool:
            return isinstance(
                err, asyncpg.InvalidPasswordError | asyncpg.InvalidAuthorizationSpecificationError
            ) or "password authentication failed" in str(err)

        self._pool = await retry.connect(self.where, attempt, s, refused_credentials=refused)
        return self._pool

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def run(self, doing: str, work: Callable[["asyncpg.pool.PoolConnectionProxy"], Awaitable[T]]) -> T:
        """Run `work` on a pooled connection; the client's errors become a ComponentError."""
        async with self.guard(doing), self.pool.acquire() as connection:
            return await work(connection)

    @contextlib.asynccontextmanager
    async def guard(self, doing: str) -> AsyncIterator[None]:
        import asyncpg

        try:
            yield
        except ComponentError:
            raise
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as err:
            raise ComponentError(f"{doing} failed on {self.where}: {err or type(err).__name__}") from err


def _host_of(uri: str) -> str:
    rest = uri.split("://", 1)[-1]
    rest = rest.rsplit("@", 1)[-1]
    return rest.split("/", 1)[0].split("?", 1)[0] or "localhost"
