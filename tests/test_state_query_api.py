"""State query on the wires: the Dapr Python SDK, unmodified, over gRPC, and Dapr's HTTP route.

The query language itself is the conformance suite's (tests/conformance/test_state_query.py);
here, what an app sees: the SDK's `query_state`, the HTTP body and status codes, and the
error of a store that cannot query.
"""

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from dapr.clients import DaprClient
from dapr.clients.exceptions import DaprGrpcError
from dapr.clients.grpc._state import StateItem
from ottava_sidecar.components.registry import Registry

from tests.conftest import SidecarProcess
from tests.servers import redis_server as redis_setup
from tests.servers.fixtures import redis_server  # noqa: F401  (the session's Redis)
from tests.servers.process import ServerProcess
from tests.test_http_api import component, sidecar_on

CITIES = {
    "seattle": {"city": "Seattle", "state": "WA", "people": {"count": 750}},
    "portland": {"city": "Portland", "state": "OR", "people": {"count": 650}},
    "spokane": {"city": "Spokane", "state": "WA", "people": {"count": 230}},
    "sacramento": {"city": "Sacramento", "state": "CA", "people": {"count": 525}},
}


@pytest.fixture
def dapr_env(default_sidecar: SidecarProcess, monkeypatch: pytest.MonkeyPatch) -> SidecarProcess:
    monkeypatch.setenv("DAPR_GRPC_PORT", str(default_sidecar.grpc_port))
    monkeypatch.setenv("DAPR_HTTP_PORT", str(default_sidecar.http_port))
    return default_sidecar


@pytest.fixture
def batch() -> str:
    """A mark of this test's items: the default sidecar's store is shared by other tests."""
    return uuid.uuid4().hex[:8]


def test_the_dapr_sdk_queries_filters_sorts_and_pages(dapr_env: SidecarProcess, batch: str) -> None:
    with DaprClient() as client:
        client.save_bulk_state(
            "statestore",
            [
                StateItem(key=f"{batch}-{name}", value=json.dumps({**value, "batch": batch}))
                for name, value in CITIES.items()
            ],
        )
        query: dict[str, Any] = {
            "filter": {"AND": [{"EQ": {"batch": batch}}, {"IN": {"state": ["WA", "CA"]}}]},
            "sort": [{"key": "people.count", "order": "DESC"}],
            "page": {"limit": 2},
        }
        first = client.query_state("statestore", json.dumps(query))
        assert [r.key for r in first.results] == [f"{batch}-seattle", f"{batch}-sacramento"]
        assert first.results[0].json()["city"] == "Seattle" and first.results[0].etag
        assert first.token
        query["page"]["token"] = first.token
        second = client.query_state("statestore", json.dumps(query))
        assert [r.key for r in second.results] == [f"{batch}-spokane"]
        assert second.token == ""

        with pytest.raises(DaprGrpcError) as refused:
            client.query_state("statestore", json.dumps({"filter": {"LIKE": {"city": "S%"}}}))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "unsupported filter 'LIKE'" in str(refused.value.details())


@pytest.fixture
async def http(tmp_path: Path, redis_server: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:  # noqa: F811
    registry = Registry("shop")
    await registry.load(
        [
            component("statestore", "state.in-memory"),
            component("cache", "state.redis", redisHost=redis_server.address, redisPassword=redis_setup.PASSWORD),
        ]
    )
    async with sidecar_on(registry) as sidecar:
        yield sidecar.http
    await registry.close()


async def test_http_query_answers_daprs_body(http: httpx.AsyncClient) -> None:
    saved = await http.post(
        "/v1.0/state/statestore",
        json=[{"key": k, "value": v} for k, v in CITIES.items()] + [{"key": "note", "value": "plain text"}],
    )
    assert saved.status_code == 204
    query = {"filter": {"EQ": {"state": "WA"}}, "sort": [{"key": "city"}], "page": {"limit": 1}}
    answer = await http.post("/v1.0-alpha1/state/statestore/query", json=query)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("application/json")
    body = answer.json()
    assert [(r["key"], r["data"]) for r in body["results"]] == [("seattle", CITIES["seattle"])]
    assert body["results"][0]["etag"] and body["token"] == "1"
    query["page"]["token"] = body["token"]
    last = (await http.put("/v1.0-alpha1/state/statestore/query", json=query)).json()
    assert [r["key"] for r in last["results"]] == ["spokane"] and "token" not in last

    everything = (await http.post("/v1.0-alpha1/state/statestore/query", content=b"{}")).json()
    assert {r["key"]: r["data"] for r in everything["results"]} == {**CITIES, "note": "plain text"}


async def test_http_query_errors_name_the_problem(http: httpx.AsyncClient) -> None:
    malformed = await http.post("/v1.0-alpha1/state/statestore/query", json={"page": {"limit": "ten"}})
    assert malformed.status_code == 400
    assert malformed.json()["errorCode"] == "ERR_MALFORMED_REQUEST" and "page.limit" in malformed.json()["message"]

    unsupported = await http.post("/v1.0-alpha1/state/cache/query", json={"filter": {"EQ": {"state": "WA"}}})
    assert unsupported.status_code == 500
    assert unsupported.json() == {
        "errorCode": "ERR_STATE_STORE_NOT_SUPPORTED",
        "message": "state store cache does not support querying (state.in-memory, state.sqlite and"
        " state.postgresql do)",
    }
    missing = await http.post("/v1.0-alpha1/state/nostore/query", json={})
    assert missing.status_code == 400 and missing.json()["errorCode"] == "ERR_STATE_STORE_NOT_FOUND"
