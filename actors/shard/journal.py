"""Per-shard write-ahead journal, snapshots and epoch fencing on Redis.

Each shard owns a handful of Redis keys that share one hash tag, so every
Lua script below touches a single hash slot and also runs on Redis Cluster:

* ``{<prefix>:shard:<n>}:epoch`` -- integer bumped by every new incarnation
  of the shard; writes carrying an older epoch are refused (fencing).
* ``{<prefix>:shard:<n>}:journal`` -- a stream whose entry ids are
  ``<seq>-0`` with a single field ``d`` holding the record payload.
* ``{<prefix>:shard:<n>}:snapshot`` -- a hash pointing at the newest complete
  snapshot: ``seq``, ``chunk_count`` and ``id``.
* ``{<prefix>:shard:<n>}:snapshot:<id>:<index>`` -- the snapshot's chunks.
  The snapshot script derives these names from the pointer key instead of
  receiving them in KEYS (their number is unbounded); the shared hash tag
  keeps them in the script's slot, which is what Redis Cluster requires.
* ``{<prefix>:shard:<n>}:consumers`` -- a hash of the journal's registered
  consumers (``loyalty.actors.consumers``): field = consumer name, value = the
  highest seq it has acknowledged. The snapshot flip keeps the records they
  have not acknowledged, up to CONSUMER_RETAINED_RECORDS_MAX records before
  the snapshot's seq.

The client is the synchronous ``redis`` client because the journal runs
inside a synchronous Ray actor. Only Redis 6.2 features are used (Lua via
EVALSHA, ``XTRIM MINID``, exclusive ``XRANGE`` starts).
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterable, Iterator
from typing import Any

import redis

__all__ = [
    "CONSUMER_RETAINED_RECORDS_MAX",
    "JOURNAL_PAGE_RECORDS_MAX",
    "PAYLOAD_FIELD",
    "SEQ_MAX",
    "SNAPSHOT_CHUNK_ORPHAN_TTL_S",
    "SNAPSHOT_LOAD_ATTEMPTS_MAX",
    "SNAPSHOT_PIPELINE_CHUNKS",
    "FencedError",
    "JournalCorrupt",
    "JournalError",
    "JournalUnavailable",
    "ShardJournal",
    "head_seq",
    "seq_from_entry_id",
    "shard_key",
]

# Records fetched per XRANGE round trip: large enough that replaying a long
# tail is not dominated by round trips, small enough that one reply (records
# are small) stays far below Redis' output buffer limits and does not block
# the server for long.
JOURNAL_PAGE_RECORDS_MAX = 1000

# Snapshot chunks sent (or fetched) per pipeline round trip. Callers split
# snapshots into chunks of roughly a megabyte, so 16 keeps each round trip
# around 16 MB: enough to amortise latency without building a giant request
# or reply buffer on either side.
SNAPSHOT_PIPELINE_CHUNKS = 16

# Chunks are written with this expiry and only made persistent when the
# pointer flips to them, so a writer that dies half way through a snapshot
# leaves no permanent garbage. A day is far longer than writing even a
# 200 MB snapshot takes, so a slow but live writer never loses its chunks.
SNAPSHOT_CHUNK_ORPHAN_TTL_S = 24 * 60 * 60

# A reader can race with a snapshot flip that deletes the chunks it is
# reading; it then starts over from the new pointer. Flips are rare (one per
# snapshot interval), so a few attempts suffice and a bound keeps a
# pathological writer from starving the reader forever.
SNAPSHOT_LOAD_ATTEMPTS_MAX = 5

# Records a snapshot flip keeps, at most, at or before the snapshot's seq for
# registered consumers that have not acknowledged them; older ones are trimmed
# and such a consumer finds itself lagging (it resynchronises from the snapshot).
# A record is one batch: under unary load a record holds one or two operations,
# a few hundred bytes, so 100,000 records are tens of MB per shard and, at the
# hundreds of records a second a shard journals, minutes to hours of a stopped
# consumer. The count does not bound bytes: records of large Batch calls are
# larger (about 100 bytes per operation), which is why the bound is not higher.
CONSUMER_RETAINED_RECORDS_MAX = 100_000

# Sequence numbers travel through Lua, whose numbers are doubles: above
# 2**53 comparisons would silently lose precision.
SEQ_MAX = 2**53 - 1

# Stream field holding a record's payload; one byte keeps per-entry overhead
# minimal.
PAYLOAD_FIELD = b"d"

# Prefixes of the error replies raised by the Lua scripts below.
_FENCED_CODE = "FENCED"
_CORRUPT_CODE = "CORRUPT"
_SUPERSEDED_CODE = "SUPERSEDED"

# KEYS: epoch, journal, snapshot pointer.
# ARGV: writer epoch, seq, payload.
# The seq must be exactly the next one: a Redis restarted without its last writes
# (appendfsync everysec) would otherwise take a record after a gap that replay
# refuses; refused, the shard drops its state and recovers from what Redis has.
# The snapshot seq is checked too because the stream may be absent (never
# written, or lost) while a snapshot already covers higher seqs.
_APPEND_SCRIPT = """
local stored_epoch = redis.call('GET', KEYS[1])
if stored_epoch ~= ARGV[1] then
  return redis.error_reply('FENCED shard epoch is '
    .. (stored_epoch or 'unclaimed') .. ', writer holds ' .. ARGV[1])
