"""The HTTP surface: Dapr's HTTP API v1.0, the actuator and Dapr health on one app, metrics on another.

Like the gRPC surface, it only translates: each route turns a request into a call of
the building-block APIs (`ottava_sidecar.api`) and their answer or `ApiError` into
Dapr's status codes and JSON bodies.
"""

from ottava_sidecar.api.http.server import build_api_app, build_metrics_app

__all__ = ["build_api_app", "build_metrics_app"]
