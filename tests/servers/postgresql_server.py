"""PostgreSQL (Debian's postgresql), run by the `postgres` user since it refuses to run as root.

Local connections over TCP need a password (scram-sha-256), so wrong credentials are
refused as they would be in production.
"""

import os
import shutil
import subprocess
from pathlib import Path

from tests.servers import apt
from tests.servers.process import ServerError, ServerProcess, free_port, scratch_dir

USER = "postgres"
PASSWORD = "postgres-test-password"
DATABASE = "postgres"


def _bin_dir() -> Path:
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parent.parent.name))
    if not versions:
        raise ServerError("postgres not found under /usr/lib/postgresql after installing postgresql")
    return versions[-1].parent


def start() -> ServerProcess:
    apt.ensure({"/usr/lib/postgresql/*/bin/postgres": "postgresql"})
    bin_dir = _bin_dir()
    port = free_port()
    data = scratch_dir("postgresql")
    pgdata, sockets = data / "pgdata", data / "sockets"
    sockets.mkdir()
    (data / "pwfile").write_text(PASSWORD + "\n", encoding="utf-8")
    shutil.chown(data, USER)
    shutil.chown(sockets, USER)
    shutil.chown(data / "pwfile", USER)
    os.chmod(data, 0o700)
    initdb = subprocess.run(
        ["setpriv", f"--reuid={USER}", f"--regid={USER}", "--init-groups", "--",
         str(bin_dir / "initdb"), "-D", str(pgdata), "-U", USER, f"--pwfile={data / 'pwfile'}",
         "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync"],
        capture_output=True, text=True, check=False, cwd=data, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    if initdb.returncode != 0:
        raise ServerError(f"initdb failed ({initdb.returncode}):\n{initdb.stdout}\n{initdb.stderr}")
    command = [
        str(bin_dir / "postgres"),
        "-D", str(pgdata),
        "-p", str(port),
        "-h", "127.0.0.1",
        "-k", str(sockets),
        "-c", "fsync=off",
        "-c", "synchronous_commit=off",
        "-c", "full_page_writes=off",
        "-c", "max_connections=200",
    ]  # fmt: skip

    def ready() -> bool:
        probe = subprocess.run(
            [str(bin_dir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port), "-q"],
            check=False, stdin=subprocess.DEVNULL, capture_output=True,
        )  # fmt: skip
        return probe.returncode == 0

    return ServerProcess("postgresql", command, ready, data, port, user=USER).start()


def dsn(server: ServerProcess, *, password: str = PASSWORD) -> str:
    return f"postgresql://{USER}:{password}@{server.address}/{DATABASE}"
