"""Encoders and decoders, built once: batches, outcomes, journal records, snapshots.

Everything that crosses a process boundary (gateway -> shard over the shard's data
channel, shard -> Redis) is msgpack produced by msgspec, never pickled objects.
"""

from __future__ import annotations

from collections.abc import Iterator

import msgspec

from loyalty.actors.ledger.commands import Command
from loyalty.actors.ledger.members import MemberStore
from loyalty.actors.ledger.events import JournalRecord
from loyalty.actors.ledger.outcomes import Outcome
from loyalty.actors.ledger.state import Member

# A snapshot chunk holds this many members: about 1-3 MB of msgpack for typical
# members, small enough to SET without stalling Redis, large enough to keep the
# number of keys low for a million-member shard.
SNAPSHOT_MEMBERS_PER_CHUNK = 10_000

# 2: purchases kept for returns hold their lines as msgpack bytes.
# 3: the header carries the shard's campaign budget balances; members may carry cap
#    counters.
# 4: a member chunk is a map {member_id: cold entry} instead of an array of Members
#    (an entry is a Member's msgpack or its zstd compression, see
#    members.MemberStore), and the header carries the compression dictionaries, so
#    loading keeps members encoded and writing encodes only the decoded ones.
#    Formats 2 and 3 are still read.
SNAPSHOT_FORMAT_VERSION = 4
_SNAPSHOT_FORMATS_READ = (2, 3, 4)

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
    dictionaries: dict[int, bytes] = {}
    """Format 4: the zstd dictionaries member entries were compressed with, by id."""


_header_decoder = msgspec.msgpack.Decoder(SnapshotHeader)
_members_decoder = msgspec.msgpack.Decoder(list[Member])  # formats 2 and 3
_encoded_members_decoder = msgspec.msgpack.Decoder(dict[str, bytes])


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
    members: dict[str, bytes], dictionaries: dict[int, bytes], seq: int, now_ms: int, budgets: dict[str, int]
) -> Iterator[bytes]:
    """The shard state as of journal seq: a header chunk, then member chunks of
    {member_id: cold entry} (``MemberStore.frozen``)."""
    yield encode(SnapshotHeader(SNAPSHOT_FORMAT_VERSION, seq, now_ms, len(members), budgets, dictionaries))
    chunk: dict[str, bytes] = {}
    for member_id, encoded in members.items():
        chunk[member_id] = encoded
        if len(chunk) == SNAPSHOT_MEMBERS_PER_CHUNK:
            yield encode(chunk)
            chunk = {}
    if chunk:
        yield encode(chunk)


def load_snapshot_chunks(chunks: list[bytes], members: MemberStore) -> SnapshotHeader:
    """Load the members of a snapshot written by snapshot_chunks into an empty store;
    returns its header."""
    header = _header_decoder.decode(chunks[0])
    if header.format_version not in _SNAPSHOT_FORMATS_READ:
        raise ValueError(f"snapshot format {header.format_version} is not supported")
    for chunk in chunks[1:]:
        if header.format_version >= 4:
            members.load_encoded(_encoded_members_decoder.decode(chunk), header.dictionaries)
        else:
            for member in _members_decoder.decode(chunk):
                members[member.member_id] = member
            members.settle()
    if len(members) != header.member_count:
        raise ValueError(
            f"snapshot is incomplete: {len(members)} members of {header.member_count}"
        )
    return header
