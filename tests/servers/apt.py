"""Installing the servers' Debian packages when they are missing.

Other engineers (and CI) may run apt at the same time, so every apt call waits for the
dpkg lock instead of failing. The packages' own services must not start: the tests run
their own instances on their own ports, and a system-wide Redis on 6379 would only get
in the way. A `policy-rc.d` that refuses every start is put in place for the install
when the machine has none.
"""

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

APT_ENV = {"DEBIAN_FRONTEND": "noninteractive", "NEEDRESTART_MODE": "a"}
APT_OPTIONS = [
    "-o",
    "DPkg::Lock::Timeout=600",
    "-o",
    "Dpkg::Options::=--force-confdef",
    "-o",
    "Dpkg::Options::=--force-confold",
]
POLICY_RC_D = Path("/usr/sbin/policy-rc.d")
NO_SERVICE_STARTS = "#!/bin/sh\n# Written by Ottava's tests while they install packages: start no service.\nexit 101\n"

_lock = threading.Lock()
_updated = False


class InstallError(AssertionError):
    pass


def ensure(executables: dict[str, str]) -> None:
    """Install the package of each executable (`{path or name: package}`) that is missing."""
    missing = sorted({package for exe, package in executables.items() if not _present(exe)})
    if not missing:
        return
    with _lock:
        missing = sorted({package for exe, package in executables.items() if not _present(exe)})
        if missing:
            _install(missing)
    still = [exe for exe in executables if not _present(exe)]
    if still:
        raise InstallError(f"installed {missing} but {still} are still missing")


def _present(executable: str) -> bool:
    if "/" in executable:
        return any(Path("/").glob(executable.lstrip("/"))) if "*" in executable else Path(executable).exists()
    return shutil.which(executable) is not None


def _install(packages: list[str]) -> None:
    global _updated
    if os.geteuid() != 0:
        raise InstallError(f"the tests need {packages} and installing them needs root (run as root or install them)")
    started = time.monotonic()
    with _no_service_starts():
        if not _updated:
            _run(["apt-get", *APT_OPTIONS, "update"])
            _updated = True
        _run(["apt-get", "install", "-y", "--no-install-recommends", *APT_OPTIONS, *packages])
    print(f"[servers] installed {' '.join(packages)} in {time.monotonic() - started:.1f}s", flush=True)


def _run(command: list[str]) -> None:
    result = subprocess.run(
        command,
        env={**os.environ, **APT_ENV},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
    )
    if result.returncode != 0:
        raise InstallError(
            f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )


@contextmanager
def _no_service_starts() -> Iterator[None]:
    if POLICY_RC_D.exists():
        yield
        return
    POLICY_RC_D.write_text(NO_SERVICE_STARTS, encoding="utf-8")
    POLICY_RC_D.chmod(0o755)
    try:
        yield
    finally:
        if POLICY_RC_D.read_text(encoding="utf-8") == NO_SERVICE_STARTS:
            POLICY_RC_D.unlink()
