"""Golden files for the injector: an input pod and the expected result, reviewed as data.

Each `tests/golden/injector/NAME.input.yaml` is injected with fixed settings and compared
with `NAME.expected.yaml` (the warnings and the resulting pod). `make golden` rewrites
the expected files after an intended change; review the diff like code.
"""

from pathlib import Path
from typing import Any

import pytest
import yaml
from ottava_operator.injection import InjectorSettings, inject

GOLDEN = Path(__file__).parent / "golden" / "injector"
SETTINGS = InjectorSettings(image="ottava/sidecar:golden")
CASES = sorted(p.name.removesuffix(".input.yaml") for p in GOLDEN.glob("*.input.yaml"))


def render(name: str) -> dict[str, Any]:
    pod = yaml.safe_load((GOLDEN / f"{name}.input.yaml").read_text(encoding="utf-8"))
    result = inject(pod, SETTINGS)
    return {"injected": result.pod is not None, "warnings": result.warnings, "pod": result.pod or pod}


@pytest.mark.parametrize("name", CASES)
def test_golden(name: str) -> None:
    expected_path = GOLDEN / f"{name}.expected.yaml"
    assert expected_path.exists(), f"{expected_path.name} is missing: run `make golden` and review it"
    expected = yaml.safe_load(expected_path.read_text(encoding="utf-8"))
    assert render(name) == expected, f"injector output for {name} changed: run `make golden` and review the diff"


@pytest.mark.parametrize("name", CASES)
def test_injection_is_idempotent(name: str) -> None:
    first = render(name)["pod"]
    assert inject(first, SETTINGS).pod is None


def test_there_are_golden_cases() -> None:
    assert len(CASES) >= 6
