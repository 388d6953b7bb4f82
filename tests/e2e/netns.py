"""Test hosts in network namespaces: somewhere a "pod" can live without a kubelet.

A webhook (or, later, a sidecar) behind a Service must be reached at an
EndpointSlice address, and the apiserver rejects loopback addresses there. The
rule of this machine is that test traffic goes only to loopback or to hosts the
tests create themselves, never to the machine's own interface address. So each
test host is a fresh network namespace joined to the host by a veth pair, with
addresses from the benchmark range 198.18.0.0/15 (RFC 2544), which no real
network uses. Namespaces are named ``ottava-e2e-*`` so that ``e2e/cluster.sh
down`` can remove any that a crashed run left behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import subprocess
from collections.abc import Iterator, Sequence

NAME_PREFIX = "ottava-e2e-"


def _ip(*args: str, check: bool = True) -> None:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {proc.stderr.strip()}")


@dataclasses.dataclass(frozen=True)
class NetnsHost:
    """A network namespace reachable from the host at ``address``."""

    name: str
    address: str
    host_address: str
    host_interface: str

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` wrapped to run inside this host (``ip netns exec`` execs it, keeping the pid)."""
        return ["ip", "netns", "exec", self.name, *argv]


def _claim() -> tuple[int, str]:
    """Create a free namespace ``ottava-e2e-N``; its index N also names its veth pair and subnet.

    ``ip netns add`` fails when the name exists, which makes it an atomic claim:
    two test runs at once (or a leftover of a crashed one) never share a host.
    """
    for index in range(1, 251):
        name = f"{NAME_PREFIX}{index}"
        proc = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True, check=False)
        if proc.returncode == 0:
            return index, name
    raise RuntimeError("no free test host: 250 ottava-e2e-* network namespaces exist (make -C e2e down removes them)")


@contextlib.contextmanager
def netns_host() -> Iterator[NetnsHost]:
    """Create a test host for the duration of the ``with`` block, then remove every trace of it."""
    if os.geteuid() != 0:
        raise RuntimeError("network-namespace test hosts need root (ip netns add)")
    index, name = _claim()
    host_if, ns_if = f"oe2e{index}h", f"oe2e{index}n"
    host = NetnsHost(name, f"198.18.{index}.2", f"198.18.{index}.1", host_if)
    try:
        _ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if, "netns", name)
        _ip("addr", "add", f"{host.host_address}/24", "dev", host_if)
        _ip("link", "set", host_if, "up")
        _ip("-n", name, "link", "set", "lo", "up")
        _ip("-n", name, "addr", "add", f"{host.address}/24", "dev", ns_if)
        _ip("-n", name, "link", "set", ns_if, "up")
        yield host
    finally:
        # Deleting the namespace destroys its end of the veth pair, and with it
        # the host end (processes inside must have been stopped first).
        _ip("netns", "delete", name, check=False)
