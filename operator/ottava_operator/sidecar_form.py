"""Which form the injected sidecar takes: native (an init container with
`restartPolicy: Always`) where the cluster supports it, a regular container elsewhere.

Native sidecars are on by default from Kubernetes 1.29 (beta; GA in 1.33). The operator
reads the apiserver's version once at start (`GET /version`); the chart's
`sidecar.nativeSidecar` (`--native-sidecar`) can force either form, e.g. for a cluster
whose feature gates differ from the default. The kubelets matter too: Kubernetes allows
them to be a few minor versions older than the apiserver, and a kubelet before 1.29
would run a native sidecar as a plain init container that never finishes, so a cluster
mid-upgrade with old nodes should say `false` until its nodes are upgraded.
"""

import logging
import re

from kubernetes_asyncio import client

from ottava_operator.settings import NATIVE_SIDECAR_MODES

log = logging.getLogger(__name__)

NATIVE_SINCE = (1, 29)


def parse_version(major: str, minor: str) -> tuple[int, int]:
    """`/version`'s major and minor as numbers; providers add suffixes (GKE's minor "29+")."""
    leading_major, leading_minor = re.match(r"\d+", major), re.match(r"\d+", minor)
    if leading_major is None or leading_minor is None:
        raise ValueError(f"not a Kubernetes version: major {major!r}, minor {minor!r}")
    return int(leading_major.group()), int(leading_minor.group())


def native(mode: str, version: tuple[int, int] | None) -> bool:
    if mode not in NATIVE_SIDECAR_MODES:
        raise ValueError(f"the sidecar form must be one of {', '.join(NATIVE_SIDECAR_MODES)}, not {mode!r}")
    if mode != "auto":
        return mode == "true"
    return version is not None and version >= NATIVE_SINCE


async def decide(mode: str, api: client.ApiClient) -> bool:
    """The form for this operator's lifetime; the apiserver is asked only in `auto` mode."""
    version: tuple[int, int] | None = None
    if mode == "auto":
        info = await client.VersionApi(api).get_code()
        version = parse_version(info.major, info.minor)
    chosen = native(mode, version)
    log.info(
        "sidecar form decided",
        extra={
            "nativeSidecar": chosen,
            "mode": mode,
            "kubernetes": None if version is None else f"{version[0]}.{version[1]}",
        },
    )
    return chosen
