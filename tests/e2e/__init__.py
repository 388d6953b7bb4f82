"""End-to-end tests against a real Kubernetes control plane built by ``e2e/`` (marker ``e2e``)."""
