"""The secrets building block: read-only access to secrets held elsewhere."""
