"""Cost of the rules engine per earn: a 5-line basket against 20 active rules of mixed
kinds (multipliers, points per unit, bonuses; line and basket targets; schedules in
three time zones; exclusive groups, a multiplier ceiling; day/week/lifetime and
per-transaction caps; one budgeted rule), compared with the same earn without rules.

Two measurements, microseconds per basket, best of several rounds:

- decision: the earn decision alone (base earn, rule evaluation, the event), the part
  the rules add to;
- apply: a whole ShardCore.apply_batch of earns (decision, evolve, outcome encoding),
  1,000 earns per batch over 1,000 members.

    python bench/rules_cost.py [--rounds 7] [--earns 1000]
"""

from __future__ import annotations

import argparse
import datetime
import time

from loyalty.actors.ledger import CompiledProgram, Program, ShardCore, codec
from loyalty.actors.ledger import commands as c
from loyalty.actors.ledger.ledger import fingerprint
from loyalty.actors.ledger.ops.earn import budget_taker, decide_earn
from loyalty.actors.ledger.rules import (
    Rule,
    RuleBudget,
    RuleCaps,
    RuleConditions,
    RuleEffect,
    RuleSchedule,
    RuleSet,
    RuleStacking,
    TimeWindow,
    compile_rules,
)

# Saturday 2026-11-21 12:00 UTC: weekend rules and a midday happy hour are live.
NOW_MS = int(datetime.datetime(2026, 11, 21, 12, 0, tzinfo=datetime.UTC).timestamp() * 1000)
ZONES = ("Europe/Berlin", "America/New_York", "UTC")


def twenty_rules(selective: bool = False) -> tuple[Rule, ...]:
    """20 active rules (every schedule holds at NOW_MS). Not selective: all of them
    apply to every line of the benchmark basket (the worst case). Selective: their
    conditions name stores, categories, SKUs and tiers the way campaigns do, so 6 of
    the 20 apply, mostly to some of the lines."""
    rules = []
    for i in range(20):
        zone = ZONES[i % 3]
        kind = i % 4
        if kind == 0:
            effect = RuleEffect(multiplier=("2", "1.5", "3")[i % 3], target=("lines", "basket")[i % 2])
        elif kind == 1:
            effect = RuleEffect(points_per_unit=("1", "0.5", "2.25")[i % 3], rounding=("down", "half_up", "up")[i % 3])
        elif kind == 2:
            effect = RuleEffect(bonus_points=50 + i)
        else:
            effect = RuleEffect(points_per_unit="0.1", target="basket", rounding="up")
        rules.append(
            Rule(
                rule_id=f"rule-{i:02d}",
                priority=100 - i,
                schedule=RuleSchedule(
                    days_of_week=("fri", "sat", "sun") if i % 2 else (),
                    time_windows=(TimeWindow(start="06:00", end="23:00"),) if i % 5 == 0 else (),
                    time_zone=zone,
                ),
                conditions=(_selective_conditions(i) if selective else RuleConditions(
                    channels=("pos", "web") if i % 3 == 0 else (),
                    categories=("food", "drink") if i % 4 == 1 else (),
                    basket_amount_min_minor=1000 if i % 6 == 0 else 0,
                    tiers=("gold", "silver") if i % 7 == 0 else (),
                )),
                effect=effect,
                stacking=RuleStacking(
                    exclusive_group="weekend" if i in (3, 19) else "",
                    multiplier_ceiling="5" if i == 4 else "",
                ),
                caps=RuleCaps(
                    per_transaction=500 if i % 5 == 2 else 0,
                    per_member_day=300 if i % 4 == 2 else 0,
                    per_member_week=1000 if i == 9 else 0,
                    per_member_lifetime=5000 if i == 13 else 0,
                ),
                budget=RuleBudget(total_points=10**9 if i == 11 else 0),
            )
        )
    return tuple(rules)


