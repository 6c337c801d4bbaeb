"""Events: the effects the ledger journals, one list per batch.

An event records what changed, with every decision already made (points computed by
the rules live at the time, lots chosen, ids assigned), so replaying a journal never
depends on the program or rules in force when it is replayed. Events that answer a
request carry its request_id and payload fingerprint; the stored outcome is rebuilt
from the event during evolve. Persisted: fields may only be added, at the end, with
defaults; tags never change.
"""

from __future__ import annotations

import msgspec

from loyalty.actors.ledger.outcomes import BalanceView


# gc=False (here and in Take/Restore): events hold only strings, ints, tuples and
# dicts of strings, never cycles, so the cyclic GC need not track the thousands a
# batch creates.
class _Event(msgspec.Struct, frozen=True, array_like=True, gc=False, tag_field="e"):
    member_id: str
    at_ms: int


class _Answer(_Event, frozen=True):
    request_id: str
    fingerprint: int


class Take(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """Points taken out of one lot."""

    lot_id: int
    points: int


class Restore(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """Points put back into a lot (recreated if it had emptied)."""

    lot_id: int
    points: int
    expires_at_ms: int


class Enrolled(_Answer, frozen=True, tag="enrolled"):
    attributes: dict[str, str] = {}


class Earned(_Answer, frozen=True, tag="earned"):
    points: int = 0
    debt_repaid: int = 0
    lot_id: int = 0
    expires_at_ms: int = 0
    pending_until_ms: int = 0
    keep_until_ms: int = 0
    lines: tuple[tuple[str, int, int], ...] = ()  # (sku, quantity, points): totals, all sources
    rules_version: int = 0  # the rule-set version the earn was evaluated with (0: none)
    awards: tuple[tuple[str, int, str, int, str], ...] = ()  # (rule_id, line, sku, points, effect)
    limits: tuple[tuple[str, str, int], ...] = ()  # (rule_id, limit, points cut)
    counters: tuple[tuple[str, int, int], ...] = ()  # cap counters set: (key, period, points); period -1 deletes
    budgets: tuple[tuple[str, int], ...] = ()  # (budget key, points spent from the shard's balance)


class Redeemed(_Answer, frozen=True, tag="redeemed"):
    points: int = 0
    takes: tuple[Take, ...] = ()


class Reserved(_Answer, frozen=True, tag="reserved"):
    reservation_id: str = ""
    points: int = 0
    expires_at_ms: int = 0
    takes: tuple[Restore, ...] = ()  # lot, points, that lot's expiry


class Captured(_Answer, frozen=True, tag="captured"):
    reservation_id: str = ""
    captured: int = 0
    restores: tuple[Restore, ...] = ()


class Released(_Answer, frozen=True, tag="released"):
    reservation_id: str = ""
    restores: tuple[Restore, ...] = ()


class Reversed(_Answer, frozen=True, tag="reversed"):
    original_request_id: str = ""
    points: int = 0  # taken from lots plus debt_added
    debt_added: int = 0
    returns: tuple[tuple[int, int, int], ...] = ()  # (line index, quantity, points)
    takes: tuple[Take, ...] = ()


class Adjusted(_Answer, frozen=True, tag="adjusted"):
    points: int = 0  # signed
    reason: str = ""
    debt_repaid: int = 0
    lot_id: int = 0
    expires_at_ms: int = 0
    takes: tuple[Take, ...] = ()


class Failed(_Answer, frozen=True, tag="failed"):
    """A request that failed for a business reason; its outcome is kept for replays."""

    kind: str = ""
    status: int = 0
    message: str = ""


class LotExpired(_Event, frozen=True, tag="lot_expired"):
    lot_id: int = 0
    points: int = 0


class ReservationExpired(_Event, frozen=True, tag="reservation_expired"):
    reservation_id: str = ""
    restores: tuple[Restore, ...] = ()


class Pruned(_Event, frozen=True, tag="pruned"):
    """Outcomes and closed reservations before outcomes_before_ms, and purchases kept
    until at or before at_ms, are forgotten."""

    outcomes_before_ms: int = 0


class BudgetLeased(_Event, frozen=True, tag="budget_leased"):
    """The shard took points of a campaign budget from its owner (member_id is empty:
    a shard-level event). Journaled before the earn that spends them."""

    budget_key: str = ""
    points: int = 0


class BudgetReturned(_Event, frozen=True, tag="budget_returned"):
    """The shard gives its unspent balance of a budget back to the owner (after this
    record is journaled; member_id is empty)."""

    budget_key: str = ""
    points: int = 0


Event = (
    Enrolled
    | Earned
    | Redeemed
    | Reserved
    | Captured
    | Released
    | Reversed
    | Adjusted
    | Failed
    | LotExpired
    | ReservationExpired
    | Pruned
    | BudgetLeased
    | BudgetReturned
)


BALANCE_EVENTS: frozenset[type] = frozenset(
    {Enrolled, Earned, Redeemed, Reserved, Captured, Released, Reversed, Adjusted, LotExpired, ReservationExpired}
)
"""The events that create or change a member's balance: the record carries the
balance after each of them (``JournalRecord.balances``)."""


class JournalRecord(msgspec.Struct, frozen=True, array_like=True):
    """One batch's events: the unit appended to a shard journal."""

    seq: int
    now_ms: int
    events: tuple[Event, ...]
    balances: tuple[BalanceView | None, ...] = ()
    """The member's balance right after each event, index for index with ``events``
    (None for an event not in BALANCE_EVENTS), so a journal consumer needs no state
    of its own to show it. Empty in records journaled before balances were recorded
    (and in records of shard-level events only). Replay never reads it: the state is
    rebuilt from the events alone."""
