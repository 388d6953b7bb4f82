"""`bindings.cron`: an input binding that fires on a schedule (Dapr's `bindings.cron`).

Each firing is an event with no data and the metadata `timeZone` and `readTimeUTC`, as
Dapr sends. A firing the app did not accept is handed over again with a backoff;
firings that fall due meanwhile are skipped, as a cron daemon skips a job still running.
The schedule's syntax is in `schedule.py` (and docs/bindings.md).
"""

import asyncio
import datetime

from pydantic import Field, field_validator

from ottava_sidecar.components.bindings.base import (
    BindingEvent,
    BindingMetadata,
    Handler,
    InputBinding,
    handle_until_done,
)
from ottava_sidecar.components.bindings.schedule import Schedule, ScheduleError
from ottava_sidecar.components.registration import register


class CronMetadata(BindingMetadata):
    schedule: str = Field(
        alias="schedule",
        description="When to fire: `@every 15s`, `@daily`, or a cron expression of 5 fields "
        "(or 6, seconds first), e.g. `0 30 * * * *`; UTC.",
    )

    @field_validator("schedule")
    @classmethod
    def _valid(cls, value: str) -> str:
        try:
            Schedule.parse(value)
        except ScheduleError as err:
            raise ValueError(str(err)) from None
        return value


@register("bindings.cron", CronMetadata)
class CronBinding(InputBinding[CronMetadata]):
    """Fires an event on a schedule (`@every 1s`, cron expressions)."""

    def __init__(self, name: str, settings: CronMetadata, *, app_id: str) -> None:
        super().__init__(name, settings, app_id=app_id)
        self.schedule = Schedule.parse(settings.schedule)

    async def read(self, handler: Handler) -> None:
        due = self.schedule.next_after(_now())
        while True:
            await asyncio.sleep(max(0.0, (due - _now()).total_seconds()))
            event = BindingEvent(b"", {"timeZone": "UTC", "readTimeUTC": _now().isoformat()})
            await handle_until_done(handler, event, where=f"input binding {self.name}")
            now = _now()
            due = self.schedule.next_after(due)
            while due <= now:  # the ones that fell due while the app was not accepting
                due = self.schedule.next_after(due)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)
