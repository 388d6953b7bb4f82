"""Pub/sub at runtime: CloudEvents envelopes, subscriptions from the app, delivery.

* `cloudevents`: wrapping published payloads as CloudEvents 1.0, and reading them back;
* `subscriptions`: what an app subscribed to (topic, routing rules, dead-letter topic);
* `routing`: the small expression language of routing rules (a subset of CEL);
* `delivery`: what each verdict of the app means (ack, redeliver, drop, dead letter);
* `streams`: subscriptions over a gRPC stream (Dapr `SubscribeTopicEventsAlpha1`,
  Layotto `SubscribeTopicEvents`);
* `runtime`: the subscriptions of one sidecar, started once the app listens.
"""
