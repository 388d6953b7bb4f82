"""How the suites reach each registered implementation: the servers it needs and its metadata.

Every type registered in the catalogue must have an entry here (a test checks it), so
a new backend cannot land without joining its building block's suite.
"""

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import pytest

from tests.servers import kubernetes as kubernetes_setup
from tests.servers import mosquitto_server as mosquitto_setup
from tests.servers import nats_server as nats_setup
from tests.servers import postgresql_server as postgresql_setup
from tests.servers import rabbitmq_server as rabbitmq_setup
from tests.servers import redis_server as redis_setup
from tests.servers import s3_server as s3_setup
from tests.servers.process import ServerProcess

Servers = dict[str, ServerProcess]


@dataclass(frozen=True)
class Context:
    servers: Servers
    data_dir: Path  # per test: embedded stores keep their files here


@dataclass(frozen=True)
class Backend:
    servers: tuple[str, ...] = ()  # names of the session fixtures that run them
    metadata: Callable[[Context], dict[str, str]] = field(default=lambda _: {})
    shared: bool = True  # two instances (two sidecars) see the same data
    persistent: bool = True  # a new instance (a restarted sidecar) sees the data of the last one
    marks: tuple[pytest.MarkDecorator, ...] = ()  # e.g. e2e: needs the Kubernetes control plane
    # Connects to its server when it starts (an endpoint that bindings.http calls later does not).
    connects_at_start: bool = True


def _redis(ctx: Context) -> dict[str, str]:
    return {"redisHost": ctx.servers["redis_server"].address, "redisPassword": redis_setup.PASSWORD}


def _postgresql(ctx: Context) -> dict[str, str]:
    return {"connectionString": postgresql_setup.dsn(ctx.servers["postgresql_server"])}


def _etcd(ctx: Context) -> dict[str, str]:
    return {"endpoints": ctx.servers["etcd_server"].address}


def _zookeeper(ctx: Context) -> dict[str, str]:
    return {"servers": ctx.servers["zookeeper_server"].address}


def _nats(ctx: Context) -> dict[str, str]:
    address = ctx.servers["nats_server"].address
    return {"natsURL": f"nats://{address}", "user": nats_setup.USER, "password": nats_setup.PASSWORD}


def _mqtt(ctx: Context) -> dict[str, str]:
    address = ctx.servers["mosquitto_server"].address
    return {"url": address, "username": mosquitto_setup.USER, "password": mosquitto_setup.PASSWORD}


def _rabbitmq(ctx: Context) -> dict[str, str]:
    address = ctx.servers["rabbitmq_server"].address
    return {"host": address, "username": rabbitmq_setup.USER, "password": rabbitmq_setup.PASSWORD}


def _kubernetes(ctx: Context, **extra: str) -> dict[str, str]:
    namespace = cast(kubernetes_setup.KubernetesNamespace, ctx.servers["kubernetes_namespace"])
    return {"namespace": namespace.name, "kubeconfigPath": str(namespace.kubeconfig), **extra}


def _s3(ctx: Context) -> dict[str, str]:
    server = ctx.servers["s3_server"]
    s3_setup.create_bucket(server, S3_BUCKET)
    return {
        "endpoint": s3_setup.endpoint(server),
        "region": s3_setup.REGION,
        "bucket": S3_BUCKET,
        "accessKeyID": s3_setup.ACCESS_KEY_ID,
        "secretAccessKey": s3_setup.SECRET_ACCESS_KEY,
        "forcePathStyle": "true",
    }


S3_BUCKET = "ottava-conformance"

# Pub/sub in tests: a failed or abandoned message comes back within a second or two.
_FAST_REDELIVERY = {"redeliveryBackoffSeconds": "0.05", "maxRedeliveryBackoffSeconds": "0.5"}

IN_MEMORY = Backend(shared=False, persistent=False)
REDIS = Backend(("redis_server",), _redis)
POSTGRESQL = Backend(("postgresql_server",), _postgresql)
ETCD = Backend(("etcd_server",), _etcd)
ZOOKEEPER = Backend(("zookeeper_server",), _zookeeper)

