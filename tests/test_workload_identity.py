"""The sidecar's own certificate: the local CA that issues it standalone, and its renewal.

The CA is real (files in a test folder); the one fault made by hand is a CA that refuses
to renew, which a running local CA never does.
"""

from __future__ import annotations

import asyncio
import datetime
import threading
import time
from pathlib import Path

import pytest
from ottava_sidecar.identity import certs
from ottava_sidecar.identity.local_ca import LocalCa
from ottava_sidecar.identity.spiffe import SpiffeId
from ottava_sidecar.identity.workload import IdentityError, Issued, WorkloadIdentity

APP = SpiffeId("public", "default", "orders")


class SwitchableCa:
    """The local CA, with a switch that makes it refuse (a CA that is down)."""

    def __init__(self, folder: Path, ttl: datetime.timedelta) -> None:
        self.ca = LocalCa(folder, ttl)
        self.refusing = False

    def describe(self) -> str:
        return "the test's CA"

    async def issue(self, identity: SpiffeId, csr_pem: bytes) -> Issued:
        if self.refusing:
            raise IdentityError("the test's CA is down")
        return await self.ca.issue(identity, csr_pem)


async def wait_for(predicate: object, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {seconds}s")
        await asyncio.sleep(0.05)


async def test_the_certificate_names_the_app_and_is_renewed_with_a_new_key(tmp_path: Path) -> None:
    identity = WorkloadIdentity(APP, LocalCa(tmp_path / "ca", datetime.timedelta(seconds=2)))
    first = await identity.obtain()
    assert str(identity.identity) == "spiffe://public/ns/default/orders"
    assert certs.load_certs(first.bundle)[0].subject == certs.load_certs(first.chain)[0].issuer
    identity.start()
    try:
        await wait_for(lambda: identity.generation >= 3, 10, "two renewals")
    finally:
        await identity.stop()
    assert identity.material.key != first.key and identity.material.leaf.serial != first.leaf.serial
    assert identity.material.leaf.not_after > first.leaf.not_after


async def test_an_expired_certificate_is_reported_and_recovered_from(tmp_path: Path) -> None:
    source = SwitchableCa(tmp_path / "ca", datetime.timedelta(seconds=2))
    identity = WorkloadIdentity(APP, source)
    await identity.obtain()
    told: list[str | None] = []
    identity.on_trouble(told.append)
    source.refusing = True
    identity.start()
    try:
        await wait_for(lambda: told, 10, "the expiry to be reported")
        assert told[0] is not None and "expired" in told[0] and "the test's CA is down" in told[0]
        source.refusing = False
        await wait_for(lambda: told[-1] is None, 40, "the renewal after the CA is back")
    finally:
        await identity.stop()
    assert identity.material.leaf.not_after > certs.now()


async def test_the_local_ca_is_refused_when_other_users_can_read_it(tmp_path: Path) -> None:
    folder = tmp_path / "ca"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    with pytest.raises(IdentityError, match="chmod 700"):
        LocalCa(folder, datetime.timedelta(hours=1)).root()


def test_sidecars_that_start_together_make_one_local_ca(tmp_path: Path) -> None:
    folder = tmp_path / "ca"
    roots: list[bytes] = []
    start = threading.Barrier(4)

    def make() -> None:
        start.wait()
        roots.append(LocalCa(folder, datetime.timedelta(hours=1)).root()[0])

    threads = [threading.Thread(target=make) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(roots) == 4 and len(set(roots)) == 1
    assert oct(folder.stat().st_mode & 0o777) == "0o700"
