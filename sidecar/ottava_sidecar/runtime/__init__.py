"""The running sidecar: loaded components, their health, and the process lifecycle."""
