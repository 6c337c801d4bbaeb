"""The ledger's events in public form (loyalty.v1 events.proto), translated from the
shards' journal records, with the cursors readers resume from.

- ``translation``: ``public_events(shard, seq, record)``, the loyalty.v1 Event
  messages of one journal record (as a journal consumer delivers it), in order.
- ``cursors``: ``encode_cursor`` / ``decode_cursor``; a malformed cursor is a
  FieldViolation naming the request field (``after_cursor`` by default).
- ``tailer``: ``JournalTailer``, one per gateway process: one blocking XREAD over
  every shard's journal on its own connection, each record translated once and its
  events fanned out to the streams' bounded queues (SUBSCRIBER_QUEUE_EVENTS_MAX).
- ``service``: ``EventStreams`` (the tailer, member tokens and the servicer) and
  ``EventService`` (StreamEvents, WatchMember, CreateMemberToken): replay from the
  request's cursors, then live.
- ``tokens``: ``MemberTokens``, the JWTs that let a member's app or page watch that
  one member (HS256, the secret made once per deployment and kept in Redis).

``translation`` and ``cursors`` are pure: protobuf and the ledger's records, no Redis
or shard state; every event carries the member's balance after it because the shard
journals that balance with the record (``JournalRecord.balances``). Records journaled before balances were recorded still
translate, with ``balance`` unset.

Not exposed (skipped, though their index still counts in cursors): ``Failed`` (a
refusal kept for replays: no points moved), ``Pruned`` (old outcomes and closed
reservations forgotten), ``BudgetLeased`` and ``BudgetReturned`` (the shard's
campaign budget leases, no member's points).

At the gateway's layer: it reuses the gateway's Balance conversion.
"""

from loyalty.server.events.cursors import AFTER_CURSOR_FIELD, Cursor, decode_cursor, encode_cursor
from loyalty.server.events.translation import KINDS, SKIPPED, event_kind, public_events

__all__ = [
    "AFTER_CURSOR_FIELD",
    "KINDS",
    "SKIPPED",
    "Cursor",
    "decode_cursor",
    "encode_cursor",
    "event_kind",
    "public_events",
]
