"""Ottava quick start with the official Dapr Python SDK, unmodified.

Run it under a sidecar on the standalone defaults, which gives it DAPR_GRPC_PORT and
DAPR_HTTP_PORT so the SDK finds the sidecar:

    .venv/bin/ottava run --app-id quickstart -- .venv/bin/python examples/quickstart.py

or, with `make run` in another shell, simply `.venv/bin/python examples/quickstart.py`.
"""

import asyncio
import os
import threading

import grpc
from dapr.aio.clients import DaprClient as AsyncDaprClient
from dapr.clients import DaprClient
from dapr.clients.grpc._response import ConfigurationResponse
from ottava_sidecar._gen.spec.proto.runtime.v1 import runtime_pb2, runtime_pb2_grpc


def save_configuration(key: str, value: str) -> None:
    """Write through the Layotto API, with the client generated from Ottava's proto/."""
    with grpc.insecure_channel(f"127.0.0.1:{os.environ.get('DAPR_GRPC_PORT', '50001')}") as channel:
        runtime_pb2_grpc.RuntimeStub(channel).SaveConfiguration(
            runtime_pb2.SaveConfigurationRequest(
                store_name="configstore", items=[runtime_pb2.ConfigurationItem(key=key, content=value)]
            )
        )


def sync_tour() -> None:
    with DaprClient() as client:
        # State, with optimistic concurrency through ETags.
        client.save_state("statestore", "order-1", '{"qty": 1}')
        order = client.get_state("statestore", "order-1")
        print(f"state: {order.data.decode()} (etag {order.etag})")
        client.save_state("statestore", "order-1", '{"qty": 2}', etag=order.etag)
        client.delete_state("statestore", "order-1")

        # Configuration: read, then watch for changes.
        changed = threading.Event()

        def on_change(subscription_id: str, response: ConfigurationResponse) -> None:
            for key, item in response.items.items():
                print(f"configuration changed: {key} = {item.value!r}")
            if response.items:
                changed.set()

        subscription = client.subscribe_configuration("configstore", ["greeting"], on_change)
        # Dapr's API only reads configuration; Layotto's, on the same port, also writes it.
        save_configuration("greeting", "hello")
        if not changed.wait(timeout=10):
            raise SystemExit("no configuration update arrived")
        print(
            f"configuration: greeting = {client.get_configuration('configstore', ['greeting']).items['greeting'].value!r}"
        )
        client.unsubscribe_configuration("configstore", subscription)

        # A distributed lock.
        with client.try_lock("lockstore", "invoice-7", "worker-1", expiry_in_seconds=10) as lock:
            print(f"lock taken: {lock.success}")

        # A secret (the default secret store reads the sidecar's environment).
        name = os.environ.get("QUICKSTART_SECRET_NAME", "HOME")
        print(f"secret {name}: {'found' if client.get_secret('secretstore', name).secret else 'missing'}")

        # What the sidecar has loaded.
        for component in client.get_metadata().registered_components:
            print(f"component: {component.name} ({component.type})")


async def async_tour() -> None:
    async with AsyncDaprClient() as client:
        await client.save_state("statestore", "cart-1", "3 items")
        cart = await client.get_state("statestore", "cart-1")
        print(f"async state: {cart.data.decode()}")


if __name__ == "__main__":
    sync_tour()
    asyncio.run(async_tour())
    print("quickstart done")
