"""The built-in component types, and the module that implements each.

A module is imported the first time its type is looked up (`catalogue.lookup`), and then
registers itself (`registration.register`). So a sidecar imports only the backends its
Components use: a standalone sidecar on the in-memory defaults never loads the Redis,
etcd, PostgreSQL, NATS or Kubernetes clients, which is most of its start-up time.
`tests/test_catalogue.py` holds this table to what the modules register.
"""

from typing import Final

_PACKAGE: Final = "ottava_sidecar.components"

MODULES: Final[dict[str, str]] = {
    "bindings.cron": f"{_PACKAGE}.bindings.cron",
    "bindings.http": f"{_PACKAGE}.bindings.http",
    "bindings.localstorage": f"{_PACKAGE}.bindings.localstorage",
    "bindings.mqtt": f"{_PACKAGE}.bindings.mqtt",
    "bindings.postgresql": f"{_PACKAGE}.bindings.postgresql",
    "bindings.rabbitmq": f"{_PACKAGE}.bindings.rabbitmq",
    "bindings.redis": f"{_PACKAGE}.bindings.redis",
    "configuration.etcd": f"{_PACKAGE}.configuration.etcd",
    "configuration.in-memory": f"{_PACKAGE}.configuration.in_memory",
    "configuration.kubernetes": f"{_PACKAGE}.configuration.kubernetes",
    "configuration.redis": f"{_PACKAGE}.configuration.redis",
    "file.local": f"{_PACKAGE}.file.local",
    "file.s3": f"{_PACKAGE}.file.s3",
    "function.wasm": f"{_PACKAGE}.functions.wasm",
    "lock.etcd": f"{_PACKAGE}.lock.etcd",
    "lock.in-memory": f"{_PACKAGE}.lock.in_memory",
    "lock.redis": f"{_PACKAGE}.lock.redis",
    "lock.zookeeper": f"{_PACKAGE}.lock.zookeeper",
    "pubsub.in-memory": f"{_PACKAGE}.pubsub.in_memory",
    "pubsub.mqtt": f"{_PACKAGE}.pubsub.mqtt",
    "pubsub.nats": f"{_PACKAGE}.pubsub.nats",
    "pubsub.rabbitmq": f"{_PACKAGE}.pubsub.rabbitmq",
    "pubsub.redis": f"{_PACKAGE}.pubsub.redis",
    "secretstores.kubernetes": f"{_PACKAGE}.secretstores.kubernetes",
    "secretstores.local.env": f"{_PACKAGE}.secretstores.local_env",
    "secretstores.local.file": f"{_PACKAGE}.secretstores.local_file",
    "sequencer.etcd": f"{_PACKAGE}.sequencer.etcd",
    "sequencer.in-memory": f"{_PACKAGE}.sequencer.in_memory",
    "sequencer.postgresql": f"{_PACKAGE}.sequencer.postgresql",
    "sequencer.redis": f"{_PACKAGE}.sequencer.redis",
    "sequencer.zookeeper": f"{_PACKAGE}.sequencer.zookeeper",
    "state.in-memory": f"{_PACKAGE}.state.in_memory",
    "state.postgresql": f"{_PACKAGE}.state.postgresql",
    "state.redis": f"{_PACKAGE}.state.redis",
    "state.sqlite": f"{_PACKAGE}.state.sqlite",
}
