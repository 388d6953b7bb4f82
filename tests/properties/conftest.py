"""One real sidecar (`ottava run`) for the property suite, and the hypothesis profile it runs under.

`OTTAVA_FUZZ_PROFILE` picks the profile: `ci` (the default, what `make test` runs) is
short and derandomized, so a run is reproducible and needs no example database; `long`
(what `make fuzz` runs, round after round with fresh seeds) explores far more and keeps
failing examples in `.pytest_cache/hypothesis` so the next run replays them first.
"""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis.database import DirectoryBasedExampleDatabase

from tests.conftest import SidecarFactory, SidecarProcess
from tests.properties import wire

PROFILE_ENV = "OTTAVA_FUZZ_PROFILE"
# Examples per test in one `long` round; `python -m tests.properties` sets it from its budget.
EXAMPLES_ENV = "OTTAVA_FUZZ_EXAMPLES"

_QUIET = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
settings.register_profile(
    "ci",
    max_examples=80,
    stateful_step_count=25,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=_QUIET,
    # A failure is reported as found, unshrunk: shrinking a sequence of network calls can
    # take minutes, which `make fuzz` (whose profile shrinks) can afford and `make test` cannot.
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    report_multiple_bugs=False,
    print_blob=False,
)
settings.register_profile(
    "long",
    max_examples=int(os.environ.get(EXAMPLES_ENV, "400")),
    stateful_step_count=50,
    derandomize=False,
    database=DirectoryBasedExampleDatabase(".pytest_cache/hypothesis"),
    deadline=None,
    suppress_health_check=_QUIET,
    print_blob=True,
)


def _component(name: str, type_: str, **metadata: str) -> str:
    lines = "".join(f"  - {{name: {key}, value: {value!r}}}\n" for key, value in metadata.items())
    return (
        "apiVersion: ottava.io/v1alpha1\nkind: Component\n"
        f"metadata: {{name: {name}}}\nspec:\n  type: {type_}\n  version: v1\n"
        + (f"  metadata:\n{lines}" if lines else "")
    )


@pytest.fixture(scope="session")
def fuzz_settings() -> settings:
    return settings.get_profile(os.environ.get(PROFILE_ENV, "ci"))


@pytest.fixture(scope="session")
def fuzz_sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SidecarProcess]:
    """The standalone in-memory components, and a second state store on SQLite."""
    folder = tmp_path_factory.mktemp("fuzz-sidecar")
    database = Path(folder / "state.db")
    resources = {
        "statestore.yaml": _component("statestore", "state.in-memory"),
        "sqlitestore.yaml": _component("sqlitestore", "state.sqlite", databasePath=str(database)),
        "pubsub.yaml": _component("pubsub", "pubsub.in-memory"),
        "lockstore.yaml": _component("lockstore", "lock.in-memory"),
        "configstore.yaml": _component("configstore", "configuration.in-memory"),
    }
    factory = SidecarFactory(folder)
    sidecar = factory.start("--app-id", "fuzz", resources=resources)
    assert sidecar.status == "UP", sidecar.log()
    yield sidecar
    code = sidecar.stop()
    factory.stop_all()
    assert code == 0, f"the sidecar exited with {code} after the suite:\n{sidecar.log()[-4000:]}"


@pytest.fixture(scope="session")
def fuzz_surface(fuzz_sidecar: SidecarProcess) -> Iterator[wire.Surface]:
    surface = wire.Surface(fuzz_sidecar.http_url, fuzz_sidecar.grpc_address)
    yield surface
    surface.close()
