"""The state query contract (Dapr's `QueryStateAlpha1`), for every `state.*` implementation.

The stores that can list their items answer Dapr's query language the same way (the
evaluation is shared: `components/state/query.py`); every other store refuses a query
with an error that names it. Queries go through the state API, as the wires call it,
so the app's key prefix applies: an app queries its own keys only.
"""

import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from ottava_sidecar.api.errors import ApiError
from ottava_sidecar.api.state import StateApi
from ottava_sidecar.components.registry import Registry
from ottava_sidecar.components.state.base import SetRequest, StateStore

from tests.conformance.conftest import Components, unique

BUILDING_BLOCK = "state"
QUERYABLE = {"state.in-memory", "state.sqlite", "state.postgresql"}
queryable = pytest.mark.only.with_args(lambda type_name: type_name in QUERYABLE)

PEOPLE = {
    "1": {"person": {"org": "Dev Ops", "id": 1036}, "city": "Seattle", "state": "WA"},
    "2": {"person": {"org": "Hardware", "id": 1028}, "city": "Portland", "state": "OR"},
    "3": {"person": {"org": "Finance", "id": 1071}, "city": "Sacramento", "state": "CA"},
    "4": {"person": {"org": "Dev Ops", "id": 1042}, "city": "Spokane", "state": "WA"},
    "5": {"person": {"org": "Dev Ops", "id": 1007}, "city": "San Francisco", "state": "CA"},
    "6": {"person": {"org": "Finance", "id": 1099}},  # no state
}


class Api:
    """The state API of a sidecar whose `statestore` is this type, keys prefixed for this test alone."""

    def __init__(self, api: StateApi, store: StateStore[Any], registry: Registry) -> None:
        self.api, self.store, self.registry = api, store, registry

    async def query(self, query: dict[str, Any]) -> tuple[list[tuple[str, Any]], str]:
        page = await self.api.query("statestore", json.dumps(query))
        return [(item.key, _json(item.value)) for item in page.items], page.token

    async def keys(self, query: dict[str, Any]) -> list[str]:
        return [key for key, _ in (await self.query(query))[0]]


def _json(value: bytes) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value


@pytest.fixture
async def api(components: Components) -> AsyncIterator[Api]:
    registry = await components.registry("statestore", keyPrefix=unique("app"))
    state = StateApi(registry)
    await state.save("statestore", [SetRequest(k, json.dumps(v).encode()) for k, v in PEOPLE.items()])
    await state.save("statestore", [SetRequest("raw", b"\x00not json")])
    yield Api(state, state.store("statestore"), registry)
    await registry.close()


@queryable
async def test_eq_on_a_dotted_key(api: Api) -> None:
    answer, token = await api.query({"filter": {"EQ": {"person.org": "Dev Ops"}}})
    assert answer == [(k, PEOPLE[k]) for k in ("1", "4", "5")] and token == ""
    assert await api.keys({"filter": {"EQ": {"state": "CA"}}}) == ["3", "5"]
    assert await api.keys({"filter": {"EQ": {"person.id": 1071.0}}}) == ["3"], "1071.0 is the number 1071"
    assert await api.keys({"filter": {"EQ": {"person.id": "1071"}}}) == [], "a string is not a number"
    assert await api.keys({"filter": {"EQ": {"person.org.name": "Dev Ops"}}}) == []


@queryable
async def test_in(api: Api) -> None:
    assert await api.keys({"filter": {"IN": {"state": ["CA", "OR"]}}}) == ["2", "3", "5"]
    assert await api.keys({"filter": {"IN": {"state": []}}}) == []


@queryable
async def test_and_or(api: Api) -> None:
    dev_ops_in_wa = {"AND": [{"EQ": {"person.org": "Dev Ops"}}, {"EQ": {"state": "WA"}}]}
    assert await api.keys({"filter": dev_ops_in_wa}) == ["1", "4"]
    either = {"OR": [{"EQ": {"person.org": "Finance"}}, dev_ops_in_wa]}
    assert await api.keys({"filter": either}) == ["1", "3", "4", "6"]
    nested = {"AND": [either, {"IN": {"state": ["CA", "OR"]}}]}
    assert await api.keys({"filter": nested}) == ["3"]


@queryable
async def test_without_a_filter_every_item_of_the_app_answers(api: Api) -> None:
    page = await api.api.query("statestore", "{}")
    assert [item.key for item in page.items] == ["1", "2", "3", "4", "5", "6", "raw"]
    raw = page.items[-1]
    assert raw.value == b"\x00not json"
    stored = await api.api.get("statestore", "raw")
    assert stored is not None and raw.etag == stored.etag


@queryable
async def test_sort(api: Api) -> None:
    dev_ops = {"EQ": {"person.org": "Dev Ops"}}
    assert await api.keys({"filter": dev_ops, "sort": [{"key": "person.id", "order": "DESC"}]}) == ["4", "1", "5"]
    assert await api.keys({"filter": dev_ops, "sort": [{"key": "person.id"}]}) == ["5", "1", "4"]
    # Several keys, the first deciding; items without the key (6) sort last either way.
    people = {"filter": {"IN": {"person.org": ["Dev Ops", "Finance", "Hardware"]}}}
    by_state = [{"key": "state", "order": "DESC"}, {"key": "person.id", "order": "ASC"}]
    assert await api.keys({**people, "sort": by_state}) == ["1", "4", "2", "5", "3", "6"]
    assert await api.keys({**people, "sort": [{"key": "state"}, {"key": "city", "order": "DESC"}]}) == [
        "5",
        "3",
        "2",
        "4",
        "1",
        "6",
    ]


