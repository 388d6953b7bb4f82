"""Golden files for the injector: an input pod and the expected result, reviewed as data.

Each `tests/golden/injector/NAME.input.yaml` is injected with fixed settings, once per
form of the sidecar, and compared with the expected file of that form (the warnings and
the resulting pod): `NAME.expected.yaml` for the classic form (a regular container, as
on clusters before 1.29) and `NAME.native.expected.yaml` for the native form (an init
container with `restartPolicy: Always`). `make golden` rewrites the expected files after
an intended change; review the diff like code.
"""

from pathlib import Path
from typing import Any

import pytest
import yaml
from ottava_operator.injection import IdentitySigner, inject
from ottava_operator.settings import InjectorSettings
from ottava_sidecar import __version__

GOLDEN = Path(__file__).parent / "golden" / "injector"
FORMS = {
    "expected": InjectorSettings(image="ottava/ottava:golden"),
    "native.expected": InjectorSettings(image="ottava/ottava:golden", native_sidecar=True),
}
# A fixed identity endpoint and bundle (the operator passes the CA's current one).
IDENTITY = IdentitySigner(
    endpoint="https://10.96.0.10:9445",
    server_name="ottava-webhook.ottava-system.svc",
    trust_anchors="-----BEGIN CERTIFICATE-----\ngolden\n-----END CERTIFICATE-----\n",
)
CASES = sorted(p.name.removesuffix(".input.yaml") for p in GOLDEN.glob("*.input.yaml"))
GOLDEN_FILES = [(name, form) for name in CASES for form in FORMS]


def render(name: str, form: str = "expected") -> dict[str, Any]:
    pod = yaml.safe_load((GOLDEN / f"{name}.input.yaml").read_text(encoding="utf-8"))
    result = inject(pod, FORMS[form], IDENTITY)
    return {"injected": result.pod is not None, "warnings": result.warnings, "pod": result.pod or pod}


@pytest.mark.parametrize(("name", "form"), GOLDEN_FILES)
def test_golden(name: str, form: str) -> None:
    expected_path = GOLDEN / f"{name}.{form}.yaml"
    assert expected_path.exists(), f"{expected_path.name} is missing: run `make golden` and review it"
    expected = yaml.safe_load(expected_path.read_text(encoding="utf-8"))
    assert render(name, form) == expected, (
        f"injector output for {expected_path.name} changed: run `make golden` and review the diff"
    )


@pytest.mark.parametrize(("name", "form"), GOLDEN_FILES)
def test_injection_is_idempotent(name: str, form: str) -> None:
    first = render(name, form)["pod"]
    assert inject(first, FORMS[form], IDENTITY).pod is None


@pytest.mark.parametrize(("name", "form"), GOLDEN_FILES)
def test_a_pod_injected_in_one_form_is_not_injected_again_in_the_other(name: str, form: str) -> None:
    # After an upgrade of the control plane (or a chart value change), a re-submitted pod
    # must not end up with two sidecars.
    first = render(name, form)["pod"]
    other = next(settings for f, settings in FORMS.items() if f != form)
    assert inject(first, other, IDENTITY).pod is None


@pytest.mark.parametrize("name", CASES)
def test_the_native_form_differs_only_in_where_the_sidecar_goes(name: str) -> None:
    classic, native = render(name, "expected")["pod"], render(name, "native.expected")["pod"]
    native_init = native["spec"].get("initContainers") or []
    if not render(name)["injected"]:
        assert classic == native
        return
    sidecar = native_init[0]
    assert sidecar["name"] == "ottava-sidecar" and sidecar.pop("restartPolicy") == "Always"
    assert native["spec"]["containers"] + [sidecar] == classic["spec"]["containers"]
    assert native_init[1:] == (classic["spec"].get("initContainers") or [])


def test_the_default_image_is_the_ottava_image_of_this_version() -> None:
    assert InjectorSettings().image == f"ottava/ottava:{__version__}"


def test_there_are_golden_cases() -> None:
    assert len(CASES) >= 8


def test_without_workload_identity_the_sidecar_runs_without_mtls_and_has_no_identity_token() -> None:
    pod = yaml.safe_load((GOLDEN / "deployment-defaults.input.yaml").read_text(encoding="utf-8"))
    with_identity = inject(pod, FORMS["expected"], IDENTITY).pod
    without = inject(pod, FORMS["expected"], None).pod
    assert with_identity is not None and without is not None

    def sidecar(injected: dict[str, Any]) -> dict[str, Any]:
        return next(c for c in injected["spec"]["containers"] if c["name"] == "ottava-sidecar")

    def token_paths(injected: dict[str, Any]) -> list[str]:
        volume = next(v for v in injected["spec"]["volumes"] if v["name"] == "ottava-token")
        return [s["serviceAccountToken"]["path"] for s in volume["projected"]["sources"] if "serviceAccountToken" in s]

    assert sidecar(without)["args"] == [*sidecar(with_identity)["args"], "--disable-mtls"]
    assert "--disable-mtls" not in sidecar(with_identity)["args"]
    identity_env = {"OTTAVA_IDENTITY_ENDPOINT", "OTTAVA_IDENTITY_SERVER_NAME", "OTTAVA_TRUST_ANCHORS"}
    assert identity_env <= {e["name"] for e in sidecar(with_identity)["env"]}
    assert not identity_env & {e["name"] for e in sidecar(without)["env"]}
    assert (token_paths(with_identity), token_paths(without)) == (["token", "identity-token"], ["token"])
