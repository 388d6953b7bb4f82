"""Ottava's operator: admission (validation and sidecar injection), status, certificates, RBAC.

It imports the contract (resource models, component catalogue, ports, probe paths) from
`ottava_sidecar`, so the webhook and the sidecar can never disagree about them.
"""
