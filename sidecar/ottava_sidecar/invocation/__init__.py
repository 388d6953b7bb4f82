"""Service invocation: app A → A's sidecar → B's sidecar → app B.

* `messages`: the call and its answer, independent of HTTP or gRPC;
* `resolution`: finding the sidecar of an app id (the `NameResolver` interface);
  `standalone` resolves through a registry folder on the local machine, `kubernetes`
  through the EndpointSlices of each app's Service;
* `filters`: the before/after extension point around each outbound call;
* `internal`: the sidecar-to-sidecar gRPC API (internal port 50002), both ends;
* `traffic`: routing between an app's versions (`TrafficRoute`): the version a call goes
  to, and the faults its rule injects;
* `invoker`: the caller's side: filters, resolution, timeouts, retries.
"""
