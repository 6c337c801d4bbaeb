"""A shard's core: a Ledger, its journal sequence and clock, applied a batch at a time.

``apply_batch`` returns the batch's outcomes and the journal record that must be
durable before any outcome is shown to anyone. ``replay`` applies a record read back
from a journal. Both are pure: the caller supplies the time.
"""

from __future__ import annotations

import msgspec

from loyalty.actors.ledger import codec
from loyalty.actors.ledger.commands import Command
from loyalty.actors.ledger.events import Event, JournalRecord
from loyalty.actors.ledger.ledger import Ledger
from loyalty.actors.ledger.program import CompiledProgram


class ShardCore:
    """One shard's state machine with its journal position."""

    def __init__(self, program: CompiledProgram) -> None:
        self.ledger = Ledger(program)
        self.seq = 0
        """Sequence number of the last journal record applied."""
        self.now_ms = 0
        """The shard clock: never goes backwards, whatever the wall clock does."""

    def apply_batch(self, commands: list[Command], now_ms: int) -> tuple[list[bytes], JournalRecord | None]:
        """Apply commands in order. Returns encoded outcomes and the record to journal
        (None when the batch changed nothing, e.g. only reads)."""
        self.now_ms = max(self.now_ms, now_ms)
        events: list[Event] = []
        outcomes = [self.ledger.execute(command, self.now_ms, events) for command in commands]
        if not events:
            return outcomes, None
        self.seq += 1
        return outcomes, JournalRecord(self.seq, self.now_ms, tuple(events))

    def replay(self, record: JournalRecord) -> None:
        """Apply a journaled record during recovery."""
        if record.seq != self.seq + 1:
            raise ValueError(f"journal gap: record {record.seq} after {self.seq}")
        for event in record.events:
            self.ledger.apply(event)
        self.seq = record.seq
        self.now_ms = max(self.now_ms, record.now_ms)

    def snapshot_chunks(self):
        """The state as snapshot chunks (see codec.snapshot_chunks)."""
        return codec.snapshot_chunks(self.ledger.members, self.seq, self.now_ms)

    def load_snapshot(self, chunks: list[bytes]) -> None:
        """Replace the state with a snapshot's."""
        header, members = codec.load_snapshot_chunks(chunks)
        self.ledger.members = members
        self.seq = header.seq
        self.now_ms = header.now_ms

    def state_bytes(self) -> bytes:
        """The whole state, encoded: equal bytes mean equal states (for tests)."""
        return msgspec.msgpack.encode((self.seq, self.ledger.members))
