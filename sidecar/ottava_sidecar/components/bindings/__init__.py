"""Bindings: output bindings the app invokes, input bindings that call the app on events."""
