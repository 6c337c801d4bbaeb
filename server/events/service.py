"""loyalty.v1.EventService: StreamEvents and WatchMember over the gateway's tailer.

A stream subscribes to the tailer first (which fixes, per shard, the seq after which
it gets records live), then replays each resumed shard's journal from the cursor up
to that seq (XRANGE; events at or before the cursor's index in its record skipped),
then sends what the tailer queued meanwhile and follows it. Live events at or before
a request's cursor are dropped too (a cursor from a gateway whose tailer is ahead),
so nothing is sent twice and nothing is skipped.

CreateMemberToken mints a member token (``tokens``) for one member: its holder may
watch that member and nothing else (the guard, server/security/guard.py, checks it).

Answers: a malformed cursor or kind, a second cursor for one shard, or a cursor of
another member's shard is INVALID_ARGUMENT naming the field; a cursor whose record
the journal no longer holds (a snapshot trimmed it) is FAILED_PRECONDITION with
reason CURSOR_EXPIRED naming the field; a stream that falls behind the tailer by
SUBSCRIBER_QUEUE_EVENTS_MAX events is RESOURCE_EXHAUSTED with reason OVERLOADED.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import redis.asyncio as aioredis
import redis.exceptions

from loyalty.actors.ledger import codec
from loyalty.actors.routing import shard_of
from loyalty.actors.shard.journal import JOURNAL_PAGE_RECORDS_MAX, PAYLOAD_FIELD, seq_from_entry_id, shard_key
from loyalty.server import errors
from loyalty.server.errors import CursorExpired, FieldViolation, LoyaltyServerError, ShardUnavailable
from loyalty.server.events import tailer as tailing
from loyalty.server.events.cursors import Cursor, decode_cursor, encode_cursor
from loyalty.server.events.tokens import MEMBER_TOKEN_TTL_S_DEFAULT, MEMBER_TOKEN_TTL_S_MAX, MemberTokens
from loyalty.server.events.translation import KINDS, event_kind, public_events
from loyalty.server.gateway.fields import Identifier
from loyalty.v1 import events_pb2 as pb
from loyalty.v1 import events_pb2_grpc as pb_grpc

_MEMBER_ID = Identifier("member_id")
_KNOWN_KINDS = frozenset(KINDS.values())


class EventStreams:
    """The tailer of one gateway process, its member tokens and the EventService
    servicer over them."""

    def __init__(self, *, redis_url: str, key_prefix: str, shard_count: int) -> None:
        self.key_prefix = key_prefix
        self.shard_count = shard_count
        self.tailer = tailing.JournalTailer(redis_url, key_prefix, shard_count)
        # Replays: ordinary commands with a timeout (a paused Redis must not hang a call).
        self._client = aioredis.Redis.from_url(redis_url, socket_timeout=5.0, socket_connect_timeout=5.0)
        self.tokens = MemberTokens(self._client, key_prefix=key_prefix)
        """Mints and checks member tokens (the secret is read by ``start``)."""
        self.servicer = EventService(self)

    async def start(self) -> None:
        """Read the member-token secret (on the loop that will serve), so that tokens
        are checked without Redis. Raises ControlStoreUnavailable."""
        await self.tokens.start()

    async def stop(self) -> None:
        await self.tailer.stop()
        await self._client.aclose()

    # ----------------------------------------------------------------- streaming

    async def stream(
        self,
        cursors: dict[int, tuple[str, Cursor]],
        *,
        shards: frozenset[int],
        member_id: str = "",
        kinds: frozenset[int] = frozenset(),
        subscribed=None,
    ) -> AsyncIterator[pb.Event]:
        """The events after ``cursors`` (shard -> (field, cursor)), then live ones;
        ``subscribed`` is awaited once the stream gets live events."""
        subscriber = await self.tailer.subscribe(
            shards=shards, member_id=member_id, kinds=kinds, limit=tailing.SUBSCRIBER_QUEUE_EVENTS_MAX
        )
        try:
            if subscribed is not None:
                await subscribed()
            floors = {shard: encode_cursor(cursor) for shard, (_, cursor) in cursors.items()}
            for shard, (field, cursor) in sorted(cursors.items()):
                async for event in self._replay(field, cursor, subscriber.live_after[shard]):
                    if (not member_id or event.member_id == member_id) and (not kinds or event_kind(event) in kinds):
                        yield event
            while True:
                for event in await subscriber.next_events():
                    floor = floors.get(int(event.cursor[1:5], 16))
                    if floor is not None and event.cursor <= floor:
                        continue  # at or before the request's cursor
                    yield event
        finally:
            self.tailer.unsubscribe(subscriber)

    async def _replay(self, field: str, cursor: Cursor, until_seq: int) -> AsyncIterator[pb.Event]:
        """The events of ``cursor``'s shard after it, up to record ``until_seq``."""
        key = shard_key(self.key_prefix, cursor.shard, "journal")
        after = encode_cursor(cursor)
        if cursor.seq > until_seq:
            head = await self._head(cursor.shard)
            if cursor.seq > head:
                raise FieldViolation(
                    field, f"names record {cursor.seq} of shard {cursor.shard}, which is not journaled"
                )
            return  # the tailer is behind this cursor: live events up to it are dropped
        start, expected = f"{cursor.seq}-0", cursor.seq
        while True:
            page = await self._read(key, start, f"{until_seq}-0")
            for entry_id, fields in page:
                seq = seq_from_entry_id(entry_id)
                if seq != expected:
                    raise CursorExpired(
                        field,
                        f"shard {cursor.shard}'s journal no longer holds record {expected} (a snapshot "
                        "trimmed it); stream again without this cursor",
                    )
                expected = seq + 1
                record = codec.decode_record(fields[PAYLOAD_FIELD])
                for event in public_events(cursor.shard, seq, record):
                    if event.cursor > after:
                        yield event
            if expected == cursor.seq:  # not even the cursor's own record is held
                raise CursorExpired(
                    field,
                    f"shard {cursor.shard}'s journal no longer holds record {cursor.seq} (a snapshot "
                    "trimmed it); stream again without this cursor",
                )
            if len(page) < JOURNAL_PAGE_RECORDS_MAX or expected > until_seq:
                return
            start = f"{expected}-0"

    async def _read(self, key: str, start: str, end: str) -> list:
        try:
            return await self._client.xrange(key, min=start, max=end, count=JOURNAL_PAGE_RECORDS_MAX)
        except (redis.exceptions.RedisError, OSError) as error:
            raise ShardUnavailable(f"the journal could not be read: {error}") from error

    async def _head(self, shard: int) -> int:
        try:
            (head,) = await tailing.journal_heads(self._client, self.key_prefix, [shard])
        except (redis.exceptions.RedisError, OSError) as error:
            raise ShardUnavailable(f"the journal could not be read: {error}") from error
        return head


