"""A shard's core: a Ledger, its journal sequence and clock, applied a batch at a time.

``apply_batch`` returns the batch's outcomes and the journal record that must be
durable before any outcome is shown to anyone; the record carries the balance after
each event that changes one, for journal consumers. ``replay`` applies a record read
back from a journal. Both are pure: the caller supplies the time (and, for budgeted
rules, the budget owner).

Rules are installed between batches (``install_rules``); a whole batch is evaluated
with one version, and every earn records that version. Campaign budgets are held per
shard in chunks leased from their owner (``BudgetLeased`` events, journaled in the
batch that leased them) and given back with ``return_budgets``.
"""

from __future__ import annotations

import msgspec

from loyalty.actors.ledger import codec
from loyalty.actors.ledger import events as e
from loyalty.actors.ledger.commands import Command
from loyalty.actors.ledger.events import Event, JournalRecord
from loyalty.actors.ledger.ledger import Ledger
from loyalty.actors.ledger.members import COMPRESS_AFTER_DEFAULT, HOT_MEMBERS_DEFAULT, MemberStore
from loyalty.actors.ledger.outcomes import BalanceView
from loyalty.actors.ledger.program import CompiledProgram
from loyalty.actors.ledger.rules.budget import BudgetSource
from loyalty.actors.ledger.rules.compiler import CompiledRules


class ShardCore:
    """One shard's state machine with its journal position."""

    def __init__(
        self,
        program: CompiledProgram,
        hot_members: int = HOT_MEMBERS_DEFAULT,
        compress_after: int = COMPRESS_AFTER_DEFAULT,
    ) -> None:
        self.ledger = Ledger(program)
        self.ledger.members = MemberStore(hot_members, compress_after)
        """Members, most kept encoded (and compressed once ``compress_after`` are);
        at most ``hot_members`` stay decoded between batches (see members.MemberStore)."""
        self.seq = 0
        """Sequence number of the last journal record applied."""
        self.now_ms = 0
        """The shard clock: never goes backwards, whatever the wall clock does."""

    def install_rules(self, compiled: CompiledRules | None) -> None:
        """Evaluate earns from the next batch on with these rules (None: the base
        program only). Call between batches."""
        self.ledger.rules = compiled

    @property
    def rules_version(self) -> int:
        """The installed rule-set version (0 when none)."""
        return self.ledger.rules.version if self.ledger.rules is not None else 0

    def apply_batch(
        self, commands: list[Command], now_ms: int, budget: BudgetSource | None = None
    ) -> tuple[list[bytes], JournalRecord | None]:
        """Apply commands in order. Returns encoded outcomes and the record to journal
        (None when the batch changed nothing, e.g. only reads). ``budget`` is asked for
        campaign budget an earn needs beyond what the shard holds."""
        self.now_ms = max(self.now_ms, now_ms)
        events: list[Event] = []
        balances: list[BalanceView | None] = []
        self.ledger.budget_source = budget
        self.ledger.balances = balances
        try:
            outcomes = [self.ledger.execute(command, self.now_ms, events) for command in commands]
        finally:
            self.ledger.budget_source = None
            self.ledger.balances = None
            self.ledger.members.settle()
        if not events:
            return outcomes, None
        assert len(balances) == len(events), "a balance for every event"
        self.seq += 1
        return outcomes, JournalRecord(self.seq, self.now_ms, tuple(events), tuple(balances))

    def return_budgets(
        self, keep: set[str], now_ms: int | None = None
    ) -> tuple[JournalRecord | None, dict[str, int]]:
        """Zero every local budget balance whose key is not in ``keep``. Returns the
        record to journal (None: nothing to return) and {budget key: points}. Journal
        the record first and give the points back only after that succeeded: a crash
        in between loses them (a budget is never overspent, at worst underspent).
        ``now_ms`` moves the shard clock first (None: the time of the last batch)."""
        returned = {key: points for key, points in self.ledger.budgets.items() if points and key not in keep}
        if not returned:
            return None, {}
        if now_ms is not None:
            self.now_ms = max(self.now_ms, now_ms)
        events = [e.BudgetReturned("", self.now_ms, budget_key=key, points=points) for key, points in returned.items()]
        for event in events:
            self.ledger.apply(event)
        self.ledger.members.settle()
        self.seq += 1
        return JournalRecord(self.seq, self.now_ms, tuple(events)), returned

    def budget_balances(self) -> dict[str, int]:
        """Campaign budget points this shard holds, unspent, by budget key."""
        return {key: points for key, points in self.ledger.budgets.items() if points}

    def replay(self, record: JournalRecord) -> None:
        """Apply a journaled record during recovery."""
        if record.seq != self.seq + 1:
            raise ValueError(f"journal gap: record {record.seq} after {self.seq}")
        for event in record.events:
            self.ledger.apply(event)
        self.ledger.members.settle()
        self.seq = record.seq
        self.now_ms = max(self.now_ms, record.now_ms)

    def snapshot_chunks(self):
        """The state as of now as snapshot chunks (see codec.snapshot_chunks) that
        later batches do not change, so they can be written while the shard goes on
        serving: costs a copy of the member index and encoding the decoded members,
        now; the chunks are built as they are consumed."""
        members, dictionaries = self.ledger.members.frozen()
        return codec.snapshot_chunks(members, dictionaries, self.seq, self.now_ms, self.budget_balances())

    def load_snapshot(self, chunks: list[bytes]) -> None:
        """Replace the state with a snapshot's."""
        members = MemberStore(self.ledger.members.hot_limit, self.ledger.members.compress_after)
        header = codec.load_snapshot_chunks(chunks, members)
        self.ledger.members = members
        self.ledger.budgets = dict(header.budgets)
        self.seq = header.seq
        self.now_ms = header.now_ms

    def state_bytes(self) -> bytes:
        """The whole state, encoded: equal bytes mean equal states (for tests)."""
        members = sorted(self.ledger.members.raw_items())
        return msgspec.msgpack.encode((self.seq, members, sorted(self.budget_balances().items())))
