"""Consumers of the shards' journals: the mechanism every later reader of the
journal (push, webhooks, an event feed, challenges, fraud, analytics) is built on.

A consumer has a name and reads every shard's journal stream in journal order per
shard, from a cursor per shard (the seq of the last record it consumed there):

- ``progress``: the pure part (records as delivered, lag figures, the gap check,
  cursor arithmetic); no Redis, Ray or gRPC.
- ``consumer``: ``JournalConsumer``, its Redis shell.

Keys (``<prefix>`` is the server's key prefix):

- ``{<prefix>:consumer:<name>}:cursors``: the checkpoint, a hash of shard index ->
  cursor. ``JournalConsumer.key(suffix)`` names the consumer's own state keys,
  ``{<prefix>:consumer:<name>}:<suffix>``, in the same hash tag (one slot).
- ``{<prefix>:shard:<n>}:consumers``: per shard, registered consumer name ->
  acknowledged seq, in the shard's hash tag so the snapshot flip script reads it in
  its slot (see ``loyalty.actors.shard.journal``).

Guarantees:

- At least once, in journal order per shard: a consumer object starts at its
  checkpoint, so whatever it read but did not commit before a crash is read again.
- Exactly once for state the consumer keeps in Redis under ``key()``: ``commit``
  writes that state (queued by its ``extra`` callable) and the cursors in one
  MULTI/EXEC, guarded by WATCH on the checkpoint, so an event is applied together
  with the cursor that passes it or not at all, and a second instance that read
  from the same checkpoint cannot commit after the first one did.
- Trimming: a snapshot flip keeps the records a registered consumer has not
  acknowledged, at most CONSUMER_RETAINED_RECORDS_MAX before the snapshot's seq.
  The acknowledged seq a consumer reports after each commit may lag its checkpoint;
  it is only a floor. ``unregister`` removes the consumer from every shard's hash.

Lagging and resynchronisation: when the records after a consumer's cursor on a
shard were trimmed (the bound was exceeded, or the consumer was not registered),
``read`` raises ``ConsumerLagging`` naming the shard, the cursor and the first
retained seq, and delivers nothing from that read. The consumer then calls
``resync(shard, rebuild=...)``: it loads the shard's newest snapshot, ``rebuild``
queues the consumer's state rebuilt from it (e.g. decoded with
``codec.load_snapshot_chunks``) and the cursor moves to the snapshot's seq in the
same MULTI/EXEC. The records between the old cursor and the snapshot seq are never
delivered; ``Resynced.skipped_records`` says how many. A stateless consumer passes
no ``rebuild`` and simply continues after the snapshot with that gap reported.

Reads use XRANGE with exclusive starts, and one blocking XREAD over every shard's
stream when none has a record; a multi-key XREAD needs a single Redis (not a Redis
Cluster), which is what the server uses.

May import: ``loyalty.actors.ledger``, ``loyalty.actors.shard.journal`` and redis.
Never ``loyalty.server``.
"""

from loyalty.actors.consumers.consumer import JournalConsumer
from loyalty.actors.consumers.progress import (
    ConsumedRecord,
    ConsumerConflict,
    ConsumerError,
    ConsumerLagging,
    Resynced,
    ShardLag,
)

__all__ = [
    "ConsumedRecord",
    "ConsumerConflict",
    "ConsumerError",
    "ConsumerLagging",
    "JournalConsumer",
    "Resynced",
    "ShardLag",
]
