"""A task the sidecar runs from its start to its stop (loop-lag measurement, memory return, certificate renewal)."""

import abc
import asyncio
import contextlib


class BackgroundTask(abc.ABC):
    name = "background"

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            task, self._task = self._task, None
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @abc.abstractmethod
    async def run(self) -> None:
        """Loop until cancelled."""
