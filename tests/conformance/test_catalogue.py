"""Every registered implementation takes part in its building block's suite."""

from ottava_sidecar.components import catalogue

from tests.conformance.backends import BACKENDS

SUITES = {"state", "configuration", "lock", "sequencer", "secretstores"}


def test_every_registered_type_has_a_conformance_set_up() -> None:
    missing = [t.name for t in catalogue.all_types() if t.building_block in SUITES and t.name not in BACKENDS]
    assert not missing, f"add these types to tests/conformance/backends.py: {missing}"
