"""The model of a state store: what the sidecar must hold after each request, and what it must answer.

The intended semantics (issue 12), which the model encodes and the suite holds the
sidecar to:

* a request that is refused with a client error changes nothing: a bulk save or delete
  is validated whole before anything is written, and a transaction is all or nothing;
* `ttlInSeconds` is Dapr's int32 of seconds (-1 … 2^31-1, ASCII digits); anything else
  is refused with 400 / INVALID_ARGUMENT;
* JSON with NaN or Infinity is not JSON, and is refused with 400;
* an ETag that is not the item's current one is refused (400 or 409 / INVALID_ARGUMENT
  or ABORTED), and so is first-write on an item that exists;
* the operations of a request apply in order (a repeated key ends with its last write).

`Write` holds one item of a request; `StateModel.expect` decides a request's outcome
and the state it leaves, before the request is sent.
"""

import base64
import json
from dataclasses import dataclass, field, replace
from typing import Any

from tests.properties import nasty, wire

SEPARATOR = "||"
NO_JSON = object()  # the value came over gRPC, as raw bytes


@dataclass
class Item:
    value: bytes
    json_value: Any = NO_JSON  # the JSON an HTTP client saved (compared as JSON, not bytes)
    etag: str | None = None  # the current ETag, once read back

    def matches(self, data: bytes) -> bool:
        if self.json_value is NO_JSON:
            return data == self.value
        try:
            return bool(wire.strict_json(data) == self.json_value)
        except ValueError:
            return False

    def bulk_data(self) -> Any:
        """The item's `data` in an HTTP bulk read (docs/state.md): JSON, else UTF-8 text, else base64."""
        if self.json_value is not NO_JSON:
            return self.json_value
        try:
            text = self.value.decode()
        except UnicodeDecodeError:
            return base64.b64encode(self.value).decode()
        try:
            return wire.strict_json(text)
        except ValueError:
            return text


@dataclass
class Write:
    """One upsert or delete, as the request carries it."""

    key: str
    operation: str = "upsert"  # or "delete", or (in a transaction) anything an app may send
    value: bytes = b""
    json_value: Any = NO_JSON
    etag: str | None = None  # None: no ETag sent
    concurrency: str = ""  # "", "first-write", "last-write", or a bad one (HTTP)
    ttl: str | None = None

    def refusal(self) -> str | None:
        """Why the request that carries this item is invalid, before any store is asked."""
        if not self.key:
            return "an empty key"
        if SEPARATOR in self.key:
            return f"a key with {SEPARATOR!r}"
        if self.operation not in ("upsert", "delete"):
            return f"operation type {self.operation!r}"
        if self.concurrency not in ("", "first-write", "last-write"):
            return f"concurrency {self.concurrency!r}"
        if self.operation == "upsert" and not nasty.ttl_is_valid(self.ttl):
            return f"ttlInSeconds={self.ttl!r}"
        if self.json_value is not NO_JSON and nasty.has_non_finite(self.json_value):
            return "NaN or Infinity in a JSON value"
        return None


@dataclass
class StateModel:
    items: dict[str, Item] = field(default_factory=dict)
    seen_etags: list[str] = field(default_factory=list)

    def expect(self, writes: list[Write], *, bad_store: bool = False) -> tuple[wire.Expect, dict[str, Item]]:
        """The outcome of a request made of `writes`, and the items the store holds after it."""
        if bad_store:
            return wire.INVALID.because("a state store that does not exist"), self.items
        for write in writes:
            if (why := write.refusal()) is not None:
                return wire.INVALID.because(why), self.items
        after = dict(self.items)
        for write in writes:
            if (why := self._conflict(write, after)) is not None:
                return wire.ETAG_REFUSED.because(why), self.items
            if write.operation == "upsert":
                after[write.key] = Item(write.value, write.json_value)
            else:
                after.pop(write.key, None)
        return wire.OK, after

    @staticmethod
    def _conflict(write: Write, items: dict[str, Item]) -> str | None:
        current = items.get(write.key)
        if write.etag:
            if current is None:
                return f"ETag {write.etag!r} for {write.key[:40]!r}, which does not exist"
            assert current.etag is not None, f"the model does not know the ETag of {write.key[:40]!r}"
            if write.etag != current.etag:
                return f"ETag {write.etag!r} for {write.key[:40]!r}, whose ETag is {current.etag!r}"
        elif write.concurrency == "first-write" and current is not None and write.operation == "upsert":
            return f"first-write on {write.key[:40]!r}, which exists"
        return None

    def learn_etag(self, key: str, etag: str) -> None:
        item = self.items.get(key)
        if item is not None and etag:
            self.items[key] = replace(item, etag=etag)
            if etag not in self.seen_etags:
                self.seen_etags.append(etag)


def http_entry(write: Write) -> dict[str, Any]:
    """The JSON of one item in a save body (or a transaction's `request`)."""
    entry: dict[str, Any] = {"key": write.key}
    if write.operation != "delete":
        entry["value"] = write.json_value if write.json_value is not NO_JSON else write.value.decode("latin-1")
    if write.etag is not None:
        entry["etag"] = write.etag
    if write.concurrency:
        entry["options"] = {"concurrency": write.concurrency}
    if write.ttl is not None:
        entry["metadata"] = {"ttlInSeconds": write.ttl}
    return entry


def stored_json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
