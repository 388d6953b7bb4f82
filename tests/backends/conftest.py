"""The real servers, for tests that run sidecars on them."""

from tests.servers.fixtures import *  # noqa: F403
