"""ZooKeeper sessions, shared by `lock.zookeeper` and `sequencer.zookeeper`.

Client: aiozk, the asyncio-native ZooKeeper client (kazoo, the best known one, runs its
own threads and blocks). aiozk keeps the session alive and reconnects by itself; it has
no TLS and no digest authentication, so these components expect a ZooKeeper reachable
on a trusted network (or through a TLS-terminating proxy).
"""

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

from pydantic import Field

from ottava_sidecar.components.backends import retry
from ottava_sidecar.components.backends.options import RetryMetadata, Seconds
from ottava_sidecar.components.errors import ComponentError


class ZookeeperMetadata(RetryMetadata):
    servers: str = Field(default="localhost:2181", description="host:port of the ensemble's members, comma-separated.")
    session_timeout: Seconds = Field(
        default=10.0, gt=0, alias="sessionTimeout", description="ZooKeeper session timeout."
    )
    base_path: str = Field(default="/ottava", alias="basePath", description="Parent znode of everything stored.")
    timeout: Seconds = Field(default=5.0, gt=0, description="How long one request may take.")


class ZookeeperConnection:
    def __init__(self, settings: ZookeeperMetadata, component: str) -> None:
        self.settings = settings
        self.component = component
        self.where = f"zookeeper at {settings.servers}"
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            raise ComponentError(f"{self.component}: not connected to {self.where}")
        return self._client

    async def open(self) -> Any:
        import aiozk

        s = self.settings

        async def attempt() -> Any:
            client = aiozk.ZKClient(
                s.servers,
                session_timeout=s.session_timeout,
                retry_policy=aiozk.RetryPolicy.n_times(2),
                read_timeout=s.timeout,
            )
            try:
                await client.start()
            except BaseException:
                _abandon(client)
                raise
            return client

        self._client = await retry.connect(self.where, attempt, s)
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            try:
                # A graceful close asks the server to end the session; don't wait long for a gone server.
                await asyncio.wait_for(self._client.close(), timeout=2.0)
            except Exception:
                _abandon(self._client)
            self._client = None

    @contextlib.contextmanager
    def errors(self, doing: str) -> Iterator[None]:
        from aiozk import exc

        try:
            yield
        except exc.ZKError as err:
            raise ComponentError(f"{doing} failed on {self.where}: {type(err).__name__} {err}") from err


def _abandon(client: Any) -> None:
    """Stop a session's background tasks without talking to the server.

    aiozk's `close` sends a CloseRequest and waits up to the session timeout, which only
    delays an init that already failed because no server answers.
    """
    session = client.session
    session.closing, session.started = True, False
    for task in (session.repair_loop_task, session.heartbeat_task):
        if task is not None:
            task.cancel()
    if session.heartbeat_handle is not None:
        session.heartbeat_handle.cancel()
