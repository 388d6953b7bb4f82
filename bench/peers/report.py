"""The tables `make bench-peers` prints, and the issue's "close the gap" targets judged against them."""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

TARGETS = ("ottava", "daprd", "bare")


@dataclass
class Group:
    """One table: rows of one value per target, in one unit."""

    title: str
    unit: str
    digits: int = 0
    rows: dict[str, dict[str, float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass
class Results:
    groups: dict[str, Group] = field(default_factory=dict)

    def group(self, key: str, title: str, unit: str, digits: int = 0) -> Group:
        return self.groups.setdefault(key, Group(title, unit, digits))

    def value(self, key: str, row: str, target: str) -> float | None:
        group = self.groups.get(key)
        return group.rows.get(row, {}).get(target) if group else None

    def as_json(self) -> dict[str, Any]:
        return {
            key: {"title": g.title, "unit": g.unit, "rows": g.rows, "notes": g.notes} for key, g in self.groups.items()
        }


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def _cell(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def print_group(group: Group, targets: tuple[str, ...]) -> None:
    width = max([len(group.title), *(len(row) for row in group.rows)]) + 2
    header = f"{group.title:<{width}}" + "".join(f"{t:>10}" for t in targets)
    ratios = [other for other in ("daprd", "bare") if other in targets and "ottava" in targets]
    header += "".join(f"{'ottava/' + other:>14}" for other in ratios)
    print(header)
    for row, values in group.rows.items():
        line = f"{row:<{width}}" + "".join(f"{_cell(values.get(t), group.digits):>10}" for t in targets)
        line += "".join(f"{_cell(ratio(values.get('ottava'), values.get(other)), 2):>14}" for other in ratios)
        print(line)
    for note in group.notes:
        print(f"  note: {note}")
    print(f"  ({group.unit})")
    print()


@dataclass(frozen=True)
class Goal:
    """A target of the issue's "close the gap" table, judged on one measured row."""

    what: str
    target: str
    group: str
    row: str
    against: str | None  # "daprd" / "bare": a ratio ottava/against; None: Ottava's own value
    limit: float
    at_most: bool = True  # the measure must be ≤ limit (False: ≥ limit)
    unit: str = "x"


GOALS = (
    Goal("start → ready", "≤ 150 ms", "start", "median", None, 150, unit=" ms"),
    Goal("idle RSS", "≤ daprd's", "memory", "idle RSS", "daprd", 1.0),
    Goal("PublishEvent p50", "≤ 1.3x daprd", "latency", "PublishEvent p50", "daprd", 1.3),
    Goal("GetState p50", "≤ 1.3x daprd", "latency", "GetState p50", "daprd", 1.3),
    Goal("GetState p50", "≤ 1.05x bare", "latency", "GetState p50", "bare", 1.05),
    Goal("CPU per call", "≤ 1.5x daprd", "cpu", "CPU s per 1000 GetState", "daprd", 1.5),
    Goal("throughput, 64 in flight", "≥ daprd's", "throughput", "64 in flight", "daprd", 1.0, at_most=False),
    Goal("pub/sub to one subscriber", "≥ 5,000 events/s", "pubsub", "delivered end to end", None, 5000, False, " /s"),
    Goal("pub/sub, 16 keys", "≥ 5,000 events/s", "pubsub", "delivered, 16 partition keys", None, 5000, False, " /s"),
    Goal("invocation via two sidecars", "≤ 1.5x daprd", "invocation", "p50", "daprd", 1.5),
    Goal("Redis state, GetState", "≤ +0.3 ms over redis-py", "redis", "GetState p50", "bare", 300, unit=" µs over"),
    Goal("Redis state, SaveState", "≤ +0.3 ms over redis-py", "redis", "SaveState p50", "bare", 300, unit=" µs over"),
)


def judge(goal: Goal, results: Results) -> tuple[str, str]:
    """The measure as printed, and `met` / `NOT met` / why it was not measured."""
    ours = results.value(goal.group, goal.row, "ottava")
    theirs = results.value(goal.group, goal.row, goal.against) if goal.against is not None else None
    if goal.unit == " µs over":  # a difference: ottava minus against
        measure = None if ours is None or theirs is None else ours - theirs
    else:
        measure = ours if goal.against is None else ratio(ours, theirs)
    if measure is None:
        missing = "ottava" if ours is None else goal.against
        return "-", f"not measured: no {missing} {goal.row} in this run"
    shown = f"{measure:,.0f}{goal.unit}" if goal.against is None or goal.unit == " µs over" else f"{measure:.2f}x"
    met: Callable[[float, float], bool] = (lambda m, lim: m <= lim) if goal.at_most else (lambda m, lim: m >= lim)
    return shown, "met" if met(measure, goal.limit) else "NOT met"


def print_summary(results: Results) -> list[dict[str, str]]:
    print("close the gap (issue 14), Ottava against each target, from this run")
    rows = [("what", "target", "measured", "verdict")]
    judged = []
    for goal in GOALS:
        shown, verdict = judge(goal, results)
        rows.append((goal.what, goal.target, shown, verdict))
        judged.append({"what": goal.what, "target": goal.target, "measured": shown, "verdict": verdict})
    widths = [max(len(row[i]) for row in rows) + 2 for i in range(3)]
    for row in rows:
        print("".join(f"{cell:<{w}}" for cell, w in zip(row[:3], widths, strict=True)) + row[3])
    return judged
