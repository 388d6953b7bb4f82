"""The HTTP surface as curl and Dapr's HTTP clients use it: Dapr's HTTP API v1.0, health, metrics.

The apps are served in-process over real HTTP (aiohttp on a free loopback port, httpx
as the client), on real in-memory components, so each test can also look at the
registry and the shutdown request directly.
"""

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from ottava_sidecar.api.apis import Apis
from ottava_sidecar.api.http import build_api_app, build_metrics_app
from ottava_sidecar.api.metadata import AppConnectionProperties, MetadataApi
from ottava_sidecar.components.configuration.base import ConfigurationItem
from ottava_sidecar.components.registry import Registry
from ottava_sidecar.limits import Limits
from ottava_sidecar.resources.models import Component
from prometheus_client.parser import text_string_to_metric_families

APP_ID = "shop"
TOKEN = "let-me-in"


def component(name: str, type_: str, *, ignore_errors: bool = False, **metadata: str) -> Component:
    return Component.model_validate(
        {
            "apiVersion": "ottava.io/v1alpha1",
            "kind": "Component",
            "metadata": {"name": name},
            "spec": {
                "type": type_,
                "ignoreErrors": ignore_errors,
                "metadata": [{"name": k, "value": v} for k, v in metadata.items()],
            },
        }
    )


def components(tmp_path: Path) -> list[Component]:
    secrets = tmp_path / "secrets.json"
    secrets.write_text(json.dumps({"db-password": "s3cret", "api-key": "k-123"}), encoding="utf-8")
    return [
        component("statestore", "state.in-memory"),
        component("configstore", "configuration.in-memory"),
        component("lockstore", "lock.in-memory"),
        component("secretstore", "secretstores.local.file", secretsFile=str(secrets)),
    ]


@asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[httpx.AsyncClient]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        async with httpx.AsyncClient(base_url=f"http://{host}:{port}") as client:
            yield client
    finally:
        await runner.cleanup()


@dataclass
class Sidecar:
    http: httpx.AsyncClient
    apis: Apis
    shutdown_requested: asyncio.Event


@asynccontextmanager
async def sidecar_on(
    registry: Registry, api_token: str | None = None, limits: Limits | None = None
) -> AsyncIterator[Sidecar]:
    shutdown_requested = asyncio.Event()
    metadata = MetadataApi(registry, "standalone", AppConnectionProperties(port=8080), shutdown_requested.set)
    apis = Apis.create(registry, metadata, limits=limits)
    async with serving(build_api_app(apis, api_token=api_token)) as http:
        yield Sidecar(http, apis, shutdown_requested)


@pytest.fixture
async def registry(tmp_path: Path) -> AsyncIterator[Registry]:
    registry = Registry(APP_ID)
    await registry.load(components(tmp_path))
    yield registry
    await registry.close()


@pytest.fixture
async def sidecar(registry: Registry) -> AsyncIterator[Sidecar]:
    async with sidecar_on(registry) as running:
        yield running


@pytest.fixture
async def http(sidecar: Sidecar) -> httpx.AsyncClient:
    return sidecar.http


