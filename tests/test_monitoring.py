"""The chart's monitoring: alerts that promtool accepts and fires, a dashboard on Ottava's real series.

`monitoring.prometheusRule.enabled` renders a PrometheusRule and `monitoring.grafanaDashboard.enabled`
a ConfigMap for Grafana's dashboard sidecar; both are off by default. The chart is rendered with the
helm that e2e/build.sh builds, the rules are checked and unit-tested by the promtool that
tools/promtool/build.sh builds from Prometheus's Go module, and every series the rules and the
dashboard query is looked up in what a running sidecar serves on its metrics port.
"""

import functools
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import SidecarFactory

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "ottava"
HELM_BUILD = ROOT / "e2e" / "build.sh"
PROMTOOL_BUILD = ROOT / "tools" / "promtool" / "build.sh"

# On a cold cache the first test also builds helm (with the Kubernetes binaries, 5 to 13 min
# measured on 2 cores, e2e/README.md) and promtool (5.5 to 6.5 min measured under load, see
# docs/observability.md); pytest-timeout counts that against it.
pytestmark = pytest.mark.timeout(1800)


def _build(script: Path, *args: str) -> str:
    """Run a build script; its progress (stderr) goes to the test's output, its stdout comes back."""
    proc = subprocess.run(
        [str(script), *args], capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False, timeout=1700
    )
    for line in proc.stderr.splitlines():
        print(f"[build] {line}", flush=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{script} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc.stdout


@functools.cache
def helm() -> Path:
    _build(HELM_BUILD)
    return Path(_build(HELM_BUILD, "--bin-dir").strip()) / "helm"


@functools.cache
def promtool() -> Path:
    return Path(_build(PROMTOOL_BUILD).strip().splitlines()[-1])


def render(*values: str) -> list[dict[str, Any]]:
    """The chart's objects as `helm template` renders them with `--set` values."""
    args = [str(helm()), "template", "ottava", str(CHART), "--namespace", "ottava-system"]
    args += [f"--set={value}" for value in values]
    out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=120).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def monitoring_objects(objects: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rules = [o for o in objects if o["kind"] == "PrometheusRule"]
    dashboards = [
        o
        for o in objects
        if o["kind"] == "ConfigMap" and o["metadata"].get("labels", {}).get("grafana_dashboard") == "1"
    ]
    return rules, dashboards


@pytest.fixture(scope="module")
def rendered() -> tuple[dict[str, Any], dict[str, Any]]:
    """The PrometheusRule and the dashboard's ConfigMap, with both values on."""
    rules, dashboards = monitoring_objects(
        render("monitoring.prometheusRule.enabled=true", "monitoring.grafanaDashboard.enabled=true")
    )
    assert len(rules) == 1 and len(dashboards) == 1
    return rules[0], dashboards[0]


@pytest.fixture(scope="module")
def rules_file(rendered: tuple[dict[str, Any], dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The PrometheusRule's groups as a Prometheus rules file (what the Prometheus Operator writes)."""
    path = tmp_path_factory.mktemp("rules") / "ottava-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rendered[0]["spec"]["groups"]}), encoding="utf-8")
    return path


def dashboard(rendered: tuple[dict[str, Any], dict[str, Any]]) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(rendered[1]["data"]["ottava.json"])
    return loaded


def dashboard_queries(board: dict[str, Any]) -> list[str]:
    return [target["expr"] for panel in board["panels"] for target in panel.get("targets", [])]


# What is left of a PromQL expression once strings, label matchers, ranges, grouping labels,
# functions, keywords, numbers and Grafana's variables are taken out: its metric names.
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_FUNCTION = re.compile(r"\b[a-z_]+\s*\(")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right"}
_NAME = re.compile(r"(?<![\w$.])[a-zA-Z_:][a-zA-Z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    expr = _STRING.sub('""', expr)
    expr = _MATCHERS.sub(" ", expr)
    expr = _RANGE.sub(" ", expr)
    expr = _GROUPING.sub(" ", expr)
    expr = _FUNCTION.sub("(", expr)
    expr = re.sub(r"\$\w+", " ", expr)
    expr = re.sub(r"\b\d+(?:\.\d+)?(?:e[+-]?\d+)?\b", " ", expr)
    return {name for name in _NAME.findall(expr) if name not in _KEYWORDS}


def test_metric_names_reads_selectors_and_nothing_else() -> None:
    expr = (
        'sum by (api, le) (rate(ottava_api_request_duration_seconds_bucket{pod=~"$pod", status!~"OK|2.."}'
        "[$__rate_interval])) / on (pod) group_left max without (le) (process_resident_memory_bytes offset 5m)"
        " > 0.5 and time() - ottava_identity_certificate_expiry_timestamp_seconds < 3600"
    )
    assert metric_names(expr) == {
        "ottava_api_request_duration_seconds_bucket",
        "process_resident_memory_bytes",
        "ottava_identity_certificate_expiry_timestamp_seconds",
    }


@pytest.fixture(scope="module")
def exported_names(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """Every series name a running sidecar exports, suffixes included (`_total`, `_bucket`, ...)."""
    factory = SidecarFactory(tmp_path_factory.mktemp("monitoring-sidecar"))
    try:
        sidecar = factory.start("--app-id", "monitoring")
        text = httpx.get(f"{sidecar.metrics_url}/metrics", timeout=10).text
    finally:
        factory.stop_all()
    suffixes = {
        "counter": ["_total", "_created"],
        "histogram": ["_bucket", "_count", "_sum", "_created"],
        "summary": ["_count", "_sum", "_created"],
        "gauge": [""],
    }
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        # A labelled metric with no child yet has no samples, only its HELP and TYPE lines.
        names.update(family.name + suffix for suffix in suffixes.get(family.type, [""]))
        names.update(sample.name for sample in family.samples)
    return names


def test_neither_object_renders_by_default_or_when_switched_off() -> None:
    assert monitoring_objects(render()) == ([], [])
    switched_off = render("monitoring.prometheusRule.enabled=false", "monitoring.grafanaDashboard.enabled=false")
    assert monitoring_objects(switched_off) == ([], [])


def test_each_value_renders_its_own_object() -> None:
    rules, dashboards = monitoring_objects(render("monitoring.prometheusRule.enabled=true"))
    assert len(rules) == 1 and dashboards == []
    assert rules[0]["apiVersion"] == "monitoring.coreos.com/v1"
    rules, dashboards = monitoring_objects(render("monitoring.grafanaDashboard.enabled=true"))
    assert rules == [] and len(dashboards) == 1


def test_promtool_accepts_the_rules(rules_file: Path) -> None:
    proc = subprocess.run(
        [str(promtool()), "check", "rules", "--lint=all", "--lint-fatal", str(rules_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 7 rules found" in proc.stdout, proc.stdout


def test_the_rules_query_only_series_ottava_exports(
    rendered: tuple[dict[str, Any], dict[str, Any]], exported_names: set[str]
) -> None:
    rules = [rule for group in rendered[0]["spec"]["groups"] for rule in group["rules"]]
    used = set().union(*(metric_names(rule["expr"]) for rule in rules))
    assert {"ottava_component_initialized", "ottava_event_loop_lag_seconds_bucket"} <= used
    assert used - exported_names == set()


# promtool's unit tests: series written here, and the alerts expected from them at given times.
UNIT_TESTS = """
rule_files: [{rules}]
evaluation_interval: 1m
tests:
  # A component that stays down alerts once it has been down for 5 minutes; a ready one never.
  - interval: 1m
    input_series:
      - series: 'ottava_component_initialized{{namespace="shop", pod="orders-7d9", name="statestore", type="state.redis"}}'
        values: '0x15'
      - series: 'ottava_component_initialized{{namespace="shop", pod="orders-7d9", name="pubsub", type="pubsub.redis"}}'
        values: '1x15'
    alert_rule_test:
      - eval_time: 4m
        alertname: OttavaComponentNotReady
        exp_alerts: []
      - eval_time: 6m
        alertname: OttavaComponentNotReady
        exp_alerts:
          - exp_labels: {{severity: critical, namespace: shop, pod: orders-7d9, name: statestore, type: state.redis}}
            exp_annotations:
              summary: Component statestore (state.redis) is not ready
              description: >-
                The sidecar shop/orders-7d9 has not initialised its component statestore for 5 minutes:
                calls to it fail. /actuator/info on the sidecar shows its last error.
  # 10% of the state calls fail with INTERNAL, and probes (api="health") do not dilute it.
  - interval: 1m
    input_series:
      - series: 'ottava_api_requests_total{{namespace="shop", pod="cart-1", protocol="grpc", api="state", method="GetState", status="OK"}}'
        values: '0+540x20'
      - series: 'ottava_api_requests_total{{namespace="shop", pod="cart-1", protocol="grpc", api="state", method="SaveState", status="INTERNAL"}}'
        values: '0+60x20'
      - series: 'ottava_api_requests_total{{namespace="shop", pod="cart-1", protocol="http", api="health", method="Healthz", status="204"}}'
        values: '0+100000x20'
      - series: 'ottava_api_requests_total{{namespace="shop", pod="cart-1", protocol="grpc", api="lock", method="TryLock", status="ABORTED"}}'
        values: '0+60x20'
    alert_rule_test:
      - eval_time: 15m
        alertname: OttavaApiErrorRateHigh
        exp_alerts:
          - exp_labels: {{severity: warning, namespace: shop, pod: cart-1, api: state}}
            exp_annotations:
              summary: 10% of state calls fail
              description: >-
                More than 5% of the state API calls served by the sidecar shop/cart-1 failed on the server
                side (HTTP 5xx, INTERNAL, UNAVAILABLE, ...) for 10 minutes.
  # A blocked loop: every timer of the last minutes ran between 0.5 and 1 s late.
  - interval: 1m
    input_series:
      - series: 'ottava_event_loop_lag_seconds_bucket{{namespace="shop", pod="cart-1", le="0.25"}}'
        values: '0x30'
      - series: 'ottava_event_loop_lag_seconds_bucket{{namespace="shop", pod="cart-1", le="0.5"}}'
        values: '0x30'
      - series: 'ottava_event_loop_lag_seconds_bucket{{namespace="shop", pod="cart-1", le="1"}}'
        values: '0+120x30'
      - series: 'ottava_event_loop_lag_seconds_bucket{{namespace="shop", pod="cart-1", le="+Inf"}}'
        values: '0+120x30'
    alert_rule_test:
      - eval_time: 5m
        alertname: OttavaEventLoopLagHigh
        exp_alerts: []
      - eval_time: 20m
        alertname: OttavaEventLoopLagHigh
        exp_alerts:
          - exp_labels: {{severity: warning, namespace: shop, pod: cart-1}}
            exp_annotations:
              summary: 'Sidecar event loop blocked: p99 lag 995ms'
              description: >-
                The event loop of the sidecar shop/cart-1 ran its timers more than 0.5s late (p99 over
                5 minutes) for 10 minutes: every call and probe waits that long. Look for CPU limits and
                a slow component.
  # Events that the app dropped alert at once, per topic; delivered ones do not.
  - interval: 1m
    input_series:
      - series: 'ottava_pubsub_deliveries_total{{namespace="shop", pod="billing-2", instance="10.0.0.7:9090", pubsub="orders-bus", topic="orders", outcome="DROP"}}'
        values: '0 0 3 3 3'
      - series: 'ottava_pubsub_deliveries_total{{namespace="shop", pod="billing-2", instance="10.0.0.7:9090", pubsub="orders-bus", topic="refunds", outcome="SUCCESS"}}'
        values: '0+10x4'
    alert_rule_test:
      - eval_time: 1m
        alertname: OttavaPubsubEventsDropped
        exp_alerts: []
      - eval_time: 4m
        alertname: OttavaPubsubEventsDropped
        exp_alerts:
          - exp_labels: {{severity: warning, namespace: shop, pod: billing-2, pubsub: orders-bus, topic: orders, outcome: DROP}}
            exp_annotations:
              summary: Events on orders-bus/orders were dropped
              description: >-
                The sidecar shop/billing-2 dropped 3 events of topic orders in 10 minutes: its app answered
                DROP, no route matched, or the last delivery that maxDeliveryAttempts allows failed. They went
                to the subscription's dead-letter topic if it names one, and are lost otherwise (the sidecar
                logs each).
"""


def test_the_alerts_fire_from_series_in_promtools_unit_tests(rules_file: Path) -> None:
    tests = rules_file.parent / "ottava-rules.test.yaml"
    tests.write_text(UNIT_TESTS.format(rules=json.dumps(rules_file.name)), encoding="utf-8")
    proc = subprocess.run(
        [str(promtool()), "test", "rules", str(tests)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=rules_file.parent,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout, proc.stdout


def test_the_dashboard_has_panels_for_what_a_platform_team_watches(
    rendered: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    board = dashboard(rendered)
    assert board["uid"] == "ottava-sidecars"
    panels = [panel for panel in board["panels"] if panel["type"] != "row"]
    assert panels and all(panel.get("targets") for panel in panels)
    used = set().union(*(metric_names(expr) for expr in dashboard_queries(board)))
    for watched in (
        "ottava_api_requests_total",  # calls/s per API
        "ottava_api_request_duration_seconds_bucket",  # latency per API
        "ottava_component_initialized",  # component status
        "ottava_event_loop_lag_seconds_bucket",  # event-loop lag
        "ottava_pubsub_deliveries_total",  # pub/sub flow
        "process_resident_memory_bytes",  # memory
    ):
        assert watched in used


def test_the_dashboard_queries_only_series_ottava_exports(
    rendered: tuple[dict[str, Any], dict[str, Any]], exported_names: set[str]
) -> None:
    used = set().union(*(metric_names(expr) for expr in dashboard_queries(dashboard(rendered))))
    assert used - exported_names == set()


def test_promtool_parses_every_dashboard_query(rendered: tuple[dict[str, Any], dict[str, Any]], tmp_path: Path) -> None:
    # Grafana fills in its variables before it queries; promtool checks each query as a recording rule.
    queries = [
        expr.replace("$__rate_interval", "5m").replace("$namespace", ".*").replace("$pod", ".*")
        for expr in dashboard_queries(dashboard(rendered))
    ]
    rules = [{"record": f"ottava:dashboard_query_{i}", "expr": expr} for i, expr in enumerate(queries)]
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}), encoding="utf-8")
    proc = subprocess.run(
        [str(promtool()), "check", "rules", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
