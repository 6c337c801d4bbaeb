"""One journal tailer per gateway process, fanning the shards' events out to the
streams of EventService (``service``).

The tailer follows every shard's journal stream on its own Redis connection with one
blocking XREAD over all of them, and only while a stream is open: the first
subscriber starts it at the journals' heads and the last one to leave stops it, so
a gateway nobody watches spends nothing on events. It translates each record once
(``public_events``), only when an open stream follows its shard, and offers the
record's events to every subscriber. Offering never waits: a subscriber keeps the events it matches
(its shards, member and kinds) in a bounded queue, and one whose queue would pass
its limit is ended (``Overflowed``) instead of holding the tailer or the others up.

A subscriber is added between two records, so it gets every record after the
tailer's ``positions`` at that moment and none before: a stream that resumes replays
the journal up to those positions and then takes over live, with no gap and no
repeat (see ``service``).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Sequence

import msgspec
import redis.asyncio as aioredis
import redis.exceptions

from loyalty.actors.ledger import codec
from loyalty.actors.ledger.status import Status
from loyalty.actors.shard.journal import (
    JOURNAL_PAGE_RECORDS_MAX,
    PAYLOAD_FIELD,
    head_seq,
    seq_from_entry_id,
    shard_key,
)
from loyalty.server.errors import LimitReached, ShardUnavailable
from loyalty.server.events.translation import event_kind, public_events
from loyalty.v1 import events_pb2 as pb

log = logging.getLogger(__name__)

SUBSCRIBER_QUEUE_EVENTS_MAX = 20_000
"""Events one stream may have waiting to be sent before it is ended as too slow.
Twice the operations of one shard call (SHARD_CALL_OPERATIONS_MAX), so a full Batch's
record fits in a queue that is not far behind. Events are translated once and shared
by every stream, so a queued event costs a stream a reference; a full queue keeps at
most this many events (a few hundred bytes each, some MB) alive. A stream that
falls this far behind is ended with RESOURCE_EXHAUSTED and resumes from its cursor."""

TAILER_BLOCK_S = 5.0
"""How long one XREAD waits for a new record before it is sent again: short enough
that a half-open connection is noticed, long enough to cost nothing when idle."""

TAILER_RETRY_S = 0.5
"""Pause after a failed read of the journals (Redis restarting) before the next."""


async def journal_heads(client: aioredis.Redis, key_prefix: str, shards: Sequence[int]) -> list[int]:
    """The highest journaled seq of each of ``shards``, in one round trip."""
    pipeline = client.pipeline(transaction=False)
    for shard in shards:
        pipeline.xrevrange(shard_key(key_prefix, shard, "journal"), count=1)
        pipeline.hget(shard_key(key_prefix, shard, "snapshot"), "seq")
    replies = await pipeline.execute()
    return [head_seq(replies[2 * index], replies[2 * index + 1]) for index in range(len(shards))]


class Overflowed(LimitReached):
    """A stream fell SUBSCRIBER_QUEUE_EVENTS_MAX events behind and was ended; resume
    from the last cursor received."""

    status = Status.OVERLOADED


class TailerBehind(LimitReached):
    """The tailer found records of a shard trimmed before it read them; the streams
    following that shard are ended (resume from the last cursor received)."""

    status = Status.OVERLOADED


class Subscriber:
    """One stream's share of the tailer: the events it matches, waiting to be sent."""

    def __init__(
        self,
        positions: list[int],
        *,
        shards: frozenset[int],
        member_id: str = "",
        kinds: frozenset[int] = frozenset(),
        limit: int = SUBSCRIBER_QUEUE_EVENTS_MAX,
    ) -> None:
        self.live_after = list(positions)
        """Per shard, the seq after which this subscriber gets records live."""
        self.shards = shards
        self.member_id = member_id
        self.kinds = kinds
        self.limit = limit
        self._queue: collections.deque[pb.Event] = collections.deque()
        self._wake = asyncio.Event()
        self.ended: Exception | None = None
        """Why the tailer ended this subscriber (None: it has not)."""

    def offer(self, shard: int, events: list[pb.Event]) -> bool:
        """Queue the events this subscriber matches; False if that would pass its limit
        (the subscriber is then ended and its queue dropped)."""
        if shard not in self.shards:
            return True
        matched = [
            event
            for event in events
            if (not self.member_id or event.member_id == self.member_id)
            and (not self.kinds or event_kind(event) in self.kinds)
        ]
        if not matched:
            return True
        if len(self._queue) + len(matched) > self.limit:
            self.end(
                Overflowed(
                    f"this stream fell more than {self.limit} events behind and was ended; "
                    "resume after the last cursor received",
                    metadata={"limit": str(self.limit)},
                )
            )
            return False
        self._queue.extend(matched)
        self._wake.set()
        return True

    def end(self, reason: Exception) -> None:
        """End the subscriber: the stream answers ``reason`` once it next looks."""
        if self.ended is None:
            self.ended = reason
        self._queue.clear()
        self._wake.set()

    async def next_events(self) -> list[pb.Event]:
        """The events queued since the last call (waits for some); raises why the
        subscriber was ended, if it was."""
        while not self._queue and self.ended is None:
            self._wake.clear()
            await self._wake.wait()
        if self.ended is not None:
            raise self.ended
        events = list(self._queue)
        self._queue.clear()
        return events


