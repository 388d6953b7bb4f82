"""A small Kubernetes client for the sidecar.

Thousands of sidecars talk to one apiserver, so each keeps its footprint minimal: plain
aiohttp (already the sidecar's HTTP stack), one list-then-watch per resource kind, no
polling, and watches that resume from the last resourceVersion.
"""
