"""JSON `null` in an HTTP request body is the field not given, on every route, as in Dapr.

Dapr's Go handlers decode `null` into a field's zero value, so clients send it freely
(the JavaScript SDK's state transaction always carries `"metadata": null`). The cases
are generated from the route table (`api_routes`) and each route's body model
(`Route.body`): every field of the body, nested ones included, is sent once as `null`
and once left out, to a real `ottava run`, and the two answers must be the same. A
route added with a body model is tried the same way; a route that reads its body
otherwise must be named in `RAW_BODIES`, so none is left out unseen.
"""

import json
import re
import typing
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from ottava_sidecar.api.apis import Apis
from ottava_sidecar.api.http import bodies
from ottava_sidecar.api.http.routing import Route
from ottava_sidecar.api.http.server import api_routes
from ottava_sidecar.api.metadata import AppConnectionProperties, MetadataApi
from ottava_sidecar.components.registry import Registry

from tests.conftest import SidecarFactory, SidecarProcess
from tests.messaging import wait_ready

# Routes that take a body but not as a `RequestBody` model, and why.
RAW_BODIES = {
    "PublishEvent": "the body is the event itself, passed on as it is",
    "InvokeService": "the body goes to the app unchanged",
    "SetMetadata": "the body is the value, as text",
    "Shutdown": "no body",
    "QueryStateAlpha1": "the query language, parsed by components.state.query (test_query_null_fields)",
}

# A valid body for each route with a body model, and the values of its path variables.
# Every nested object a model has is present, so that its own fields are tried too.
EXAMPLES: dict[str, Any] = {
    "SaveState": [
        {
            "key": "null-save",
            "value": {"n": 1},
            "options": {"concurrency": "last-write", "consistency": "strong"},
            "metadata": {"note": "x"},
        }
    ],
    "GetBulkState": {"keys": ["null-save"], "parallelism": 2},
    "ExecuteStateTransaction": {
        "operations": [
            {
                "operation": "upsert",
                "request": {
                    "key": "null-tx",
                    "value": "v",
                    "options": {"concurrency": "last-write", "consistency": "eventual"},
                    "metadata": {"note": "x"},
                },
            }
        ],
        "metadata": {"note": "x"},
    },
    "TryLockAlpha1": {"resourceId": "null-lock", "lockOwner": "me", "expiryInSeconds": 60},
    "UnlockAlpha1": {"resourceId": "null-lock", "lockOwner": "me"},
    "BulkPublishEventAlpha1": [
        {"entryId": "1", "event": {"n": 1}, "contentType": "application/json", "metadata": {"note": "x"}}
    ],
    "BulkPublishEvent": [
        {"entryId": "1", "event": {"n": 1}, "contentType": "application/json", "metadata": {"note": "x"}}
    ],
    "InvokeBinding": {"data": "hello", "metadata": {"fileName": "null.txt"}, "operation": "create"},
}
PATH_VARIABLES = {
    "storeName": lambda route: "lockstore" if route.api == "lock" else "statestore",
    "pubsubname": lambda route: "pubsub",
    "topic": lambda route: "nulls",
    "name": lambda route: "files",
}

RESOURCES = {
    "statestore.yaml": "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: statestore}\nspec: {type: state.in-memory, version: v1}\n",
    "pubsub.yaml": "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: pubsub}\nspec: {type: pubsub.in-memory, version: v1}\n",
    "lockstore.yaml": "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: lockstore}\nspec: {type: lock.in-memory, version: v1}\n",
}


def routes() -> list[Route]:
    registry = Registry("nulls")
    metadata = MetadataApi(registry, "standalone", AppConnectionProperties(), lambda: None)
    return api_routes(Apis.create(registry, metadata))


def with_body(route: Route) -> bool:
    return route.method in ("POST", "PUT", "*")


def url_of(route: Route) -> str:
    def value(match: re.Match[str]) -> str:
        return str(PATH_VARIABLES[match[1]](route))

    return re.sub(r"\{(\w+)(?::[^}]*)?\}", value, route.path)


