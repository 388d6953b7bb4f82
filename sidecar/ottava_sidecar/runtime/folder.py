"""Standalone: the resources folder followed while the sidecar runs, for its TrafficRoutes.

`ottava run --resources-path` reads the whole folder at start. Traffic routing is meant
to be changed on a running system (shift 10% of the calls to v2, then 50%), so the
folder is looked at again every second: when a `*.yaml`/`*.yml` file was added, removed
or changed, it is read again and its TrafficRoutes replace those in force. A folder that
no longer reads (a half-saved file, an invalid rule) changes nothing: the error is logged,
naming the file, and the routes in force stay until the folder reads again. The other
kinds are read at start only.
"""

import asyncio
import hashlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from ottava_sidecar.resources.manifests import ManifestError, load_folder
from ottava_sidecar.resources.models import Component, TrafficRoute

log = logging.getLogger(__name__)

INTERVAL_SECONDS = 1.0

Fingerprint = tuple[tuple[str, str], ...]


def fingerprint(folder: Path) -> Fingerprint:
    """What changes when a manifest file of the folder is added, removed or written: each one's
    name and content digest (manifests are small; a modification time may not tick between two writes)."""
    found = []
    try:
        paths = sorted(folder.iterdir())
    except OSError:
        return ()
    for path in paths:
        if path.suffix not in (".yaml", ".yml"):
            continue
        try:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError:
            continue
        found.append((path.name, digest))
    return tuple(found)


async def follow_traffic_routes(
    folder: Path,
    check: Callable[[Component], Sequence[str]],
    apply: Callable[[list[TrafficRoute]], None],
    *,
    interval: float = INTERVAL_SECONDS,
) -> None:
    """Hand the folder's TrafficRoutes to `apply` each time they may have changed; until cancelled."""
    last = await asyncio.to_thread(fingerprint, folder)
    while True:
        await asyncio.sleep(interval)
        current = await asyncio.to_thread(fingerprint, folder)
        if current == last:
            continue
        last = current
        try:
            manifests = await asyncio.to_thread(load_folder, folder, check=check)
        except ManifestError as err:
            log.error("the resources folder changed but does not read; the traffic routes in force stay: %s", err)
            continue
        apply([route for _, route in manifests.traffic_routes])
