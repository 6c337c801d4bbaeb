"""The Redis shell of a journal consumer: reads the shards' journal streams from its
cursors, checkpoints them (with its own state, atomically), reports its progress to
the shards' consumers hashes, and resynchronises a lagging shard from its snapshot.
The package docstring describes the keys and the guarantees.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import msgspec
import redis

from loyalty.actors.consumers.progress import (
    ConsumedRecord,
    ConsumerConflict,
    ConsumerError,
    ConsumerLagging,
    Resynced,
    ShardLag,
    advanced_cursors,
    check_name,
    decode_cursors,
    first_gap,
)
from loyalty.actors.ledger import codec
from loyalty.actors.shard.journal import (
    JOURNAL_PAGE_RECORDS_MAX,
    PAYLOAD_FIELD,
    JournalCorrupt,
    ShardJournal,
    seq_from_entry_id,
)

__all__ = ["JournalConsumer"]

# KEYS: a shard's consumers hash. ARGV: consumer name, acknowledged seq.
# Only a registered consumer is updated (a late report never re-registers one that
# was unregistered), and never backwards (reports may arrive out of order).
_REPORT_SCRIPT = """
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current and (tonumber(current) or 0) < tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
return 0
"""

Extra = Callable[["redis.client.Pipeline"], None]
"""Queues the consumer's own state changes on the MULTI/EXEC pipeline of a commit."""

Rebuild = Callable[["redis.client.Pipeline", int, list[bytes]], None]
"""Queues the consumer's state rebuilt from a shard's snapshot ``(seq, chunks)``."""