end
local seq = tonumber(ARGV[2])
local high_seq = tonumber(redis.call('HGET', KEYS[3], 'seq') or '0')
local top = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
if #top > 0 then
  high_seq = math.max(high_seq, tonumber(string.match(top[1][1], '^(%d+)')))
end
if seq ~= high_seq + 1 then
  return redis.error_reply('CORRUPT seq ' .. ARGV[2]
    .. ' does not follow the last journaled seq ' .. tostring(high_seq))
end
local added = redis.pcall('XADD', KEYS[2], ARGV[2] .. '-0', 'd', ARGV[3])
if type(added) == 'table' and added.err then
  if string.find(added.err, 'equal or smaller', 1, true) then
    return redis.error_reply('CORRUPT ' .. added.err)
  end
  return redis.error_reply(added.err)
end
return added
"""

# KEYS: epoch, journal, snapshot pointer, registered consumers.
# ARGV: writer epoch, snapshot seq, snapshot id, chunk count, records retained max.
# Every check runs before the first write because Lua scripts are not rolled
# back when they fail half way. The trim keeps every record after the lowest
# seq a registered consumer acknowledged (a value that is not a number counts
# as 0), but never more than ARGV[5] records at or before the snapshot's seq.
_FLIP_SNAPSHOT_SCRIPT = """
local stored_epoch = redis.call('GET', KEYS[1])
if stored_epoch ~= ARGV[1] then
  return redis.error_reply('FENCED shard epoch is '
    .. (stored_epoch or 'unclaimed') .. ', writer holds ' .. ARGV[1])
end
local new_seq = tonumber(ARGV[2])
local current = redis.call('HMGET', KEYS[3], 'seq', 'chunk_count', 'id')
local current_seq = tonumber(current[1] or '0')
if new_seq < current_seq then
  return redis.error_reply('SUPERSEDED snapshot at seq ' .. tostring(current_seq)
    .. ' is newer than ' .. ARGV[2])
end
local high_seq = current_seq
local top = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
if #top > 0 then
  high_seq = math.max(high_seq, tonumber(string.match(top[1][1], '^(%d+)')))
end
if new_seq > high_seq then
  return redis.error_reply('CORRUPT snapshot seq ' .. ARGV[2]
    .. ' is beyond the last journaled seq ' .. tostring(high_seq))
end
local trim_to = new_seq
for _, acked in ipairs(redis.call('HVALS', KEYS[4])) do
  trim_to = math.min(trim_to, tonumber(acked) or 0)
end
trim_to = math.max(trim_to, new_seq - tonumber(ARGV[5]))
local chunk_count = tonumber(ARGV[4])
local new_base = KEYS[3] .. ':' .. ARGV[3] .. ':'
for index = 0, chunk_count - 1 do
  if redis.call('PTTL', new_base .. index) == -2 then
    return redis.error_reply('CORRUPT snapshot ' .. ARGV[3] .. ' chunk '
      .. index .. ' is missing')
  end
end
for index = 0, chunk_count - 1 do
  redis.call('PERSIST', new_base .. index)
end
if current[3] and current[3] ~= ARGV[3] then
  local old_base = KEYS[3] .. ':' .. current[3] .. ':'
  for index = 0, tonumber(current[2] or '0') - 1 do
    redis.call('UNLINK', old_base .. index)
  end
end
redis.call('HSET', KEYS[3], 'seq', ARGV[2], 'chunk_count', ARGV[4],
  'id', ARGV[3])
