"""The ledger state machine of one shard: decide, then evolve.

``execute(command, now_ms, events)`` decides what a command does, appends the
resulting events to ``events`` and applies each one through ``apply``. Replaying a
journal calls ``apply`` alone, so live state and replayed state go through the same
code and cannot drift. The clock is an argument: nothing here reads the time.

The operations themselves live in ``loyalty.actors.ledger.ops``, one module per
family; this module holds the state and the dispatch tables that route each command
to its decide function and each event to its evolve function.

Outcomes are returned as msgspec-encoded ``Outcome`` bytes, the same bytes kept for
idempotent replays, so a replay costs no re-encoding.
"""

from __future__ import annotations

import typing
from collections.abc import Callable

from loyalty.actors.ledger import commands as c
from loyalty.actors.ledger import events as e
from loyalty.actors.ledger.commands import command_kind
from loyalty.actors.ledger.limits import ID_LENGTH_MAX, UNVALIDATED
from loyalty.actors.ledger.ops import adjust, earn, enroll, expiry, holds, idempotency, reads, returns
from loyalty.actors.ledger.ops.book import conservation_holds
from loyalty.actors.ledger.ops.earn import budget_taker, decide_earn
from loyalty.actors.ledger.ops.expiry import settle
from loyalty.actors.ledger.ops.idempotency import failure, fingerprint, replayed
from loyalty.actors.ledger.ops.views import balance_of, member_view
from loyalty.actors.ledger.outcomes import BalanceView
from loyalty.actors.ledger.program import CompiledProgram
from loyalty.actors.ledger.rules.budget import BudgetSource
from loyalty.actors.ledger.rules.compiler import CompiledRules
from loyalty.actors.ledger.state import Member
from loyalty.actors.ledger.status import Status

# Importers use these from here (and balance_of, conservation_holds from the
# package): they moved to ops/ and commands.py, their names stayed.
__all__ = [
    "Ledger",
    "balance_of",
    "command_kind",
    "conservation_holds",
    "fingerprint",
    "member_view",
]

# ---------------------------------------------------------------------- dispatch

DECIDERS: dict[type, Callable] = {
    c.Redeem: holds.decide_redeem,
    c.Reserve: holds.decide_reserve,
    c.Capture: holds.decide_capture,
    c.Release: holds.decide_release,
    c.Reverse: returns.decide_reverse,
    c.Adjust: adjust.decide_adjust,
}
"""decide(ledger, command, member, now_ms, digest) -> event, for the mutations that
take no more than that (enroll and earn are routed by ``execute`` itself)."""

READERS: dict[type, Callable] = {
    c.GetMember: reads.read_member,
    c.GetBalance: reads.read_balance,
    c.ListTransactions: reads.read_transactions,
    c.GetOperation: reads.read_operation,
    c.SimulateEarn: reads.read_simulated_earn,
}
"""read(ledger, command, member, now_ms) -> encoded Outcome."""

EVOLVERS: dict[type, Callable] = {
    e.Enrolled: enroll.evolve_enrolled,
    e.Earned: earn.evolve_earned,
    e.Redeemed: holds.evolve_redeemed,
    e.Reserved: holds.evolve_reserved,
    e.Captured: holds.evolve_captured,
    e.Released: holds.evolve_released,
    e.Reversed: returns.evolve_reversed,
    e.Adjusted: adjust.evolve_adjusted,
    e.Failed: idempotency.evolve_failed,
    e.LotExpired: expiry.evolve_lot_expired,
    e.ReservationExpired: holds.evolve_reservation_expired,
    e.Pruned: expiry.evolve_pruned,
    e.BudgetLeased: earn.evolve_budget_leased,
    e.BudgetReturned: earn.evolve_budget_returned,
}
"""evolve(ledger, event) -> the encoded Outcome the event answers, or None."""

assert set(DECIDERS) | set(READERS) | {c.EnrollMember, c.Earn} == set(c.KINDS), "a command without a route"
assert set(EVOLVERS) == set(typing.get_args(e.Event)), "an event without an evolve function"


class Ledger:
    """The members of one shard and every rule for changing them."""

    def __init__(self, program: CompiledProgram) -> None:
        self.program = program
        self.members: dict[str, Member] = {}
        self.rules: CompiledRules | None = None
        """The rules earns are evaluated with (None: the base program only)."""
        self.budgets: dict[str, int] = {}
        """Campaign budget points leased to this shard and not yet spent, by key."""
        self.budget_source: BudgetSource | None = None
        """The budget owner, set for the duration of a batch."""
        self.base_rates: dict[str, tuple[int, int]] = {}
        """The program's base earn rate per currency, as attribute_points takes it
        (filled as currencies are seen; the program never changes)."""
        self.balances: list[BalanceView | None] | None = None
        """While a batch runs (set by ShardCore.apply_batch): the balance after each
        event appended to its events, index for index; None outside a batch, so
        replays and simulated earns compute none."""

    def execute(self, command: c.Command, now_ms: int, events: list[e.Event]) -> bytes:
        """Apply one command at now_ms; append its events; return the encoded Outcome."""
        kind = type(command)
        assert 0 < len(command.member_id) <= ID_LENGTH_MAX, UNVALIDATED
        member = self.members.get(command.member_id)
        if kind is c.EnrollMember:
            return enroll.execute_enroll(self, command, member, now_ms, events)
        if member is None:
            return failure(command, Status.MEMBER_NOT_FOUND, now_ms, "no member has this id")
        settle(self, member, now_ms, events)
        if kind is not c.Earn:
            reader = READERS.get(kind)
            if reader is not None:
                return reader(self, command, member, now_ms)
        assert 0 < len(command.request_id) <= ID_LENGTH_MAX, UNVALIDATED  # every mutation has one
        digest = fingerprint(command)
        answer = replayed(command, member, digest, now_ms)
        if answer is not None:
            return answer
        if kind is c.Earn:
            take_budget = budget_taker(self, now_ms, events)[0] if self.rules is not None else None
            event = decide_earn(self, command, member, now_ms, digest, take_budget)
        else:
            event = DECIDERS[kind](self, command, member, now_ms, digest)
        events.append(event)
        event_kind = type(event)
        answer = EVOLVERS[event_kind](self, event)
        if self.balances is not None:  # the decided event is this member's
            self.balances.append(balance_of(member, now_ms) if event_kind in e.BALANCE_EVENTS else None)
        return answer

    def apply(self, event: e.Event) -> bytes | None:
        """Apply one event (live or replayed); return the encoded Outcome it answers."""
        return EVOLVERS[type(event)](self, event)

    def emit(self, event: e.Event, events: list[e.Event]) -> bytes | None:
        """Record ``event`` in the batch's ``events`` and apply it (and, when a batch
        collects them, the balance after it)."""
        events.append(event)
        answer = EVOLVERS[type(event)](self, event)
        if self.balances is not None:
            balances = self.balances
            if type(event) in e.BALANCE_EVENTS:
                balances.append(balance_of(self.members[event.member_id], event.at_ms))
            else:
                balances.append(None)
        return answer
