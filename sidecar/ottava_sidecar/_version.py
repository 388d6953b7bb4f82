"""The version of Ottava: the same as pyproject.toml's (tests/test_catalogue.py holds them equal).

A literal rather than `importlib.metadata.version("ottava")`, which costs the sidecar's
start-up ~15 ms to read the installed distribution's metadata.
"""

__version__ = "0.1.0"
