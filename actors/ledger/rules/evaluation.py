"""Evaluating an earn against compiled rules: which rules apply, what each gives on
which line, and what caps, budgets and ceilings cut.

Semantics (also in the package docstring):

- The base earn is today's: floor(total x rate) for the purchase, attributed to lines
  by largest remainder. Rules add *extra* points on top of it; they never change it.
- Rules apply in order: priority (highest first), then rule_id. A rule applies when it
  is enabled, its schedule holds at the shard's time of the earn, every purchase and
  member condition holds and at least one line matches its line conditions (every
  line, when it has none).
- Exclusive groups: of the applicable rules sharing a group, only the first in that
  order applies, whether or not caps or budgets later cut it to nothing.
- Multipliers are additive extras over the base: a rule "m" adds (m - 1) x base, so
  two "2" rules make x3, not x4. The lowest multiplier_ceiling among applicable rules
  caps the combined multiplier (1 + sum of extras) on every line; the rules applied
  last lose their extra first, reported as limit "multiplier_ceiling".
- Rounding is per award: target "lines" rounds each line on its own, target "basket"
  rounds the matching lines' sum once. Bonus points are once per qualifying purchase.
- Basket awards (and cut awards) are attributed to lines by largest remainder, in
  proportion to the lines' amounts (bonus, points_per_unit), base extras (multiplier)
  or uncut points (cuts), so a return claws back exactly what its lines earned.
- Caps cut per rule, after rounding: per transaction, then the member's day, week,
  month and lifetime counters (periods in the rule's time zone). Then the budget.
  Counters count points granted; returns do not give cap room or budget back.
"""

from __future__ import annotations

from collections.abc import Callable

from loyalty.actors.ledger.commands import Earn
from loyalty.actors.ledger.rules.compiler import (
    KIND_BONUS,
    KIND_MULTIPLIER,
    ROUND_DOWN,
    ROUND_UP,
    CompiledRules,
)
from loyalty.actors.ledger.state import Member


Award = tuple[str, int, str, int, str]
"""(rule_id, line index or -1 for the basket, sku, points, effect)."""
Limit = tuple[str, str, int]
"""(rule_id, limit, points cut)."""


class EarnDecision:
    """What the rules decided for one earn."""

    __slots__ = ("line_points", "awards", "limits", "counters", "budgets")

    def __init__(self, line_points, awards, limits, counters, budgets) -> None:
        self.line_points: list[int] = line_points
        """Total points per line (base and every rule)."""
        self.awards: tuple[Award, ...] = awards
        """Empty when no rule gave points; otherwise base awards first, then rules."""
        self.limits: tuple[Limit, ...] = limits
        self.counters: tuple[tuple[str, int, int], ...] = counters
        """Member cap counters to set: (key, period key, points); period -1 deletes."""
        self.budgets: tuple[tuple[str, int], ...] = budgets
        """(budget key, points spent from the shard's local balance)."""


