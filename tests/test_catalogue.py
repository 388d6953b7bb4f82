"""The catalogue loads implementations on first lookup; its table must match what they register."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
import tomllib
from pathlib import Path

import ottava_sidecar.components as components_package
import pytest
from ottava_sidecar import __version__
from ottava_sidecar.components import builtin, catalogue, registration

ROOT = Path(__file__).resolve().parents[1]


def test_each_module_in_the_table_registers_the_type_it_is_listed_for() -> None:
    for type_name, module in builtin.MODULES.items():
        importlib.import_module(module)
        assert type_name in registration.TYPES, f"{module} does not register {type_name}"
        assert registration.TYPES[type_name]["v1"].implementation.__module__ == module


def test_no_implementation_is_left_out_of_the_table() -> None:
    for info in pkgutil.walk_packages(components_package.__path__, f"{components_package.__name__}."):
        importlib.import_module(info.name)
    registered = {t.implementation.__module__: t.name for v in registration.TYPES.values() for t in v.values()}
    assert {name: builtin.MODULES.get(name) for name in registered.values()} == {
        name: module for module, name in registered.items()
    }


def test_a_sidecar_on_the_defaults_imports_no_backend_client() -> None:
    """Start-up cost: only the in-memory types' modules, and none of the backends' libraries."""
    code = (
        "import sys; from ottava_sidecar.components import catalogue;"
        "from ottava_sidecar.runtime.defaults import default_components;"
        "[catalogue.lookup(c.spec.type) for c in default_components()];"
        "print(' '.join(sorted(sys.modules)))"
    )
    loaded = set(
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    )
    for library in (
        "redis",
        "asyncpg",
        "aetcd",
        "nats",
        "aiomqtt",
        "aio_pika",
        "aiozk",
        "kubernetes_asyncio",
        "wasmtime",
    ):
        assert library not in loaded, f"{library} is imported by a sidecar that does not use it"
    assert "ottava_sidecar.components.state.redis" not in loaded


def test_an_unknown_type_names_the_known_ones_of_its_block_imported_or_not() -> None:
    with pytest.raises(catalogue.UnknownComponentTypeError, match=r"known state types: .*state\.redis"):
        catalogue.lookup("state.nosuchdb")


def test_the_version_is_pyprojects() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert __version__ == pyproject["project"]["version"]