redis.call('XTRIM', KEYS[2], 'MINID', tostring(trim_to + 1) .. '-0')
return 1
"""


class JournalError(Exception):
    """Base class of every error raised by the journal."""


class FencedError(JournalError):
    """A newer incarnation of this shard claimed the epoch; this writer must stop."""


class JournalUnavailable(JournalError):
    """Redis could not be reached or timed out; whether the write happened is unknown."""


class JournalCorrupt(JournalError):
    """An invariant of the journal broke, e.g. a sequence number did not increase."""


class _SnapshotSuperseded(JournalError):
    """A snapshot at a higher seq already exists; the new one is redundant."""


@contextlib.contextmanager
def _translated_errors(action: str) -> Iterator[None]:
    """Turn redis-py exceptions raised inside the block into journal errors."""
    try:
        yield
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as error:
        raise JournalUnavailable(f"{action}: {error}") from error
    except redis.exceptions.ResponseError as error:
        raise _error_from_reply(action, error) from error
    except redis.exceptions.RedisError as error:
        raise JournalError(f"{action}: {error}") from error


def _error_from_reply(action: str, error: redis.exceptions.ResponseError) -> JournalError:
    """Map an error reply (possibly raised by one of our scripts) to its class."""
    message = str(error)
    if message.startswith(_FENCED_CODE):
        return FencedError(f"{action}: {message}")
    if message.startswith(_CORRUPT_CODE):
        return JournalCorrupt(f"{action}: {message}")
    if message.startswith(_SUPERSEDED_CODE):
        return _SnapshotSuperseded(f"{action}: {message}")
    return JournalError(f"{action}: {message}")


def seq_from_entry_id(entry_id: bytes | str) -> int:
    """Return the seq encoded in a stream entry id ``<seq>-0``."""
    if isinstance(entry_id, str):
        entry_id = entry_id.encode()
    # Redis names the two halves "milliseconds" and "sequence"; the journal
    # stores its seq in the first half and always 0 in the second.
    seq_part, separator, suffix = entry_id.partition(b"-")
    if not separator or suffix != b"0" or not seq_part.isdigit():
        raise JournalCorrupt(f"unexpected journal entry id {entry_id!r}")
    return int(seq_part)


def shard_key(key_prefix: str, shard_index: int, name: str) -> str:
    """One of a shard's keys (``epoch``, ``journal``, ``snapshot``, ``consumers``),
    under the hash tag they all share."""
    return f"{{{key_prefix}:shard:{shard_index}}}:{name}"


def head_seq(newest_entries: list, snapshot_seq: bytes | str | None) -> int:
    """The highest journaled seq, from the newest stream entry (an XREVRANGE COUNT 1
    reply) and the snapshot pointer's seq: a snapshot may have trimmed the stream empty."""
    journal_seq = seq_from_entry_id(newest_entries[0][0]) if newest_entries else 0
    return max(journal_seq, _as_int(snapshot_seq))


def _as_int(value: bytes | str | None) -> int:
    """Decode an integer reply, treating a missing value as 0."""
    return 0 if value is None else int(value)


def _check_seq_range(seq: int, *, lowest: int) -> None:
    """Reject seqs that are not integers within the range Lua handles exactly."""
    if isinstance(seq, bool) or not isinstance(seq, int):
        raise TypeError(f"seq must be an int, got {type(seq).__name__}")
    if seq > SEQ_MAX:
        raise ValueError(f"seq {seq} exceeds SEQ_MAX ({SEQ_MAX})")
    if seq < lowest:
        raise JournalCorrupt(f"seq {seq} is below the lowest valid seq {lowest}")


def _check_epoch(epoch: int) -> None:
    """Reject epochs that claim_epoch could never have returned."""
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1:
        raise ValueError(f"epoch must be a positive int, got {epoch!r}")


