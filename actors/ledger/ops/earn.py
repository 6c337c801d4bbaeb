"""Earning points for a purchase: the base rate, then the rules, then campaign budgets.

Points earned repay debt first; the rest becomes a lot that is pending for the
return window and expires with the program's expiry. The purchase is kept (its
lines and what each earned) for returns until its points would have expired.

Campaign budgets: the shard spends points it leased from the budget's owner
(``BudgetLeased``, journaled before the earn that needs them) and gives back what the
live rules no longer need (``BudgetReturned``, see ShardCore.return_budgets).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import msgspec

from loyalty.actors.ledger import commands as c
from loyalty.actors.ledger import events as e
from loyalty.actors.ledger.earning import attribute_points, rate_parts
from loyalty.actors.ledger.limits import AMOUNT_MINOR_MAX, PURCHASE_LINES_MAX, UNVALIDATED
from loyalty.actors.ledger.ops.book import insert_lot, record
from loyalty.actors.ledger.ops.idempotency import failed, keep
from loyalty.actors.ledger.ops.views import balance_of
from loyalty.actors.ledger.outcomes import Outcome
from loyalty.actors.ledger.rules.evaluation import evaluate_earn
from loyalty.actors.ledger.state import EarnRecord, Lot, Member, TransactionKind
from loyalty.actors.ledger.status import Status

if TYPE_CHECKING:
    from loyalty.actors.ledger.ledger import Ledger

_encode = msgspec.msgpack.Encoder().encode
_EARN = c.command_kind(c.Earn)

TakeBudget = Callable[[str, int], int]
"""take(budget key, points) -> points granted (and accounted for)."""


def budget_taker(ledger: Ledger, now_ms: int, events: list[e.Event] | None) -> tuple[TakeBudget, dict[str, int]]:
    """take(key, points) for one earn: spends the shard's balance, leasing more from
    the owner when short (a BudgetLeased event, emitted before the earn's). With
    ``events`` None (a simulated earn) nothing is leased: the owner's available
    points stand in, and the second value says how many were borrowed, by key."""
    source = ledger.budget_source
    spent: dict[str, int] = {}
    borrowed: dict[str, int] = {}

    def take(key: str, points: int) -> int:
        held = ledger.budgets.get(key, 0) + borrowed.get(key, 0) - spent.get(key, 0)
        if held < points and source is not None:
            if events is None:
                extra = min(points - held, source.available(key))
                borrowed[key] = borrowed.get(key, 0) + extra
            else:
                extra = source.lease(key, points - held)
                assert extra >= 0, "a lease never takes points away"
                if extra:
                    ledger.emit(e.BudgetLeased("", now_ms, budget_key=key, points=extra), events)
            held += extra
        taken = min(points, held)
        spent[key] = spent.get(key, 0) + taken
        return taken

    return take, borrowed


def decide_earn(
    ledger: Ledger,
    command: c.Earn,
    member: Member,
    now_ms: int,
    digest: int,
    take_budget: TakeBudget | None,
) -> e.Event:
    """The Earned event (or a kept failure). ``take_budget`` grants campaign budget
    (see budget_taker); None only when no rules are installed. SimulateEarn decides
    through here too, with an Earn built from its fields."""
    lines = command.lines
    assert 0 < len(lines) <= PURCHASE_LINES_MAX and len(command.currency) == 3, UNVALIDATED
    if command.request_id in member.earns:
        # Its outcome was forgotten, but the purchase is still kept for returns:
        # earning again would pay twice and hide the original from returns.
        return failed(
            command,
            digest,
            now_ms,
            Status.REQUEST_ID_CONFLICT,
            "a purchase with this request_id is still on record for returns",
        )
    rate = ledger.base_rates.get(command.currency)
    if rate is None:
        rate = ledger.base_rates[command.currency] = rate_parts(ledger.program.points_per_minor(command.currency))
    amounts = [line.amount_minor for line in lines]
    assert 0 <= min(amounts) and max(amounts) <= AMOUNT_MINOR_MAX, UNVALIDATED
    points, shares = attribute_points(amounts, rate)
    rules = ledger.rules
    if rules is None:
        rules_version, awards, limits, counters, budgets = 0, (), (), (), ()
    else:
        decision = evaluate_earn(rules, command, member, now_ms, shares, take_budget)
        shares = decision.line_points
        points = sum(shares)
        rules_version = rules.version
        awards, limits = decision.awards, decision.limits
        counters, budgets = decision.counters, decision.budgets
    debt_repaid = min(points, member.debt)
    program = ledger.program
    expires_at_ms = program.expires_at_ms(now_ms)
    pending_until_ms = now_ms + program.return_window_ms
    keep_until_ms = max(expires_at_ms, pending_until_ms) if expires_at_ms else 0
    return e.Earned(
        member.member_id,
        now_ms,
        command.request_id,
        digest,
        points=points,
        debt_repaid=debt_repaid,
        lot_id=member.next_lot_id if points > debt_repaid else 0,
        expires_at_ms=expires_at_ms,
        pending_until_ms=pending_until_ms,
        keep_until_ms=keep_until_ms,
        lines=tuple([(line.sku, line.quantity, share) for line, share in zip(lines, shares, strict=True)]),
        rules_version=rules_version,
        awards=awards,
        limits=limits,
        counters=counters,
        budgets=budgets,
    )


def evolve_earned(ledger: Ledger, event: e.Earned) -> bytes:
    member = ledger.members[event.member_id]
    points, debt_repaid, at_ms = event.points, event.debt_repaid, event.at_ms
    member.debt -= debt_repaid
    member.earned += points
    lot_points = points - debt_repaid
    if lot_points:
        insert_lot(member, Lot(event.lot_id, lot_points, event.expires_at_ms, event.pending_until_ms))
    if event.counters:
        _set_counters(member, event.counters)
    if event.budgets:
        budgets = ledger.budgets
        for key, spent in event.budgets:
            left = budgets[key] - spent
            assert left >= 0, f"budget {key!r} overspent"
            if left:
                budgets[key] = left
            else:
                del budgets[key]
    # (sku, quantity, points) is an EarnLine with nothing returned yet: its
    # trailing zero fields are left out and read back as their defaults
    member.earns[event.request_id] = EarnRecord(event.lot_id, event.keep_until_ms, _encode(event.lines))
    record(member, event.request_id, TransactionKind.EARN, points, at_ms)
    pending_until_ms = event.pending_until_ms
    outcome = Outcome(
        status=Status.OK,
        kind=_EARN,
        at_ms=at_ms,
        balance=balance_of(member, at_ms),
        points=points,
        debt=debt_repaid,
        expires_at_ms=event.expires_at_ms,
        available_at_ms=pending_until_ms if pending_until_ms > at_ms else at_ms,
        lines=tuple([(sku, line_points) for sku, _, line_points in event.lines]),
        rules_version=event.rules_version,
        awards=event.awards,
        limits=event.limits,
    )
    return keep(member, event, outcome)


def _set_counters(member: Member, counters: tuple[tuple[str, int, int], ...]) -> None:
    """Set (or, for period -1, delete) a member's cap counters; None when none are left."""
    table = member.counters if member.counters is not None else {}
    for key, period, points in counters:
        if period < 0:
            table.pop(key, None)
        else:
            table[key] = (period, points)
    member.counters = table or None


# ---------------------------------------------------------------------- campaign budgets


def evolve_budget_leased(ledger: Ledger, event: e.BudgetLeased) -> None:
    assert event.points > 0
    ledger.budgets[event.budget_key] = ledger.budgets.get(event.budget_key, 0) + event.points
    return None


def evolve_budget_returned(ledger: Ledger, event: e.BudgetReturned) -> None:
    held = ledger.budgets.pop(event.budget_key, 0)
    assert held == event.points, f"returning {event.points} of budget {event.budget_key!r}, holding {held}"
    return None

