"""The secret store contract, for every `secretstores.*` implementation."""

import json
import os
from collections.abc import Callable, Iterator
from typing import Any, cast

import pytest
from ottava_sidecar.components.secretstores.base import SecretNotFoundError, SecretStore

from tests.conformance.backends import Context
from tests.conformance.conftest import Components
from tests.servers.kubernetes import KubernetesNamespace

BUILDING_BLOCK = "secretstores"

SECRETS = {"db-password": "s3cr3t", "api-key": "k-42"}


def _env(context: Context) -> Iterator[None]:
    names = [f"OTTAVA_CONFORMANCE_{name}" for name in SECRETS]
    os.environ.update({f"OTTAVA_CONFORMANCE_{name}": value for name, value in SECRETS.items()})
    yield
    for name in names:
        os.environ.pop(name, None)


def _file(context: Context) -> Iterator[None]:
    (context.data_dir / "secrets.json").write_text(json.dumps(SECRETS), encoding="utf-8")
    yield


def _kubernetes(context: Context) -> Iterator[None]:
    namespace = cast(KubernetesNamespace, context.servers["kubernetes_namespace"])
    for name, value in SECRETS.items():
        namespace.put_secret(name, {name: value})
    yield
    for name in SECRETS:
        namespace.delete_secret(name)


# How each store gets SECRETS before it starts (stores are read-only through Ottava).
SEEDS: dict[str, Callable[[Context], Iterator[None]]] = {
    "secretstores.kubernetes": _kubernetes,
    "secretstores.local.env": _env,
    "secretstores.local.file": _file,
}


@pytest.fixture
async def secrets(components: Components) -> Any:
    seed = SEEDS.get(components.type_name)
    assert seed is not None, f"add how to seed {components.type_name} to SEEDS"
    seeding = seed(components.context)
    next(seeding)
    store = await components.create()
    assert isinstance(store, SecretStore)
    yield store
    next(seeding, None)


async def test_get_returns_the_secret(secrets: SecretStore[Any], type_name: str) -> None:
    assert await secrets.get("db-password") == {"db-password": "s3cr3t"}


async def test_missing_secret_is_an_error_naming_it(secrets: SecretStore[Any], type_name: str) -> None:
    with pytest.raises(SecretNotFoundError, match="no-such-secret"):
        await secrets.get("no-such-secret")


async def test_bulk_get_returns_every_secret(secrets: SecretStore[Any], type_name: str) -> None:
    everything = await secrets.bulk_get()
    for name, value in SECRETS.items():
        assert everything[name] == {name: value}
