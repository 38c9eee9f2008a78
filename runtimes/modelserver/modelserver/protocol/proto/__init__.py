"""Generated gRPC modules of grpc_service.proto (`make proto`); do not edit them by hand."""
