"""The app channel: how the sidecar calls its app back.

Over it the sidecar reads the app's subscriptions, delivers pub/sub events and hands
over service invocations. `base.AppChannel` is the interface; `http.HttpAppChannel`
speaks Dapr's HTTP callbacks (`GET /dapr/subscribe`, POST per route, any verb for
invocation) and `grpc.GrpcAppChannel` Dapr's `AppCallback` service, falling back to
Layotto's `AppCallback` for apps that only serve that one.
"""

from ottava_sidecar.appchannel.base import (
    AppChannel,
    AppChannelError,
    AppSubscriptions,
    AppTimeoutError,
    AppUnavailableError,
    AppUnimplementedError,
)

__all__ = [
    "AppChannel",
    "AppChannelError",
    "AppSubscriptions",
    "AppTimeoutError",
    "AppUnavailableError",
    "AppUnimplementedError",
    "create",
]


def create(
    protocol: str,
    app_id: str,
    port: int,
    *,
    host: str = "127.0.0.1",
    timeout: float = 60.0,
    app_token: str | None = None,
) -> AppChannel:
    """The channel for `--app-protocol`; imported lazily so each protocol loads only its client.

    `app_token` ($APP_API_TOKEN) goes out as `dapr-api-token` on every call to the app, as
    Dapr's sidecar sends it, so an app that checks it (the Go SDK's servers do) accepts them.
    """
    if protocol == "grpc":
        from ottava_sidecar.appchannel.grpc import GrpcAppChannel

        return GrpcAppChannel(app_id, host, port, timeout=timeout, app_token=app_token)
    if protocol == "http":
        from ottava_sidecar.appchannel.http import HttpAppChannel

        return HttpAppChannel(app_id, host, port, timeout=timeout, app_token=app_token)
    raise ValueError(f"unknown app protocol {protocol!r} (http or grpc)")
