"""Imports every built-in implementation, so each registers itself in the catalogue."""

from ottava_sidecar.components.configuration import etcd as configuration_etcd
from ottava_sidecar.components.configuration import in_memory as configuration_in_memory
from ottava_sidecar.components.configuration import kubernetes as configuration_kubernetes
from ottava_sidecar.components.configuration import redis as configuration_redis
from ottava_sidecar.components.lock import etcd as lock_etcd
from ottava_sidecar.components.lock import in_memory as lock_in_memory
from ottava_sidecar.components.lock import redis as lock_redis
from ottava_sidecar.components.lock import zookeeper as lock_zookeeper
from ottava_sidecar.components.pubsub import in_memory as pubsub_in_memory
from ottava_sidecar.components.pubsub import mqtt as pubsub_mqtt
from ottava_sidecar.components.pubsub import nats as pubsub_nats
from ottava_sidecar.components.pubsub import rabbitmq as pubsub_rabbitmq
from ottava_sidecar.components.pubsub import redis as pubsub_redis
from ottava_sidecar.components.secretstores import kubernetes as secretstores_kubernetes
from ottava_sidecar.components.secretstores import local_env, local_file
from ottava_sidecar.components.sequencer import etcd as sequencer_etcd
from ottava_sidecar.components.sequencer import in_memory as sequencer_in_memory
from ottava_sidecar.components.sequencer import postgresql as sequencer_postgresql
from ottava_sidecar.components.sequencer import redis as sequencer_redis
from ottava_sidecar.components.sequencer import zookeeper as sequencer_zookeeper
from ottava_sidecar.components.state import in_memory as state_in_memory
from ottava_sidecar.components.state import postgresql as state_postgresql
from ottava_sidecar.components.state import redis as state_redis
from ottava_sidecar.components.state import sqlite as state_sqlite

__all__ = [
    "configuration_etcd",
    "configuration_in_memory",
    "configuration_kubernetes",
    "configuration_redis",
    "local_env",
    "local_file",
    "lock_etcd",
    "lock_in_memory",
    "lock_redis",
    "lock_zookeeper",
    "pubsub_in_memory",
    "pubsub_mqtt",
    "pubsub_nats",
    "pubsub_rabbitmq",
    "pubsub_redis",
    "secretstores_kubernetes",
    "sequencer_etcd",
    "sequencer_in_memory",
    "sequencer_postgresql",
    "sequencer_redis",
    "sequencer_zookeeper",
    "state_in_memory",
    "state_postgresql",
    "state_redis",
    "state_sqlite",
]
