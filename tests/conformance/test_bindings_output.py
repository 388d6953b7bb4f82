"""The output binding contract, for every `bindings.*` type that has output operations.

Each type says how a payload is written, read back and deleted through its own
operations (`SCENARIOS`); the contract is the same for all: what is written is read
back byte for byte, a deletion is seen, and a request without the metadata an
operation needs is an error naming that metadata.
"""

import asyncio
import contextlib
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from ottava_sidecar.components import catalogue
from ottava_sidecar.components.bindings.base import (
    BindingEvent,
    BindingNotFoundError,
    BindingRequest,
    BindingRequestError,
    BindingResponse,
    InputBinding,
    OutputBinding,
)
from ottava_sidecar.components.errors import ComponentError

from tests.conformance.conftest import Components

BUILDING_BLOCK = "bindings"


def is_output(type_name: str) -> bool:
    return issubclass(catalogue.lookup(type_name).implementation, OutputBinding)


pytestmark = pytest.mark.only.with_args(is_output)

Binding = OutputBinding[Any]


async def call(binding: Binding, operation: str, data: bytes = b"", **metadata: str) -> BindingResponse:
    assert operation in binding.operations, f"{operation} is not an operation of {binding.name}"
    return await binding.invoke(BindingRequest(operation, data, metadata))


@dataclass(frozen=True)
class Scenario:
    """How a type writes `payload` under a name, reads it back (None: gone), and deletes it."""

    write: Callable[[Binding, str, bytes], Awaitable[None]]
    read: Callable[[Binding, str], Awaitable[bytes | None]]
    delete: Callable[[Binding, str], Awaitable[None]]
    missing: tuple[str, str]  # an operation, and the request metadata it cannot do without
    binary: bool = True  # payloads need not be text


# --- localstorage: files -----------------------------------------------------------


async def _file_write(b: Binding, name: str, payload: bytes) -> None:
    assert json.loads((await call(b, "create", payload, fileName=name)).data) == {"fileName": name}


async def _file_read(b: Binding, name: str) -> bytes | None:
    try:
        return (await call(b, "get", fileName=name)).data
    except BindingNotFoundError:
        return None


async def _file_delete(b: Binding, name: str) -> None:
    await call(b, "delete", fileName=name)


# --- redis: keys -------------------------------------------------------------------


async def _key_write(b: Binding, name: str, payload: bytes) -> None:
    await call(b, "create", payload, key=name)


async def _key_read(b: Binding, name: str) -> bytes | None:
    return (await call(b, "get", key=name)).data or None


async def _key_delete(b: Binding, name: str) -> None:
    await call(b, "delete", key=name)


# --- http: an endpoint that keeps what it is sent -----------------------------------


async def _http_write(b: Binding, name: str, payload: bytes) -> None:
    answer = await call(b, "put", payload, path=name, **{"Content-Type": "application/octet-stream"})
    assert answer.metadata["statusCode"] == "201"


async def _http_read(b: Binding, name: str) -> bytes | None:
    try:
        return (await call(b, "get", path=name)).data
    except ComponentError as err:
        if "answered 404" not in str(err):
            raise
        return None


async def _http_delete(b: Binding, name: str) -> None:
    await call(b, "delete", path=name)


# --- postgresql: rows --------------------------------------------------------------

_TABLE = "binding_conformance"


async def _row_write(b: Binding, name: str, payload: bytes) -> None:
    await call(b, "exec", sql=f"CREATE TABLE IF NOT EXISTS {_TABLE} (k text PRIMARY KEY, v text)")
    answer = await call(
        b,
        "exec",
        sql=f"INSERT INTO {_TABLE} (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = excluded.v",
        params=json.dumps([name, payload.decode()]),
    )
    assert answer.metadata["rows-affected"] == "1"
    assert answer.metadata["operation"] == "exec"


async def _row_read(b: Binding, name: str) -> bytes | None:
    rows = json.loads(
        (await call(b, "query", sql=f"SELECT v FROM {_TABLE} WHERE k = $1", params=json.dumps([name]))).data
    )
    return rows[0][0].encode() if rows else None


async def _row_delete(b: Binding, name: str) -> None:
    await call(b, "exec", sql=f"DELETE FROM {_TABLE} WHERE k = $1", params=json.dumps([name]))


