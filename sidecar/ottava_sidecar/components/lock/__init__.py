"""The distributed lock building block: owner-checked locks that expire."""