def models_in(shape: Any) -> Iterator[type]:
    """The classes of the objects of a body's shape (a model, a list of them), nested ones included."""
    if typing.get_origin(shape) is list:
        yield from models_in(typing.get_args(shape)[0])
    elif isinstance(shape, type) and issubclass(shape, bodies.RequestBody):
        yield shape
        for field in shape.model_fields.values():
            yield from models_in(field.annotation)
    elif typing.get_origin(shape) in (typing.Union, type(int | str)):
        for option in typing.get_args(shape):
            yield from models_in(option)


def variants(shape: Any, example: Any) -> Iterator[tuple[str, Any, Any]]:
    """(field, the body with that field null, the body without it), for every field of every object."""
    if typing.get_origin(shape) is list:
        for label, nulled, left_out in variants(typing.get_args(shape)[0], example[0]):
            yield f"[0].{label}", [nulled, *example[1:]], [left_out, *example[1:]]
        return
    assert isinstance(shape, type) and issubclass(shape, bodies.RequestBody), shape
    for name, field in shape.model_fields.items():
        key = field.alias or name
        rest = {k: v for k, v in example.items() if k != key}
        yield key, {**example, key: None}, rest
        inner = field.annotation
        if key in example and any(models_in(inner)):
            for label, nulled, left_out in variants(inner, example[key]):
                yield f"{key}.{label}", {**example, key: nulled}, {**example, key: left_out}
        elif key in example and inner == dict[str, str] and example[key]:
            # A null metadata value is Go's zero value: the empty text.
            first = next(iter(example[key]))
            yield f"{key}.{first}", {**example, key: {first: None}}, {**example, key: {first: ""}}


def cases() -> list[Any]:
    found = []
    for route in routes():
        if route.body is None:
            continue
        for field, nulled, left_out in variants(route.body.shape, EXAMPLES[route.name]):
            found.append(pytest.param(route, nulled, left_out, id=f"{route.method} {route.name}: {field}"))
    return found


def test_every_route_with_a_body_is_tried() -> None:
    """A new route either declares its body model (and is tried below) or says why not."""
    for route in routes():
        if route.body is not None:
            assert route.name in EXAMPLES, f"{route.name}: add a valid body to EXAMPLES"
            assert list(models_in(route.body.shape)), f"{route.name}'s body is not made of RequestBody models"
        elif with_body(route):
            assert route.name in RAW_BODIES, f"{route.method} {route.path}: declare its body (Route.body)"
    assert {r.name for r in routes() if r.body is not None} == set(EXAMPLES)


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SidecarProcess]:
    folder = tmp_path_factory.mktemp("null-fields")
    files = folder / "files"
    files.mkdir()
    resources = {
        **RESOURCES,
        "files.yaml": "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: files}\n"
        f"spec: {{type: bindings.localstorage, version: v1, metadata: [{{name: rootPath, value: '{files}'}}]}}\n",
    }
    factory = SidecarFactory(folder)
    try:
        running = factory.start("--app-id", "nulls", resources=resources)
        wait_ready(running)
        yield running
        running.stop()
    finally:
        factory.stop_all()


def call(sidecar: SidecarProcess, route: Route, body: Any) -> httpx.Response:
    method = "POST" if route.method == "*" else route.method
    return httpx.request(method, f"{sidecar.http_url}{url_of(route)}", json=body)


@pytest.mark.parametrize(("route", "nulled", "left_out"), cases())
def test_null_is_the_field_not_given(sidecar: SidecarProcess, route: Route, nulled: Any, left_out: Any) -> None:
    example = call(sidecar, route, EXAMPLES[route.name])
    assert example.is_success, f"the example body of {route.name} fails: {example.status_code} {example.text}"
    without = call(sidecar, route, left_out)
    with_null = call(sidecar, route, nulled)
    shown = f"null: {json.dumps(nulled)} → {with_null.status_code} {with_null.text}\n" + (
        f"left out: {json.dumps(left_out)} → {without.status_code} {without.text}"
    )
    assert with_null.status_code == without.status_code, shown
    if not without.is_success:
        assert with_null.json() == without.json(), shown


