"""Returns: clawing back what returned lines of a kept purchase earned.

Each line claws back its share of what it earned (``earning.returned_share``), so
however a purchase comes back, line by line or at once, the claw-backs add up to
exactly what it earned. The points come from the purchase's own lot first, then
other pending lots, then available ones; whatever is missing becomes debt, unless
the program's reversal policy is "cap".
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from loyalty.actors.ledger import commands as c
from loyalty.actors.ledger import events as e
from loyalty.actors.ledger.earning import returned_share
from loyalty.actors.ledger.limits import ID_LENGTH_MAX, PURCHASE_LINES_MAX, UNVALIDATED
from loyalty.actors.ledger.ops.book import apply_takes, record
from loyalty.actors.ledger.ops.idempotency import failed, keep
from loyalty.actors.ledger.ops.views import balance_of
from loyalty.actors.ledger.outcomes import Outcome
from loyalty.actors.ledger.state import EarnLine, Member, TransactionKind
from loyalty.actors.ledger.status import Status

if TYPE_CHECKING:
    from loyalty.actors.ledger.ledger import Ledger

_encode = msgspec.msgpack.Encoder().encode
_decode_earn_lines = msgspec.msgpack.Decoder(list[EarnLine]).decode
_REVERSE = c.command_kind(c.Reverse)


def decide_reverse(ledger: Ledger, command: c.Reverse, member: Member, now_ms: int, digest: int) -> e.Event:
    assert (
        0 < len(command.original_request_id) <= ID_LENGTH_MAX and len(command.lines) <= PURCHASE_LINES_MAX
    ), UNVALIDATED
    kept = member.earns.get(command.original_request_id)
    if kept is None:
        return failed(
            command,
            digest,
            now_ms,
            Status.ORIGINAL_NOT_FOUND,
            "no purchase with that request_id is on record for this member",
        )
    returns = _plan_returns(_decode_earn_lines(kept.lines), command.lines)
    if isinstance(returns, str):
        return failed(command, digest, now_ms, Status.RETURN_EXCEEDS_PURCHASE, returns)
    points = sum(points for _, _, points in returns)
    takes = _plan_clawback(member, kept.lot_id, points, now_ms)
    taken = sum(take.points for take in takes)
    debt_added = points - taken if ledger.program.reversal_creates_debt else 0
    return e.Reversed(
        member.member_id,
        now_ms,
        command.request_id,
        digest,
        original_request_id=command.original_request_id,
        points=taken + debt_added,
        debt_added=debt_added,
        returns=tuple(returns),
        takes=tuple(takes),
    )


def _plan_returns(
    earned: list[EarnLine], lines: tuple[c.ReturnLine, ...]
) -> list[tuple[int, int, int]] | str:
    """(line index, quantity, points) for each part of a return, or why it is refused."""
    returned = [line.returned_quantity for line in earned]
    plan = []
    if not lines:
        for index, line in enumerate(earned):
            remaining = line.quantity - returned[index]
            if remaining > 0:
                plan.append((index, remaining, line.points - line.returned_points))
        return plan or "every line of this purchase was already returned"
    for wanted in lines:
        needed = wanted.quantity
        for index, line in enumerate(earned):
            if needed == 0:
                break
            remaining = line.quantity - returned[index]
            if line.sku != wanted.sku or remaining <= 0:
                continue
            quantity = min(needed, remaining)
            points = returned_share(line.points, line.quantity, returned[index], quantity)
            plan.append((index, quantity, points))
            returned[index] += quantity
            needed -= quantity
        if needed:
            return f"sku {wanted.sku!r}: {wanted.quantity} returned but only {wanted.quantity - needed} left to return"
    return plan


def _plan_clawback(member: Member, own_lot_id: int, points: int, now_ms: int) -> list[e.Take]:
    """Where returned points come from: the purchase's own lot, then other pending
    lots, then available lots (earliest-expiring first). Reserved points are left
    alone; whatever is still missing is debt (or forgiven under policy "cap")."""
    order = sorted(
        member.lots,
        key=lambda lot: (lot.lot_id != own_lot_id, lot.pending_until_ms <= now_ms),
    )  # stable: keeps earliest-expiring order inside each group
    takes = []
    needed = points
    for lot in order:
        if needed == 0:
            break
        used = min(needed, lot.points)
        takes.append(e.Take(lot.lot_id, used))
        needed -= used
    return takes


def evolve_reversed(ledger: Ledger, event: e.Reversed) -> bytes:
    member = ledger.members[event.member_id]
    at_ms = event.at_ms
    kept = member.earns[event.original_request_id]
    lines = _decode_earn_lines(kept.lines)
    for index, quantity, points in event.returns:
        line = lines[index]
        line.returned_quantity += quantity
        line.returned_points += points
    kept.lines = _encode(lines)
    apply_takes(member, event.takes)
    member.debt += event.debt_added
    member.reversed += event.points
    record(member, event.request_id, TransactionKind.REVERSE, -event.points, at_ms, event.original_request_id)
    outcome = Outcome(
        status=Status.OK,
        kind=_REVERSE,
        at_ms=at_ms,
        balance=balance_of(member, at_ms),
        points=event.points,
        debt=event.debt_added,
    )
    return keep(member, event, outcome)
