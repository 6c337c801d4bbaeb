"""Named limits of the gateway, each with the reason for its value."""

# Items in one Batch RPC. 10,000 earns with a few lines each is about 1-2 MB of
# protobuf: inside MESSAGE_BYTES_MAX, and one shard call's worth of work.
BATCH_OPERATIONS_MAX = 10_000

# Operations one Ray call to a shard carries. Larger calls amortise the ~2 ms Ray
# round trip further but make the callers at the end of the batch wait longer.
SHARD_CALL_OPERATIONS_MAX = 10_000

# Operations waiting for one shard (not yet sent). Past this, callers get
# RESOURCE_EXHAUSTED at once instead of queueing: at ~100k ops/s per shard this is
# about half a second of work, so a queue this full means the shard is behind.
SHARD_QUEUE_OPERATIONS_MAX = 50_000

# Requests and responses are small; the largest is a full Batch.
MESSAGE_BYTES_MAX = 16 * 1024 * 1024

# Seconds a SIGTERM waits for in-flight calls before cancelling them.
SHUTDOWN_GRACE_S = 10.0