def assert_error(response: httpx.Response, status: int, error_code: str, *names: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["errorCode"] == error_code, body
    for name in names:
        assert name in body["message"], body


# --- state ---------------------------------------------------------------------------------


async def test_saved_state_reads_back_as_the_json_that_was_saved(http: httpx.AsyncClient) -> None:
    saved = await http.post(
        "/v1.0/state/statestore",
        json=[
            {"key": "order-1", "value": {"item": "tea", "qty": 2}},
            {"key": "greeting", "value": "hello"},
            {"key": "count", "value": 42},
        ],
    )
    assert saved.status_code == 204, saved.text

    order = await http.get("/v1.0/state/statestore/order-1")
    assert order.status_code == 200
    assert order.json() == {"item": "tea", "qty": 2}
    assert order.headers["ETag"]
    assert order.headers["Content-Type"].startswith("application/json")
    # Dapr stores a JSON string as JSON: the quotes come back.
    assert (await http.get("/v1.0/state/statestore/greeting")).content == b'"hello"'
    assert (await http.get("/v1.0/state/statestore/count")).json() == 42


async def test_a_missing_key_answers_204_without_body(http: httpx.AsyncClient) -> None:
    missing = await http.get("/v1.0/state/statestore/never-saved")
    assert missing.status_code == 204
    assert missing.content == b""


async def test_keys_may_contain_slashes(http: httpx.AsyncClient) -> None:
    assert (await http.post("/v1.0/state/statestore", json=[{"key": "users/7", "value": [1]}])).status_code == 204
    assert (await http.get("/v1.0/state/statestore/users/7")).json() == [1]


async def test_etag_mismatch_is_409_and_keeps_the_stored_value(http: httpx.AsyncClient) -> None:
    await http.post("/v1.0/state/statestore", json=[{"key": "cart", "value": {"n": 1}}])
    etag = (await http.get("/v1.0/state/statestore/cart")).headers["ETag"]

    stale = await http.post(
        "/v1.0/state/statestore", json=[{"key": "cart", "value": {"n": 99}, "etag": str(int(etag) + 100)}]
    )
    assert_error(stale, 409, "ERR_STATE_SAVE", "cart", "statestore", "etag mismatch")
    assert (await http.get("/v1.0/state/statestore/cart")).json() == {"n": 1}

    updated = await http.post("/v1.0/state/statestore", json=[{"key": "cart", "value": {"n": 2}, "etag": etag}])
    assert updated.status_code == 204
    after = await http.get("/v1.0/state/statestore/cart")
    assert after.json() == {"n": 2}
    assert after.headers["ETag"] != etag


async def test_first_write_without_etag_fails_when_the_key_exists(http: httpx.AsyncClient) -> None:
    item = {"key": "seat-12", "value": "alice", "options": {"concurrency": "first-write"}}
    assert (await http.post("/v1.0/state/statestore", json=[item])).status_code == 204
    again = await http.post("/v1.0/state/statestore", json=[{**item, "value": "bob"}])
    assert_error(again, 409, "ERR_STATE_SAVE", "seat-12")
    assert (await http.get("/v1.0/state/statestore/seat-12")).json() == "alice"


async def test_an_etag_the_store_never_issued_is_400(http: httpx.AsyncClient) -> None:
    await http.post("/v1.0/state/statestore", json=[{"key": "k", "value": 1}])
    response = await http.post("/v1.0/state/statestore", json=[{"key": "k", "value": 2, "etag": "not-an-etag"}])
    assert_error(response, 400, "ERR_STATE_SAVE", "not-an-etag")


async def test_unknown_concurrency_is_400_naming_it(http: httpx.AsyncClient) -> None:
    item = {"key": "k", "value": 1, "options": {"concurrency": "whoever-first"}}
    response = await http.post("/v1.0/state/statestore", json=[item])
    assert_error(response, 400, "ERR_MALFORMED_REQUEST", "whoever-first")


async def test_delete_honours_if_match(http: httpx.AsyncClient) -> None:
    await http.post("/v1.0/state/statestore", json=[{"key": "doomed", "value": True}])
    etag = (await http.get("/v1.0/state/statestore/doomed")).headers["ETag"]

    stale = await http.delete("/v1.0/state/statestore/doomed", headers={"If-Match": str(int(etag) + 1)})
    assert_error(stale, 409, "ERR_STATE_DELETE", "doomed")
    assert (await http.get("/v1.0/state/statestore/doomed")).status_code == 200

    deleted = await http.delete("/v1.0/state/statestore/doomed", headers={"If-Match": etag})
    assert deleted.status_code == 204
    assert (await http.get("/v1.0/state/statestore/doomed")).status_code == 204


async def test_delete_with_first_write_needs_an_etag(http: httpx.AsyncClient) -> None:
    await http.post("/v1.0/state/statestore", json=[{"key": "kept", "value": 1}])
    response = await http.delete("/v1.0/state/statestore/kept", params={"concurrency": "first-write"})
    assert_error(response, 409, "ERR_STATE_DELETE", "kept")


async def test_bulk_get_returns_values_and_etags_and_leaves_out_missing_data(http: httpx.AsyncClient) -> None:
    await http.post("/v1.0/state/statestore", json=[{"key": "a", "value": {"x": 1}}, {"key": "b", "value": "text"}])
    response = await http.post("/v1.0/state/statestore/bulk", json={"keys": ["a", "b", "nope"], "parallelism": 4})
    assert response.status_code == 200
    items = {item["key"]: item for item in response.json()}
    assert items["a"]["data"] == {"x": 1}
    assert items["b"]["data"] == "text"
    assert items["a"]["etag"]
    assert items["b"]["etag"]
    assert items["nope"] == {"key": "nope"}


async def test_transaction_applies_upserts_and_deletes(http: httpx.AsyncClient) -> None:
    await http.post("/v1.0/state/statestore", json=[{"key": "old", "value": 1}])
    response = await http.post(
        "/v1.0/state/statestore/transaction",
        json={
            "operations": [
                {"operation": "upsert", "request": {"key": "new", "value": {"v": 2}}},
                {"operation": "delete", "request": {"key": "old"}},
            ],
            "metadata": {},
        },
    )
    assert response.status_code == 204, response.text
    assert (await http.get("/v1.0/state/statestore/new")).json() == {"v": 2}
    assert (await http.get("/v1.0/state/statestore/old")).status_code == 204


async def test_a_transaction_with_a_stale_etag_changes_nothing(http: httpx.AsyncClient) -> None:
    await http.post("/v1.0/state/statestore", json=[{"key": "balance", "value": 10}])
    etag = (await http.get("/v1.0/state/statestore/balance")).headers["ETag"]
    response = await http.post(
        "/v1.0/state/statestore/transaction",
        json={
            "operations": [
                {"operation": "upsert", "request": {"key": "ledger", "value": ["-5"]}},
                {"operation": "upsert", "request": {"key": "balance", "value": 5, "etag": str(int(etag) + 7)}},
            ]
        },
    )
    assert response.status_code == 409, response.text
    assert "etag mismatch" in response.json()["message"]
    assert (await http.get("/v1.0/state/statestore/ledger")).status_code == 204
    assert (await http.get("/v1.0/state/statestore/balance")).json() == 10


async def test_an_unknown_transaction_operation_is_named(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/v1.0/state/statestore/transaction",
        json={"operations": [{"operation": "merge", "request": {"key": "k", "value": 1}}]},
    )
    assert_error(response, 400, "ERR_NOT_SUPPORTED_STATE_OPERATION", "merge")


async def test_ttl_metadata_sets_expiry_and_zero_expires_at_once(http: httpx.AsyncClient) -> None:
    saved = await http.post(
        "/v1.0/state/statestore", json=[{"key": "session", "value": "abc", "metadata": {"ttlInSeconds": "60"}}]
    )
    assert saved.status_code == 204
    session = await http.get("/v1.0/state/statestore/session")
    assert session.status_code == 200
    assert session.headers["metadata.ttlExpireTime"].endswith("Z")

    # TTL given once for every item, as a query parameter, the way Dapr accepts it.
    await http.post(
        "/v1.0/state/statestore", params={"metadata.ttlInSeconds": "0"}, json=[{"key": "flash", "value": 1}]
    )
    assert (await http.get("/v1.0/state/statestore/flash")).status_code == 204


async def test_a_ttl_that_is_not_a_number_is_400_naming_it(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/v1.0/state/statestore", json=[{"key": "k", "value": 1, "metadata": {"ttlInSeconds": "soon"}}]
    )
    assert_error(response, 400, "ERR_MALFORMED_REQUEST", "ttlInSeconds", "soon")


@pytest.mark.parametrize(
    "body",
    [b"not json", b'{"key": "k", "value": 1}', b'[{"value": 1}]'],
    ids=["not-json", "not-an-array", "no-key"],
)
async def test_a_malformed_save_body_is_400_saying_what_is_wrong(http: httpx.AsyncClient, body: bytes) -> None:
    response = await http.post("/v1.0/state/statestore", content=body)
    assert_error(response, 400, "ERR_MALFORMED_REQUEST", "malformed request body")
    if body.startswith(b"[{"):
        assert "[0].key" in response.json()["message"]


async def test_a_body_over_dapr_limit_of_4_mib_is_refused(http: httpx.AsyncClient) -> None:
    big = json.dumps([{"key": "big", "value": "x" * (4 * 1024 * 1024)}]).encode()
    response = await http.post("/v1.0/state/statestore", content=big)
    assert_error(response, 413, "ERR_MALFORMED_REQUEST", "4194304")
    assert (await http.get("/v1.0/state/statestore/big")).status_code == 204


async def test_an_empty_key_in_a_save_is_named(http: httpx.AsyncClient) -> None:
    response = await http.post("/v1.0/state/statestore", json=[{"key": "", "value": 1}])
    assert_error(response, 400, "ERR_MALFORMED_REQUEST", "key is empty", "statestore")


@pytest.mark.parametrize(
    ("method", "path", "body", "error_code"),
    [
        ("GET", "/v1.0/state/nosuchstore/k", None, "ERR_STATE_STORE_NOT_FOUND"),
        ("POST", "/v1.0/state/nosuchstore", [{"key": "k", "value": 1}], "ERR_STATE_STORE_NOT_FOUND"),
        ("GET", "/v1.0/configuration/nosuchstore?key=a", None, "ERR_CONFIGURATION_STORE_NOT_FOUND"),
        (
            "POST",
            "/v1.0-alpha1/lock/nosuchstore",
            {"resourceId": "r", "lockOwner": "o", "expiryInSeconds": 5},
            "ERR_LOCK_STORE_NOT_FOUND",
        ),
        ("GET", "/v1.0/secrets/nosuchstore/db-password", None, "ERR_SECRET_STORE_NOT_FOUND"),
    ],
)
async def test_an_unknown_store_is_400_naming_it(
    http: httpx.AsyncClient, method: str, path: str, body: Any, error_code: str
) -> None:
    response = await http.request(method, path, json=body)
    assert_error(response, 400, error_code, "nosuchstore")


async def test_a_store_of_another_building_block_is_not_a_state_store(http: httpx.AsyncClient) -> None:
    response = await http.get("/v1.0/state/lockstore/k")
    assert_error(response, 400, "ERR_STATE_STORE_NOT_FOUND", "state store lockstore is not found")


# --- configuration -------------------------------------------------------------------------


async def test_configuration_get_returns_items_by_key(sidecar: Sidecar) -> None:
    await sidecar.apis.configuration.save(
        "configstore",
        "",
        [
            ConfigurationItem("theme", "dark", metadata={"owner": "ui"}),
            ConfigurationItem("limit", "10"),
            ConfigurationItem("limit", "50", group="beta"),
        ],
    )
    response = await sidecar.http.get("/v1.0/configuration/configstore", params={"key": ["theme", "limit"]})
    assert response.status_code == 200
    items = response.json()
    assert set(items) == {"theme", "limit"}
    assert items["theme"]["value"] == "dark"
    assert items["theme"]["metadata"] == {"owner": "ui"}
    assert items["theme"]["version"]
    assert items["limit"]["value"] == "10"

    beta = await sidecar.http.get(
        "/v1.0-alpha1/configuration/configstore", params={"key": "limit", "metadata.group": "beta"}
    )
    assert beta.status_code == 200
    assert beta.json()["limit"]["value"] == "50"


async def test_configuration_subscribe_over_http_is_501_naming_the_route(http: httpx.AsyncClient) -> None:
    response = await http.get("/v1.0/configuration/configstore/subscribe")
    assert_error(response, 501, "ERR_NOT_IMPLEMENTED", "/v1.0/configuration/configstore/subscribe")


# --- lock ----------------------------------------------------------------------------------


async def test_lock_has_one_owner_and_only_the_owner_unlocks(http: httpx.AsyncClient) -> None:
    def lock(owner: str) -> dict[str, Any]:
        return {"resourceId": "invoice-7", "lockOwner": owner, "expiryInSeconds": 60}

    def unlock(owner: str) -> dict[str, Any]:
        return {"resourceId": "invoice-7", "lockOwner": owner}

    first = await http.post("/v1.0-alpha1/lock/lockstore", json=lock("worker-a"))
    assert first.status_code == 200
    assert first.json() == {"success": True}
    assert (await http.post("/v1.0-alpha1/lock/lockstore", json=lock("worker-b"))).json() == {"success": False}

    assert (await http.post("/v1.0-alpha1/unlock/lockstore", json=unlock("worker-b"))).json() == {"status": 2}
    assert (await http.post("/v1.0-alpha1/unlock/lockstore", json=unlock("worker-a"))).json() == {"status": 0}
    assert (await http.post("/v1.0-alpha1/unlock/lockstore", json=unlock("worker-a"))).json() == {"status": 1}
    assert (await http.post("/v1.0-alpha1/lock/lockstore", json=lock("worker-b"))).json() == {"success": True}


async def test_a_lock_request_without_resource_id_is_named(http: httpx.AsyncClient) -> None:
    response = await http.post("/v1.0-alpha1/lock/lockstore", json={"lockOwner": "o", "expiryInSeconds": 5})
    assert_error(response, 400, "ERR_MALFORMED_REQUEST", "ResourceId", "lockstore")


# --- secrets -------------------------------------------------------------------------------


async def test_secret_get_and_bulk(http: httpx.AsyncClient) -> None:
    secret = await http.get("/v1.0/secrets/secretstore/db-password")
    assert secret.status_code == 200
    assert secret.json() == {"db-password": "s3cret"}

    bulk = await http.get("/v1.0/secrets/secretstore/bulk")
    assert bulk.status_code == 200
    assert bulk.json() == {"db-password": {"db-password": "s3cret"}, "api-key": {"api-key": "k-123"}}


async def test_a_missing_secret_is_404_naming_it(http: httpx.AsyncClient) -> None:
    response = await http.get("/v1.0/secrets/secretstore/no-such-secret")
    assert_error(response, 404, "ERR_SECRET_GET", "no-such-secret", "secretstore")


# --- metadata and lifecycle ----------------------------------------------------------------


async def test_metadata_lists_components_and_extended_values(http: httpx.AsyncClient) -> None:
    assert (await http.put("/v1.0/metadata/team", content=b"payments")).status_code == 204
    response = await http.get("/v1.0/metadata")
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == APP_ID
    assert body["runtimeVersion"]
    assert body["extended"]["team"] == "payments"
    assert body["appConnectionProperties"] == {"port": 8080, "protocol": "http", "channelAddress": "127.0.0.1"}
    for empty in ("enabledFeatures", "actors", "subscriptions", "httpEndpoints"):
        assert body[empty] == []
    by_name = {c["name"]: c for c in body["components"]}
    assert set(by_name) == {"statestore", "configstore", "lockstore", "secretstore"}
    assert by_name["statestore"]["type"] == "state.in-memory"
    assert by_name["statestore"]["version"] == "v1"
    assert {"ETAG", "TRANSACTIONAL", "TTL"} <= set(by_name["statestore"]["capabilities"])


async def test_shutdown_answers_then_asks_the_sidecar_to_stop(sidecar: Sidecar) -> None:
    response = await sidecar.http.post("/v1.0/shutdown")
    assert response.status_code == 204
    await asyncio.wait_for(sidecar.shutdown_requested.wait(), timeout=5)


# --- health and info -----------------------------------------------------------------------


async def test_health_routes_when_everything_is_up(http: httpx.AsyncClient) -> None:
    liveness = await http.get("/actuator/health/liveness")
    assert (liveness.status_code, liveness.json()) == (200, {"status": "UP"})

    readiness = await http.get("/actuator/health/readiness")
    assert readiness.status_code == 200
    body = readiness.json()
    assert body["status"] == "UP"
    assert body["components"]["statestore"] == {"status": "UP", "details": {"type": "state.in-memory", "version": "v1"}}
    assert set(body["components"]) == {"statestore", "configstore", "lockstore", "secretstore"}

    assert (await http.get("/v1.0/healthz")).status_code == 204
    assert (await http.get("/v1.0/healthz/outbound")).status_code == 204


async def test_info_names_the_app_and_its_components(http: httpx.AsyncClient) -> None:
    response = await http.get("/actuator/info")
    assert response.status_code == 200
    info = response.json()
    assert info["appId"] == APP_ID
    assert info["mode"] == "standalone"
    assert {"name": "lockstore", "type": "lock.in-memory", "version": "v1", "status": "UP"} in info["components"]


async def test_before_components_load_only_liveness_is_ok() -> None:
    async with sidecar_on(Registry(APP_ID)) as running:
        http = running.http
        assert (await http.get("/actuator/health/liveness")).status_code == 200
        readiness = await http.get("/actuator/health/readiness")
        assert (readiness.status_code, readiness.json()["status"]) == (503, "INIT")
        assert (await http.get("/v1.0/healthz")).status_code == 500
        assert (await http.get("/v1.0/healthz/outbound")).status_code == 500


@pytest.mark.parametrize(("ignore_errors", "status"), [(False, 503), (True, 200)])
async def test_a_component_that_fails_to_init_is_named_in_readiness(
    tmp_path: Path, ignore_errors: bool, status: int
) -> None:
    registry = Registry(APP_ID)
    broken = component(
        "vault", "secretstores.local.file", ignore_errors=ignore_errors, secretsFile=str(tmp_path / "absent.json")
    )
    await registry.load([component("statestore", "state.in-memory"), broken])
    try:
        async with sidecar_on(registry) as running:
            readiness = await running.http.get("/actuator/health/readiness")
            assert readiness.status_code == status
            vault = readiness.json()["components"]["vault"]
            assert vault["status"] == "DOWN"
            assert "absent.json" in vault["details"]["reason"]
            assert (await running.http.get("/actuator/health/liveness")).status_code == 200
            assert (await running.http.get("/v1.0/healthz")).status_code == (204 if ignore_errors else 500)
            assert (await running.http.get("/v1.0/healthz/outbound")).status_code == 204
    finally:
        await registry.close()


# --- routing, token and metrics ------------------------------------------------------------


async def test_unknown_routes_and_methods_answer_json(http: httpx.AsyncClient) -> None:
    assert_error(await http.get("/v1.0/nothing-here"), 404, "ERR_NOT_FOUND", "/v1.0/nothing-here")
    assert_error(await http.post("/v1.0/metadata"), 405, "ERR_METHOD_NOT_ALLOWED", "POST", "GET")


async def test_api_token_is_required_except_on_health_routes(registry: Registry) -> None:
    async with sidecar_on(registry, api_token=TOKEN) as running:
        http = running.http
        assert_error(await http.get("/v1.0/metadata"), 401, "ERR_API_TOKEN", "invalid api token")
        wrong = await http.get("/v1.0/state/statestore/k", headers={"dapr-api-token": "guess"})
        assert_error(wrong, 401, "ERR_API_TOKEN")
        saved = await http.post(
            "/v1.0/state/statestore", json=[{"key": "k", "value": 1}], headers={"dapr-api-token": TOKEN}
        )
        assert saved.status_code == 204
        assert (await http.get("/v1.0/metadata", headers={"dapr-api-token": TOKEN})).status_code == 200
        for path in ("/actuator/health/liveness", "/actuator/health/readiness", "/actuator/info"):
            assert (await http.get(path)).status_code == 200, path
        assert (await http.get("/v1.0/healthz")).status_code == 204
        assert (await http.get("/v1.0/healthz/outbound")).status_code == 204


def requests_counted(text: str, method: str, status: str) -> float:
    for family in text_string_to_metric_families(text):
        if family.name != "ottava_api_requests":
            continue
        for sample in family.samples:
            wanted = {"protocol": "http", "method": method, "status": status}
            if sample.name.endswith("_total") and wanted.items() <= sample.labels.items():
                return sample.value
    return 0.0


async def test_metrics_count_http_calls_by_method_and_status(http: httpx.AsyncClient) -> None:
    async with serving(build_metrics_app()) as metrics:
        before = (await metrics.get("/metrics")).text
        await http.post("/v1.0/state/statestore", json=[{"key": "m", "value": 1}])
        await http.get("/v1.0/state/statestore/m")
        await http.get("/v1.0/state/statestore/never")
        await http.get("/v1.0/state/nosuchstore/m")
        response = await metrics.get("/metrics")

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    after = response.text
    assert "ottava_api_requests_total" in after
    assert "ottava_api_request_duration_seconds_bucket" in after
    for method, status in [("SaveState", "204"), ("GetState", "200"), ("GetState", "204"), ("GetState", "400")]:
        assert requests_counted(after, method, status) == requests_counted(before, method, status) + 1, (
            method,
            status,
        )
