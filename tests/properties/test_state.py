"""Sequences of state calls over HTTP and gRPC, against a model of the store.

Each step sends one request, over either wire, with inputs from `nasty`; the model
says beforehand whether it must succeed or be refused, and what the store holds after
it. Reads over both wires compare the store with the model at every step that reads,
and once more at the end of each sequence.
"""

from typing import Any

import pytest
from dapr.proto.common.v1 import common_pb2
from dapr.proto.runtime.v1 import dapr_pb2_grpc, state_pb2
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule, run_state_machine_as_test

from tests.properties import nasty, wire
from tests.properties.model import SEPARATOR, Item, StateModel, Write, http_entry, stored_json

_FIRST_WRITE = common_pb2.StateOptions.StateConcurrency.CONCURRENCY_FIRST_WRITE
_LAST_WRITE = common_pb2.StateOptions.StateConcurrency.CONCURRENCY_LAST_WRITE
surfaces = st.sampled_from(["http", "grpc"])


class StateMachine(RuleBasedStateMachine):
    surface: wire.Surface
    store: str
    runs = 0

    def __init__(self) -> None:
        super().__init__()
        StateMachine.runs += 1
        self.tag = f"s{StateMachine.runs}-"
        self.model = StateModel()
        self.universe: set[str] = set()  # every valid key this sequence named
        self.dapr = dapr_pb2_grpc.DaprStub(self.surface.channel)

    # --- what a step is made of ----------------------------------------------------

    def key(self, suffix: str | None) -> str:
        key = "" if suffix is None else self.tag + suffix
        if key and SEPARATOR not in key:
            self.universe.add(key)
        return key

    def store_name(self, data: st.DataObject) -> tuple[str, bool]:
        if data.draw(st.integers(0, 9), label="wrong store?") == 0:
            return data.draw(st.sampled_from(nasty.MISSING_STORES), label="store"), True
        return self.store, False

    def draw_write(self, data: st.DataObject, surface: str, operations: st.SearchStrategy[str]) -> Write:
        write = Write(self.key(data.draw(nasty.keys, label="key")), data.draw(operations, label="operation"))
        if write.operation != "delete":
            if surface == "http":
                write.json_value = data.draw(nasty.json_values, label="value")
                write.value = b"" if nasty.has_non_finite(write.json_value) else stored_json(write.json_value)
            else:
                write.value = data.draw(nasty.raw_values, label="value")
            write.ttl = data.draw(nasty.ttls, label="ttlInSeconds")
            concurrencies = ["", "first-write", "last-write"] + (["bogus"] if surface == "http" else [])
            write.concurrency = data.draw(st.sampled_from(concurrencies), label="concurrency")
        write.etag = self.etag(data, write.key)
        return write

    def etag(self, data: st.DataObject, key: str) -> str | None:
        choice = data.draw(nasty.etag_choices, label="etag")
        current = self.model.items.get(key)
        current_etag = current.etag if current is not None else None
        stale = [e for e in self.model.seen_etags if e != current_etag]
        if choice == "current" and current_etag:
            return current_etag
        if choice == "stale" and stale:
            return data.draw(st.sampled_from(stale), label="stale etag")
        if choice == "empty":
            return ""
        if choice == "none":
            return None
        return data.draw(nasty.garbage_etags, label="garbage etag")

    def draw_writes(self, data: st.DataObject, surface: str, operations: st.SearchStrategy[str]) -> list[Write]:
        """1-4 items; a repeated key carries an ETag or first-write only the first time (see model.py)."""
        self.refresh()  # the model must know each item's current ETag to predict the outcome
        writes = [self.draw_write(data, surface, operations) for _ in range(data.draw(st.integers(1, 4)))]
        seen: set[str] = set()
        for write in writes:
            if write.key in seen:
                write.etag, write.concurrency = None, "" if write.concurrency == "first-write" else write.concurrency
            seen.add(write.key)
        return writes

    def send(self, answer: wire.Answer, expect: wire.Expect, after: dict[str, Item], what: str) -> None:
        wire.check(answer, expect, what)
        if answer.ok:
            self.model.items = after

    # --- writes --------------------------------------------------------------------

    @rule(data=st.data(), surface=surfaces)
    def save(self, data: st.DataObject, surface: str) -> None:
        writes = self.draw_writes(data, surface, st.just("upsert"))
        store, bad_store = self.store_name(data)
        expect, after = self.model.expect(writes, bad_store=bad_store)
        if surface == "http":
            answer = self.surface.request(
                "POST", f"/v1.0/state/{wire.path_segment(store)}", json_body=[http_entry(w) for w in writes]
            )
            if not store:
                expect = wire.ANY_REFUSAL.because("no store name in the URL")
        else:
            request = state_pb2.SaveStateRequest(store_name=store, states=[grpc_item(w) for w in writes])
            answer = self.surface.call(self.dapr.SaveState, request)
        self.send(answer, expect, after, f"SaveState over {surface}")

    @rule(data=st.data(), surface=surfaces)
    def delete(self, data: st.DataObject, surface: str) -> None:
        self.refresh()
        write = Write(self.key(data.draw(nasty.keys, label="key")), "delete")
        write.etag = self.etag(data, write.key)
        store, bad_store = self.store_name(data)
        expect, after = self.model.expect([write], bad_store=bad_store)
        if surface == "http":
            if write.etag is not None and not write.etag.isascii():
                write.etag = "not-ascii"  # a header value is Latin-1; the model sees what is sent
                expect, after = self.model.expect([write], bad_store=bad_store)
            path = f"/v1.0/state/{wire.path_segment(store)}/{wire.path_segment(write.key)}"
            headers = {"If-Match": write.etag} if write.etag is not None else {}
            answer = self.surface.request("DELETE", path, headers=headers)
            expect = path_expectation(path, store, write.key) or expect
        else:
            request = state_pb2.DeleteStateRequest(store_name=store, key=write.key)
            if write.etag is not None:
                request.etag.value = write.etag
            answer = self.surface.call(self.dapr.DeleteState, request)
        self.send(answer, expect, after, f"DeleteState over {surface}")

    @rule(data=st.data())
    def delete_bulk(self, data: st.DataObject) -> None:
        writes = self.draw_writes(data, "grpc", st.just("delete"))
        store, bad_store = self.store_name(data)
        expect, after = self.model.expect(writes, bad_store=bad_store)
        request = state_pb2.DeleteBulkStateRequest(store_name=store, states=[grpc_item(w) for w in writes])
        self.send(self.surface.call(self.dapr.DeleteBulkState, request), expect, after, "DeleteBulkState")

    @rule(data=st.data(), surface=surfaces)
    def transact(self, data: st.DataObject, surface: str) -> None:
        writes = self.draw_writes(data, surface, nasty.operation_types)
        store, bad_store = self.store_name(data)
        expect, after = self.model.expect(writes, bad_store=bad_store)
        if surface == "http":
            body = {"operations": [{"operation": w.operation, "request": http_entry(w)} for w in writes]}
            answer = self.surface.request("POST", f"/v1.0/state/{wire.path_segment(store)}/transaction", json_body=body)
            if not store:
                expect = wire.ANY_REFUSAL.because("no store name in the URL")
        else:
            operations = [
                state_pb2.TransactionalStateOperation(operationType=w.operation, request=grpc_item(w)) for w in writes
            ]
            request = state_pb2.ExecuteStateTransactionRequest(storeName=store, operations=operations)
            answer = self.surface.call(self.dapr.ExecuteStateTransaction, request)
        self.send(answer, expect, after, f"ExecuteStateTransaction over {surface}")

    # --- reads ---------------------------------------------------------------------

    @rule(data=st.data(), surface=surfaces)
    def get_one(self, data: st.DataObject, surface: str) -> None:
        key = self.key(data.draw(nasty.keys, label="key"))
        store, bad_store = self.store_name(data)
        invalid = Write(key).refusal()
        expect = wire.INVALID.because(invalid or "") if invalid else wire.OK
        expect = wire.INVALID.because("a state store that does not exist") if bad_store else expect
        if surface == "http":
            path = f"/v1.0/state/{wire.path_segment(store)}/{wire.path_segment(key)}"
            answer = self.surface.request("GET", path)
            expect = path_expectation(path, store, key) or expect
            data_ = answer.raw if answer.status == 200 else None
        else:
            answer = self.surface.call(self.dapr.GetState, state_pb2.GetStateRequest(store_name=store, key=key))
            data_ = answer.body.data if answer.ok and answer.body.etag else None
        wire.check(answer, expect, f"GetState over {surface}")
        if answer.ok:
            self.compare(key, data_, f"GetState over {surface}")

    @rule(data=st.data(), surface=surfaces)
    def get_bulk(self, data: st.DataObject, surface: str) -> None:
        """A bulk read of any keys, repeated, empty or with `||` among them: all valid or refused."""
        keys = [self.key(s) for s in data.draw(st.lists(nasty.keys, min_size=0, max_size=5), label="keys")]
        invalid = [why for key in keys if (why := Write(key).refusal())]
        expect = wire.INVALID.because(invalid[0]) if invalid else wire.OK
        if surface == "http" and data.draw(st.booleans(), label="NaN among the keys?"):
            body: dict[str, Any] = {"keys": [*keys, float("nan")]}
            expect = wire.INVALID.because("NaN in JSON")
        else:
            body = {"keys": keys}
        answer = self.read_bulk(surface, keys, body)
        wire.check(answer, expect, f"GetBulkState over {surface}")
        if answer.ok:
            self.compare_bulk(surface, keys, answer)

    @rule()
    def check_everything(self) -> None:
        self.check_store()

    def teardown(self) -> None:
        self.check_store()

    # --- comparing the store with the model ----------------------------------------

    def read_bulk(self, surface: str, keys: list[str], body: dict[str, Any]) -> wire.Answer:
        if surface == "http":
            return self.surface.request("POST", f"/v1.0/state/{wire.path_segment(self.store)}/bulk", json_body=body)
        return self.surface.call(
            self.dapr.GetBulkState, state_pb2.GetBulkStateRequest(store_name=self.store, keys=keys)
        )

    def compare_bulk(self, surface: str, keys: list[str], answer: wire.Answer) -> None:
        items = answer.body if surface == "http" else answer.body.items
        returned = [item["key"] if surface == "http" else item.key for item in items]
        assert sorted(returned) == sorted(keys), f"GetBulkState over {surface} answered {returned!r} for {keys!r}"
        for item in items:
            if surface == "http":
                assert "error" not in item, f"GetBulkState over http: {item!r}"
                self.compare_bulk_json(item)
            else:
                assert not item.error, f"GetBulkState over grpc: {item.key!r}: {item.error}"
                self.compare(item.key, item.data if item.etag else None, "GetBulkState over grpc")
                self.model.learn_etag(item.key, item.etag)

    def compare(self, key: str, data: bytes | None, what: str) -> None:
        expected = self.model.items.get(key)
        if expected is None:
            assert data is None, f"{what}: {key[:60]!r} holds {data[:80]!r}, the model says it does not exist"
        else:
            assert data is not None, f"{what}: {key[:60]!r} is missing, the model says it holds {expected.value[:80]!r}"
            assert expected.matches(data), f"{what}: {key[:60]!r} holds {data[:80]!r}, not {expected.value[:80]!r}"

    def compare_bulk_json(self, item: dict[str, Any]) -> None:
        expected = self.model.items.get(item["key"])
        where = f"GetBulkState over http: {item['key'][:60]!r}"
        if expected is None:
            assert "data" not in item, f"{where} holds {item!r}, the model says it does not exist"
        else:
            assert "data" in item, f"{where} is missing, the model says it holds {expected.value[:80]!r}"
            assert item["data"] == expected.bulk_data(), f"{where} holds {item['data']!r}, not {expected.bulk_data()!r}"

    def refresh(self) -> None:
        """Read every item this sequence named over gRPC: compare, and learn the current ETags."""
        keys = sorted(self.universe)
        if keys:
            answer = self.read_bulk("grpc", keys, {})
            wire.check(answer, wire.OK, "GetBulkState over grpc")
            self.compare_bulk("grpc", keys, answer)

    def check_store(self) -> None:
        """After any sequence, the store holds exactly what the model does: over both wires."""
        self.refresh()
        keys = sorted(self.universe)
        if keys:
            answer = self.read_bulk("http", keys, {"keys": keys})
            wire.check(answer, wire.OK, "GetBulkState over http")
            self.compare_bulk("http", keys, answer)


def grpc_item(write: Write) -> common_pb2.StateItem:
    item = common_pb2.StateItem(key=write.key, value=write.value)
    if write.etag is not None:
        item.etag.value = write.etag
    if write.ttl is not None:
        item.metadata["ttlInSeconds"] = write.ttl
    if write.concurrency == "first-write":
        item.options.concurrency = _FIRST_WRITE
    elif write.concurrency == "last-write":
        item.options.concurrency = _LAST_WRITE
    return item


def path_expectation(path: str, store: str, key: str) -> wire.Expect | None:
    """What a URL that cannot name the item gets: an empty segment has no route, a long URL no room."""
    if not store or not key:
        return wire.ANY_REFUSAL.because("an empty segment in the URL")
    return wire.url_fits(path)


@pytest.mark.parametrize("store", ["statestore", "sqlitestore"])
def test_state_matches_the_model(fuzz_surface: wire.Surface, fuzz_settings: settings, store: str) -> None:
    machine = type(f"StateMachine_{store}", (StateMachine,), {"surface": fuzz_surface, "store": store})
    run_state_machine_as_test(machine, settings=fuzz_settings)
