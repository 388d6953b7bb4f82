"""Building blocks and their implementations.

Each building block is a folder (`state/`, `lock/`, …) holding its interface in `base.py`
and one module per implementation. `catalogue` maps a Component's `spec.type` to the
implementation and to the pydantic model of its metadata.
"""
