"""RabbitMQ (Debian's rabbitmq-server), a node of its own: own name, ports, cookie and folders.

Slow to start (Erlang boots the whole broker), so only the tests that need it start it.
Everything the node writes lives in a fresh folder: HOME (with the Erlang cookie),
Mnesia, logs, and an empty enabled-plugins file; epmd runs on a port of its own so the
node never meets another one on the machine.
"""

import secrets
import subprocess
from dataclasses import dataclass

from tests.servers import apt
from tests.servers.process import ServerProcess, accepts_connections, free_port, scratch_dir

USER = "guest"  # RabbitMQ's default user, allowed from loopback only
PASSWORD = "guest"


@dataclass
class RabbitMQProcess(ServerProcess):
    epmd_port: int = 0

    def stop(self) -> None:
        super().stop()
        # Erlang starts epmd as a daemon; this one is ours (its own port): end it too.
        subprocess.run(["epmd", "-port", str(self.epmd_port), "-kill"], capture_output=True, check=False, timeout=10)


def start() -> ServerProcess:
    apt.ensure({"/usr/lib/rabbitmq/bin/rabbitmq-server": "rabbitmq-server"})
    port, dist, epmd = free_port(), free_port(), free_port()
    data = scratch_dir("rabbitmq")
    home = data / "home"
    home.mkdir()
    cookie = home / ".erlang.cookie"
    cookie.write_text(secrets.token_hex(16), encoding="utf-8")
    cookie.chmod(0o400)
    (data / "enabled_plugins").write_text("[].\n", encoding="utf-8")
    (data / "rabbitmq.conf").write_text(f"listeners.tcp.1 = 127.0.0.1:{port}\n", encoding="utf-8")
    env = {
        "HOME": str(home),
        "RABBITMQ_NODENAME": f"ottava-{port}@localhost",
        "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
        "RABBITMQ_NODE_PORT": str(port),
        "RABBITMQ_DIST_PORT": str(dist),
        "ERL_EPMD_PORT": str(epmd),
        "ERL_EPMD_ADDRESS": "127.0.0.1",
        "RABBITMQ_MNESIA_BASE": str(data / "mnesia"),
        "RABBITMQ_LOG_BASE": str(data / "log"),
        "RABBITMQ_LOGS": "-",  # to stdout, so a failed start shows the broker's own words
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(data / "enabled_plugins"),
        "RABBITMQ_CONFIG_FILE": str(data / "rabbitmq"),
        "RABBITMQ_PID_FILE": str(data / "rabbitmq.pid"),
    }
    command = ["/usr/lib/rabbitmq/bin/rabbitmq-server"]
    server = RabbitMQProcess(
        "rabbitmq", command, accepts_connections(port), data, port, start_timeout=120, env=env, epmd_port=epmd
    )
    return server.start()