SCENARIOS: dict[str, Scenario] = {
    "bindings.localstorage": Scenario(_file_write, _file_read, _file_delete, ("get", "fileName")),
    "bindings.redis": Scenario(_key_write, _key_read, _key_delete, ("create", "key")),
    "bindings.http": Scenario(_http_write, _http_read, _http_delete, ("", "")),
    "bindings.postgresql": Scenario(_row_write, _row_read, _row_delete, ("exec", "sql"), binary=False),
}


def is_input(type_name: str) -> bool:
    return issubclass(catalogue.lookup(type_name).implementation, InputBinding)


# Output types that keep what they are sent, and read it back through their own operations.
STORES = pytest.mark.only.with_args(lambda n: n in SCENARIOS)
# Output types that send to a broker: what they send, their input reads.
SENDERS = pytest.mark.only.with_args(lambda n: n not in SCENARIOS and is_input(n))


def test_every_output_type_has_its_contract(type_name: str) -> None:
    assert type_name in SCENARIOS or is_input(type_name), (
        f"{type_name}: add how it writes, reads and deletes to SCENARIOS, or make it an input binding too"
    )


def scenario(type_name: str) -> Scenario:
    assert type_name in SCENARIOS, f"add how {type_name} writes, reads and deletes to SCENARIOS"
    return SCENARIOS[type_name]


def unique_name() -> str:
    return f"conformance-{uuid.uuid4().hex[:12]}"


def test_operations_are_named_as_dapr_names_them(type_name: str) -> None:
    implementation = catalogue.lookup(type_name).implementation
    assert issubclass(implementation, OutputBinding)
    operations = implementation.operations
    assert operations, f"{type_name} declares no operations"
    assert all(op == op.lower() and op.isidentifier() for op in operations)


@STORES
async def test_what_is_written_is_read_back(components: Components, type_name: str) -> None:
    s = scenario(type_name)
    binding = await components.create()
    name = unique_name()
    payload = '{"order": 7, "note": "héllo"}'.encode()
    await s.write(binding, name, payload)
    assert await s.read(binding, name) == payload


@pytest.mark.only.with_args(lambda n: n in SCENARIOS and SCENARIOS[n].binary)
async def test_binary_payloads_survive(components: Components, type_name: str) -> None:
    s = scenario(type_name)
    binding = await components.create(decodeBase64="false") if type_name.endswith("localstorage") else None
    binding = binding or await components.create()
    name = unique_name()
    payload = bytes(range(256)) * 4
    await s.write(binding, name, payload)
    assert await s.read(binding, name) == payload


@STORES
async def test_a_second_write_replaces_the_first(components: Components, type_name: str) -> None:
    s = scenario(type_name)
    binding = await components.create()
    name = unique_name()
    await s.write(binding, name, b"first")
    await s.write(binding, name, b"second")
    assert await s.read(binding, name) == b"second"


@STORES
async def test_deleted_is_gone(components: Components, type_name: str) -> None:
    s = scenario(type_name)
    binding = await components.create()
    name = unique_name()
    await s.write(binding, name, b"soon gone")
    await s.delete(binding, name)
    assert await s.read(binding, name) is None


@STORES
async def test_another_instance_sees_the_writes(components: Components, type_name: str) -> None:
    s = scenario(type_name)
    first, second = await components.create(), await components.create()
    name = unique_name()
    await s.write(first, name, b"shared")
    assert await s.read(second, name) == b"shared"


@pytest.mark.only.with_args(lambda n: n in SCENARIOS and bool(SCENARIOS[n].missing[0]))
async def test_missing_request_metadata_is_named(components: Components, type_name: str) -> None:
    operation, field = scenario(type_name).missing
    binding = await components.create()
    with pytest.raises(BindingRequestError, match=field):
        await call(binding, operation, b"x")


async def _read_one(binding: Any, send: Callable[[], Awaitable[None]]) -> list[BindingEvent]:
    """Send until the binding's own reader gets something (it may subscribe after the first send)."""
    received: list[BindingEvent] = []
    arrived = asyncio.Event()

    async def handler(event: BindingEvent) -> None:
        received.append(event)
        arrived.set()

    reader = asyncio.create_task(binding.read(handler))
    try:
        async with asyncio.timeout(20):
            while not received:
                await send()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.5):
                        await arrived.wait()
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
    return received


@SENDERS
async def test_what_create_sends_arrives(components: Components, type_name: str) -> None:
    binding = await components.create()
    payload = bytes(range(256)) + uuid.uuid4().hex.encode()
    received = await _read_one(binding, lambda: _sent(binding, payload))
    assert received[0].data == payload


async def _sent(binding: Any, payload: bytes) -> None:
    await call(binding, "create", payload)
