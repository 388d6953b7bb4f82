"""Sequences of lock, configuration, publish and metadata calls over HTTP, Dapr gRPC and Layotto gRPC.

The model holds who owns each lock, the configuration items of the sidecar's app and
the extended metadata; each step says beforehand how the call must end, and reads
compare the sidecar with the model. Publishing changes nothing the model holds: it must
only never fail as a server fault, and answer a clear error when it refuses.
"""

import json
from typing import Any

from dapr.proto.runtime.v1 import configuration_pb2, dapr_pb2_grpc, lock_pb2, metadata_pb2, pubsub_pb2
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule, run_state_machine_as_test
from ottava_sidecar._gen.spec.proto.runtime.v1 import runtime_pb2 as layotto_pb2
from ottava_sidecar._gen.spec.proto.runtime.v1 import runtime_pb2_grpc

from tests.properties import nasty, wire

SEPARATOR = "||"
RESOURCES = ["r1", "r2", "r\u00e9source 🔒", "a||b", None, nasty.repeated("R", 20_000)]
OWNERS = ["alice", "bob", "🦊", ""]
CONFIG_KEYS = ["c1", "c2", "ключ", "with space", "cr\r\nlf", None, nasty.repeated("K", 9_000)]
# Extended metadata keys are not tagged: a small pool overwritten again and again keeps
# the sidecar's total far below MAX_EXTENDED_METADATA_BYTES however long the run.
METADATA_KEYS = ["k1", "k2", "ключ", "with space", "cr\r\nlf", "", "a/b", nasty.repeated("M", 9_000)]
HUGE_METADATA_VALUE = nasty.repeated("v", 1024 * 1024 + 1)  # alone over limits.MAX_EXTENDED_METADATA_BYTES
TOPICS = ["orders", "", "t/with/slash", "тема", "a b", nasty.repeated("T", 9_000)]
CONTENT_TYPES = ["application/json", "text/plain", "application/cloudevents+json", "application/octet-stream", ""]
three_surfaces = st.sampled_from(["http", "dapr", "layotto"])
two_surfaces = st.sampled_from(["http", "dapr"])
grpc_surfaces = st.sampled_from(["dapr", "layotto"])

UNLOCK_SUCCESS, LOCK_DOES_NOT_EXIST, LOCK_BELONGS_TO_OTHERS = 0, 1, 2


