"""Named limits of the gateway, each with the reason for its value."""

# Items in one Batch RPC. 10,000 earns with a few lines each is about 1-2 MB of
# protobuf: inside MESSAGE_BYTES_MAX, and one shard call's worth of work. The SDK
# keeps its own copy (loyalty.clients.BATCH_ITEMS_MAX, which must not import the
# server); tests/test_sdk_shared.py checks that the two agree.
BATCH_ITEMS_MAX = 10_000

# Operations one shard call carries. Larger calls amortise the per-call cost (the
# channel round trip and one journal append with its fsync) further but make the
# callers at the end of the batch wait longer.
SHARD_CALL_OPERATIONS_MAX = 10_000

# Operations waiting for one shard (not yet sent). Past this, callers get
# RESOURCE_EXHAUSTED at once instead of queueing: at ~100k ops/s per shard this is
# about half a second of work, so a queue this full means the shard is behind.
SHARD_QUEUE_OPERATIONS_MAX = 50_000

# Requests and responses are small; the largest is a full Batch. The SDK's channels
# allow the same (clients/config.py; tests/test_sdk_shared.py checks they agree).
MESSAGE_BYTES_MAX = 16 * 1024 * 1024

# The last millisecond of the year 9999: request timestamps past it are refused.
TIMESTAMP_MS_MAX = 253_402_300_799_999

# Seconds a SIGTERM waits for in-flight calls before cancelling them.
SHUTDOWN_GRACE_S = 10.0

# ---------------------------------------------------------------- security (issue 5)
# Each of these can be overridden in the ``[limits]`` table of the config file, within
# the bounds given in server/security/config.py.

# A call that sets no deadline gets this one, so no call holds a concurrency slot for
# ever; a full Batch takes a second or two on a busy server.
DEADLINE_DEFAULT_S = 30.0
# Longer client deadlines are cut to this: nothing the server does legitimately takes
# longer, and a waiting call holds memory and a concurrency slot.
DEADLINE_MAX_S = 60.0

# Calls in progress in one gateway process (grpc.aio maximum_concurrent_rpcs). One
# process answers about 2,300 unary calls/s, so 2,000 in flight is most of a second of
# work queued: more would only add latency and memory. Past it: RESOURCE_EXHAUSTED.
CONCURRENT_RPCS_MAX = 2_000

# Per-key token buckets, per gateway process. Every call costs one token (a Batch one
# per item): the sustained rate of a busy web shop with room for bursts; the burst fits
# two full Batches.
KEY_REQUESTS_PER_S = 2_000.0
KEY_REQUESTS_BURST = 20_000
# Redeem and Reserve (also inside a Batch) move points out of members' accounts: a
# stolen key is limited to this drain rate. A till redeems a few times a minute.
KEY_REDEMPTIONS_PER_S = 20.0
KEY_REDEMPTIONS_BURST = 100

# API keys in one deployment: every gateway keeps all of them in memory (a few hundred
# bytes each) so that checking a key costs no Redis round trip.
API_KEYS_MAX = 10_000
# Channels or stores one key may be limited to.
KEY_SCOPE_VALUES_MAX = 1_000
# Bearer secrets longer than this are not ours; refused before hashing.
API_KEY_SECRET_LENGTH_MAX = 256
# Every gateway reloads its copy of the keys this often even without a change
# notice, in case one was lost with a connection.
KEY_MIRROR_REFRESH_S = 30.0

# Page tokens this server issues are a list position as msgpack in base64 (see
# server/page_tokens.py), far shorter than this; longer ones are refused before decoding.
PAGE_TOKEN_LENGTH_MAX = 256

# Audit events kept (a capped Redis stream, oldest dropped first). Admin actions are
# rare (tens a day), so this is years of history, while a flood of changes can never
# grow Redis without bound.
AUDIT_EVENTS_MAX = 10_000
# Bytes of JSON kept for each of before and after: a whole rule set can be large;
# past this the event keeps a digest of it instead.
AUDIT_JSON_BYTES_MAX = 64 * 1024
