"""Redis connections, shared by `state.redis`, `lock.redis`, `configuration.redis`, `sequencer.redis`.

Client: redis-py (`redis.asyncio`), Redis Inc.'s own client: asyncio-native, the most
used Python Redis client, typed, and it re-establishes broken connections by itself
(so a Redis restart heals without the sidecar doing anything).
"""

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from pydantic import Field

from ottava_sidecar.components.backends import retry
from ottava_sidecar.components.backends.options import RetryMetadata, Seconds, TlsMetadata
from ottava_sidecar.components.errors import ComponentError

if TYPE_CHECKING:
    from redis.asyncio import Redis


class RedisMetadata(RetryMetadata, TlsMetadata):
    """Where the Redis server is and how to log in (field names as in Dapr's Redis components)."""

    redis_host: str = Field(default="localhost:6379", alias="redisHost", description="host:port of the server.")
    redis_username: str = Field(default="", alias="redisUsername", description="ACL user name (Redis 6+).")
    redis_password: str = Field(default="", alias="redisPassword", description="Password; use a secretKeyRef.")
    redis_db: int = Field(default=0, ge=0, alias="redisDB", description="Database number.")
    read_timeout: Seconds = Field(
        default=5.0, gt=0, alias="readTimeout", description="How long one command may wait for its reply."
    )

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.redis_host.rpartition(":")
        if not host:
            return self.redis_host, 6379
        return host.strip("[]"), int(port)


class RedisConnection:
    """One client (a connection pool) per component, with errors worded for the app."""

    def __init__(self, settings: RedisMetadata, component: str) -> None:
        self.settings = settings
        self.component = component
        self.where = f"redis at {settings.redis_host}"
        self._client: Redis | None = None

    @property
    def client(self) -> "Redis":
        if self._client is None:
            raise ComponentError(f"{self.component}: not connected to {self.where}")
        return self._client

    def new_client(self) -> "Redis":
        from redis.asyncio import Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import ExponentialBackoff

        s = self.settings
        host, port = s.host_port
        return Redis(
            host=host,
            port=port,
            db=s.redis_db,
            username=s.redis_username or None,
            password=s.redis_password or None,
            socket_connect_timeout=s.dial_timeout,
            socket_timeout=s.read_timeout,
            # A command retries a broken connection briefly, then fails: during an outage the
            # app gets a clear error quickly instead of a call that hangs.
            retry=Retry(ExponentialBackoff(cap=0.2, base=0.05), retries=2),
            ssl=s.enable_tls,
            ssl_ca_certs=s.ca_cert or None,
            ssl_certfile=s.client_cert or None,
            ssl_keyfile=s.client_key or None,
            ssl_cert_reqs="none" if s.insecure_skip_verify else "required",
            ssl_check_hostname=s.enable_tls and not s.insecure_skip_verify,
        )

    async def open(self) -> "Redis":
        from redis import exceptions

        async def attempt() -> "Redis":
            client = self.new_client()
            try:
                await client.ping()
            except BaseException:
                await client.aclose()
                raise
            return client

        def refused(err: BaseException) -> bool:
            return isinstance(
                err, exceptions.AuthenticationError | exceptions.AuthenticationWrongNumberOfArgsError
            ) or (isinstance(err, exceptions.ResponseError) and "NOAUTH" in str(err))

        self._client = await retry.connect(self.where, attempt, self.settings, refused_credentials=refused)
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    @contextlib.contextmanager
    def errors(self, doing: str) -> Iterator[None]:
        """Turn the client's errors into a ComponentError that names the server and the operation."""
        from redis import exceptions

        try:
            yield
        except exceptions.RedisError as err:
            raise ComponentError(f"{doing} failed on {self.where}: {err}") from err
