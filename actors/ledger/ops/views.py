"""A member as the outside sees it: the balance at a moment, and its identity."""

from __future__ import annotations

from loyalty.actors.ledger.limits import NEXT_EXPIRATIONS_MAX
from loyalty.actors.ledger.outcomes import BalanceView, MemberView
from loyalty.actors.ledger.state import Lot, Member


def balance_of(member: Member, now_ms: int) -> BalanceView:
    """The member's points as seen at now_ms."""
    lots = member.lots
    pending = 0
    if member.pending_until_max_ms > now_ms:  # some lot may still be pending
        pending = sum([lot.points for lot in lots if lot.pending_until_ms > now_ms])
    return BalanceView(
        member.held - pending,  # available
        pending,
        member.reserved,
        member.debt,
        member.earned,  # lifetime_earned
        member.redeemed,
        member.expired,
        member.reversed,
        member.adjusted_in,
        member.adjusted_out,
        _next_expirations(lots) if lots else (),
    )


def _next_expirations(lots: list[Lot]) -> tuple[tuple[int, int], ...]:
    """(points, expires_at_ms) of the first few expiry dates. Lots are sorted by
    expiry, so each date is one run of lots, and lots that never expire come last."""
    expirations: list[tuple[int, int]] = []
    date = points = 0  # the run being summed (date 0: none yet)
    for lot in lots:
        expires_at_ms = lot.expires_at_ms
        if expires_at_ms == date:
            points += lot.points
            continue
        if date:
            expirations.append((points, date))
            if len(expirations) == NEXT_EXPIRATIONS_MAX:
                return tuple(expirations)
        if not expires_at_ms:
            return tuple(expirations)
        date, points = expires_at_ms, lot.points
    if date:
        expirations.append((points, date))
    return tuple(expirations)


def member_view(member: Member) -> MemberView:
    """The member's identity and labels."""
    return MemberView(member.member_id, dict(member.attributes), member.status, member.enrolled_at_ms)
