"""The gRPC gateway: validation, routing, per-shard micro-batching, health, reflection."""