@queryable
async def test_pages_follow_the_token_to_the_end(api: Api) -> None:
    query: dict[str, Any] = {"sort": [{"key": "person.id"}], "page": {"limit": 2}}
    pages = []
    while True:
        answer, token = await api.query(query)
        pages.append([key for key, _ in answer])
        if not token:
            break
        query["page"]["token"] = token
        assert len(pages) < 10, "the token never ran out"
    assert pages == [["5", "2"], ["1", "4"], ["3", "6"], ["raw"]], "items without the key (or not JSON) sort last"
    assert await api.keys({"filter": {"EQ": {"state": "WA"}}, "page": {"limit": 5}}) == ["1", "4"]


@queryable
async def test_unsorted_pages_go_in_key_order(api: Api) -> None:
    query: dict[str, Any] = {"filter": {"IN": {"state": ["WA", "OR", "CA"]}}, "page": {"limit": 3}}
    first, token = await api.query(query)
    assert [key for key, _ in first] == ["1", "2", "3"] and token
    query["page"]["token"] = token
    second, token = await api.query(query)
    assert [key for key, _ in second] == ["4", "5"] and token == ""


@queryable
async def test_a_query_reads_every_item_of_a_store_larger_than_one_batch(api: Api) -> None:
    many = 1234  # stores read 500 items at a time
    await api.api.save(
        "statestore", [SetRequest(f"n/{n:05}", json.dumps({"n": n, "even": n % 2 == 0}).encode()) for n in range(many)]
    )
    evens = {"filter": {"EQ": {"even": True}}}
    assert len(await api.keys(evens)) == (many + 1) // 2
    query: dict[str, Any] = {**evens, "sort": [{"key": "n", "order": "DESC"}], "page": {"limit": 200}}
    seen: list[int] = []
    while True:
        answer, token = await api.query(query)
        seen += [value["n"] for _, value in answer]
        if not token:
            break
        query["page"]["token"] = token
    assert seen == list(range(many - 1 - (many - 1) % 2, -1, -2))


@queryable
async def test_an_answer_over_the_bulk_limit_is_refused_and_pages_instead(api: Api) -> None:
    small = StateApi(api.registry, max_bulk_response_bytes=300)  # about three people
    with pytest.raises(ApiError) as refused:
        await small.query("statestore", "{}")
    assert refused.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_bulk_response_bytes" in refused.value.message and "page.limit" in refused.value.message
    page = await small.query("statestore", json.dumps({"page": {"limit": 2}}))
    assert [item.key for item in page.items] == ["1", "2"] and page.token == "2"


@queryable
async def test_an_app_queries_its_own_keys_only(api: Api) -> None:
    store = api.store
    other = store.keys.prefix + "-other||1"  # another app's key, of the same value
    await store.set(SetRequest(other, json.dumps(PEOPLE["1"]).encode()))
    assert await api.keys({"filter": {"EQ": {"city": "Seattle"}}}) == ["1"]


@queryable
async def test_expired_items_do_not_answer(api: Api) -> None:
    await api.api.save("statestore", [SetRequest("gone", json.dumps(PEOPLE["1"]).encode(), ttl_seconds=0)])
    assert await api.keys({"filter": {"EQ": {"city": "Seattle"}}}) == ["1"]


@queryable
@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ("{not json", "not JSON"),
        ("[]", "JSON object"),
        ('{"filters": {}}', "'filters'"),
        ('{"filter": {"GT": {"a": 1}}}', "'GT'"),
        ('{"filter": {"EQ": {"a": 1, "b": 2}}}', "filter.EQ"),
        ('{"filter": {"IN": {"a": 1}}}', "array"),
        ('{"filter": {"AND": [{"EQ": {"a": 1}}]}}', "at least two"),
        ('{"filter": {"OR": [{"EQ": {"a": 1}}, {"NE": {"a": 1}}]}}', "filter.OR[1]"),
        ('{"sort": [{"key": "a", "order": "UP"}]}', "'UP'"),
        ('{"sort": {"key": "a"}}', "sort"),
        ('{"page": {"limit": -1}}', "page.limit"),
        ('{"page": {"limit": 2, "token": "abc"}}', "page.token"),
    ],
)
async def test_a_malformed_query_is_refused_naming_the_problem(api: Api, query: str, problem: str) -> None:
    with pytest.raises(ApiError) as refused:
        await api.api.query("statestore", query)
    assert refused.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.error_code == "ERR_MALFORMED_REQUEST"
    assert problem in refused.value.message and "statestore" in refused.value.message


@pytest.mark.only.with_args(lambda type_name: type_name not in QUERYABLE)
async def test_a_store_that_cannot_query_says_so_by_name(components: Components) -> None:
    registry = await components.registry("cache")
    try:
        with pytest.raises(ApiError) as refused:
            await StateApi(registry).query("cache", '{"filter": {"EQ": {"a": 1}}}')
    finally:
        await registry.close()
    assert refused.value.code is grpc.StatusCode.FAILED_PRECONDITION
    assert refused.value.error_code == "ERR_STATE_STORE_NOT_SUPPORTED"
    assert "state store cache does not support querying" in refused.value.message
