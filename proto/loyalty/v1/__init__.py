"""Generated protobuf and gRPC stubs for loyalty.v1 (see proto/generate.py)."""