class ApisMachine(RuleBasedStateMachine):
    surface: wire.Surface
    runs = 0

    def __init__(self) -> None:
        super().__init__()
        ApisMachine.runs += 1
        self.tag = f"m{ApisMachine.runs}-"
        self.dapr = dapr_pb2_grpc.DaprStub(self.surface.channel)
        self.layotto = runtime_pb2_grpc.RuntimeStub(self.surface.channel)
        self.locks: dict[str, str] = {}  # resource → owner
        self.config: dict[str, str] = {}  # key → content, of the sidecar's own app
        self.config_keys: set[str] = set()
        answer = self.surface.request("GET", "/v1.0/metadata")
        wire.check(answer, wire.OK, "GetMetadata over http")
        self.extended: dict[str, str] = dict(answer.body["extended"])

    def name(self, suffix: str | None) -> str:
        return "" if suffix is None else self.tag + suffix

    # --- lock ----------------------------------------------------------------------

    def lock_refusal(self, store: str, resource: str, owner: str) -> wire.Expect | None:
        if store != "lockstore":
            return wire.INVALID.because("a lock store that does not exist")
        if not resource or not owner:
            return wire.INVALID.because("an empty resource id or owner")
        if SEPARATOR in resource:
            return wire.INVALID.because(f"a resource id with {SEPARATOR!r}")
        return None

    @rule(
        surface=three_surfaces,
        store=st.sampled_from(["lockstore", "lockstore", "lockstore", *nasty.MISSING_STORES]),
        resource=st.sampled_from(RESOURCES),
        owner=st.sampled_from(OWNERS),
        data=st.data(),
    )
    def try_lock(self, surface: str, store: str, resource: str | None, owner: str, data: st.DataObject) -> None:
        resource_id = self.name(resource)
        grpc_expiry = data.draw(st.sampled_from(nasty.GRPC_EXPIRIES), label="expiry")
        expiry = data.draw(st.sampled_from(nasty.HTTP_EXPIRIES), label="expiry") if surface == "http" else grpc_expiry
        expect = self.lock_refusal(store, resource_id, owner)
        if expect is None and not nasty.expiry_is_valid(expiry):
            expect = wire.INVALID.because(f"lock expiry {expiry!r}")
        if surface == "http":
            body = {"resourceId": resource_id, "lockOwner": owner, "expiryInSeconds": expiry}
            answer = self.surface.request("POST", f"/v1.0-alpha1/lock/{wire.path_segment(store)}", json_body=body)
            expect = wire.ANY_REFUSAL.because("no store name in the URL") if not store else expect
            success = answer.ok and answer.body["success"]
        elif surface == "dapr":
            request = lock_pb2.TryLockRequest(
                store_name=store, resource_id=resource_id, lock_owner=owner, expiry_in_seconds=grpc_expiry
            )
            answer = self.surface.call(self.dapr.TryLockAlpha1, request)
            success = answer.ok and answer.body.success
        else:
            request_ = layotto_pb2.TryLockRequest(
                store_name=store, resource_id=resource_id, lock_owner=owner, expire=grpc_expiry
            )
            answer = self.surface.call(self.layotto.TryLock, request_)
            success = answer.ok and answer.body.success
        wire.check(answer, expect or wire.OK, f"TryLock over {surface}")
        if answer.ok:
            assert success == (resource_id not in self.locks), (
                f"TryLock {resource_id[:40]!r}: {success}, held: {self.locks}"
            )
            self.locks.setdefault(resource_id, owner)

    @rule(
        surface=three_surfaces,
        store=st.sampled_from(["lockstore", "lockstore", "lockstore", *nasty.MISSING_STORES]),
        resource=st.sampled_from(RESOURCES),
        owner=st.sampled_from(OWNERS),
    )
    def unlock(self, surface: str, store: str, resource: str | None, owner: str) -> None:
        resource_id = self.name(resource)
        expect = self.lock_refusal(store, resource_id, owner)
        if surface == "http":
            body = {"resourceId": resource_id, "lockOwner": owner}
            answer = self.surface.request("POST", f"/v1.0-alpha1/unlock/{wire.path_segment(store)}", json_body=body)
            expect = wire.ANY_REFUSAL.because("no store name in the URL") if not store else expect
            status = answer.body["status"] if answer.ok else None
        elif surface == "dapr":
            answer = self.surface.call(
                self.dapr.UnlockAlpha1,
                lock_pb2.UnlockRequest(store_name=store, resource_id=resource_id, lock_owner=owner),
            )
            status = answer.body.status if answer.ok else None
        else:
            answer = self.surface.call(
                self.layotto.Unlock,
                layotto_pb2.UnlockRequest(store_name=store, resource_id=resource_id, lock_owner=owner),
            )
            status = answer.body.status if answer.ok else None
        wire.check(answer, expect or wire.OK, f"Unlock over {surface}")
        if answer.ok:
            holder = self.locks.get(resource_id)
            expected = (
                LOCK_DOES_NOT_EXIST if holder is None else UNLOCK_SUCCESS if holder == owner else LOCK_BELONGS_TO_OTHERS
            )
            assert status == expected, f"Unlock {resource_id[:40]!r} by {owner!r}: status {status}, held: {self.locks}"
            if expected == UNLOCK_SUCCESS:
                del self.locks[resource_id]

    # --- configuration -------------------------------------------------------------

    @rule(items=st.lists(st.tuples(st.sampled_from(CONFIG_KEYS), st.text(max_size=30)), max_size=3))
    def save_configuration(self, items: list[tuple[str | None, str]]) -> None:
        named = [(self.name(key), content) for key, content in items]
        self.config_keys.update(key for key, _ in named if key)
        expect = wire.OK
        if not named:
            expect = wire.INVALID.because("no items")
        elif any(not key for key, _ in named):
            expect = wire.INVALID.because("an empty key")
        request = layotto_pb2.SaveConfigurationRequest(
            store_name="configstore", items=[layotto_pb2.ConfigurationItem(key=k, content=c) for k, c in named]
        )
        answer = self.surface.call(self.layotto.SaveConfiguration, request)
        wire.check(answer, expect, "SaveConfiguration over layotto")
        if answer.ok:
            self.config.update(named)

    @rule(keys=st.lists(st.sampled_from(CONFIG_KEYS), min_size=1, max_size=3))
    def delete_configuration(self, keys: list[str | None]) -> None:
        named = [self.name(key) for key in keys]
        expect = wire.INVALID.because("an empty key") if any(not key for key in named) else wire.OK
        request = layotto_pb2.DeleteConfigurationRequest(store_name="configstore", keys=named)
        answer = self.surface.call(self.layotto.DeleteConfiguration, request)
        wire.check(answer, expect, "DeleteConfiguration over layotto")
        if answer.ok:
            for key in named:
                self.config.pop(key, None)

    @rule(
        surface=three_surfaces,
        store=st.sampled_from(["configstore", "configstore", *nasty.MISSING_STORES]),
        keys=st.lists(st.sampled_from(CONFIG_KEYS), min_size=1, max_size=4),
    )
    def get_configuration(self, surface: str, store: str, keys: list[str | None]) -> None:
        named = [self.name(key) for key in keys]
        expect = wire.INVALID.because("an empty key") if any(not key for key in named) else wire.OK
        if store != "configstore":
            expect = wire.INVALID.because("a configuration store that does not exist")
        answer, items = self.read_configuration(surface, store, named)
        if surface == "http":
            path = f"/v1.0/configuration/{wire.path_segment(store)}?" + "&".join(
                f"key={wire.path_segment(key)}" for key in named
            )
            expect = (
                (wire.ANY_REFUSAL.because("no store name in the URL") if not store else None)
                or wire.url_fits(path)
                or expect
            )
        wire.check(answer, expect, f"GetConfiguration over {surface}")
        if answer.ok:
            wanted = {key: self.config[key] for key in named if key in self.config}
            assert items == wanted, f"GetConfiguration over {surface} of {named!r}: {items!r}, not {wanted!r}"

    def read_configuration(self, surface: str, store: str, keys: list[str]) -> tuple[wire.Answer, dict[str, str]]:
        if surface == "http":
            path = f"/v1.0/configuration/{wire.path_segment(store)}?" + "&".join(
                f"key={wire.path_segment(key)}" for key in keys
            )
            answer = self.surface.request("GET", path)
            return answer, {k: v["value"] for k, v in answer.body.items()} if answer.ok else {}
        if surface == "dapr":
            request = configuration_pb2.GetConfigurationRequest(store_name=store, keys=keys)
            answer = self.surface.call(self.dapr.GetConfiguration, request)
            return answer, {k: v.value for k, v in answer.body.items.items()} if answer.ok else {}
        request_ = layotto_pb2.GetConfigurationRequest(store_name=store, keys=keys)
        answer = self.surface.call(self.layotto.GetConfiguration, request_)
        return answer, {i.key: i.content for i in answer.body.items} if answer.ok else {}

    # --- publish -------------------------------------------------------------------

    @rule(
        surface=two_surfaces,
        pubsub=st.sampled_from(["pubsub", "pubsub", *nasty.MISSING_STORES]),
        topic=st.sampled_from(TOPICS),
        data=st.one_of(st.binary(max_size=64), st.sampled_from([b"NaN", b'{"a": Infinity}', b"{", b"\xff"])),
        content_type=st.sampled_from(CONTENT_TYPES),
        metadata=st.dictionaries(
            st.sampled_from(["ttlInSeconds", "rawPayload", "cloudevent.id", "é"]),
            st.sampled_from(["", "10", "NaN", str(2**63), "true", "maybe", "-5"]),
            max_size=2,
        ),
    )
    def publish(
        self, surface: str, pubsub: str, topic: str, data: bytes, content_type: str, metadata: dict[str, str]
    ) -> None:
        """No model state: the answer must be a success or a clear client error, whatever was sent."""
        expect = wire.Expect(True, either=True, why="a publish the model does not judge")
        if pubsub != "pubsub" or not topic:
            expect = wire.ANY_REFUSAL.because("an unknown pubsub or an empty topic")
        if surface == "http":
            query = "&".join(f"metadata.{wire.path_segment(k)}={wire.path_segment(v)}" for k, v in metadata.items())
            path = f"/v1.0/publish/{wire.path_segment(pubsub)}/{wire.path_segment(topic)}" + (
                f"?{query}" if query else ""
            )
            headers = {"Content-Type": content_type} if content_type else {}
            answer = self.surface.request("POST", path, content=data, headers=headers)
            expect = path_refusal(path, pubsub, topic) or expect
        else:
            request = pubsub_pb2.PublishEventRequest(
                pubsub_name=pubsub, topic=topic, data=data, data_content_type=content_type, metadata=metadata
            )
            answer = self.surface.call(self.dapr.PublishEvent, request)
        wire.check(answer, expect, f"PublishEvent over {surface}")

    @rule(
        surface=two_surfaces,
        pubsub=st.sampled_from(["pubsub", "pubsub", "nopubsub"]),
        entry_ids=st.lists(st.sampled_from(["1", "2", "", "é"]), max_size=3),
        event=nasty.json_values,
    )
    def bulk_publish(self, surface: str, pubsub: str, entry_ids: list[str], event: Any) -> None:
        expect = wire.Expect(True, either=True, why="a bulk publish the model does not judge")
        if pubsub != "pubsub" or "" in entry_ids:
            expect = wire.ANY_REFUSAL.because("an unknown pubsub or an empty entry id")
        if surface == "http":
            entries = [{"entryId": e, "event": event, "contentType": "application/json"} for e in entry_ids]
            if nasty.has_non_finite(event) and entries:
                expect = wire.INVALID.because("NaN or Infinity in JSON")
            answer = self.surface.request("POST", f"/v1.0-alpha1/publish/bulk/{pubsub}/orders", json_body=entries)
        else:
            payload = json.dumps(event, allow_nan=True).encode()
            request = pubsub_pb2.BulkPublishRequest(
                pubsub_name=pubsub,
                topic="orders",
                entries=[
                    pubsub_pb2.BulkPublishRequestEntry(entry_id=e, event=payload, content_type="application/json")
                    for e in entry_ids
                ],
            )
            answer = self.surface.call(self.dapr.BulkPublishEventAlpha1, request)
        wire.check(answer, expect, f"BulkPublishEvent over {surface}")

    # --- metadata ------------------------------------------------------------------

    @rule(
        surface=two_surfaces,
        key=st.sampled_from(METADATA_KEYS),
        value=st.one_of(st.text(max_size=40), st.just(HUGE_METADATA_VALUE), st.just("\udcff")),
    )
    def set_metadata(self, surface: str, key: str, value: str) -> None:
        expect = wire.OK
        if not key:
            expect = wire.INVALID.because("an empty metadata key")
        elif len(value) > 1024 * 1024:
            expect = wire.ANY_REFUSAL.because("a value over MAX_EXTENDED_METADATA_BYTES")
        if surface == "http":
            if "/" in key:
                return  # a slash ends the path segment: no route can name this key over HTTP
            body = value.encode("utf-8", errors="surrogateescape")  # "\udcff" is the byte 0xff: not UTF-8
            if value == "\udcff":
                expect = wire.INVALID.because("a value that is not UTF-8") if key else expect
            path = f"/v1.0/metadata/{wire.path_segment(key)}"
            answer = self.surface.request("PUT", path, content=body)
            expect = path_refusal(path, "metadata", key) or expect
        else:
            if value == "\udcff":
                return  # a proto string must be UTF-8: the client cannot send it
            answer = self.surface.call(self.dapr.SetMetadata, metadata_pb2.SetMetadataRequest(key=key, value=value))
        wire.check(answer, expect, f"SetMetadata over {surface}")
        if answer.ok:
            self.extended[key] = value

    @rule(surface=two_surfaces)
    def get_metadata(self, surface: str) -> None:
        if surface == "http":
            answer = self.surface.request("GET", "/v1.0/metadata")
            extended = answer.body["extended"] if answer.ok else None
        else:
            answer = self.surface.call(self.dapr.GetMetadata, metadata_pb2.GetMetadataRequest())
            extended = dict(answer.body.extended_metadata) if answer.ok else None
        wire.check(answer, wire.OK, f"GetMetadata over {surface}")
        assert extended == self.extended, f"GetMetadata over {surface}: {list(extended or {})} ≠ {list(self.extended)}"

    def teardown(self) -> None:
        """The sidecar holds what the model does, and this sequence's locks are released for the next."""
        self.get_metadata("dapr")
        for surface in ("http", "dapr", "layotto"):
            self.get_configuration(
                surface, "configstore", [k[len(self.tag) :] for k in sorted(self.config_keys)] or ["c1"]
            )
        for resource_id, owner in list(self.locks.items()):
            answer = self.surface.call(
                self.dapr.UnlockAlpha1,
                lock_pb2.UnlockRequest(store_name="lockstore", resource_id=resource_id, lock_owner=owner),
            )
            wire.check(answer, wire.OK, "Unlock at the end of a sequence")
            assert answer.body.status == UNLOCK_SUCCESS, f"Unlock {resource_id[:40]!r}: status {answer.body.status}"


def path_refusal(path: str, first: str, second: str) -> wire.Expect | None:
    if not first or not second:
        return wire.ANY_REFUSAL.because("an empty segment in the URL")
    return wire.url_fits(path)


def test_apis_match_the_model(fuzz_surface: wire.Surface, fuzz_settings: settings) -> None:
    machine = type("ApisMachine", (ApisMachine,), {"surface": fuzz_surface})
    run_state_machine_as_test(machine, settings=fuzz_settings)
