"""Functions that run inside the sidecar and are invoked like apps (`function.wasm`)."""
