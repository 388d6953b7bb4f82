"""Parameterises each suite over every implementation of its building block in the catalogue.

A suite module sets `BUILDING_BLOCK = "state"` (and optionally `REQUIRES = "persistent"`
on a test via the `requires` marker); each test taking `type_name` then runs once per
registered type of that block, and the `components` fixture builds instances of it on
its real server.
"""

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from ottava_sidecar.components import catalogue
from ottava_sidecar.components.base import ComponentInstance
from ottava_sidecar.components.registry import Registry
from ottava_sidecar.resources.models import Component

from tests.conformance.backends import BACKENDS, Backend, Context
from tests.servers.fixtures import *  # noqa: F403  (the session-scoped servers)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "e2e: runs against the real Kubernetes control plane of e2e/ (started on demand)"
    )
    config.addinivalue_line(
        "markers", "requires(trait): run only for implementations with this Backend trait (shared, persistent)"
    )


def implementations(building_block: str) -> list[str]:
    return sorted(t.name for t in catalogue.all_types() if t.building_block == building_block)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    block: str | None = getattr(metafunc.module, "BUILDING_BLOCK", None)
    if "type_name" not in metafunc.fixturenames or not block:
        return
    names = implementations(block)
    for marker in metafunc.definition.iter_markers("requires"):
        names = [n for n in names if n not in BACKENDS or getattr(BACKENDS[n], marker.args[0])]
    # A contract point that only some types promise is generated for those alone: a
    # type that does not promise it has no such test, rather than a skipped one.
    for marker in metafunc.definition.iter_markers("only"):
        names = [n for n in names if marker.args[0](n)]
    metafunc.parametrize(
        "type_name", [pytest.param(n, marks=BACKENDS[n].marks if n in BACKENDS else ()) for n in names]
    )


class Components:
    """Builds initialised components of one type against its server; closes them after the test."""

    def __init__(self, request: pytest.FixtureRequest, type_name: str, data_dir: Path) -> None:
        if type_name not in BACKENDS:
            raise AssertionError(f"{type_name} has no entry in tests/conformance/backends.py")
        self.type_name = type_name
        self.backend: Backend = BACKENDS[type_name]
        servers = {name: request.getfixturevalue(name) for name in self.backend.servers}
        self.context = Context(servers, data_dir)
        self.open: list[ComponentInstance[Any]] = []

    def metadata(self, **overrides: str) -> dict[str, str]:
        return {**self.backend.metadata(self.context), **overrides}

    async def registry(self, name: str, **overrides: str) -> Registry:
        """A sidecar's registry that has loaded this type as the Component `name` (close it after)."""
        manifest = {
            "apiVersion": "ottava.io/v1alpha1",
            "kind": "Component",
            "metadata": {"name": name},
            "spec": {
                "type": self.type_name,
                "metadata": [{"name": k, "value": v} for k, v in self.metadata(**overrides).items()],
            },
        }
        registry = Registry("app")
        await registry.load([Component.model_validate(manifest)])
        return registry

    async def create(self, *, app_id: str = "app", name: str = "store", **overrides: str) -> Any:
        """A new instance — as another sidecar, or the same one restarted, would have."""
        component = catalogue.lookup(self.type_name).create(name, self.metadata(**overrides), app_id=app_id)
        try:
            await component.init()
        except BaseException:
            # As the registry does: a component that failed to start may hold half-open
            # clients (an apiserver session, a pool), which would leak into later tests.
            await component.close()
            raise
        self.open.append(component)
        return component

    async def close(self, component: ComponentInstance[Any]) -> None:
        self.open.remove(component)
        await component.close()

    async def close_all(self) -> None:
        for component in reversed(self.open):
            await component.close()
        self.open.clear()


@pytest.fixture
async def components(request: pytest.FixtureRequest, type_name: str, tmp_path: Path) -> AsyncIterator[Components]:
    factory = Components(request, type_name, tmp_path)
    yield factory
    await factory.close_all()


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:10]}"
