"""The local CA of `ottava run`: created on first use in the user's config folder, private to the user.

Standalone sidecars of one user issue their own certificates from it, so sidecars on one
machine talk mTLS and the access-control policies of a cluster can be tried on a laptop.
Its folder is `$OTTAVA_CA_DIR`, else `$XDG_CONFIG_HOME/ottava/ca`, else
`~/.config/ottava/ca`: mode 0700, the key 0600. Whoever can read the key can be any app
of this user; that is the user, who can read the apps' memory anyway (docs/security.md).

Two sidecars that start together and both find no CA must not make two: creation happens
under an exclusive lock on a file in the folder, and the second one reads what the first
wrote.

`ottava run` asks it from a child process, `python -m ottava_sidecar.identity.local_ca
FOLDER TTL_SECONDS` (`local_issuer` is the sidecar's side), so the sidecar itself never
loads the `cryptography` package.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import logging
import os
import stat
import sys
from pathlib import Path

from ottava_sidecar.identity import certs
from ottava_sidecar.identity.issued import IdentityError, Issued
from ottava_sidecar.identity.local_issuer import ENV_CA_DIR, default_folder
from ottava_sidecar.identity.spiffe import SpiffeId, SpiffeIdError

__all__ = ["CERT_FILE", "ENV_CA_DIR", "KEY_FILE", "LocalCa", "default_folder"]

log = logging.getLogger(__name__)

ROOT_LIFETIME = datetime.timedelta(days=10 * 365)
CERT_FILE = "ca.crt"
KEY_FILE = "ca.key"


class LocalCa:
    def __init__(self, folder: Path | None, ttl: datetime.timedelta) -> None:
        self.folder = folder or default_folder()
        self.ttl = ttl
        self._root: tuple[bytes, bytes] | None = None
        self.created = False  # whether this one made the CA (it was not there yet)

    def describe(self) -> str:
        return f"the local CA in {self.folder}"

    def root(self) -> tuple[bytes, bytes]:
        """(cert PEM, key PEM) of the CA, made now if there is none; `IdentityError` if unusable."""
        if self._root is None:
            try:
                self._root = self._load_or_create()
            except OSError as err:
                raise IdentityError(f"cannot use {self.describe()}: {err}") from None
        return self._root

    def _load_or_create(self) -> tuple[bytes, bytes]:
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        mode = stat.S_IMODE(self.folder.stat().st_mode)
        if mode & 0o077:
            raise IdentityError(
                f"{self.describe()} is readable by other users (mode {mode:o}); run chmod 700 {self.folder}"
            )
        with open(self.folder / ".lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            cert_path, key_path = self.folder / CERT_FILE, self.folder / KEY_FILE
            if cert_path.exists() and key_path.exists():
                cert, key = cert_path.read_bytes(), key_path.read_bytes()
                try:
                    root = certs.load_certs(cert)[0]
                    certs.load_key(key)
                except certs.CertificateError as err:
                    raise IdentityError(
                        f"{self.describe()} is damaged ({err}); remove the folder to start over"
                    ) from None
                if root.not_valid_after_utc <= certs.now():
                    raise IdentityError(f"{self.describe()} expired; remove the folder to make a new one")
                return cert, key
            cert, key = certs.new_root("ottava local CA", ROOT_LIFETIME)
            _write_private(key_path, key)
            _write_private(cert_path, cert)
            log.info("created a local CA for mTLS between sidecars", extra={"folder": str(self.folder)})
            self.created = True
            return cert, key

    async def issue(self, identity: SpiffeId, csr_pem: bytes) -> Issued:
        return self.issue_now(identity, csr_pem)

    def issue_now(self, identity: SpiffeId, csr_pem: bytes) -> Issued:
        """`issue`, for a caller without an event loop (the child process)."""
        cert, key = self.root()
        try:
            public_key = certs.request_public_key(csr_pem)
        except certs.CertificateError as err:
            raise IdentityError(str(err)) from None
        leaf = certs.issue_workload(cert, key, public_key, identity, self.ttl)
        return Issued(chain=leaf, bundle=cert)


def _write_private(path: Path, content: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(content)
    tmp.replace(path)


def issue_one(folder: Path, ttl: datetime.timedelta) -> int:
    """The child process of `local_issuer`: one key and workload certificate, as JSON on stdout.

    The CA is loaded and the key made at once, while the sidecar starts; the SPIFFE ID to
    certify then comes on stdin (nothing: the sidecar no longer needs it). A refusal is
    one line on stderr and exit status 1.
    """
    ca = LocalCa(folder, ttl)
    try:
        ca.root()
        key = certs.new_key()
        requested = sys.stdin.read().strip()
        if not requested:
            return 0
        identity = SpiffeId.parse(requested)
        issued = ca.issue_now(identity, certs.new_request(key, identity))
        leaf = certs.Leaf.read(issued.chain)
    except (IdentityError, certs.CertificateError, SpiffeIdError) as err:
        print(err, file=sys.stderr)
        return 1
    answer = {
        "key": certs.key_pem(key).decode(),
        "chain": issued.chain.decode(),
        "bundle": issued.bundle.decode(),
        "identity": str(leaf.identity),
        "not_before": leaf.not_before.isoformat(),
        "not_after": leaf.not_after.isoformat(),
        "serial": leaf.serial,
        "created_ca": ca.created,
    }
    json.dump(answer, sys.stdout)
    return 0


if __name__ == "__main__":
    status = issue_one(Path(sys.argv[1]), datetime.timedelta(seconds=float(sys.argv[2])))
    sys.stdout.flush()
    sys.stderr.flush()
    # The sidecar reads the answer when this process ends: skip the interpreter's shutdown
    # (about 12 ms), which has nothing left to do (every file written is closed already).
    os._exit(status)