# --------------------------------------------------------------------- requests


def _cursor(text: str, field: str, shard_count: int) -> Cursor:
    cursor = decode_cursor(text, field)
    if cursor.shard >= shard_count:
        raise FieldViolation(field, f"names shard {cursor.shard}; this server has {shard_count}")
    return cursor


def stream_events_request(request: pb.StreamEventsRequest, shard_count: int):
    """(cursors by shard, kinds) of a StreamEventsRequest; FieldViolation if malformed."""
    cursors: dict[int, tuple[str, Cursor]] = {}
    for index, text in enumerate(request.after_cursors):
        field = f"after_cursors[{index}]"
        cursor = _cursor(text, field, shard_count)
        if cursor.shard in cursors:
            raise FieldViolation(
                field, f"names shard {cursor.shard}, as {cursors[cursor.shard][0]} does: one cursor per shard"
            )
        cursors[cursor.shard] = (field, cursor)
    for index, kind in enumerate(request.kinds):
        if kind not in _KNOWN_KINDS:
            raise FieldViolation(f"kinds[{index}]", f"{kind} is not an EventKind this server streams")
    return cursors, frozenset(request.kinds)


def watch_member_request(request: pb.WatchMemberRequest, shard_count: int):
    """(member_id, its shard, cursors by shard) of a WatchMemberRequest."""
    member_id = _MEMBER_ID.check("member_id", request.member_id)
    shard = shard_of(member_id, shard_count)
    cursors: dict[int, tuple[str, Cursor]] = {}
    if request.after_cursor:
        cursor = _cursor(request.after_cursor, "after_cursor", shard_count)
        if cursor.shard != shard:
            raise FieldViolation(
                "after_cursor", f"names shard {cursor.shard}; this member's events are on shard {shard}"
            )
        cursors[shard] = ("after_cursor", cursor)
    return member_id, shard, cursors


def create_member_token_request(request: pb.CreateMemberTokenRequest) -> tuple[str, int]:
    """(member_id, lifetime in seconds) of a CreateMemberTokenRequest."""
    member_id = _MEMBER_ID.check("member_id", request.member_id)
    ttl_s = request.ttl_seconds or MEMBER_TOKEN_TTL_S_DEFAULT
    if not 0 < ttl_s <= MEMBER_TOKEN_TTL_S_MAX:
        raise FieldViolation(
            "ttl_seconds", f"must be 0 (the default, {MEMBER_TOKEN_TTL_S_DEFAULT}) or 1 to {MEMBER_TOKEN_TTL_S_MAX}"
        )
    return member_id, ttl_s


def _headers(context):
    """Sends the response headers: a client that has them (e.g. ``call.initial_metadata()``)
    knows every event journaled from then on reaches its stream."""

    async def send() -> None:
        await context.send_initial_metadata(())

    return send


class EventService(pb_grpc.EventServiceServicer):
    """loyalty.v1.EventService: every answer through errors.abort."""

    def __init__(self, streams: EventStreams) -> None:
        self._streams = streams

    async def StreamEvents(self, request, context):
        try:
            cursors, kinds = stream_events_request(request, self._streams.shard_count)
            events = self._streams.stream(
                cursors,
                shards=frozenset(range(self._streams.shard_count)),
                kinds=kinds,
                subscribed=_headers(context),
            )
            async for event in events:
                yield event
        except LoyaltyServerError as error:
            await errors.abort(context, errors.status_of(error))

    async def WatchMember(self, request, context):
        try:
            member_id, shard, cursors = watch_member_request(request, self._streams.shard_count)
            events = self._streams.stream(
                cursors, shards=frozenset({shard}), member_id=member_id, subscribed=_headers(context)
            )
            async for event in events:
                yield event
        except LoyaltyServerError as error:
            await errors.abort(context, errors.status_of(error))

    async def CreateMemberToken(self, request, context):
        try:
            member_id, ttl_s = create_member_token_request(request)
            token, expires_s = await self._streams.tokens.mint(member_id, ttl_s)
        except LoyaltyServerError as error:
            await errors.abort(context, errors.status_of(error))
        response = pb.CreateMemberTokenResponse(token=token)
        response.expires_at.FromSeconds(expires_s)
        return response
