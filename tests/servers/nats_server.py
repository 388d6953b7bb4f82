"""NATS with JetStream (Debian's nats-server), file storage in a fresh folder, a user and password."""

import urllib.request

from tests.servers import apt
from tests.servers.process import ServerProcess, free_port, scratch_dir

USER = "ottava"
PASSWORD = "nats-test-password"


def start() -> ServerProcess:
    apt.ensure({"nats-server": "nats-server"})
    port, monitor = free_port(), free_port()
    data = scratch_dir("nats")
    command = [
        "nats-server",
        "-a", "127.0.0.1", "-p", str(port),
        "-m", str(monitor),  # /healthz answers 200 once JetStream is up
        "-js", "-sd", str(data / "jetstream"),
        "--user", USER, "--pass", PASSWORD,
    ]  # fmt: skip

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{monitor}/healthz?js-enabled-only=true", timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    return ServerProcess("nats", command, ready, data, port).start()