def rounded(numerator: int, denominator: int, mode: int) -> int:
    """numerator / denominator as a whole number of points (non-negative inputs)."""
    if mode == ROUND_DOWN:
        return numerator // denominator
    if mode == ROUND_UP:
        return -(-numerator // denominator)
    return (2 * numerator + denominator) // (2 * denominator)


def rounded_each(numerators: list[int], denominator: int, mode: int) -> list[int]:
    """``rounded`` of each numerator (one comprehension: this is the hot loop)."""
    if mode == ROUND_DOWN:
        return [value // denominator for value in numerators]
    if mode == ROUND_UP:
        return [-(-value // denominator) for value in numerators]
    double = 2 * denominator
    return [(2 * value + denominator) // double for value in numerators]


def spread(total: int, weights: list[int]) -> list[int]:
    """``total`` split in proportion to ``weights`` (equally when all are 0): floors,
    then the leftover to the largest remainders, ties to the earlier position."""
    weight_sum = sum(weights)
    if not weight_sum:
        weights = [1] * len(weights)
        weight_sum = len(weights)
    shares = []
    remainders = []
    given = 0
    for weight in weights:
        share, remainder = divmod(total * weight, weight_sum)
        shares.append(share)
        remainders.append(remainder)
        given += share
    leftover = total - given
    while leftover:  # fewer than len(weights) times
        best = remainders.index(max(remainders))
        shares[best] += 1
        remainders[best] = -1
        leftover -= 1
    return shares


def evaluate_earn(
    compiled: CompiledRules,
    earn: Earn,
    member: Member,
    now_ms: int,
    base_shares: list[int],
    take_budget: Callable[[str, int], int],
) -> EarnDecision:
    """Apply every rule to one earn. ``take_budget(key, points)`` returns how many of
    those points the budget grants (and accounts for them)."""
    applicable, every = _applicable(compiled, earn, member, now_ms)
    lines = earn.lines
    line_points = list(base_shares)
    if not applicable:
        return EarnDecision(line_points, (), (), _stale_counters(compiled, member), ())
    denominator = compiled.denominator
    amounts = [line.amount_minor for line in lines]
    skus = [line.sku for line in lines]
    ceilings = [rule.ceiling for rule, _ in applicable if rule.ceiling is not None]
    room = [min(ceilings)] * len(lines) if ceilings else None
    awards: list[Award] = []
    limits: list[Limit] = []
    counters: list[tuple[str, int, int]] = []
    budgets: list[tuple[str, int]] = []
    for rule, matched in applicable:
        rule_id = rule.rule_id
        kind = rule.kind
        if kind is KIND_MULTIPLIER:
            factor = rule.factor
            bases = base_shares if matched is every else [base_shares[i] for i in matched]
            full = [factor * base for base in bases]
            allowed = full if room is None else _within_ceiling(room, matched, factor, base_shares)
            if rule.basket:
                uncut = rounded(sum(full), denominator, rule.rounding)
                total = rounded(sum(allowed), denominator, rule.rounding)
                shares = spread(total, allowed)
            else:
                shares = rounded_each(allowed, denominator, rule.rounding)
                total = sum(shares)
                uncut = total if allowed is full else sum(rounded_each(full, denominator, rule.rounding))
            if uncut > total:
                limits.append((rule_id, "multiplier_ceiling", uncut - total))
        elif kind is KIND_BONUS:
            total = rule.bonus
            shares = spread(total, amounts if matched is every else [amounts[i] for i in matched])
        else:
            numerator, per = rule.rate_per_minor(earn.currency, compiled.program)
            if rule.basket:
                weights = amounts if matched is every else [amounts[i] for i in matched]
                total = rounded(sum(weights) * numerator, per, rule.rounding)
                shares = spread(total, weights)
            else:
                weights = amounts if matched is every else [amounts[i] for i in matched]
                shares = rounded_each([amount * numerator for amount in weights], per, rule.rounding)
                total = sum(shares)
        granted = total
        if rule.per_transaction and granted > rule.per_transaction:
            limits.append((rule_id, "transaction", granted - rule.per_transaction))
            granted = rule.per_transaction
        periods = None
        if rule.period_caps:
            granted, periods = _period_caps(compiled, rule, member, now_ms, granted, limits)
        if rule.budget_key is not None and granted:
            taken = take_budget(rule.budget_key, granted)
            if taken < granted:
                limits.append((rule_id, "budget", granted - taken))
                granted = taken
            if taken:
                budgets.append((rule.budget_key, taken))
        if periods and granted:
            counters.extend((key, period, used + granted) for key, period, used in periods)
        if granted < total:
            shares = spread(granted, shares)
        if rule.basket or kind is KIND_BONUS:
            if granted:
                awards.append((rule_id, -1, "", granted, kind))
                for i, share in zip(matched, shares):
                    line_points[i] += share
        else:
            for i, share in zip(matched, shares):
                if share:
                    line_points[i] += share
                    awards.append((rule_id, i, skus[i], share, kind))
    if awards:
        awards[:0] = [("", i, skus[i], points, "base") for i, points in enumerate(base_shares) if points]
    counters.extend(_stale_counters(compiled, member))
    return EarnDecision(line_points, tuple(awards), tuple(limits), tuple(counters), tuple(budgets))


def _within_ceiling(room: list[int], matched, factor: int, base_shares: list[int]) -> list[int]:
    """A multiplier rule's extras (x denominator) per matched line, each cut to the
    room left under the ceiling on that line; uses that room up."""
    allowed = []
    for i in matched:
        used = factor if factor <= room[i] else room[i]
        room[i] -= used
        allowed.append(used * base_shares[i])
    return allowed


def _period_caps(
    compiled: CompiledRules, rule, member: Member, now_ms: int, granted: int, limits: list[Limit]
) -> tuple[int, list[tuple[str, int, int]]]:
    """Cut ``granted`` to the room left in the member's day/week/month/lifetime
    counters of this rule. Returns it with (counter key, period key, points already
    counted in that period) for each cap."""
    local = compiled.clock(now_ms)[rule.zone]
    stored = member.counters or {}
    periods = []
    for limit, cap, key in rule.period_caps:
        period = local.period(limit)
        count = stored.get(key)
        used = count[1] if count is not None and count[0] == period else 0
        if granted > cap - used:
            cut = granted - max(0, cap - used)
            limits.append((rule.rule_id, limit, cut))
            granted -= cut
        periods.append((key, period, used))
    return granted, periods


def _stale_counters(compiled: CompiledRules, member: Member) -> tuple[tuple[str, int, int], ...]:
    """Deletions of the member's counters for caps no longer in the rule set, so a
    member's memory is bounded by the live capped rules."""
    if not member.counters:
        return ()
    keys = compiled.counter_keys
    return tuple((key, -1, 0) for key in member.counters if key not in keys)


def _applicable(compiled: CompiledRules, earn: Earn, member: Member, now_ms: int) -> tuple[list, range]:
    """(rule, indices of matching lines) for every rule that applies, in order, and
    the range of every line (the very object given for rules matching every line)."""
    applicable = []
    groups: set[str] | None = None
    lines = earn.lines
    every_line = range(len(lines))
    basket_base = -1
    base_rate = None
    for rule in compiled.candidates(earn.channel, earn.store_id, earn.currency, now_ms):
        if not rule.start_ms <= now_ms < rule.end_ms:
            continue
        if rule.checks_member and not _member_qualifies(rule, member, now_ms):
            continue
        if rule.basket_amount_min or rule.line_amount_min:
            if base_rate is None:
                base_rate = compiled.base_rate(earn.currency) or (0, 0)
            if not base_rate[1]:
                continue  # no exchange rate: thresholds cannot be judged
            if basket_base < 0:
                basket_base = sum(line.amount_minor for line in lines) * base_rate[0] // base_rate[1]
            if basket_base < rule.basket_amount_min:
                continue
        if rule.skus is not None or rule.categories is not None or rule.line_amount_min:
            matched = _matching_lines(rule, lines, base_rate)
            if not matched:
                continue
        elif lines:
            matched = every_line
        else:
            continue
        if rule.group:
            if groups is None:
                groups = set()
            elif rule.group in groups:
                continue
            groups.add(rule.group)
        applicable.append((rule, matched))
    return applicable, every_line


def _matching_lines(rule, lines, base_rate) -> list[int]:
    skus, categories, amount_min = rule.skus, rule.categories, rule.line_amount_min
    if amount_min == 0:  # the usual cases, as one comprehension each
        if skus is None:
            return [index for index, line in enumerate(lines) if line.category in categories]
        if categories is None:
            return [index for index, line in enumerate(lines) if line.sku in skus]
    matched = []
    for index, line in enumerate(lines):
        if skus is not None and line.sku not in skus:
            continue
        if categories is not None and line.category not in categories:
            continue
        if amount_min and line.amount_minor * base_rate[0] // base_rate[1] < amount_min:
            continue
        matched.append(index)
    return matched


def _member_qualifies(rule, member: Member, now_ms: int) -> bool:
    attributes = member.attributes
    for key, value in rule.attributes:
        if attributes.get(key) != value:
            return False
    if rule.tiers is not None and attributes.get("tier") not in rule.tiers:
        return False
    if rule.segments is not None:
        segments = {part.strip() for part in attributes.get("segments", "").split(",")}
        if rule.segments.isdisjoint(segments):
            return False
    if rule.first_purchase and (member.earned or member.earns):
        return False
    enrolled_ms = now_ms - member.enrolled_at_ms
    return rule.enrolled_min_ms <= enrolled_ms < rule.enrolled_max_ms
