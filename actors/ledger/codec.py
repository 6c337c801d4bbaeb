"""Encoders and decoders, built once: batches, outcomes, journal records, snapshots.

Everything that crosses a process boundary (gateway -> shard over Ray, shard ->
Redis) is msgpack produced by msgspec, never pickled objects.
"""

from __future__ import annotations

from collections.abc import Iterator

import msgspec

from loyalty.actors.ledger.commands import Command
from loyalty.actors.ledger.events import JournalRecord
from loyalty.actors.ledger.outcomes import Outcome
from loyalty.actors.ledger.state import Member

# A snapshot chunk holds this many members: about 1-3 MB of msgpack for typical
# members, small enough to SET without stalling Redis, large enough to keep the
# number of keys low for a million-member shard.
SNAPSHOT_MEMBERS_PER_CHUNK = 10_000

# 2: purchases kept for returns hold their lines as msgpack bytes.
# 3: the header carries the shard's campaign budget balances; members may carry cap
#    counters. Format 2 snapshots are still read (no budgets, no counters).
SNAPSHOT_FORMAT_VERSION = 3
_SNAPSHOT_FORMATS_READ = (2, 3)

_encoder = msgspec.msgpack.Encoder()
encode = _encoder.encode

_commands_decoder = msgspec.msgpack.Decoder(list[Command])
_outcomes_decoder = msgspec.msgpack.Decoder(list[Outcome])
_outcome_decoder = msgspec.msgpack.Decoder(Outcome)
_record_decoder = msgspec.msgpack.Decoder(JournalRecord)


class SnapshotHeader(msgspec.Struct, frozen=True, array_like=True):
    """Chunk 0 of every snapshot."""

    format_version: int
    seq: int
    now_ms: int
    member_count: int
    budgets: dict[str, int] = {}
    """Campaign budget points the shard holds, unspent, by budget key."""


_header_decoder = msgspec.msgpack.Decoder(SnapshotHeader)
_members_decoder = msgspec.msgpack.Decoder(list[Member])


def encode_commands(commands: list[Command]) -> bytes:
    """One batch of commands, as sent to a shard."""
    return encode(commands)


def decode_commands(payload: bytes) -> list[Command]:
    """A batch of commands; raises msgspec.ValidationError on a malformed batch."""
    return _commands_decoder.decode(payload)


def encode_outcomes(outcomes: list[bytes]) -> bytes:
    """Already-encoded outcomes joined into one msgpack array without re-encoding."""
    return encode([msgspec.Raw(outcome) for outcome in outcomes])


def decode_outcomes(payload: bytes) -> list[Outcome]:
    """The outcomes of one batch, in order."""
    return _outcomes_decoder.decode(payload)


def decode_outcome(payload: bytes) -> Outcome:
    """One encoded outcome."""
    return _outcome_decoder.decode(payload)


def encode_record(record: JournalRecord) -> bytes:
    """A journal record as appended to Redis."""
    return encode(record)


def decode_record(payload: bytes) -> JournalRecord:
    """A journal record read back from Redis."""
    return _record_decoder.decode(payload)


def snapshot_chunks(
    members: dict[str, Member], seq: int, now_ms: int, budgets: dict[str, int] | None = None
) -> Iterator[bytes]:
    """The shard state as of journal seq: a header chunk, then member chunks."""
    yield encode(SnapshotHeader(SNAPSHOT_FORMAT_VERSION, seq, now_ms, len(members), dict(budgets or {})))
    batch: list[Member] = []
    for member in members.values():
        batch.append(member)
        if len(batch) == SNAPSHOT_MEMBERS_PER_CHUNK:
            yield encode(batch)
            batch = []
    if batch:
        yield encode(batch)


def load_snapshot_chunks(chunks: list[bytes]) -> tuple[SnapshotHeader, dict[str, Member]]:
    """Rebuild the state written by snapshot_chunks."""
    header = _header_decoder.decode(chunks[0])
    if header.format_version not in _SNAPSHOT_FORMATS_READ:
        raise ValueError(f"snapshot format {header.format_version} is not supported")
    members: dict[str, Member] = {}
    for chunk in chunks[1:]:
        for member in _members_decoder.decode(chunk):
            members[member.member_id] = member
    if len(members) != header.member_count:
        raise ValueError(
            f"snapshot is incomplete: {len(members)} members of {header.member_count}"
        )
    return header, members
