"""The sequencer building block: ids that only go up, per key."""
