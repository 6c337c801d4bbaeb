"""Adjustments by hand: adding points (repaying debt first, the rest a new lot) or
removing available points (earliest-expiring first)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from loyalty.actors.ledger import commands as c
from loyalty.actors.ledger import events as e
from loyalty.actors.ledger.limits import POINTS_MAX, REASON_LENGTH_MAX, UNVALIDATED
from loyalty.actors.ledger.ops.book import apply_takes, insert_lot, record, take_available
from loyalty.actors.ledger.ops.idempotency import insufficient, keep
from loyalty.actors.ledger.ops.views import balance_of
from loyalty.actors.ledger.outcomes import Outcome
from loyalty.actors.ledger.state import Lot, Member, TransactionKind
from loyalty.actors.ledger.status import Status

if TYPE_CHECKING:
    from loyalty.actors.ledger.ledger import Ledger

_ADJUST = c.command_kind(c.Adjust)


def decide_adjust(ledger: Ledger, command: c.Adjust, member: Member, now_ms: int, digest: int) -> e.Event:
    points = command.points
    assert points and -POINTS_MAX <= points <= POINTS_MAX and 0 < len(command.reason) <= REASON_LENGTH_MAX, UNVALIDATED
    if points > 0:
        debt_repaid = min(points, member.debt)
        return e.Adjusted(
            member.member_id,
            now_ms,
            command.request_id,
            digest,
            points=points,
            reason=command.reason,
            debt_repaid=debt_repaid,
            lot_id=member.next_lot_id if points > debt_repaid else 0,
            expires_at_ms=ledger.program.expires_at_ms(now_ms),
        )
    takes = take_available(member, -points, now_ms)
    if takes is None:
        return insufficient(command, digest, now_ms, member)
    return e.Adjusted(
        member.member_id, now_ms, command.request_id, digest, points=points, reason=command.reason, takes=tuple(takes)
    )


def evolve_adjusted(ledger: Ledger, event: e.Adjusted) -> bytes:
    member = ledger.members[event.member_id]
    at_ms = event.at_ms
    if event.points > 0:
        member.debt -= event.debt_repaid
        member.adjusted_in += event.points
        lot_points = event.points - event.debt_repaid
        if lot_points:
            insert_lot(member, Lot(event.lot_id, lot_points, event.expires_at_ms, 0))
    else:
        apply_takes(member, event.takes)
        member.adjusted_out -= event.points
    record(member, event.request_id, TransactionKind.ADJUST, event.points, at_ms, event.reason)
    outcome = Outcome(
        status=Status.OK, kind=_ADJUST, at_ms=at_ms, balance=balance_of(member, at_ms), points=event.points
    )
    return keep(member, event, outcome)