def test_the_javascript_sdks_transaction_with_null_metadata(sidecar: SidecarProcess) -> None:
    # What `client.state.transaction(store, ops)` of @dapr/dapr sends over HTTP.
    body = {
        "operations": [
            {"operation": "upsert", "request": {"key": "js-1", "value": {"n": 1}}},
            {"operation": "upsert", "request": {"key": "js-2", "value": "two", "metadata": None, "etag": None}},
            {"operation": "delete", "request": {"key": "js-1", "options": None}},
        ],
        "metadata": None,
    }
    answer = httpx.post(f"{sidecar.http_url}/v1.0/state/statestore/transaction", json=body)
    assert answer.status_code == 204, answer.text
    assert httpx.get(f"{sidecar.http_url}/v1.0/state/statestore/js-2").json() == "two"
    assert httpx.get(f"{sidecar.http_url}/v1.0/state/statestore/js-1").status_code == 204


def test_bulk_save_with_null_options_and_metadata(sidecar: SidecarProcess) -> None:
    body = [
        {"key": "bulk-1", "value": 1, "options": None, "metadata": None, "etag": None},
        {"key": "bulk-2", "value": None, "options": {"concurrency": None, "consistency": None}},
        {"key": "bulk-3", "value": 3, "metadata": {"ttlInSeconds": None}},
    ]
    answer = httpx.post(f"{sidecar.http_url}/v1.0/state/statestore", json=body)
    assert answer.status_code == 204, answer.text
    got = httpx.post(
        f"{sidecar.http_url}/v1.0/state/statestore/bulk", json={"keys": ["bulk-1", "bulk-2", "bulk-3"]}
    ).json()
    assert [(item["key"], item.get("data")) for item in got] == [("bulk-1", 1), ("bulk-2", None), ("bulk-3", 3)]


def test_a_required_field_given_null_is_named_as_missing(sidecar: SidecarProcess) -> None:
    answer = httpx.post(f"{sidecar.http_url}/v1.0/state/statestore", json=[{"key": None, "value": 1}])
    assert answer.status_code == 400
    assert answer.json() == {
        "errorCode": "ERR_MALFORMED_REQUEST",
        "message": "malformed request body (a JSON array of state items): [0].key: Field required",
    }


QUERY = {"filter": {"EQ": {"kind": "q"}}, "sort": [{"key": "n", "order": "DESC"}], "page": {"limit": 5, "token": "0"}}


@pytest.mark.parametrize(
    ("nulled", "left_out"),
    [pytest.param({**QUERY, name: None}, {k: v for k, v in QUERY.items() if k != name}, id=name) for name in QUERY]
    + [
        pytest.param({**QUERY, "page": {"limit": None, "token": "0"}}, {**QUERY, "page": {"token": "0"}}, id="limit"),
        pytest.param({**QUERY, "page": {"limit": 5, "token": None}}, {**QUERY, "page": {"limit": 5}}, id="token"),
        pytest.param({**QUERY, "sort": [{"key": "n", "order": None}]}, {**QUERY, "sort": [{"key": "n"}]}, id="order"),
    ],
)
def test_query_null_fields(sidecar: SidecarProcess, nulled: Any, left_out: Any) -> None:
    saved = [{"key": f"q-{n}", "value": {"kind": "q", "n": n}} for n in range(3)]
    assert httpx.post(f"{sidecar.http_url}/v1.0/state/statestore", json=saved).status_code == 204
    url = f"{sidecar.http_url}/v1.0-alpha1/state/statestore/query"
    with_null, without = httpx.post(url, json=nulled), httpx.post(url, json=left_out)
    assert with_null.status_code == without.status_code == 200, (with_null.text, without.text)
    assert with_null.json() == without.json()
