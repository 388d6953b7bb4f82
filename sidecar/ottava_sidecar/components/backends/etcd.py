"""etcd connections (v3 API over gRPC), shared by `configuration.etcd`, `lock.etcd`, `sequencer.etcd`.

Client: the etcd v3 gRPC stubs shipped by aetcd (maintained, asyncio, current grpcio and
protobuf), called on a `grpc.aio` channel that this module opens itself: aetcd's own
`Client` only opens plain-text channels, and the components need TLS. gRPC reconnects
a channel by itself, so an etcd restart heals without the sidecar doing anything.
"""

import contextlib
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

from pydantic import Field, field_validator

from ottava_sidecar.components.backends import retry
from ottava_sidecar.components.backends.options import RetryMetadata, Seconds, TlsMetadata
from ottava_sidecar.components.errors import ComponentError

T = TypeVar("T")


class EtcdMetadata(RetryMetadata, TlsMetadata):
    endpoints: str = Field(
        default="localhost:2379",
        description="host:port of the etcd members, comma-separated; the first that answers is used.",
    )
    username: str = Field(default="", description="User, when etcd has authentication enabled.")
    password: str = Field(default="", description="Its password; use a secretKeyRef.")
    timeout: Seconds = Field(default=5.0, gt=0, description="How long one request may take.")

    @field_validator("endpoints")
    @classmethod
    def _not_empty(cls, value: str) -> str:
        if not [e for e in value.split(",") if e.strip()]:
            raise ValueError("names no endpoint")
        return value

    @property
    def endpoint_list(self) -> list[str]:
        return [
            e.strip().removeprefix("http://").removeprefix("https://") for e in self.endpoints.split(",") if e.strip()
        ]


class EtcdConnection:
    """A gRPC channel to one etcd member, with the auth token (when any) for every call."""

    def __init__(self, settings: EtcdMetadata, component: str) -> None:
        self.settings = settings
        self.component = component
        self.where = f"etcd at {settings.endpoints}"
        self.channel: Any = None
        self.kv: Any = None
        self.lease: Any = None
        self.watch: Any = None
        self.metadata: tuple[tuple[str, str], ...] = ()

    async def open(self) -> None:
        import grpc
        from aetcd import rpc

        s = self.settings

        async def attempt() -> None:
            last: Exception | None = None
            for endpoint in s.endpoint_list:
                channel = self._channel(endpoint)
                try:
                    await rpc.MaintenanceStub(channel).Status(rpc.StatusRequest(), timeout=s.dial_timeout)
                    metadata: tuple[tuple[str, str], ...] = ()
                    if s.username:
                        reply = await rpc.AuthStub(channel).Authenticate(
                            rpc.AuthenticateRequest(name=s.username, password=s.password), timeout=s.dial_timeout
                        )
                        metadata = (("token", reply.token),)
                except grpc.aio.AioRpcError as err:
                    await channel.close()
                    if _refused(err):
                        raise
                    last = err
                    continue
                self.channel, self.metadata = channel, metadata
                self.kv, self.lease, self.watch = rpc.KVStub(channel), rpc.LeaseStub(channel), rpc.WatchStub(channel)
                return
            raise ComponentError(_describe(last) if last else "no endpoint")

        await retry.connect(self.where, attempt, s, refused_credentials=_refused)

    def _channel(self, endpoint: str) -> Any:
        import grpc

        s = self.settings
        options = [("grpc.keepalive_time_ms", 30_000)]
        if not s.enable_tls:
            return grpc.aio.insecure_channel(endpoint, options=options)

        def read(path: str) -> bytes | None:
            if not path:
                return None
            with open(path, "rb") as file:  # small PEM files, read once at start-up
                return file.read()

        if s.insecure_skip_verify:
            raise ComponentError("insecureSkipVerify is not possible with gRPC; give the server's CA in caCert")
        credentials = grpc.ssl_channel_credentials(read(s.ca_cert), read(s.client_key), read(s.client_cert))
        return grpc.aio.secure_channel(endpoint, credentials, options=options)

    async def close(self) -> None:
        if self.channel is not None:
            await self.channel.close()
            self.channel = None

    async def call(self, doing: str, rpc_call: Callable[[], Awaitable[T]]) -> T:
        with self.errors(doing):
            return await rpc_call()

    @contextlib.contextmanager
    def errors(self, doing: str) -> Iterator[None]:
        import grpc

        if self.channel is None:
            raise ComponentError(f"{self.component}: not connected to {self.where}")
        try:
            yield
        except grpc.aio.AioRpcError as err:
            raise ComponentError(f"{doing} failed on {self.where}: {_describe(err)}") from err


def _refused(err: BaseException) -> bool:
    import grpc

    return isinstance(err, grpc.aio.AioRpcError) and "authentication failed" in (err.details() or "")


def _describe(err: Any) -> str:
    return f"{err.code().name}: {err.details()}"
