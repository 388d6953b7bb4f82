"""Event loop lag: how late the loop runs a timer, exported on `/metrics`.

Every call the sidecar serves, and its liveness probe, waits for the one event loop. A
blocking call or a CPU-bound burst delays them all; this task makes that visible: it
sleeps `interval` seconds, and records how much later than asked it woke up
(`ottava_event_loop_lag_seconds`, and the latest value in `ottava_event_loop_lag_last_seconds`).
"""

import asyncio
import logging
import time

from ottava_sidecar import metrics
from ottava_sidecar.background import BackgroundTask

log = logging.getLogger(__name__)

INTERVAL_SECONDS = 0.5
# A lag this long is logged as well: calls and probes waited that long.
WARN_SECONDS = 1.0


class LoopLagMonitor(BackgroundTask):
    name = "event-loop-lag"

    def __init__(self, interval: float = INTERVAL_SECONDS) -> None:
        super().__init__()
        self.interval = interval

    async def run(self) -> None:
        while True:
            asked = time.perf_counter()
            await asyncio.sleep(self.interval)
            lag = max(0.0, time.perf_counter() - asked - self.interval)
            metrics.EVENT_LOOP_LAG.observe(lag)
            metrics.EVENT_LOOP_LAG_LAST.set(lag)
            if lag >= WARN_SECONDS:
                log.warning("the event loop was blocked for %.1fs: calls and health probes waited", lag)
