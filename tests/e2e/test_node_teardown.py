"""``e2e/cluster.sh down`` leaves nothing of the cluster on the machine.

This test takes the cluster down, so it runs last in a session (the
``takes_cluster_down`` marker, see conftest.py). A cluster that should outlive
the session (one the session found running, or OTTAVA_E2E_KEEP=1) is started
again afterwards, fresh.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import uuid
from pathlib import Path

import pytest
from kubernetes import client

from . import cluster as cluster_mod
from .test_node import container, create_pod, http_probe, wait_ready

pytestmark = [pytest.mark.e2e, pytest.mark.takes_cluster_down, pytest.mark.usefixtures("ready_node")]

# What runs a node and its pods; none may be left.
NODE_EXECUTABLES = {
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "containerd",
    "containerd-shim-runc-v2",
    "kubelet",
    "kube-proxy",
    "pause",
    "podcheck",
}


def processes() -> dict[int, tuple[str, str]]:
    """pid -> (executable name, command line) of every process this test may see."""
    found: dict[int, tuple[str, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            exe = os.readlink(entry / "exe").removesuffix(" (deleted)")
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile, or a kernel thread
            continue
        found[int(entry.name)] = (exe.rsplit("/", 1)[-1], cmdline)
    return found


def node_processes(state: str) -> dict[int, tuple[str, str]]:
    """The cluster's processes: ours by their arguments (the state folder), and the pods' by their binary."""
    return {
        pid: (name, cmdline)
        for pid, (name, cmdline) in processes().items()
        if name in NODE_EXECUTABLES and (state in cmdline or name in {"pause", "podcheck"})
    }


def mount_points() -> list[str]:
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4]
        points.append(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), point))
    return points


def run(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def test_down_leaves_nothing_behind(cluster: cluster_mod.Cluster, kube: client.ApiClient) -> None:
    state = str(cluster_mod.STATE_DIR)
    # A pod that runs, with its network namespace, mounts and cgroups, and a
    # Service, so that kube-proxy has rules for more than `kubernetes`.
    namespace = f"e2e-teardown-{uuid.uuid4().hex[:6]}"
    core = client.CoreV1Api(kube)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    cluster_mod.poll(
        lambda: core.read_namespaced_service_account("default", namespace),
        timeout=60,
        what="the default ServiceAccount",
    )
    create_pod(
        kube,
        namespace,
        "running",
        [container("app", cluster_mod.PODCHECK_IMAGE, readiness_probe=http_probe("/healthz", 8080))],
        labels={"run": "running"},
    )
    core.create_namespaced_service(
        namespace,
        client.V1Service(
            metadata=client.V1ObjectMeta(name="running"),
            spec=client.V1ServiceSpec(
                selector={"run": "running"}, ports=[client.V1ServicePort(port=80, target_port=8080)]
            ),
        ),
    )
    wait_ready(kube, namespace, "running")
    # What is there before `down`, so the checks below are known to look at the right things.
    assert {name for name, _ in node_processes(state).values()} >= {"kubelet", "containerd", "podcheck", "pause"}
    assert any(point.startswith(state + "/") for point in mount_points())
    assert Path("/sys/fs/cgroup/pids/kubepods").is_dir()
    assert "KUBE-SERVICES" in run("iptables-save")
    # containerd's shims listen at /run/containerd/s/<sha256 of "ADDRESS/NAMESPACE/SANDBOX-ID">.
    tasks = cluster_mod.STATE_DIR / "node/containerd/state/io.containerd.runtime.v2.task/k8s.io"
    address = cluster_mod.STATE_DIR / "node/containerd.sock"
    shim_sockets = {
        Path("/run/containerd/s") / hashlib.sha256(f"{address}/k8s.io/{task.name}".encode()).hexdigest()
        for task in tasks.iterdir()
    }
    assert any(socket.exists() for socket in shim_sockets)

    cluster_mod.down(cluster_mod.stderr_echo)

    assert node_processes(state) == {}
    assert [p for p in mount_points() if p == state or p.startswith(state + "/")] == []
    assert sorted(str(d) for d in Path("/sys/fs/cgroup").glob("*/kubepods")) == []
    links = run("ip", "-o", "link", "show")
    assert f": {cluster_mod.NODE_BRIDGE}:" not in links
    assert f"master {cluster_mod.NODE_BRIDGE}" not in links
    assert [ns for ns in run("ip", "netns", "list").split() if ns.startswith("cni-")] == []
    for save in ("iptables-save", "ip6tables-save"):
        assert "KUBE-" not in run(save), f"{save} still shows kube-proxy's or the kubelet's chains"
    assert "ottava-e2e" not in run("iptables-save"), "the rule keeping pods on the node is still there"
    # The host paths that containerd and the kubelet use whatever their configuration says.
    assert not [socket for socket in shim_sockets if socket.exists()]
    # Our containerd puts nothing else in /run/containerd (runc's state is in the
    # state folder): any shim socket left there is another containerd's.
    if not [cmd for name, cmd in processes().values() if name == "containerd"]:
        assert not list(Path("/run/containerd/s").glob("*"))
    assert not Path("/var/lib/kubelet").exists()
    assert not [p for p in Path("/var/log/containers").glob("*") if state in os.path.realpath(p)]
    assert not [
        p for p in Path("/var/lib/cni/results").glob("*") if p.name.startswith(("ottava-node-", "cni-loopback-"))
    ]
    assert not cluster_mod.STATE_DIR.exists()

    if os.environ.get("OTTAVA_E2E_KEEP") or not cluster.started_here:
        # The cluster was to outlive this session: start a fresh one.
        cluster_mod.ensure_up(cluster_mod.stderr_echo)
