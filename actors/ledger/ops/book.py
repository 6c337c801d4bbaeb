"""A member's book: the lots points sit in, and the history every change writes.

Every family changes lots through these functions and ends with ``record``, which
checks the conservation identity, so no operation can move a point without it
balancing.
"""

from __future__ import annotations

import bisect

from loyalty.actors.ledger import events as e
from loyalty.actors.ledger.limits import NEVER_MS, TRANSACTIONS_PER_MEMBER_MAX
from loyalty.actors.ledger.outcomes import TransactionView
from loyalty.actors.ledger.state import Lot, Member, TransactionKind

# ---------------------------------------------------------------------- lots


def lot_order(lot: Lot) -> tuple[int, int]:
    """Lots are kept earliest-expiring first (never-expiring last), then by id."""
    return (lot.expires_at_ms or NEVER_MS, lot.lot_id)


def insert_lot(member: Member, lot: Lot) -> None:
    assert lot.points > 0
    lots = member.lots
    if not lots or lot_order(lots[-1]) <= lot_order(lot):  # usual: the newest lot expires last
        lots.append(lot)
    else:
        bisect.insort(lots, lot, key=lot_order)
    member.held += lot.points
    member.pending_until_max_ms = max(member.pending_until_max_ms, lot.pending_until_ms)
    member.next_lot_id = max(member.next_lot_id, lot.lot_id + 1)


def take_available(member: Member, points: int, now_ms: int) -> list[e.Take] | None:
    """Lots to spend points from, earliest-expiring first; None if too few."""
    takes = []
    needed = points
    for lot in member.lots:
        if needed == 0:
            break
        if lot.pending_until_ms <= now_ms:
            used = min(needed, lot.points)
            takes.append(e.Take(lot.lot_id, used))
            needed -= used
    return takes if needed == 0 else None


def apply_takes(member: Member, takes) -> None:
    for take in takes:
        for index, lot in enumerate(member.lots):
            if lot.lot_id == take.lot_id:
                assert 0 < take.points <= lot.points, "a take never exceeds its lot"
                lot.points -= take.points
                member.held -= take.points
                if lot.points == 0:
                    del member.lots[index]
                break
        else:
            raise AssertionError(f"take from unknown lot {take.lot_id}")


# ---------------------------------------------------------------------- history


def record(
    member: Member, request_id: str, kind: TransactionKind, points: int, at_ms: int, reference: str = ""
) -> None:
    """Append a history entry and check the conservation identity (the lot sum is
    kept as lots change, so the check is a few additions)."""
    held = member.held
    assert member.earned + member.adjusted_in + member.debt == (
        held + member.reserved + member.redeemed + member.expired + member.reversed + member.adjusted_out
    ), f"conservation broken for member {member.member_id!r}"
    assert member.debt >= 0 and member.reserved >= 0
    seq = member.next_transaction_seq
    member.next_transaction_seq = seq + 1
    member.transactions.append(
        TransactionView(seq, request_id, kind, points, held + member.reserved - member.debt, at_ms, reference)
    )
    if len(member.transactions) > TRANSACTIONS_PER_MEMBER_MAX:
        del member.transactions[0]


def conservation_holds(member: Member) -> bool:
    """earned + adjusted_in + debt == lots + reserved + redeemed + expired + reversed
    + adjusted_out, nothing is negative, and the running lot total is exact."""
    held = 0
    for lot in member.lots:
        if lot.points <= 0:
            return False
        held += lot.points
    if held != member.held:
        return False
    counters = (
        member.earned,
        member.adjusted_in,
        member.debt,
        member.reserved,
        member.redeemed,
        member.expired,
        member.reversed,
        member.adjusted_out,
    )
    if min(counters) < 0:
        return False
    return member.earned + member.adjusted_in + member.debt == (
        held
        + member.reserved
        + member.redeemed
        + member.expired
        + member.reversed
        + member.adjusted_out
    )
