"""What a shard answers for each command. Stored outcomes are these, encoded."""

from __future__ import annotations

import msgspec


# gc=False (BalanceView, Outcome): one of each is built for every operation, on the
# shard and again on the gateway that decodes it; they never take part in a
# reference cycle, so the cyclic GC need not track them.
class BalanceView(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """A member's points at one moment. The conservation identity:
    earned + adjusted_in + debt =
        available + pending + reserved + redeemed + expired + reversed + adjusted_out
    (``earned`` is lifetime_earned)."""

    available: int = 0
    pending: int = 0
    reserved: int = 0
    debt: int = 0
    lifetime_earned: int = 0
    redeemed: int = 0
    expired: int = 0
    reversed: int = 0
    adjusted_in: int = 0
    adjusted_out: int = 0
    next_expirations: tuple[tuple[int, int], ...] = ()
    """(points, expires_at_ms), earliest first."""


class MemberView(msgspec.Struct, frozen=True, array_like=True):
    """A member's identity and labels."""

    member_id: str
    attributes: dict[str, str]
    status: int
    enrolled_at_ms: int


class TransactionView(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One entry of a member's history. points is the signed change of
    available + pending + reserved - debt; balance_after is that sum afterwards."""

    seq: int
    request_id: str
    kind: int
    points: int
    balance_after: int
    at_ms: int
    reference: str = ""


class Outcome(msgspec.Struct, frozen=True, array_like=True, omit_defaults=True, gc=False):
    """The result of one command. Which fields are set depends on the command:

    - every mutation: status, kind, at_ms, and on success balance;
    - enroll / get_member: member (+ balance);
    - earn (and simulate_earn): points, debt (repaid), expires_at_ms, available_at_ms,
      lines (total points per line), rules_version, awards, limits;
    - redeem: points; reserve: points, reservation_id, expires_at_ms;
    - capture: points (captured), released; release: released;
    - reverse: points (reversed), debt (added);
    - list_transactions: transactions, next_before_seq (0 at the end).
    """

    status: int = 0
    kind: str = ""
    at_ms: int = 0
    message: str = ""
    balance: BalanceView | None = None
    member: MemberView | None = None
    points: int = 0
    debt: int = 0
    released: int = 0
    reservation_id: str = ""
    expires_at_ms: int = 0
    available_at_ms: int = 0
    lines: tuple[tuple[str, int], ...] = ()
    transactions: tuple[TransactionView, ...] = ()
    next_before_seq: int = 0
    rules_version: int = 0
    """earn: the rule-set version the purchase was evaluated with (0: no rules)."""
    awards: tuple[tuple[str, int, str, int, str], ...] = ()
    """earn: (rule_id, line_index or -1 for the basket, sku, points, effect) per award;
    empty when no rule contributed (``lines`` then says it all)."""
    limits: tuple[tuple[str, str, int], ...] = ()
    """earn: (rule_id, limit, points_cut) for each cap or budget that cut the points."""
    request_id: str = ""
