"""Apps that tests run under `ottava run -- python …`, written with the official Dapr SDK as users write them."""
