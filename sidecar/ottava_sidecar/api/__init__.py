"""The app-facing APIs.

`state`, `configuration`, `lock`, `sequencer`, `secrets` and `metadata` hold what a call
means, independent of the wire: validation, component lookup, key prefixing, errors.
`grpc/` (Dapr and Layotto services) and `http/` (Dapr HTTP API, actuator) only translate
between their wire format and these, so the three surfaces cannot drift apart.
"""
