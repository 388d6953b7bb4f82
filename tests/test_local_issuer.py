"""The local CA asked from a child process, as `ottava run` does (identity/local_issuer.py).

The child is the real `python -m ottava_sidecar.identity.local_ca`, with a CA folder of
the test's own.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path

import pytest
from ottava_sidecar.identity import certs
from ottava_sidecar.identity.local_ca import LocalCa
from ottava_sidecar.identity.local_issuer import LocalIssuer
from ottava_sidecar.identity.spiffe import SpiffeId
from ottava_sidecar.identity.workload import IdentityError, WorkloadIdentity

APP = SpiffeId("public", "default", "orders")


async def test_the_child_makes_a_key_and_a_certificate_of_the_local_ca(tmp_path: Path) -> None:
    issuer = LocalIssuer(tmp_path / "ca", datetime.timedelta(hours=1))
    issuer.prepare()  # as `ottava run` does, before the sidecar asks
    identity = WorkloadIdentity(APP, issuer)
    material = await identity.obtain()
    assert identity.identity == APP
    root_pem, _ = LocalCa(tmp_path / "ca", datetime.timedelta(hours=1)).root()
    assert material.bundle == root_pem
    leaf = certs.load_certs(material.chain)[0]
    assert leaf.issuer == certs.load_certs(root_pem)[0].subject
    assert certs.load_key(material.key).public_key() == leaf.public_key()
    assert material.leaf.not_after - material.leaf.not_before <= datetime.timedelta(hours=1, minutes=2)
    again = await identity.obtain()  # a renewal: a new child, a new key
    assert again.key != material.key and again.leaf.serial != material.leaf.serial


async def test_a_ca_folder_others_can_read_is_refused_with_the_reason(tmp_path: Path) -> None:
    folder = tmp_path / "ca"
    folder.mkdir()
    os.chmod(folder, 0o755)
    identity = WorkloadIdentity(APP, LocalIssuer(folder, datetime.timedelta(hours=1)))
    with pytest.raises(IdentityError, match=r"readable by other users \(mode 755\); run chmod 700"):
        await identity.obtain()
