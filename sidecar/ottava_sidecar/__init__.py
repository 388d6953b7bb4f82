"""Ottava's sidecar: the Dapr and Layotto runtime APIs served over pluggable components.

The package owns the contract that the operator and the tests share (resource models,
component catalogue, ports and probe paths), so that no two copies of it can disagree.
"""

from ottava_sidecar._version import __version__

__all__ = ["__version__"]
