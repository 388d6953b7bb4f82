"""Resiliency: Dapr's timeouts, retries and circuit breakers, applied to the sidecar's calls.

* `policy`: one target's policies at work (`Policy.run`), the retry backoff and the breaker;
* `provider`: which policies apply to a call, from the Resiliency resources in the app's scope;
* `outbound`: the sidecar's calls to its components (state, lock, configuration, secrets,
  bindings, publish) through their target's policies;
* `invocation`: what counts as a failed service invocation.

Service invocation applies `Provider.app` in `invocation.invoker`; deliveries from a pub/sub
component to the app apply `Provider.inbound` in `messaging.resilient`.
"""
