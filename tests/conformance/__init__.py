"""Conformance suites: one per building block, run unchanged against every implementation.

A backend is done when it passes its building block's suite against the real server.
"""
