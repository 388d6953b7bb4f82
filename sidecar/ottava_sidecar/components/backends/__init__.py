"""Connections to the servers that back components: settings, retries, TLS, error wording.

One module per server (Redis, PostgreSQL, etcd, ZooKeeper), shared by every building
block that server backs. Each module imports its client library only inside the
functions that connect, so the sidecar starts fast with in-memory components and the
catalogue knows every type's metadata without any client library installed.
"""
