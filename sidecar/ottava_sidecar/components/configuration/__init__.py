"""The configuration building block: items addressed by app id, group, label and key."""
