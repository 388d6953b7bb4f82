"""Every registered implementation takes part in its building block's suite."""

from ottava_sidecar.components import catalogue

from tests.conformance.backends import BACKENDS

SUITES = {"state", "pubsub", "configuration", "lock", "sequencer", "secretstores", "file"}


def test_every_registered_type_has_a_conformance_set_up() -> None:
    missing = [t.name for t in catalogue.all_types() if t.building_block in SUITES and t.name not in BACKENDS]
    assert not missing, f"add these types to tests/conformance/backends.py: {missing}"


def test_the_catalogue_knows_every_type_without_importing_client_libraries() -> None:
    """The sidecar starts fast on in-memory components: no backend client is imported for that."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from ottava_sidecar.components import catalogue\n"
        "types = {t.name: t.field_names() for t in catalogue.all_types()}\n"
        "assert 'state.redis' in types and 'redisHost' in types['state.redis'], types\n"
        "clients = ['redis', 'asyncpg', 'aetcd', 'aiosqlite', 'aiozk', 'nats', 'aiomqtt', 'aio_pika']\n"
        "print(sorted(m for m in clients if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr
