"""Names, ports and paths that users, the operator and the tests depend on.

This is the single copy of them (DESIGN.md, "Fixed names"): the webhook that injects the
sidecar imports these rather than repeating the numbers.
"""

import re
from typing import Final

API_GROUP: Final = "ottava.io"
API_VERSION: Final = "v1alpha1"
GROUP_VERSION: Final = f"{API_GROUP}/{API_VERSION}"
DAPR_GROUP_VERSION: Final = "dapr.io/v1alpha1"

GRPC_PORT: Final = 50001
HTTP_PORT: Final = 3500
METRICS_PORT: Final = 9090
INTERNAL_GRPC_PORT: Final = 50002

METRICS_PATH: Final = "/metrics"
LIVENESS_PATH: Final = "/actuator/health/liveness"
READINESS_PATH: Final = "/actuator/health/readiness"
INFO_PATH: Final = "/actuator/info"
DAPR_HEALTHZ_PATH: Final = "/v1.0/healthz"
DAPR_OUTBOUND_HEALTHZ_PATH: Final = "/v1.0/healthz/outbound"

SIDECAR_CONTAINER_NAME: Final = "ottava-sidecar"

# Environment the sidecar gives to the app, so Dapr SDKs find it without configuration.
ENV_DAPR_GRPC_PORT: Final = "DAPR_GRPC_PORT"
ENV_DAPR_HTTP_PORT: Final = "DAPR_HTTP_PORT"
# The Dapr SDKs prefer these over the ports when they are set.
ENV_DAPR_GRPC_ENDPOINT: Final = "DAPR_GRPC_ENDPOINT"
ENV_DAPR_HTTP_ENDPOINT: Final = "DAPR_HTTP_ENDPOINT"
ENV_OTTAVA_GRPC_PORT: Final = "OTTAVA_GRPC_PORT"
ENV_API_TOKEN: Final = "DAPR_API_TOKEN"
# Dapr's token for the other direction: the sidecar presents it on every call to the app.
ENV_APP_API_TOKEN: Final = "APP_API_TOKEN"
API_TOKEN_HEADER: Final = "dapr-api-token"

# Components loaded by `ottava run` when no resources folder is given.
DEFAULT_STATE_STORE: Final = "statestore"
DEFAULT_PUBSUB: Final = "pubsub"
DEFAULT_LOCK_STORE: Final = "lockstore"
DEFAULT_CONFIGURATION_STORE: Final = "configstore"
DEFAULT_SEQUENCER: Final = "sequencer"
DEFAULT_SECRET_STORE: Final = "secretstore"

# Pod annotations a user sets on a Deployment's pod template (DESIGN.md, "pod annotations").
ANNOTATION_ENABLED: Final = "ottava.io/enabled"
ANNOTATION_APP_ID: Final = "ottava.io/app-id"
ANNOTATION_APP_PORT: Final = "ottava.io/app-port"
ANNOTATION_APP_PROTOCOL: Final = "ottava.io/app-protocol"
ANNOTATION_CONFIG: Final = "ottava.io/config"
ANNOTATION_LOG_LEVEL: Final = "ottava.io/log-level"
ANNOTATION_SIDECAR_IMAGE: Final = "ottava.io/sidecar-image"
ANNOTATION_CPU_REQUEST: Final = "ottava.io/sidecar-cpu-request"
ANNOTATION_CPU_LIMIT: Final = "ottava.io/sidecar-cpu-limit"
ANNOTATION_MEMORY_REQUEST: Final = "ottava.io/sidecar-memory-request"
ANNOTATION_MEMORY_LIMIT: Final = "ottava.io/sidecar-memory-limit"
ANNOTATION_API_TOKEN_SECRET: Final = "ottava.io/api-token-secret"
ANNOTATION_APP_VERSION: Final = "ottava.io/app-version"  # traffic routing between versions (docs/routing.md)

# Labels the injector puts on pods.
LABEL_SIDECAR_INJECTED: Final = "ottava.io/sidecar-injected"
LABEL_APP_ID: Final = "ottava.io/app-id"
LABEL_APP_VERSION: Final = "ottava.io/app-version"  # from the annotation; also on the operator's version slices

