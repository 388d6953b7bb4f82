"""`sequencer.zookeeper`: a znode's data version is the counter.

ZooKeeper raises a znode's version by exactly one at every write, atomically, so an
unconditional write returns the next id in one round trip (ids stop at 2**31 - 1, the
version's range).
"""

import contextlib

from ottava_sidecar.components.backends.zookeeper import ZookeeperConnection, ZookeeperMetadata
from ottava_sidecar.components.registration import register
from ottava_sidecar.components.sequencer.base import Increment, Sequencer


class ZookeeperSequencerMetadata(ZookeeperMetadata):
    pass


@register("sequencer.zookeeper", ZookeeperSequencerMetadata)
class ZookeeperSequencer(Sequencer[ZookeeperSequencerMetadata]):
    """Counters as ZooKeeper znode versions: strictly +1 per call across every sidecar."""

    def __init__(self, name: str, settings: ZookeeperSequencerMetadata, *, app_id: str) -> None:
        super().__init__(name, settings, app_id=app_id)
        self.zk = ZookeeperConnection(settings, f"sequencer {name}")
        self.folder = settings.base_path.rstrip("/") + "/sequencer"

    async def init(self) -> None:
        client = await self.zk.open()
        with self.zk.errors("creating the sequencer folder"):
            await client.ensure_path(self.folder)

    async def close(self) -> None:
        await self.zk.close()

    async def next_id(self, key: str, increment: Increment) -> int:
        from urllib.parse import quote

        from aiozk import exc

        path = f"{self.folder}/{quote(key, safe='')}"
        client = self.zk.client
        with self.zk.errors(f"advancing sequence {key!r}"):
            try:
                stat = await client.set(path, b"", -1)
            except exc.NoNode:
                with contextlib.suppress(exc.NodeExists):  # another sidecar created it meanwhile
                    await client.create(path, b"")
                stat = await client.set(path, b"", -1)
        return int(stat.version)
