"""The pure part of a journal consumer: what it is handed, where it stands, how far
behind it is, and the checks on what a read returned. No Redis, Ray or gRPC here.

A consumer's position on a shard is its *cursor*: the seq of the last record it
consumed there (0: none yet). The next record it needs is ``cursor + 1``; journal
seqs are gap-free, so a read that starts anywhere else means records were trimmed
before the consumer got them: the consumer is lagging on that shard.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import msgspec

from loyalty.actors.ledger.events import JournalRecord

# A consumer's name goes into Redis keys and hash fields; this keeps it readable in
# key listings and free of the braces that delimit a hash tag.
_NAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class ConsumedRecord(msgspec.Struct, frozen=True):
    """One journal record as a consumer receives it."""

    shard: int
    seq: int
    record: JournalRecord


class ShardLag(msgspec.Struct, frozen=True):
    """How far one consumer is behind one shard's journal."""

    shard: int
    head_seq: int
    """The shard's newest journaled (or snapshotted) seq."""
    acked_seq: int
    """The consumer's checkpointed cursor on the shard."""
    reported_seq: int | None
    """What the shard's consumers hash holds for it (a floor for trimming); None
    when the consumer is not registered there."""

    @property
    def lag_records(self) -> int:
        """Records journaled on the shard that the consumer has not committed."""
        return max(0, self.head_seq - self.acked_seq)


class Resynced(msgspec.Struct, frozen=True):
    """What :meth:`JournalConsumer.resync` did on one shard."""

    shard: int
    from_cursor: int
    to_seq: int
    """The snapshot seq the consumer now continues after."""

    @property
    def skipped_records(self) -> int:
        """Records the consumer never received as events (their effect is in the snapshot)."""
        return max(0, self.to_seq - self.from_cursor)


class ConsumerError(Exception):
    """Base class of the errors a journal consumer raises."""


class ConsumerLagging(ConsumerError):
    """Records after the consumer's cursor on ``shard`` were trimmed before it read
    them: the next record it needs, ``cursor + 1``, is older than ``first_retained_seq``."""

    def __init__(self, shard: int, cursor: int, first_retained_seq: int) -> None:
        super().__init__(
            f"shard {shard}: consumer cursor {cursor} is behind the journal, whose first "
            f"retained record is seq {first_retained_seq}; resync from the shard's snapshot"
        )
        self.shard = shard
        self.cursor = cursor
        self.first_retained_seq = first_retained_seq


class ConsumerConflict(ConsumerError):
    """The stored checkpoint is not the one this consumer object read from: another
    instance of the same consumer committed meanwhile. Nothing was written; start over
    from a fresh consumer object."""


def check_name(name: str) -> str:
    """Return ``name`` if it can name a consumer, else raise ValueError."""
    if not isinstance(name, str) or not _NAME_PATTERN.fullmatch(name):
        raise ValueError(f"a consumer name is 1-64 of A-Z a-z 0-9 _ . -, got {name!r}")
    return name


def first_gap(shard: int, cursor: int, seqs: list[int], snapshot_seq: int) -> ConsumerLagging | None:
    """The lag a read of ``shard`` after ``cursor`` shows, or None if it is gap-free.

    ``seqs`` are the seqs the read returned, in order; ``snapshot_seq`` is the shard's
    snapshot seq (0: none). With records, the first must be ``cursor + 1`` and each
    the next; without any, no snapshot may cover seqs after the cursor.
    """
    expected = cursor + 1
    for seq in seqs:
        if seq != expected:
            return ConsumerLagging(shard, cursor, seq)
        expected += 1
    if not seqs and snapshot_seq > cursor:
        return ConsumerLagging(shard, cursor, snapshot_seq + 1)
    return None


def decode_cursors(stored: Mapping[bytes | str, bytes | str], shard_count: int) -> dict[int, int]:
    """The cursor of every shard from a stored hash (field: shard index); absent: 0."""
    cursors = dict.fromkeys(range(shard_count), 0)
    for field, value in stored.items():
        shard = int(field)
        if shard in cursors:
            cursors[shard] = int(value)
    return cursors


def advanced_cursors(
    committed: Mapping[int, int], delivered: Mapping[int, int], requested: Mapping[int, int] | None
) -> dict[int, int]:
    """The cursors a commit stores: ``requested`` (every delivered cursor when None),
    each between what was committed and what was delivered, else ValueError."""
    chosen = dict(delivered if requested is None else requested)
    for shard, seq in chosen.items():
        if shard not in committed:
            raise ValueError(f"no shard {shard}")
        if not committed[shard] <= seq <= delivered[shard]:
            raise ValueError(
                f"shard {shard}: cursor {seq} is outside the committed {committed[shard]} "
                f"and delivered {delivered[shard]}"
            )
    return {**committed, **chosen}
