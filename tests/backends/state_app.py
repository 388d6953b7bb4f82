"""A small app written against the Dapr Python SDK only: it uses the `statestore` component.

Run by `test_swap_statestore.py` with `DAPR_GRPC_PORT` set, as `ottava run -- APP` would.
It prints a JSON transcript of what it saw (values and error codes, never ETag values,
which are each store's own), so runs on different stores can be compared.
"""

import json
import sys
import time
from typing import Any

from dapr.clients import DaprClient
from dapr.clients.exceptions import DaprGrpcError
from dapr.clients.grpc._request import TransactionalStateOperation, TransactionOperationType
from dapr.clients.grpc._state import Concurrency, StateItem, StateOptions

STORE = "statestore"


def main(run: str) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def key(name: str) -> str:
        return f"{run}-{name}"

    def attempt(label: str, call: Any) -> None:
        try:
            call()
            seen[label] = "ok"
        except DaprGrpcError as err:
            seen[label] = err.code().name

    with DaprClient() as client:
        client.save_state(STORE, key("order"), '{"qty": 1}')
        first = client.get_state(STORE, key("order"))
        seen["read"] = (first.data.decode(), bool(first.etag))
        attempt("write with etag", lambda: client.save_state(STORE, key("order"), '{"qty": 2}', etag=first.etag))
        attempt("write with stale etag", lambda: client.save_state(STORE, key("order"), "x", etag=first.etag))
        attempt("write with invalid etag", lambda: client.save_state(STORE, key("order"), "x", etag="not-an-etag"))
        first_write = StateOptions(concurrency=Concurrency.first_write)
        attempt("first-write on existing", lambda: client.save_state(STORE, key("order"), "x", options=first_write))
        attempt("first-write on new", lambda: client.save_state(STORE, key("fresh"), "new", options=first_write))
        seen["after writes"] = client.get_state(STORE, key("order")).data.decode()

        client.save_bulk_state(STORE, [StateItem(key("a"), "1"), StateItem(key("b"), "2")])
        bulk = client.get_bulk_state(STORE, [key("order"), key("a"), key("b"), key("missing")]).items
        seen["bulk"] = [(i.key.removeprefix(run + "-"), i.data.decode()) for i in bulk]

        client.execute_state_transaction(
            STORE,
            [
                TransactionalStateOperation(operation_type=TransactionOperationType.upsert, key=key("c"), data="3"),
                TransactionalStateOperation(operation_type=TransactionOperationType.delete, key=key("a")),
            ],
        )
        current = client.get_state(STORE, key("b"))
        client.save_state(STORE, key("b"), "2-bis")
        attempt(
            "stale transaction",
            lambda: client.execute_state_transaction(
                STORE,
                [
                    TransactionalStateOperation(operation_type=TransactionOperationType.upsert, key=key("c"), data="9"),
                    TransactionalStateOperation(
                        operation_type=TransactionOperationType.upsert, key=key("b"), data="9", etag=current.etag
                    ),
                ],
            ),
        )
        after = client.get_bulk_state(STORE, [key("a"), key("b"), key("c")]).items
        seen["after transactions"] = [(i.key.removeprefix(run + "-"), i.data.decode()) for i in after]

        latest = client.get_state(STORE, key("order"))
        attempt("delete with stale etag", lambda: client.delete_state(STORE, key("order"), etag=first.etag))
        attempt("delete with etag", lambda: client.delete_state(STORE, key("order"), etag=latest.etag))
        seen["deleted"] = client.get_state(STORE, key("order")).data.decode()

        client.save_state(STORE, key("short"), "brief", state_metadata={"ttlInSeconds": "1"})
        seen["ttl read"] = client.get_state(STORE, key("short")).data.decode()
        deadline = time.monotonic() + 6
        while client.get_state(STORE, key("short")).data and time.monotonic() < deadline:
            time.sleep(0.1)
        seen["ttl expired"] = client.get_state(STORE, key("short")).data.decode() == ""
    return seen


if __name__ == "__main__":
    json.dump(main(sys.argv[1]), sys.stdout, indent=1)
