"""The local CA from the sidecar's side: keys and certificates made in a child process.

Making a key, a request and a certificate needs the `cryptography` package. Loading it
was the largest single cost on a standalone sidecar's way to its ready line (about 30 ms
of CPU on this project's 2-core machine) and kept about 8 MB of RSS that an idle sidecar
never used again. So the sidecar runs `python -m ottava_sidecar.identity.local_ca FOLDER
TTL_SECONDS` (`local_ca.issue_one`) instead: `prepare` starts it as soon as `ottava run`
has read its flags, it loads cryptography and the CA and makes the key on the other core
while the sidecar loads the rest, and answers the key, the chain and the bundle as JSON
once it is told the SPIFFE ID. Each renewal runs a new child. The key crosses a pipe
between two processes of the same user, never a file.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from ottava_sidecar.identity.issued import IdentityError, Issued, Leaf
from ottava_sidecar.identity.spiffe import SpiffeId, SpiffeIdError

log = logging.getLogger(__name__)

ENV_CA_DIR = "OTTAVA_CA_DIR"


def default_folder() -> Path:
    if os.environ.get(ENV_CA_DIR):
        return Path(os.environ[ENV_CA_DIR])
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "ottava" / "ca"


class LocalIssuer:
    """A `workload.KeyAndCertificateSource`: the local CA in `folder`, asked in a child process."""

    def __init__(self, folder: Path | None, ttl: datetime.timedelta) -> None:
        self.folder = folder or default_folder()
        self.ttl = ttl
        self._ready: subprocess.Popen[bytes] | None = None

    def describe(self) -> str:
        return f"the local CA in {self.folder}"

    def prepare(self) -> None:
        """Start the next child now, so that it has done its part when it is asked."""
        if self._ready is None:
            self._ready = self._spawn()

    async def issue_key_and_certificate(self, identity: SpiffeId) -> tuple[bytes, Issued, Leaf]:
        import asyncio  # here, not above: the child imports this module too (`default_folder`)

        child, self._ready = self._ready or self._spawn(), None
        out, err = await asyncio.to_thread(child.communicate, str(identity).encode())
        if child.returncode != 0:
            reason = err.decode(errors="replace").strip() or f"its process exited with status {child.returncode}"
            raise IdentityError(reason)
        try:
            answer = json.loads(out)
            leaf = Leaf(
                SpiffeId.parse(answer["identity"]),
                datetime.datetime.fromisoformat(answer["not_before"]),
                datetime.datetime.fromisoformat(answer["not_after"]),
                int(answer["serial"]),
            )
            issued = Issued(chain=answer["chain"].encode(), bundle=answer["bundle"].encode())
            key: bytes = answer["key"].encode()
        except (ValueError, KeyError, TypeError, SpiffeIdError) as err:
            raise IdentityError(f"{self.describe()} answered what cannot be read: {err}") from None
        if answer.get("created_ca"):
            log.info("created a local CA for mTLS between sidecars", extra={"folder": str(self.folder)})
        return key, issued, leaf

    def close(self) -> None:
        """End a child that was started and never asked (it ends on its own when stdin closes)."""
        child, self._ready = self._ready, None
        if child is not None:
            child.communicate(b"")

    def _spawn(self) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "ottava_sidecar.identity.local_ca", str(self.folder)]
        command.append(str(self.ttl.total_seconds()))
        try:
            return subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except OSError as err:
            raise IdentityError(f"cannot ask {self.describe()}: {err}") from None