class JournalTailer:
    """Follows every shard's journal and fans each record's events out to the
    subscribers (one per open stream)."""

    def __init__(self, redis_url: str, key_prefix: str, shard_count: int, *, block_s: float = TAILER_BLOCK_S) -> None:
        self.shard_count = shard_count
        self.key_prefix = key_prefix
        self._keys = [shard_key(key_prefix, shard, "journal") for shard in range(shard_count)]
        self._shard_of = {key.encode(): shard for shard, key in enumerate(self._keys)}
        self._block_ms = max(1, round(block_s * 1000))
        # Its own connection, whose socket timeout outlasts the blocking XREAD on it.
        self._client = aioredis.Redis.from_url(
            redis_url, socket_timeout=block_s + TAILER_BLOCK_S, socket_connect_timeout=5.0, socket_keepalive=True
        )
        self.positions: list[int] = [0] * shard_count
        """Per shard, the seq of the last record fanned out."""
        self._subscribers: set[Subscriber] = set()
        self._task: asyncio.Task | None = None

    async def stop(self) -> None:
        """Stop following; every subscriber still open is ended."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        for subscriber in list(self._subscribers):
            subscriber.end(TailerBehind("the gateway is shutting down; resume after the last cursor received"))
        self._subscribers.clear()
        await self._client.aclose()

    async def subscribe(self, **filters) -> Subscriber:
        """A new subscriber that gets every record after the current ``positions``.

        The tailer only reads the journals while a stream is open (with none, a
        gateway spends nothing on events): the first subscriber starts it at the
        journals' heads."""
        if self._task is None:
            try:
                heads = await self._heads()
            except (redis.exceptions.RedisError, OSError) as error:
                raise ShardUnavailable(f"the journals could not be read: {error}") from error
            if self._task is None:  # nobody started it during the await
                self.positions = heads
                self._task = asyncio.create_task(self._run(), name="loyalty-event-tailer")
        subscriber = Subscriber(self.positions, **filters)  # no await since the heads were set
        self._subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        """Forget a subscriber; the last one to go stops the tailer."""
        self._subscribers.discard(subscriber)
        if not self._subscribers and self._task is not None:
            self._task.cancel()
            self._task = None

    async def _heads(self) -> list[int]:
        return await journal_heads(self._client, self.key_prefix, range(self.shard_count))

    async def _run(self) -> None:
        failing = False
        while True:
            streams = {key: f"{self.positions[shard]}-0" for shard, key in enumerate(self._keys)}
            try:
                replies = await self._client.xread(streams, count=JOURNAL_PAGE_RECORDS_MAX, block=self._block_ms)
            except (redis.exceptions.RedisError, OSError) as error:
                if not failing:  # one line per outage, not one per retry
                    log.warning("event tailer: reading the journals failed (%s); retrying", error)
                failing = True
                await asyncio.sleep(TAILER_RETRY_S)
                continue
            if failing:
                log.info("event tailer: reading the journals again")
                failing = False
            for key, entries in replies or ():
                shard = self._shard_of[key if isinstance(key, bytes) else key.encode()]
                for entry_id, fields in entries:
                    self._fan_out(shard, seq_from_entry_id(entry_id), fields)

    def _fan_out(self, shard: int, seq: int, fields) -> None:
        """Translate one record and offer its events to every subscriber (no awaits:
        a subscriber is added between two records, never during one)."""
        expected = self.positions[shard] + 1
        self.positions[shard] = seq
        if seq != expected:  # records trimmed before the tailer read them
            for subscriber in [s for s in self._subscribers if shard in s.shards]:
                self._subscribers.discard(subscriber)
                subscriber.end(
                    TailerBehind(
                        f"the gateway's event reader fell behind the journal of shard {shard}; "
                        "resume after the last cursor received"
                    )
                )
        if not any(shard in subscriber.shards for subscriber in self._subscribers):
            return  # nobody listens: no decoding or protobuf on the gateway's CPU
        try:
            record = codec.decode_record(fields[PAYLOAD_FIELD])
        except (KeyError, msgspec.DecodeError):
            log.error("event tailer: shard %d journal seq %d is not a journal record; skipped", shard, seq)
            return
        events = public_events(shard, seq, record)
        if not events:
            return
        for subscriber in list(self._subscribers):
            if not subscriber.offer(shard, events):
                self._subscribers.discard(subscriber)
