"""Workload identity: SPIFFE IDs, the X.509 certificates that carry them, and where they come from.

`spiffe` names a workload, `certs` makes and reads the certificates (the operator's CA and
the standalone local CA both issue with it); `issued` is what a CA issued, as a sidecar
holds it without the `cryptography` package; the sidecar's current certificate, its
renewal and the TLS credentials built from it live in `workload`. A standalone sidecar
asks the local CA (`local_ca`) in a child process (`local_issuer`).
"""
