"""The state building block: key/value storage with ETags, TTL and transactions."""