BACKENDS: dict[str, Backend] = {
    "state.in-memory": IN_MEMORY,
    "state.redis": REDIS,
    "state.postgresql": POSTGRESQL,
    "state.sqlite": Backend(metadata=lambda ctx: {"databasePath": str(ctx.data_dir / "state.db")}),
    "configuration.in-memory": IN_MEMORY,
    "configuration.redis": REDIS,
    "configuration.etcd": ETCD,
    "configuration.kubernetes": Backend(
        ("kubernetes_namespace",),
        _kubernetes,
        marks=(pytest.mark.e2e, pytest.mark.timeout(kubernetes_setup.COLD_START_TIMEOUT)),
    ),
    "lock.in-memory": IN_MEMORY,
    "lock.redis": REDIS,
    "lock.etcd": ETCD,
    "lock.zookeeper": ZOOKEEPER,
    "sequencer.in-memory": IN_MEMORY,
    "sequencer.redis": REDIS,
    "sequencer.postgresql": POSTGRESQL,
    "sequencer.etcd": ETCD,
    "sequencer.zookeeper": ZOOKEEPER,
    "pubsub.in-memory": Backend(
        shared=False, persistent=False, metadata=lambda _: {"redeliveryBackoffSeconds": "0.05"}
    ),
    "pubsub.redis": Backend(
        ("redis_server",),
        lambda ctx: {
            **_redis(ctx),
            **_FAST_REDELIVERY,
            "processingTimeout": "1s",
            "redeliverInterval": "200ms",
            "pollTimeout": "200ms",
        },
    ),
    "pubsub.nats": Backend(
        ("nats_server",),
        lambda ctx: {**_nats(ctx), **_FAST_REDELIVERY, "ackWait": "1s", "pollTimeout": "200ms"},
    ),
    "pubsub.mqtt": Backend(("mosquitto_server",), lambda ctx: {**_mqtt(ctx), **_FAST_REDELIVERY}),
    "pubsub.rabbitmq": Backend(("rabbitmq_server",), lambda ctx: {**_rabbitmq(ctx), **_FAST_REDELIVERY}),
    "secretstores.local.env": Backend(metadata=lambda _: {"prefix": "OTTAVA_CONFORMANCE_"}),
    "secretstores.kubernetes": Backend(
        ("kubernetes_namespace",),
        lambda ctx: _kubernetes(ctx, allowedSecrets=kubernetes_setup.CONFORMANCE_SECRETS),
        marks=(pytest.mark.e2e, pytest.mark.timeout(kubernetes_setup.COLD_START_TIMEOUT)),
    ),
    "secretstores.local.file": Backend(metadata=lambda ctx: {"secretsFile": str(ctx.data_dir / "secrets.json")}),
    "file.local": Backend(metadata=lambda ctx: {"rootPath": str(ctx.data_dir / "files")}),
    "file.s3": Backend(("s3_server",), _s3),
    "bindings.localstorage": Backend(metadata=lambda ctx: {"rootPath": str(ctx.data_dir / "files")}),
    "bindings.http": Backend(
        ("http_echo_server",),
        lambda ctx: {"url": f"http://{ctx.servers['http_echo_server'].address}/base"},
        connects_at_start=False,
    ),
    "bindings.cron": Backend(metadata=lambda _: {"schedule": "@every 100ms"}, shared=False, persistent=False),
    "bindings.redis": REDIS,
    # A topic and a queue of their own for each instance: what one test sent is not another's.
    "bindings.mqtt": Backend(
        ("mosquitto_server",),
        # Dapr's form of the address: the credentials in the URL.
        lambda ctx: {
            "url": f"tcp://{mosquitto_setup.USER}:{mosquitto_setup.PASSWORD}@{ctx.servers['mosquitto_server'].address}",
            "topic": f"conformance/{uuid.uuid4().hex}",
            "consumerID": uuid.uuid4().hex,
        },
    ),
    "bindings.rabbitmq": Backend(
        ("rabbitmq_server",),
        lambda ctx: {**_rabbitmq(ctx), "queueName": f"conformance-{uuid.uuid4().hex}", "deleteWhenUnused": "true"},
    ),
    "bindings.postgresql": POSTGRESQL,
}