# The headless Service the operator keeps per app id (DESIGN.md, "per-app Service"): its
# ports, and the label it carries, which the EndpointSlice controller copies onto the
# Service's EndpointSlices so that sidecars watch exactly those.
APP_SERVICE_SUFFIX: Final = "-ottava"
SERVICE_PORT_GRPC: Final = "grpc"
SERVICE_PORT_HTTP: Final = "http"
SERVICE_PORT_INTERNAL: Final = "internal"
SERVICE_PORT_METRICS: Final = "metrics"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
MANAGED_BY: Final = "ottava"
# On the Service `<name>-ottava` of a `function.wasm` Component (value: its name), whose
# EndpointSlices the operator writes: the sidecars of the apps that run the function, each
# slice labelled `ottava.io/app-id` with the app whose certificate they hold (docs/wasm.md).
LABEL_FUNCTION: Final = "ottava.io/function"
# Service names are RFC 1035 labels (a letter first) unless the cluster relaxes that (1.36+).
_SERVICE_APP_ID: Final = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
MAX_SERVICE_APP_ID: Final = 63 - len(APP_SERVICE_SUFFIX)


def app_service_name(app_id: str) -> str:
    return f"{app_id}{APP_SERVICE_SUFFIX}"


def app_service_problem(app_id: str) -> str | None:
    """Why `app_id` cannot name its Service `<app-id>-ottava` (and so cannot be invoked in a
    cluster), or None when it can."""
    if len(app_id) > MAX_SERVICE_APP_ID:
        return f"app id {app_id!r} is longer than {MAX_SERVICE_APP_ID} characters, too long for its Service name"
    if not _SERVICE_APP_ID.match(app_id):
        return (
            f"app id {app_id!r} cannot name a Service: use lower-case letters, digits and '-', "
            "starting with a letter (no '.': 'id.namespace' names an app of another namespace)"
        )
    return None


# Environment of the injected sidecar container.
ENV_POD_NAME: Final = "POD_NAME"
ENV_NAMESPACE: Final = "NAMESPACE"
ENV_APP_ID: Final = "OTTAVA_APP_ID"
ENV_CONFIG: Final = "OTTAVA_CONFIG"
ENV_APP_PORT: Final = "OTTAVA_APP_PORT"
ENV_APP_PROTOCOL: Final = "OTTAVA_APP_PROTOCOL"
ENV_APP_VERSION: Final = "OTTAVA_APP_VERSION"

# Where the injected sidecar finds its projected service-account token.
TOKEN_VOLUME: Final = "ottava-token"
TOKEN_MOUNT_PATH: Final = "/var/run/secrets/ottava.io/serviceaccount"
# The unprivileged user the sidecar image runs as ("restricted" Pod Security Standard).
SIDECAR_UID: Final = 65532

# Workload identity (DESIGN.md, "workload identity"): the operator's CA signs a sidecar's
# certificate once the sidecar proves itself with a ServiceAccount token of this audience.
IDENTITY_AUDIENCE: Final = "ottava.io/identity"
IDENTITY_PORT: Final = 9445
IDENTITY_SIGN_PATH: Final = "/v1/sign"
DEFAULT_TRUST_DOMAIN: Final = "public"
STANDALONE_NAMESPACE: Final = "default"
# The injected sidecar's environment for it: where the operator signs, the name its
# serving certificate carries, and the roots to trust (PEM), as Dapr injects its anchors.
ENV_IDENTITY_ENDPOINT: Final = "OTTAVA_IDENTITY_ENDPOINT"
ENV_IDENTITY_SERVER_NAME: Final = "OTTAVA_IDENTITY_SERVER_NAME"
ENV_TRUST_ANCHORS: Final = "OTTAVA_TRUST_ANCHORS"
# The audience-bound token sits beside the API token in the sidecar's projected volume.
IDENTITY_TOKEN_FILE: Final = "identity-token"