def _batched(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Yield consecutive lists of at most ``size`` items."""
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class ShardJournal:
    """The Redis journal, snapshots and epoch fence of one shard.

    A shard incarnation calls :meth:`claim_epoch` once, then passes the
    returned epoch to every :meth:`append` and :meth:`write_snapshot`; as soon
    as a newer incarnation claims the epoch, the older one's writes fail with
    :class:`FencedError` and change nothing.

    The client must return raw bytes (``decode_responses=False``) because
    payloads and snapshot chunks are arbitrary binary data.
    """

    def __init__(
        self, client: "redis.Redis", shard_index: int, *, key_prefix: str = "loyalty"
    ) -> None:
        """Bind the journal of shard ``shard_index`` under ``key_prefix``."""
        if isinstance(shard_index, bool) or not isinstance(shard_index, int) or shard_index < 0:
            raise ValueError(f"shard_index must be a non-negative int, got {shard_index!r}")
        if not key_prefix or any(character in key_prefix for character in "{}"):
            raise ValueError(f"key_prefix must be non-empty without braces, got {key_prefix!r}")
        connection_kwargs = getattr(client, "get_connection_kwargs", dict)()
        if connection_kwargs.get("decode_responses"):
            raise ValueError("the journal needs a client created with decode_responses=False")
        self._client = client
        self._shard_index = shard_index
        self._epoch_key = shard_key(key_prefix, shard_index, "epoch")
        self._journal_key = shard_key(key_prefix, shard_index, "journal")
        self._snapshot_key = shard_key(key_prefix, shard_index, "snapshot")
        self._consumers_key = shard_key(key_prefix, shard_index, "consumers")
        self._append_script = client.register_script(_APPEND_SCRIPT)
        self._flip_snapshot_script = client.register_script(_FLIP_SNAPSHOT_SCRIPT)

    @property
    def shard_index(self) -> int:
        """The index of the shard this journal belongs to."""
        return self._shard_index

    @property
    def journal_key(self) -> str:
        """The stream key of this shard's journal (entry ids ``<seq>-0``)."""
        return self._journal_key

    @property
    def snapshot_key(self) -> str:
        """The key of this shard's snapshot pointer (a hash with field ``seq``)."""
        return self._snapshot_key

    @property
    def consumers_key(self) -> str:
        """The hash of this shard's registered consumers: name -> acknowledged seq."""
        return self._consumers_key

    def claim_epoch(self) -> int:
        """Start a new incarnation: bump the epoch and return it.

        Every writer holding an earlier epoch is fenced from now on.
        """
        with _translated_errors(f"claim epoch of shard {self._shard_index}"):
            return int(self._client.incr(self._epoch_key))

    def append(self, epoch: int, seq: int, payload: bytes) -> None:
        """Journal ``payload`` as record ``seq``, atomically fenced by ``epoch``.

        Raises FencedError if ``epoch`` is no longer current, JournalCorrupt if
        ``seq`` is not exactly the next seq after every journaled or snapshotted one (nothing
        is written in either case) and JournalUnavailable if Redis could not be
        reached, in which case the record may or may not have been written.
        """
        _check_epoch(epoch)
        _check_seq_range(seq, lowest=1)
        keys = [self._epoch_key, self._journal_key, self._snapshot_key]
        with _translated_errors(f"append seq {seq} to shard {self._shard_index}"):
            self._append_script(keys=keys, args=[str(epoch), str(seq), bytes(payload)])

    def last_seq(self) -> int:
        """Return the highest journaled seq, else the snapshot's seq, else 0."""
        with _translated_errors(f"read last seq of shard {self._shard_index}"):
            pipeline = self._client.pipeline(transaction=False)
            pipeline.xrevrange(self._journal_key, count=1)
            pipeline.hget(self._snapshot_key, "seq")
            newest_entries, snapshot_seq = pipeline.execute()
        return head_seq(newest_entries, snapshot_seq)

    def read_after(
        self, seq: int, *, page_size: int = JOURNAL_PAGE_RECORDS_MAX
    ) -> Iterator[tuple[int, bytes]]:
        """Yield every ``(seq, payload)`` journaled after ``seq``, in order.

        Raises JournalCorrupt if records after ``seq`` were already folded into
        a snapshot (reading from there would silently skip them: load the
        snapshot and read after its seq instead), or if the journal's seqs are
        not strictly increasing.
        """
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
            raise ValueError(f"seq must be a non-negative int, got {seq!r}")
        if page_size < 1:
            raise ValueError(f"page_size must be at least 1, got {page_size}")
        return self._iterate_after(seq, page_size)

    def _iterate_after(self, seq: int, page_size: int) -> Iterator[tuple[int, bytes]]:
        """Generator behind :meth:`read_after`, so argument errors raise eagerly."""
        self._ensure_not_compacted_past(seq)
        previous_seq = seq
        start = f"({seq}-0"
        while True:
            page = self._read_page(start, page_size)
            for entry_id, fields in page:
                record_seq = seq_from_entry_id(entry_id)
                if record_seq <= previous_seq:
                    raise JournalCorrupt(
                        f"shard {self._shard_index}: journal seq {record_seq} "
                        f"follows seq {previous_seq}"
                    )
                yield record_seq, self._payload_of(record_seq, fields)
                previous_seq = record_seq
            if len(page) < page_size:
                return
            start = f"({previous_seq}-0"

    def _ensure_not_compacted_past(self, seq: int) -> None:
        """Refuse to read from a seq whose successors live only in the snapshot."""
        with _translated_errors(f"read snapshot seq of shard {self._shard_index}"):
            snapshot_seq = _as_int(self._client.hget(self._snapshot_key, "seq"))
        if seq < snapshot_seq:
            raise JournalCorrupt(
                f"shard {self._shard_index}: records after seq {seq} up to "
                f"{snapshot_seq} were compacted into the snapshot; load it first"
            )

    def _read_page(self, start: str, page_size: int) -> list[tuple[bytes, dict]]:
        """Fetch one XRANGE page of the journal beginning at ``start``."""
        with _translated_errors(f"read journal of shard {self._shard_index}"):
            return self._client.xrange(self._journal_key, min=start, max="+", count=page_size)

    def _payload_of(self, record_seq: int, fields: dict) -> bytes:
        """Extract the payload field of one stream entry."""
        payload = fields.get(PAYLOAD_FIELD)
        if payload is None:
            raise JournalCorrupt(
                f"shard {self._shard_index}: journal seq {record_seq} has no payload field"
            )
        return payload

    def write_snapshot(self, epoch: int, seq: int, chunks: Iterable[bytes]) -> None:
        """Store the state as of journal seq ``seq`` and trim the journal up to it.

        Chunks are written one key each, a pipelined group at a time, under a
        fresh snapshot id; one fenced script then points the shard at the new
        snapshot, deletes the previous one and trims records ``<= seq`` from
        the journal, but for those a registered consumer has not acknowledged
        (at most CONSUMER_RETAINED_RECORDS_MAX of them). A snapshot older than the current one is discarded
        silently (the newer one already covers it). Raises FencedError, after
        deleting the chunks it wrote, if ``epoch`` is no longer current.
        """
        _check_epoch(epoch)
        _check_seq_range(seq, lowest=0)
        # Cheap early exit: a fenced writer should not upload a large snapshot.
        self._ensure_epoch_current(epoch)
        snapshot_id = f"{epoch}-{seq}-{secrets.token_hex(4)}"
        chunk_count = self._write_chunks(snapshot_id, chunks)
        try:
            self._flip_snapshot(epoch, seq, snapshot_id, chunk_count)
        except (FencedError, JournalCorrupt, _SnapshotSuperseded) as error:
            # The pointer did not move, so these chunks are unreachable.
            self._delete_chunks_quietly(snapshot_id, chunk_count)
            if isinstance(error, _SnapshotSuperseded):
                return
            raise

    def _ensure_epoch_current(self, epoch: int) -> None:
        """Raise FencedError unless ``epoch`` is the shard's current epoch."""
        with _translated_errors(f"read epoch of shard {self._shard_index}"):
            stored_epoch = _as_int(self._client.get(self._epoch_key))
        if stored_epoch != epoch:
            raise FencedError(
                f"shard {self._shard_index}: epoch is {stored_epoch}, writer holds {epoch}"
            )

    def _chunk_key(self, snapshot_id: str, index: int) -> str:
        """Return the key of chunk ``index`` of snapshot ``snapshot_id``."""
        return f"{self._snapshot_key}:{snapshot_id}:{index}"

    def _write_chunks(self, snapshot_id: str, chunks: Iterable[bytes]) -> int:
        """Write the chunks (expiring until the flip) and return their count."""
        chunk_count = 0
        try:
            for group in _batched(chunks, SNAPSHOT_PIPELINE_CHUNKS):
                pipeline = self._client.pipeline(transaction=False)
                for chunk in group:
                    key = self._chunk_key(snapshot_id, chunk_count)
                    pipeline.set(key, bytes(chunk), ex=SNAPSHOT_CHUNK_ORPHAN_TTL_S)
                    chunk_count += 1
                with _translated_errors(f"write snapshot of shard {self._shard_index}"):
                    pipeline.execute()
        except JournalUnavailable:
            # Talking to an unreachable Redis again would only stall the caller
            # a second time; the chunks expire on their own.
            raise
        except BaseException:
            # Anything written so far can never be referenced; the expiry would
            # collect it eventually, but large snapshots are worth freeing now.
            self._delete_chunks_quietly(snapshot_id, chunk_count)
            raise
        return chunk_count

    def _flip_snapshot(self, epoch: int, seq: int, snapshot_id: str, chunk_count: int) -> None:
        """Run the fenced script that makes ``snapshot_id`` the current snapshot."""
        keys = [self._epoch_key, self._journal_key, self._snapshot_key, self._consumers_key]
        args = [str(epoch), str(seq), snapshot_id, str(chunk_count), str(CONSUMER_RETAINED_RECORDS_MAX)]
        with _translated_errors(f"publish snapshot of shard {self._shard_index}"):
            self._flip_snapshot_script(keys=keys, args=args)

    def _delete_chunks_quietly(self, snapshot_id: str, chunk_count: int) -> None:
        """Best-effort removal of unreferenced chunks; they expire anyway."""
        keys = [self._chunk_key(snapshot_id, index) for index in range(chunk_count)]
        try:
            for group in _batched(keys, SNAPSHOT_PIPELINE_CHUNKS):
                self._client.unlink(*group)
        except redis.exceptions.RedisError:
            pass

    def load_snapshot(self) -> tuple[int, list[bytes]] | None:
        """Return ``(seq, chunks)`` of the newest complete snapshot, or None."""
        for _ in range(SNAPSHOT_LOAD_ATTEMPTS_MAX):
            pointer = self._read_snapshot_pointer()
            if pointer is None:
                return None
            seq, chunk_count, snapshot_id = pointer
            chunks = self._read_chunks(snapshot_id, chunk_count)
            if chunks is not None:
                return seq, chunks
            if self._read_snapshot_pointer() == pointer:
                raise JournalCorrupt(
                    f"shard {self._shard_index}: snapshot {snapshot_id} is missing chunks"
                )
            # A newer snapshot replaced this one while it was being read.
        raise JournalError(
            f"shard {self._shard_index}: snapshot changed during "
            f"{SNAPSHOT_LOAD_ATTEMPTS_MAX} consecutive load attempts"
        )

    def _read_snapshot_pointer(self) -> tuple[int, int, str] | None:
        """Return ``(seq, chunk_count, id)`` of the current snapshot, or None."""
        with _translated_errors(f"read snapshot pointer of shard {self._shard_index}"):
            pointer = self._client.hgetall(self._snapshot_key)
        if not pointer:
            return None
        try:
            return (
                int(pointer[b"seq"]),
                int(pointer[b"chunk_count"]),
                pointer[b"id"].decode(),
            )
        except (KeyError, ValueError, UnicodeDecodeError) as error:
            raise JournalCorrupt(
                f"shard {self._shard_index}: malformed snapshot pointer {pointer!r}"
            ) from error

    def _read_chunks(self, snapshot_id: str, chunk_count: int) -> list[bytes] | None:
        """Fetch every chunk in order, or None if any of them is gone."""
        keys = [self._chunk_key(snapshot_id, index) for index in range(chunk_count)]
        chunks: list[bytes] = []
        for group in _batched(keys, SNAPSHOT_PIPELINE_CHUNKS):
            with _translated_errors(f"read snapshot of shard {self._shard_index}"):
                values = self._client.mget(group)
            if any(value is None for value in values):
                return None
            chunks.extend(values)
        return chunks

    def describe(self) -> dict[str, Any]:
        """Return a small dict of diagnostics about this shard's journal."""
        with _translated_errors(f"describe shard {self._shard_index}"):
            pipeline = self._client.pipeline(transaction=False)
            pipeline.get(self._epoch_key)
            pipeline.xlen(self._journal_key)
            pipeline.hgetall(self._snapshot_key)
            pipeline.xrevrange(self._journal_key, count=1)
            epoch, journal_length, pointer, newest_entries = pipeline.execute()
        snapshot_seq = _as_int(pointer.get(b"seq"))
        return {
            "shard_index": self._shard_index,
            "epoch": _as_int(epoch),
            "last_seq": head_seq(newest_entries, snapshot_seq),
            "snapshot_seq": snapshot_seq,
            "snapshot_chunk_count": _as_int(pointer.get(b"chunk_count")),
            "journal_length": int(journal_length),
        }
