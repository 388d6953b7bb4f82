"""Another app's sidecar, as seen by a sidecar's internal port: a gRPC channel with a workload certificate.

Standalone sidecars take their certificates from the local CA (`OTTAVA_CA_DIR`, which the
tests set); a test that plays another sidecar, honest or not, takes one from the same CA
for the app id it claims to be, exactly as that app's sidecar would.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import grpc
from ottava_sidecar.identity import certs
from ottava_sidecar.identity.local_ca import LocalCa
from ottava_sidecar.identity.spiffe import SpiffeId, server_name


async def credentials(app_id: str, ca_dir: Path | None = None) -> grpc.ChannelCredentials:
    """A real certificate for `app_id` (namespace default, trust domain public) from the local CA."""
    ca = LocalCa(ca_dir, datetime.timedelta(minutes=5))
    key = certs.new_key()
    identity = SpiffeId("public", "default", app_id)
    issued = await ca.issue(identity, certs.new_request(key, identity))
    return grpc.ssl_channel_credentials(
        root_certificates=issued.bundle, private_key=certs.key_pem(key), certificate_chain=issued.chain
    )


async def channel(address: str, target_app_id: str, caller_app_id: str, ca_dir: Path | None = None) -> grpc.aio.Channel:
    """An mTLS channel to the sidecar of `target_app_id` at `address`, as `caller_app_id`'s sidecar."""
    options = [("grpc.ssl_target_name_override", server_name(target_app_id, "default"))]
    return grpc.aio.secure_channel(address, await credentials(caller_app_id, ca_dir), options=options)
