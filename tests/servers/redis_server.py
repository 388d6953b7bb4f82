"""Redis (Debian's redis-server), with a password so that the password option is exercised."""

from tests.servers import apt
from tests.servers.process import ServerProcess, accepts_connections, free_port, scratch_dir

PASSWORD = "redis-test-password"


def start(
    *, password: str = PASSWORD, durable: bool = False, bind: str = "127.0.0.1", port: int | None = None
) -> ServerProcess:
    """`durable`: every acknowledged write is fsynced to the append-only file (survives SIGKILL).

    `bind`: the address to listen on, e.g. the e2e node's bridge address so that pods reach it.
    `port`: where to listen (a free one by default), e.g. where a sidecar already expects it.
    """
    apt.ensure({"redis-server": "redis-server"})
    port = port or free_port()
    data = scratch_dir("redis")
    command = [
        "redis-server",
        "--port", str(port),
        "--bind", bind,
        "--dir", str(data),
        "--save", "",
        "--appendonly", "yes" if durable else "no",
        "--appendfsync", "always",
        "--daemonize", "no",
        "--requirepass", password,
    ]  # fmt: skip
    return ServerProcess("redis", command, accepts_connections(port, bind), data, port, host=bind).start()
