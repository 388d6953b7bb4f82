"""The operator's defaults are written once, in `ottava_operator.settings`.

`ottava operator` with no flags runs on exactly those defaults, and the Helm chart's
values.yaml (with the object names its helpers derive from a release named `ottava`)
passes the same values: a user who installs the chart gets what the docs of the flags
say, and changing a default in one place without the other fails here.
"""

import datetime
import re
from pathlib import Path
from typing import Any

import ottava_cli
import pytest
import yaml
from ottava_operator import cli as operator_cli
from ottava_operator.settings import OperatorSettings
from ottava_sidecar import contract
from ottava_sidecar.resources.models import parse_duration

CHART = Path(__file__).resolve().parent.parent / "charts" / "ottava"
VALUES: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
CHART_META: dict[str, Any] = yaml.safe_load((CHART / "Chart.yaml").read_text(encoding="utf-8"))
DEPLOYMENT = (CHART / "templates" / "deployment.yaml").read_text(encoding="utf-8")
HELPERS = (CHART / "templates" / "_helpers.tpl").read_text(encoding="utf-8")
DEFAULTS = OperatorSettings()

# The flags the chart's Deployment passes from values.yaml: flag, value path, the model's default.
FROM_VALUES = [
    ("--webhook-port", "webhook.port", DEFAULTS.webhook_port),
    ("--peering-lifetime", "operator.leaderElection.lifetimeSeconds", DEFAULTS.peering_lifetime),
    ("--native-sidecar", "sidecar.nativeSidecar", DEFAULTS.native_sidecar),
    ("--sidecar-cpu-request", "sidecar.resources.requests.cpu", DEFAULTS.injector.cpu_request),
    ("--sidecar-memory-request", "sidecar.resources.requests.memory", DEFAULTS.injector.memory_request),
    ("--sidecar-cpu-limit", "sidecar.resources.limits.cpu", DEFAULTS.injector.cpu_limit),
    ("--sidecar-memory-limit", "sidecar.resources.limits.memory", DEFAULTS.injector.memory_limit),
    ("--identity", "identity.enabled", DEFAULTS.identity_enabled),
    ("--identity-port", "identity.port", DEFAULTS.identity_port),
    ("--identity-ca-secret", "identity.ca.existingSecret", DEFAULTS.identity_ca_secret),
]

# Durations: values.yaml writes them as Go durations ("24h"), the model as timedeltas.
DURATIONS_FROM_VALUES = [
    ("--workload-cert-ttl", "identity.workloadCertTTL", DEFAULTS.workload_cert_ttl),
    ("--root-cert-ttl", "identity.rootCertTTL", DEFAULTS.root_cert_ttl),
]

# The flags it passes from a named template of _helpers.tpl: flag, template, the model's default.
FROM_HELPERS = [
    ("--service-name", "ottava.webhookService", DEFAULTS.service_name),
    ("--cert-secret", "ottava.certSecret", DEFAULTS.cert_secret),
    ("--mutating-webhook", "ottava.mutatingWebhook", DEFAULTS.mutating_webhook),
    ("--validating-webhook", "ottava.validatingWebhook", DEFAULTS.validating_webhook),
    ("--peering-name", "ottava.fullname", DEFAULTS.peering_name),
    ("--identity-secret", "ottava.identitySecret", DEFAULTS.identity_secret),
]


def value(path: str) -> Any:
    node: Any = VALUES
    for key in path.split("."):
        node = node.get(key) if isinstance(node, dict) else None
    return node


def helper_for_release(name: str, release: str) -> str:
    """What a name template of _helpers.tpl gives for a release named `release` (which contains "ottava")."""
    if name == "ottava.fullname":
        return release
    found = re.search(
        r'define "' + re.escape(name) + r'" -\}\}\{\{ include "ottava.fullname" \. \}\}([-a-z]*)\{\{- end', HELPERS
    )
    assert found is not None, f"{name} is not <fullname><suffix> in _helpers.tpl"
    return release + found.group(1)


def test_ottava_operator_without_flags_runs_on_the_models_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POD_NAMESPACE", raising=False)
    args = ottava_cli.build_parser().parse_args(["operator"])
    assert operator_cli.settings_from(args) == OperatorSettings()


@pytest.mark.parametrize(("flag", "path", "default"), FROM_VALUES)
def test_the_charts_values_are_the_operators_defaults(flag: str, path: str, default: object) -> None:
    assert f"- {flag}={{{{ .Values.{path}" in DEPLOYMENT, f"the chart does not pass {flag} from {path}"
    assert value(path) == default, f"values.yaml {path}: {value(path)!r}, but {flag} defaults to {default!r}"


@pytest.mark.parametrize(("flag", "path", "default"), DURATIONS_FROM_VALUES)
def test_the_charts_durations_are_the_operators_defaults(flag: str, path: str, default: datetime.timedelta) -> None:
    assert f"- {flag}={{{{ .Values.{path}" in DEPLOYMENT, f"the chart does not pass {flag} from {path}"
    assert parse_duration(value(path)) == default, (
        f"values.yaml {path}: {value(path)!r}, but {flag} defaults to {default}"
    )
    assert operator_cli.format_duration(default) == value(path)


@pytest.mark.parametrize(("flag", "template", "default"), FROM_HELPERS)
def test_the_charts_object_names_are_the_operators_defaults(flag: str, template: str, default: str) -> None:
    assert f'- {flag}={{{{ include "{template}" . }}}}' in DEPLOYMENT, f"the chart does not pass {flag}"
    assert helper_for_release(template, DEFAULTS.release) == default


def test_the_charts_log_level_is_the_commands_default() -> None:
    assert "- --log-level={{ .Values.operator.logLevel }}" in DEPLOYMENT
    assert value("operator.logLevel") == ottava_cli.build_parser().parse_args(["operator"]).log_level


def test_the_charts_ports_and_sidecar_image_are_the_operators_defaults() -> None:
    # The chart does not pass --liveness-port: the port it probes is the default.
    assert "--liveness-port" not in DEPLOYMENT
    health = re.search(r"\{name: health, containerPort: (\d+)", DEPLOYMENT)
    assert health is not None and int(health.group(1)) == DEFAULTS.liveness_port
    assert "{name: webhook, containerPort: {{ .Values.webhook.port }}" in DEPLOYMENT
    assert "{name: identity, containerPort: {{ .Values.identity.port }}" in DEPLOYMENT
    assert value("identity.port") == contract.IDENTITY_PORT
    # With image.tag and sidecar.image left empty, sidecars run the chart's appVersion.
    assert (value("image.tag"), value("sidecar.image")) == ("", "")
    assert f"{value('image.repository')}:{CHART_META['appVersion']}" == DEFAULTS.injector.image
