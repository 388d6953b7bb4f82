"""`ottava run --resources-path`: manifests, scopes, initTimeout and ignoreErrors, as users write them."""

import json
import os
import subprocess
import textwrap
from pathlib import Path

import httpx
import pytest

from tests.conftest import OTTAVA, SidecarFactory

STATESTORE = """
apiVersion: ottava.io/v1alpha1
kind: Component
metadata: {name: orders}
spec:
  type: state.in-memory
  version: v1
"""


def run_and_fail(resources: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    folder = tmp_path / "resources"
    folder.mkdir()
    for name, text in resources.items():
        (folder / name).write_text(textwrap.dedent(text), encoding="utf-8")
    return subprocess.run(
        [OTTAVA, "run", "--resources-path", str(folder), "--grpc-port", "0", "--http-port", "0", "--metrics-port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def test_malformed_manifest_stops_startup_naming_file_document_and_field(tmp_path: Path) -> None:
    bad = STATESTORE + "---\n" + STATESTORE.replace("orders", "carts").replace("version: v1", "initTimeout: soon")
    result = run_and_fail({"stores.yaml": bad}, tmp_path)
    assert result.returncode != 0
    assert "stores.yaml, document 2" in result.stderr
    assert "spec.initTimeout" in result.stderr
    assert "not a duration such as" in result.stderr
    assert "carts" in result.stderr


def test_unknown_metadata_field_is_reported_with_the_accepted_ones(tmp_path: Path) -> None:
    result = run_and_fail(
        {"state.yaml": STATESTORE + "  metadata:\n  - {name: keyPrefx, value: name}\n"},
        tmp_path,
    )
    assert result.returncode != 0
    assert "spec.metadata.keyPrefx: unknown field for state.in-memory" in result.stderr
    assert "keyPrefix" in result.stderr


def test_unknown_component_type_is_reported(tmp_path: Path) -> None:
    result = run_and_fail({"state.yaml": STATESTORE.replace("state.in-memory", "state.nosuchdb")}, tmp_path)
    assert result.returncode != 0
    assert "spec.type" in result.stderr and "state.nosuchdb" in result.stderr


def test_dapr_manifests_load_unchanged(sidecars: SidecarFactory) -> None:
    dapr_manifest = STATESTORE.replace("ottava.io/v1alpha1", "dapr.io/v1alpha1")
    endpoint = "apiVersion: dapr.io/v1alpha1\nkind: HTTPEndpoint\nmetadata: {name: s}\nspec: {}\n"
    others = (
        "apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nmetadata: {name: r}\nspec: {}\n---\n"
        "apiVersion: v1\nkind: Secret\nmetadata: {name: k8s}\n"
    )
    sidecar = sidecars.start(resources={"state.yaml": dapr_manifest, "endpoint.yaml": endpoint, "others.yaml": others})
    assert sidecar.status == "UP"
    info = httpx.get(f"{sidecar.http_url}/actuator/info").json()
    assert [(c["name"], c["status"]) for c in info["components"]] == [("orders", "UP")]
    # Dapr's other kinds are skipped out loud, saying why; other groups' documents quietly.
    warnings = [line for line in sidecar.log().splitlines() if "level=warning" in line]
    assert any("skipping the HTTPEndpoint 's'" in w and "endpoint.yaml, document 1" in w for w in warnings)
    assert not any("skipping the Resiliency" in w for w in warnings)  # loaded (docs/resiliency.md), not skipped
    assert not any("Secret" in w for w in warnings)


@pytest.mark.parametrize(
    ("api_version", "kind", "expected"),
    [
        ("ottava.io/v1alpha1", "component", "unknown kind 'component' (did you mean 'Component'?)"),
        ("dapr.io/v1alpha1", "Componnent", "unknown kind 'Componnent' (did you mean 'Component'?)"),
        ("dapr.io/v1alpha1", "configuration", "unknown kind 'configuration' (did you mean 'Configuration'?)"),
        ("dapr.io/v2alpha1", "Subscriptions", "unknown kind 'Subscriptions' (did you mean 'Subscription'?)"),
        (
            "ottava.io/v1alpha1",
            "Widget",
            "unknown kind 'Widget'; kinds loaded: Component, Configuration, Subscription, TrafficRoute, Resiliency",
        ),
    ],
)
def test_unknown_kind_stops_startup_naming_file_document_and_kind(
    tmp_path: Path, api_version: str, kind: str, expected: str
) -> None:
    wrong = STATESTORE.replace("ottava.io/v1alpha1", api_version).replace("kind: Component", f"kind: {kind}")
    result = run_and_fail({"stores.yaml": STATESTORE.replace("orders", "carts") + "---\n" + wrong}, tmp_path)
    assert result.returncode == 2, result.stderr
    assert "stores.yaml, document 2" in result.stderr
    assert f"({api_version} 'orders')" in result.stderr
    assert expected in result.stderr


def test_a_component_without_api_version_stops_startup(tmp_path: Path) -> None:
    result = run_and_fail({"state.yaml": STATESTORE.replace("apiVersion: ottava.io/v1alpha1\n", "")}, tmp_path)
    assert result.returncode == 2, result.stderr
    assert "state.yaml, document 1: a Component without apiVersion" in result.stderr


FAILING_SECRETS = """
apiVersion: ottava.io/v1alpha1
kind: Component
metadata: {{name: vault}}
spec:
  type: secretstores.local.file
  ignoreErrors: {ignore}
  metadata:
  - {{name: secretsFile, value: /nonexistent/secrets.json}}
"""


def test_component_that_fails_to_init_makes_the_sidecar_not_ready(sidecars: SidecarFactory) -> None:
    sidecar = sidecars.start(resources={"state.yaml": STATESTORE, "vault.yaml": FAILING_SECRETS.format(ignore="false")})
    assert sidecar.status == "DOWN"
    assert "vault" in sidecar.ready_line

    readiness = httpx.get(f"{sidecar.http_url}/actuator/health/readiness")
    assert readiness.status_code == 503
    body = readiness.json()
    assert body["status"] == "DOWN"
    assert body["components"]["vault"]["status"] == "DOWN"
    assert "/nonexistent/secrets.json" in body["components"]["vault"]["details"]["reason"]
    assert body["components"]["orders"]["status"] == "UP"
    assert httpx.get(f"{sidecar.http_url}/actuator/health/liveness").status_code == 200
    assert httpx.get(f"{sidecar.http_url}/v1.0/healthz").status_code != 204


def test_ignore_errors_keeps_the_sidecar_ready(sidecars: SidecarFactory) -> None:
    sidecar = sidecars.start(resources={"state.yaml": STATESTORE, "vault.yaml": FAILING_SECRETS.format(ignore="true")})
    assert sidecar.status == "UP"
    readiness = httpx.get(f"{sidecar.http_url}/actuator/health/readiness")
    assert readiness.status_code == 200
    assert readiness.json()["components"]["vault"]["status"] == "DOWN"
    assert httpx.get(f"{sidecar.http_url}/v1.0/healthz").status_code == 204


def test_scopes_exclude_other_apps_and_info_says_so(sidecars: SidecarFactory) -> None:
    scoped = STATESTORE + "scopes: [checkout]\n"
    sidecar = sidecars.start("--app-id", "cart", resources={"state.yaml": scoped})
    info = httpx.get(f"{sidecar.http_url}/actuator/info").json()
    (orders,) = info["components"]
    assert orders["status"] == "SKIPPED"
    assert "cart" in orders["reason"]


def test_secret_key_ref_resolved_from_the_named_secret_store(sidecars: SidecarFactory, tmp_path: Path) -> None:
    secrets = tmp_path / "secrets.json"
    secrets.write_text(json.dumps({"prefix": "team-a"}), encoding="utf-8")
    vault = FAILING_SECRETS.format(ignore="false").replace("/nonexistent/secrets.json", str(secrets))
    store = (
        STATESTORE + "  metadata:\n  - name: keyPrefix\n    secretKeyRef: {name: prefix}\nauth: {secretStore: vault}\n"
    )
    sidecar = sidecars.start(resources={"vault.yaml": vault, "state.yaml": store})
    assert sidecar.status == "UP", sidecar.log()


def test_init_timeout_marks_a_hanging_component_down(sidecars: SidecarFactory, tmp_path: Path) -> None:
    # A FIFO with no writer blocks whoever opens it for reading: a real hang, not a mock.
    fifo = tmp_path / "secrets.fifo"
    os.mkfifo(fifo)
    vault = FAILING_SECRETS.format(ignore="false").replace("/nonexistent/secrets.json", str(fifo))
    vault = vault.replace("  ignoreErrors: false", "  ignoreErrors: false\n  initTimeout: 500ms")
    sidecar = sidecars.start(resources={"vault.yaml": vault})
    try:
        assert sidecar.status == "DOWN"
        body = httpx.get(f"{sidecar.http_url}/actuator/health/readiness").json()
        assert body["components"]["vault"]["details"]["reason"] == "init did not finish within initTimeout 500ms"
    finally:
        # Let the stuck read finish so the sidecar can exit.
        with open(fifo, "w", encoding="utf-8"):
            pass
    assert sidecar.stop() == 0


SUBSCRIPTION = """\
apiVersion: dapr.io/v2alpha1
kind: Subscription
metadata: {name: orders}
spec:
  pubsubname: pubsub
  topic: orders
"""


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("  routes: {default: /orders}\n", None),
        ("", "spec: Value error, no route: set routes.default or routes.rules"),
        (
            "  routes:\n    rules: [{match: 'size(event.type) > 1', path: /big}]\n",
            "Subscription 'orders': spec.routes.rules: ",
        ),
        ("  route: /a\n  routes: {default: /b}\n", "both route and routes.default are set"),
        ("  routes: {default: /o}\n  bulkSubscribe: {enabled: true, maxMessagesCount: 0}\n", "maxMessagesCount"),
    ],
)
def test_a_subscription_that_cannot_be_delivered_stops_startup(tmp_path: Path, spec: str, expected: str | None) -> None:
    if expected is None:  # the valid one, for contrast: the run goes on (stopped here by a bad Component)
        result = run_and_fail(
            {"sub.yaml": SUBSCRIPTION + spec, "bad.yaml": "kind: Component\nmetadata: {}\n"}, tmp_path
        )
        assert "sub.yaml" not in result.stderr, result.stderr
        return
    result = run_and_fail({"sub.yaml": SUBSCRIPTION + spec}, tmp_path)
    assert result.returncode == 2, result.stderr
    assert "invalid manifest" in result.stderr and expected in result.stderr
