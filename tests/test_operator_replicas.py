"""Running the operator as several replicas in a pod: leader election, in-cluster login,
and the sidecar's form. The behaviour against a real apiserver is in
tests/e2e/test_leader_election.py; these are the rules it rests on."""

import datetime
from pathlib import Path
from typing import Any

import ottava_cli
import pytest
from kopf._cogs.structs import references
from ottava_operator import connection, peering, sidecar_form
from ottava_sidecar.kube import environment as kube_environment

NOW = datetime.datetime(2026, 5, 1, 12, 0, 0, tzinfo=datetime.UTC)


def record(priority: int, seen_ago: float = 1.0, lifetime: int = 15) -> dict[str, Any]:
    # The shape kopf writes under each peer's identity in the peering object's status.
    lastseen = NOW - datetime.timedelta(seconds=seen_ago)
    return {"priority": priority, "lifetime": lifetime, "lastseen": lastseen.isoformat()}


def test_the_live_replica_with_the_highest_priority_leads_and_only_it() -> None:
    status = {"a": record(-100), "b": record(-200)}
    assert peering.leads(status, "a", NOW)
    assert not peering.leads(status, "b", NOW)
    assert peering.leader(status, NOW) == "a"


def test_a_leader_whose_record_expired_is_taken_over_from() -> None:
    status = {"a": record(-100, seen_ago=16), "b": record(-200)}
    assert peering.leads(status, "b", NOW)
    # ...and a withdrawn record (lifetime 0, what a graceful stop writes) counts as gone at once.
    assert peering.leads({"a": record(-100, seen_ago=0, lifetime=0), "b": record(-200)}, "b", NOW)


def test_equal_priorities_pause_everyone_as_kopf_does() -> None:
    status = {"a": record(-100), "b": record(-100)}
    assert peering.leader(status, NOW) is None


def test_a_replica_not_yet_registered_does_not_lead() -> None:
    assert not peering.leads({"a": record(-100)}, "b", NOW)
    assert not peering.leads({}, "b", NOW)


def test_older_replicas_outrank_younger_ones_and_priorities_differ() -> None:
    started = 1_780_000_000.0
    assert peering.priority(started) > peering.priority(started + 0.002)
    # Same millisecond: still (almost surely) distinct, never equal by construction of the clock.
    same = {peering.priority(started) for _ in range(50)}
    assert len(same) > 40
    assert abs(peering.priority(started)) < 2**53  # exact as a JSON number


def test_the_peering_crd_is_the_one_kopf_looks_for() -> None:
    crd = peering.crd()
    version = crd["spec"]["versions"][0]["name"]
    selector = references.CLUSTER_PEERINGS_K
    assert (crd["spec"]["group"], version) == (selector.group, selector.version) == (peering.GROUP, peering.VERSION)
    assert crd["spec"]["names"]["plural"] == selector.any_name == peering.PLURAL
    assert crd["spec"]["scope"] == "Cluster"
    # kopf writes its records into .status with a plain patch: no status subresource.
    assert "subresources" not in crd["spec"]["versions"][0]


def test_service_account_login_dials_the_service_ip_not_a_dns_name(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("tok\n")
    (tmp_path / "ca.crt").write_text("ca")
    (tmp_path / "namespace").write_text("ottava-system")
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    login = connection.service_account_login(env, tmp_path)
    assert login is not None
    assert (login.server, login.token, login.ca_path, login.default_namespace) == (
        "https://10.96.0.1:443",
        "tok",
        str(tmp_path / "ca.crt"),
        "ottava-system",
    )
    ipv6 = connection.service_account_login({"KUBERNETES_SERVICE_HOST": "fd00::1"}, tmp_path)
    assert ipv6 is not None and ipv6.server == "https://[fd00::1]:443"
    assert connection.service_account_login({}, tmp_path) is None


def test_a_kubeconfig_wins_over_the_pod_service_account() -> None:
    assert kube_environment.in_cluster({"KUBERNETES_SERVICE_HOST": "10.96.0.1"})
    assert not kube_environment.in_cluster({"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBECONFIG": "/k"})
    assert not kube_environment.in_cluster({})


@pytest.mark.parametrize(
    ("mode", "version", "native"),
    [
        ("auto", (1, 29), True),
        ("auto", (1, 36), True),
        ("auto", (1, 28), False),
        ("auto", (2, 0), True),
        ("true", (1, 27), True),
        ("false", (1, 36), False),
    ],
)
def test_the_sidecar_form_follows_the_cluster_version_unless_forced(
    mode: str, version: tuple[int, int], native: bool
) -> None:
    assert sidecar_form.native(mode, version) is native


def test_versions_with_provider_suffixes_parse() -> None:
    assert sidecar_form.parse_version("1", "29+") == (1, 29)
    assert sidecar_form.parse_version("1", "36") == (1, 36)
    with pytest.raises(ValueError, match="not a Kubernetes version"):
        sidecar_form.parse_version("", "x")
    with pytest.raises(ValueError, match="auto, true, false"):
        sidecar_form.native("sometimes", (1, 30))


def test_operator_flags_reach_the_settings() -> None:
    args = ottava_cli.build_parser().parse_args(
        ["operator", "--peering-name", "shop-ottava", "--peering-lifetime", "20", "--native-sidecar", "false"]
    )
    assert (args.peering_name, args.peering_lifetime, args.native_sidecar) == ("shop-ottava", 20, "false")
    with pytest.raises(SystemExit):
        ottava_cli.build_parser().parse_args(["operator", "--peering-lifetime", "5"])
