"""Imports every built-in implementation, so each registers itself in the catalogue."""

from ottava_sidecar.components.configuration import in_memory as configuration_in_memory
from ottava_sidecar.components.lock import in_memory as lock_in_memory
from ottava_sidecar.components.pubsub import in_memory as pubsub_in_memory
from ottava_sidecar.components.secretstores import local_env, local_file
from ottava_sidecar.components.sequencer import in_memory as sequencer_in_memory
from ottava_sidecar.components.state import in_memory as state_in_memory

__all__ = [
    "configuration_in_memory",
    "local_env",
    "local_file",
    "lock_in_memory",
    "pubsub_in_memory",
    "sequencer_in_memory",
    "state_in_memory",
]
