"""Cron schedules as Dapr's `bindings.cron` reads them (robfig/cron with optional seconds).

* `@every <duration>`: `@every 1s`, `@every 1m30s` (a Go duration);
* `@yearly` (`@annually`), `@monthly`, `@weekly`, `@daily` (`@midnight`), `@hourly`;
* five fields `minute hour day-of-month month day-of-week`, or six with seconds first;
  each field `*`, `?`, a value, `a-b`, `*/n`, `a-b/n`, `a/n` or a comma list of those;
  months and weekdays may be named (`JAN`, `MON`); weekday 0 is Sunday.

Like robfig/cron, a day matches when both day fields match if either is `*`, and when
either matches otherwise. Times are UTC.
"""

import dataclasses
import datetime
import re

from ottava_sidecar.resources.models import parse_duration

_MONTHS = {
    n: i + 1 for i, n in enumerate(["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"])
}
_DAYS = {n: i for i, n in enumerate(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"])}
_DESCRIPTORS = {
    "@yearly": "0 0 0 1 1 *",
    "@annually": "0 0 0 1 1 *",
    "@monthly": "0 0 0 1 * *",
    "@weekly": "0 0 0 * * 0",
    "@daily": "0 0 0 * * *",
    "@midnight": "0 0 0 * * *",
    "@hourly": "0 0 * * * *",
}
# (name, lowest, highest, names)
_Field = tuple[str, int, int, dict[str, int]]
_FIELDS: tuple[_Field, ...] = (
    ("second", 0, 59, {}),
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 6, _DAYS),
)
_STEP = re.compile(r"^(?P<range>[^/]+)(/(?P<step>\d+))?$")


class ScheduleError(ValueError):
    pass


def _value(text: str, field: _Field) -> int:
    name, low, high, names = field
    number = names.get(text.upper()) if not text.isdigit() else int(text)
    if number is None or not low <= number <= high:
        raise ScheduleError(f"{name} {text!r} is not a value from {low} to {high}")
    return number


def _field(text: str, field: _Field) -> tuple[frozenset[int], bool]:
    """The values the field allows, and whether it is unrestricted (`*` or `?`)."""
    name, low, high, _ = field
    values: set[int] = set()
    star = False
    for part in text.split(","):
        match = _STEP.match(part)
        if not match:
            raise ScheduleError(f"{name} {part!r} is not a value, range or step")
        span, step = match["range"], int(match["step"] or 1)
        if step < 1:
            raise ScheduleError(f"{name} {part!r}: the step must be at least 1")
        if span in ("*", "?"):
            first, last = low, high
            star = star or match["step"] is None
        elif "-" in span:
            start, end = span.split("-", 1)
            first, last = _value(start, field), _value(end, field)
            if first > last:
                raise ScheduleError(f"{name} {part!r}: the range runs backwards")
        else:
            first = _value(span, field)
            last = high if match["step"] else first
        values.update(range(first, last + 1, step))
    return frozenset(values), star


@dataclasses.dataclass(frozen=True)
class Schedule:
    text: str
    every: float | None = None  # seconds, for `@every`
    fields: tuple[frozenset[int], ...] = ()
    any_day: bool = True  # one of the day fields is `*`: both must match

    @classmethod
    def parse(cls, text: str) -> "Schedule":
        spec = text.strip()
        if spec.startswith("@every"):
            duration = spec.removeprefix("@every").strip()
            try:
                seconds = parse_duration(duration).total_seconds()
            except ValueError as err:
                raise ScheduleError(f"schedule {text!r}: {err}") from None
            if seconds <= 0:
                raise ScheduleError(f"schedule {text!r}: the interval must be above 0")
            return cls(text, every=seconds)
        spec = _DESCRIPTORS.get(spec.lower(), spec)
        if spec.startswith("@"):
            raise ScheduleError(
                f"schedule {text!r}: unknown descriptor (known: @every <duration>, {', '.join(_DESCRIPTORS)})"
            )
        parts = spec.split()
        if len(parts) == 5:
            parts = ["0", *parts]
        if len(parts) != 6:
            raise ScheduleError(
                f"schedule {text!r} has {len(parts)} fields; expected 5 (minute hour day month weekday) or 6 (seconds first)"
            )
        try:
            parsed = [_field(p, f) for p, f in zip(parts, _FIELDS, strict=True)]
        except ScheduleError as err:
            raise ScheduleError(f"schedule {text!r}: {err}") from None
        any_day = parsed[3][1] or parsed[5][1]
        return cls(text, fields=tuple(values for values, _ in parsed), any_day=any_day)

    def _day_matches(self, moment: datetime.datetime) -> bool:
        in_month = moment.day in self.fields[3]
        in_week = (moment.isoweekday() % 7) in self.fields[5]
        return (in_month and in_week) if self.any_day else (in_month or in_week)

    def next_after(self, moment: datetime.datetime) -> datetime.datetime:
        """The first time after `moment` (aware, UTC) that the schedule fires."""
        if self.every is not None:
            return moment + datetime.timedelta(seconds=self.every)
        seconds, minutes, hours, _, months, _ = self.fields
        t = moment.replace(microsecond=0) + datetime.timedelta(seconds=1)
        limit = moment + datetime.timedelta(days=366 * 5)
        while t < limit:
            if t.month not in months:
                t = (t.replace(day=1, hour=0, minute=0, second=0) + datetime.timedelta(days=32)).replace(day=1)
            elif not self._day_matches(t):
                t = t.replace(hour=0, minute=0, second=0) + datetime.timedelta(days=1)
            elif t.hour not in hours:
                t = t.replace(minute=0, second=0) + datetime.timedelta(hours=1)
            elif t.minute not in minutes:
                t = t.replace(second=0) + datetime.timedelta(minutes=1)
            elif t.second not in seconds:
                t = t + datetime.timedelta(seconds=1)
            else:
                return t
        raise ScheduleError(f"schedule {self.text!r} never fires")
