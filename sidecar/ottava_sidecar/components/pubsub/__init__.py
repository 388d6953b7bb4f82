"""The publish/subscribe building block."""
