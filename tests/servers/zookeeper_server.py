"""ZooKeeper (Debian's zookeeper, on the Java the machine has), standalone, started only when needed."""

import socket

from tests.servers import apt
from tests.servers.process import ServerProcess, free_port, scratch_dir

CLASSPATH = "/etc/zookeeper/conf:/usr/share/java/zookeeper.jar"


def start() -> ServerProcess:
    apt.ensure({"/usr/share/java/zookeeper.jar": "zookeeper", "java": "default-jre-headless"})
    port = free_port()
    data = scratch_dir("zookeeper")
    config = data / "zoo.cfg"
    config.write_text(
        f"tickTime=500\ndataDir={data / 'data'}\nclientPort={port}\nclientPortAddress=127.0.0.1\n"
        "admin.enableServer=false\n4lw.commands.whitelist=ruok\nmaxClientCnxns=0\n",
        encoding="utf-8",
    )
    command = [
        "java", "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
        "-cp", CLASSPATH, "-Dzookeeper.log.dir=" + str(data),
        "org.apache.zookeeper.server.ZooKeeperServerMain", str(config),
    ]  # fmt: skip

    def ready() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"ruok")
                return sock.recv(4) == b"imok"
        except OSError:
            return False

    return ServerProcess("zookeeper", command, ready, data, port, start_timeout=90).start()
