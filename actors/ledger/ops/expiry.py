"""What time makes due, settled before each command touches a member: reservations
past their expiry, lots past theirs, and outcomes, closed reservations and kept
purchases past retention. Each is an event, so expiry is a ledger entry, never a
silent drop, and replay does it at the same point."""

from __future__ import annotations

from typing import TYPE_CHECKING

from loyalty.actors.ledger import events as e
from loyalty.actors.ledger.ops.book import apply_takes, record
from loyalty.actors.ledger.ops.holds import expired_reservations
from loyalty.actors.ledger.state import Member, TransactionKind

if TYPE_CHECKING:
    from loyalty.actors.ledger.ledger import Ledger


def settle(ledger: Ledger, member: Member, now_ms: int, events: list[e.Event]) -> None:
    """Emit the time-driven changes due by now_ms (checked on every operation, so
    each check looks at the oldest entries only)."""
    if member.reservations:
        for event in expired_reservations(member, now_ms):
            ledger.emit(event, events)
    lots = member.lots
    while lots and 0 < lots[0].expires_at_ms <= now_ms:
        lot = lots[0]
        ledger.emit(e.LotExpired(member.member_id, now_ms, lot.lot_id, lot.points), events)
    cutoff_ms = now_ms - ledger.program.retention_ms
    if _anything_to_forget(member, cutoff_ms, now_ms):
        ledger.emit(e.Pruned(member.member_id, now_ms, outcomes_before_ms=cutoff_ms), events)


def evolve_lot_expired(ledger: Ledger, event: e.LotExpired) -> None:
    member = ledger.members[event.member_id]
    apply_takes(member, (e.Take(event.lot_id, event.points),))
    member.expired += event.points
    record(member, "", TransactionKind.EXPIRE, -event.points, event.at_ms)
    return None


def evolve_pruned(ledger: Ledger, event: e.Pruned) -> None:
    member = ledger.members[event.member_id]
    cutoff_ms = event.outcomes_before_ms
    outcomes, closed = member.outcomes, member.closed_reservations
    while outcomes and next(iter(outcomes.values())).at_ms < cutoff_ms:
        del outcomes[next(iter(outcomes))]
    while closed and next(iter(closed.values())) < cutoff_ms:
        del closed[next(iter(closed))]
    while _first_earn_done(member, event.at_ms):
        del member.earns[next(iter(member.earns))]
    return None


def _anything_to_forget(member: Member, cutoff_ms: int, now_ms: int) -> bool:
    """Whether the oldest outcome or closed reservation is older than cutoff_ms, or
    the oldest kept purchase is kept until at or before now_ms."""
    outcomes = member.outcomes
    if outcomes and next(iter(outcomes.values())).at_ms < cutoff_ms:
        return True
    closed = member.closed_reservations
    if closed and next(iter(closed.values())) < cutoff_ms:
        return True
    earns = member.earns
    return bool(earns) and 0 < next(iter(earns.values())).kept_until_ms <= now_ms


def _first_earn_done(member: Member, now_ms: int) -> bool:
    if not member.earns:
        return False
    kept_until_ms = next(iter(member.earns.values())).kept_until_ms
    return 0 < kept_until_ms <= now_ms