class JournalConsumer:
    """One named consumer of every shard's journal.

    The object keeps two cursors per shard in memory: *delivered* (what :meth:`read`
    returned) and *committed* (what its checkpoint in Redis holds). A fresh object
    starts both at the stored checkpoint, so a consumer that crashed before
    committing gets the uncommitted records again.

    The client must return bytes (``decode_responses=False``); a blocking read needs a
    socket timeout longer than its ``block_s``. Redis errors propagate as redis-py
    exceptions.
    """

    def __init__(
        self, client: "redis.Redis", name: str, shard_count: int, *, key_prefix: str = "loyalty"
    ) -> None:
        """Bind consumer ``name`` of shards ``0 .. shard_count - 1`` under ``key_prefix``
        and load its checkpoint."""
        if isinstance(shard_count, bool) or not isinstance(shard_count, int) or shard_count < 1:
            raise ValueError(f"shard_count must be a positive int, got {shard_count!r}")
        self._client = client
        self._name = check_name(name)
        self._journals = [ShardJournal(client, shard, key_prefix=key_prefix) for shard in range(shard_count)]
        self._hash_tag = f"{{{key_prefix}:consumer:{name}}}"
        self._cursors_key = f"{self._hash_tag}:cursors"
        self._report_script = client.register_script(_REPORT_SCRIPT)
        self._committed = decode_cursors(client.hgetall(self._cursors_key), shard_count)
        self._delivered = dict(self._committed)

    @property
    def name(self) -> str:
        """The consumer's name: its field in the shards' consumers hashes."""
        return self._name

    @property
    def cursors_key(self) -> str:
        """The hash holding the checkpoint: field = shard index, value = cursor."""
        return self._cursors_key

    @property
    def delivered(self) -> dict[int, int]:
        """Per shard, the seq of the last record :meth:`read` returned (or the checkpoint)."""
        return dict(self._delivered)

    @property
    def committed(self) -> dict[int, int]:
        """Per shard, the cursor of the last commit this object made or loaded."""
        return dict(self._committed)

    def key(self, suffix: str) -> str:
        """A key for the consumer's own state, in the hash tag of its checkpoint, so a
        commit's ``extra`` can write it in the same MULTI/EXEC."""
        if not suffix or any(character in suffix for character in "{}"):
            raise ValueError(f"a key suffix is non-empty without braces, got {suffix!r}")
        return f"{self._hash_tag}:{suffix}"

    # ----------------------------------------------------------------- registration

    def register(self, *, start_at_head: bool = False) -> None:
        """Hold back trimming on every shard from the committed cursors on.

        With ``start_at_head`` a consumer that has no checkpoint yet starts after the
        shards' newest records instead of at the journals' beginnings.
        """
        if start_at_head and not self._client.exists(self._cursors_key):
            heads = {journal.shard_index: journal.last_seq() for journal in self._journals}
            self._write_checkpoint(self._committed, heads, None)
        pipeline = self._client.pipeline(transaction=False)
        for journal in self._journals:
            pipeline.hset(journal.consumers_key, self._name, self._committed[journal.shard_index])
        pipeline.execute()

    def unregister(self) -> None:
        """Stop holding back trimming: remove the consumer from every shard's hash.
        Its checkpoint stays (delete :attr:`cursors_key` to forget it)."""
        pipeline = self._client.pipeline(transaction=False)
        for journal in self._journals:
            pipeline.hdel(journal.consumers_key, self._name)
        pipeline.execute()

    # ----------------------------------------------------------------- reading

    def read(
        self, *, block_s: float | None = None, count: int = JOURNAL_PAGE_RECORDS_MAX
    ) -> list[ConsumedRecord]:
        """The records after the delivered cursors, in journal order per shard (shards
        in index order), at most ``count`` per shard; advances the delivered cursors.

        When no shard has one, waits up to ``block_s`` seconds for the next (None: does
        not wait) and returns [] if none came. Raises ConsumerLagging for the first
        shard whose next record was trimmed, delivering nothing.
        """
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count}")
        pipeline = self._client.pipeline(transaction=False)
        for journal in self._journals:
            start = f"({self._delivered[journal.shard_index]}-0"
            pipeline.xrange(journal.journal_key, min=start, max="+", count=count)
            pipeline.hget(journal.snapshot_key, "seq")
        replies = pipeline.execute()
        pages = {shard: replies[2 * shard] for shard in range(len(self._journals))}
        snapshot_seqs = {shard: int(replies[2 * shard + 1] or 0) for shard in range(len(self._journals))}
        if block_s is not None and not any(pages.values()):
            pages = self._wait(block_s, count)
        return self._deliver(pages, snapshot_seqs)

    def _wait(self, block_s: float, count: int) -> dict[int, list]:
        """One blocking XREAD over every shard's stream, after the delivered cursors."""
        streams = {journal.journal_key: f"{self._delivered[journal.shard_index]}-0" for journal in self._journals}
        shard_of = {journal.journal_key.encode(): journal.shard_index for journal in self._journals}
        replies = self._client.xread(streams, count=count, block=max(1, round(block_s * 1000))) or []
        pages: dict[int, list] = {shard: [] for shard in range(len(self._journals))}
        for key, entries in replies:
            pages[shard_of[key if isinstance(key, bytes) else key.encode()]] = entries
        # A snapshot that trimmed past a cursor during the wait shows as a gap.
        return pages

    def _deliver(self, pages: Mapping[int, list], snapshot_seqs: Mapping[int, int]) -> list[ConsumedRecord]:
        """Check every page for gaps, decode it and advance the delivered cursors."""
        seqs = {shard: [seq_from_entry_id(entry_id) for entry_id, _ in page] for shard, page in pages.items()}
        for shard in sorted(pages):
            lagging = first_gap(shard, self._delivered[shard], seqs[shard], snapshot_seqs.get(shard, 0))
            if lagging is not None:
                raise lagging
        delivered: list[ConsumedRecord] = []
        for shard in sorted(pages):
            for (entry_id, fields), seq in zip(pages[shard], seqs[shard]):
                delivered.append(ConsumedRecord(shard, seq, _decode(shard, seq, fields)))
            if seqs[shard]:
                self._delivered[shard] = seqs[shard][-1]
        return delivered

    # ----------------------------------------------------------------- committing

    def commit(self, cursors: Mapping[int, int] | None = None, *, extra: Extra | None = None) -> None:
        """Checkpoint ``cursors`` (default: every delivered cursor) and run ``extra`` on
        the same MULTI/EXEC pipeline, so the consumer's state changes and its cursors
        are stored together or not at all.

        ``extra`` must only queue writes to keys from :meth:`key`. Raises
        ConsumerConflict, writing nothing, if the stored checkpoint moved since this
        object loaded or committed it (another instance of the consumer committed).
        The shards' consumers hashes are told the new cursors afterwards; if that
        fails, the commit stands and the next one reports again.
        """
        chosen = advanced_cursors(self._committed, self._delivered, cursors)
        self._write_checkpoint(self._committed, chosen, extra)
        self._report(chosen)

    def _write_checkpoint(self, expected: Mapping[int, int], cursors: Mapping[int, int], extra: Extra | None) -> None:
        """Store ``cursors`` (and ``extra``) if the checkpoint still is ``expected``."""
        with self._client.pipeline(transaction=True) as pipeline:
            try:
                pipeline.watch(self._cursors_key)
                stored = decode_cursors(pipeline.hgetall(self._cursors_key), len(self._journals))
                if stored != dict(expected):
                    raise ConsumerConflict(
                        f"consumer {self._name}: checkpoint is {stored}, this consumer holds {dict(expected)}"
                    )
                pipeline.multi()
                if extra is not None:
                    extra(pipeline)
                pipeline.hset(self._cursors_key, mapping={str(shard): seq for shard, seq in cursors.items()})
                pipeline.execute()
            except redis.exceptions.WatchError as error:
                raise ConsumerConflict(f"consumer {self._name}: checkpoint changed while committing") from error
        self._committed = dict(cursors)
        self._delivered = {shard: max(seq, cursors[shard]) for shard, seq in self._delivered.items()}

    def _report(self, cursors: Mapping[int, int]) -> None:
        """Tell each shard how far the consumer got (if it is registered there)."""
        pipeline = self._client.pipeline(transaction=False)
        for journal in self._journals:
            self._report_script(
                keys=[journal.consumers_key], args=[self._name, cursors[journal.shard_index]], client=pipeline
            )
        pipeline.execute()

    # ----------------------------------------------------------------- lagging

    def resync(self, shard: int, *, rebuild: Rebuild | None = None) -> Resynced:
        """Continue on ``shard`` after its newest snapshot: ``rebuild`` queues the
        consumer's state rebuilt from the snapshot's ``(seq, chunks)`` on the commit's
        pipeline, and the cursor moves to the snapshot seq in the same MULTI/EXEC.

        The records between the old cursor and the snapshot seq are never delivered
        (their effect is in the snapshot). Raises ConsumerError if the shard has no
        snapshot, ConsumerConflict as :meth:`commit` does.
        """
        snapshot = self._journals[shard].load_snapshot()
        if snapshot is None:
            raise ConsumerError(f"shard {shard}: no snapshot to resynchronise from")
        seq, chunks = snapshot
        from_cursor = self._committed[shard]
        if seq <= from_cursor:
            return Resynced(shard, from_cursor, from_cursor)
        cursors = {**self._committed, shard: seq}
        extra = None if rebuild is None else (lambda pipeline: rebuild(pipeline, seq, chunks))
        self._write_checkpoint(self._committed, cursors, extra)
        self._delivered[shard] = seq
        self._report(cursors)
        return Resynced(shard, from_cursor, seq)

    def lag(self) -> tuple[ShardLag, ...]:
        """Per shard: the journal's head seq, the consumer's checkpointed seq, what the
        shard's consumers hash holds for it, and the lag in records."""
        pipeline = self._client.pipeline(transaction=False)
        pipeline.hgetall(self._cursors_key)
        for journal in self._journals:
            pipeline.xrevrange(journal.journal_key, count=1)
            pipeline.hget(journal.snapshot_key, "seq")
            pipeline.hget(journal.consumers_key, self._name)
        stored, *replies = pipeline.execute()
        acked = decode_cursors(stored, len(self._journals))
        lags = []
        for shard in range(len(self._journals)):
            newest, snapshot_seq, reported = replies[3 * shard : 3 * shard + 3]
            head = max(seq_from_entry_id(newest[0][0]) if newest else 0, int(snapshot_seq or 0))
            lags.append(ShardLag(shard, head, acked[shard], None if reported is None else int(reported)))
        return tuple(lags)



def _decode(shard: int, seq: int, fields: Mapping[bytes, bytes]) -> "codec.JournalRecord":
    """The JournalRecord of one stream entry, checked against its seq."""
    try:
        record = codec.decode_record(fields[PAYLOAD_FIELD])
    except (KeyError, msgspec.DecodeError) as error:
        raise JournalCorrupt(f"shard {shard}: journal seq {seq} is not a journal record: {error}") from error
    if record.seq != seq:
        raise JournalCorrupt(f"shard {shard}: journal entry {seq} holds record seq {record.seq}")
    return record
