"""The gRPC API: Dapr's and Layotto's services on one `grpc.aio` server."""
