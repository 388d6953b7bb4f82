"""Tests of the server-backed components through a real sidecar: swapping stores, faults."""