def _selective_conditions(i: int) -> RuleConditions:
    """Conditions of a campaign calendar: most rules are for other stores, categories,
    SKUs or tiers; rules 0, 1, 2, 5, 9 and 11 apply to the basket."""
    if i in (0, 9):
        return RuleConditions(channels=("pos",), basket_amount_min_minor=1000)
    if i in (1, 5):
        return RuleConditions(categories=("food",))
    if i == 2:
        return RuleConditions(skus=("sku-3", "sku-9"), tiers=("gold",))
    if i == 11:
        return RuleConditions()
    if i % 3 == 0:
        return RuleConditions(store_ids=(f"store-{i}", "paris-2"))
    if i % 3 == 1:
        return RuleConditions(categories=("garden", f"cat-{i}"))
    return RuleConditions(tiers=("platinum",), skus=(f"sku-x{i}",))


class Budget:
    """A budget owner with plenty: leases in chunks of 10,000."""

    def __init__(self) -> None:
        self.remaining = 10**12

    def lease(self, budget_key: str, points_needed: int) -> int:
        granted = min(self.remaining, max(points_needed, 10_000))
        self.remaining -= granted
        return granted

    def available(self, budget_key: str) -> int:
        return self.remaining


LINES = tuple(
    c.Line(sku=f"sku-{j}", category=("food", "drink", "home")[j % 3], quantity=1 + j, amount_minor=999 + 1237 * j)
    for j in range(5)
)


def make_core(rules: tuple[Rule, ...], members: int) -> ShardCore:
    program = CompiledProgram(Program())
    core = ShardCore(program)
    if rules:
        core.install_rules(compile_rules(RuleSet(version=1, rules=rules), program))
    core.apply_batch([c.EnrollMember(f"m{i}", "e", {"tier": "gold"}) for i in range(members)], NOW_MS)
    return core


def decision_us(rules: tuple[Rule, ...], rounds: int, earns: int) -> float:
    core = make_core(rules, 1)
    ledger, member = core.ledger, core.ledger.members["m0"]
    budget = Budget()
    best = float("inf")
    for round_number in range(rounds):
        commands = [c.Earn("m0", f"r{round_number}-{i}", "EUR", LINES, "pos", "berlin-1") for i in range(earns)]
        digests = [fingerprint(command) for command in commands]
        events: list = []
        ledger.budget_source = budget
        start = time.perf_counter()
        for command, digest in zip(commands, digests):
            decide_earn(ledger, command, member, NOW_MS, digest, budget_taker(ledger, NOW_MS, events)[0])
        best = min(best, time.perf_counter() - start)
        for event in events:  # leases taken on the way: keep the shard's balance right
            ledger.apply(event)
    return best / earns * 1e6


def apply_us(rules: tuple[Rule, ...], rounds: int, earns: int) -> tuple[float, int]:
    core = make_core(rules, earns)
    budget = Budget()
    best = float("inf")
    points = 0
    for round_number in range(rounds):
        batch = [c.Earn(f"m{i}", f"r{round_number}", "EUR", LINES, "pos", "berlin-1") for i in range(earns)]
        start = time.perf_counter()
        outcomes, _ = core.apply_batch(batch, NOW_MS + round_number * 7 * 86_400_000, budget)
        best = min(best, time.perf_counter() - start)
        points = codec.decode_outcome(outcomes[0]).points
    return best / earns * 1e6, points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--earns", type=int, default=1000)
    args = parser.parse_args()
    scenarios = {"no rules": (), "20 rules, 6 apply": twenty_rules(True), "20 rules, all apply": twenty_rules()}
    results = {}
    for label, rules in scenarios.items():
        decision = decision_us(rules, args.rounds, args.earns)
        applied, points = apply_us(rules, args.rounds, args.earns)
        results[label] = (decision, applied, points)
    print(f"5-line basket, best of {args.rounds} rounds of {args.earns} earns, microseconds per basket")
    print(f"{'scenario':<22}{'decision':>10}{'added':>8}{'apply':>8}{'added':>8}{'points':>8}")
    base_decision, base_apply, _ = results["no rules"]
    for label, (decision, applied, points) in results.items():
        print(
            f"{label:<22}{decision:>10.1f}{decision - base_decision:>8.1f}"
            f"{applied:>8.1f}{applied - base_apply:>8.1f}{points:>8}"
        )

if __name__ == "__main__":
    main()
