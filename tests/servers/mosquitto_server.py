"""Mosquitto (Debian's mosquitto), MQTT 3.1.1/5 on its own port, a password file, persistent sessions."""

import subprocess

from tests.servers import apt
from tests.servers.process import ServerProcess, accepts_connections, free_port, scratch_dir

USER = "ottava"
PASSWORD = "mqtt-test-password"
MOSQUITTO = "/usr/sbin/mosquitto"


def start() -> ServerProcess:
    apt.ensure({MOSQUITTO: "mosquitto", "mosquitto_passwd": "mosquitto"})
    port = free_port()
    data = scratch_dir("mosquitto")
    passwords = data / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), USER, PASSWORD], check=True, capture_output=True)
    passwords.chmod(0o600)
    config = data / "mosquitto.conf"
    config.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {passwords}\n"
        f"persistence true\npersistence_location {data}/\nuser root\nlog_dest stdout\n",
        encoding="utf-8",
    )
    return ServerProcess("mosquitto", [MOSQUITTO, "-c", str(config)], accepts_connections(port), data, port).start()
