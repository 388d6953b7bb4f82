"""etcd (Debian's etcd-server, 3.4.x: the v3 API is all the components use)."""

import json
import urllib.request

from tests.servers import apt
from tests.servers.process import ServerProcess, free_port, scratch_dir


def start() -> ServerProcess:
    apt.ensure({"etcd": "etcd-server"})
    port, peer_port = free_port(), free_port()
    data = scratch_dir("etcd")
    client_url, peer_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{peer_port}"
    command = [
        "etcd",
        "--name", "ottava-test",
        "--data-dir", str(data / "member"),
        "--listen-client-urls", client_url,
        "--advertise-client-urls", client_url,
        "--listen-peer-urls", peer_url,
        "--initial-advertise-peer-urls", peer_url,
        "--initial-cluster", f"ottava-test={peer_url}",
        "--log-level", "warn",
    ]  # fmt: skip

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"{client_url}/health", timeout=1) as response:
                return bool(json.load(response).get("health") == "true")
        except OSError:
            return False

    return ServerProcess("etcd", command, healthy, data, port).start()
