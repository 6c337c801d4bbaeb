"""The shard's campaign budget leases (actors/shard/budgets.py), without Ray or Redis:
which chunks the live rules still need, and giving the rest back journal-first."""

from __future__ import annotations

import datetime
import math

import pytest

from loyalty.actors.ledger import CompiledProgram, Program, ShardCore
from loyalty.actors.ledger import commands as c
from loyalty.actors.ledger import events as e
from loyalty.actors.ledger.rules import Rule, RuleBudget, RuleEffect, RuleSchedule, RuleSet, compile_rules
from loyalty.actors.shard import budgets
from loyalty.actors.shard.budgets import BudgetLeases, budget_keys_to_keep
from loyalty.actors.shard.journal import JournalError, JournalUnavailable

T0 = 1_795_262_400_000  # 2026-11-21 12:00 UTC
PROGRAM = CompiledProgram(Program(points_expiry_days=0))




def budgeted(rule_id: str, total: int = 1_000, **fields) -> Rule:
    return Rule(rule_id=rule_id, effect=RuleEffect(bonus_points=30), budget=RuleBudget(total_points=total), **fields)


def ends_at(moment: datetime.datetime, zone: str = "") -> RuleSchedule:
    return RuleSchedule(end_time=moment, time_zone=zone)


def test_only_enabled_budgeted_rules_that_have_not_ended_keep_their_budget():
    utc = datetime.timezone.utc
    rule_set = RuleSet(
        version=1,
        rules=(
            budgeted("live"),
            budgeted("off", enabled=False),
            Rule(rule_id="no-budget", effect=RuleEffect(bonus_points=1)),
            budgeted("ended", schedule=ends_at(datetime.datetime(2026, 11, 21, 11, 0, tzinfo=utc))),
            budgeted("ends-soon", schedule=ends_at(datetime.datetime(2026, 11, 21, 13, 0, tzinfo=utc))),
            budgeted("ends-later", schedule=ends_at(datetime.datetime(2026, 11, 22, tzinfo=utc))),
        ),
        budget_keys={"live": "budget:live:3"},
    )
    keep, due_ms = budget_keys_to_keep(rule_set, T0)
    assert keep == {"budget:live:3", "ends-soon", "ends-later"}
    assert due_ms == T0 + 3_600_000  # look again when the first budgeted rule ends


def test_an_end_time_without_a_zone_is_read_in_the_rules_time_zone():
    paris_noon_thirty = datetime.datetime(2026, 11, 21, 12, 30)  # 11:30 UTC: ended at T0
    rule_set = RuleSet(version=1, rules=(budgeted("r", schedule=ends_at(paris_noon_thirty, "Europe/Paris")),))
    assert budget_keys_to_keep(rule_set, T0) == (set(), math.inf)
    assert budget_keys_to_keep(None, T0) == (set(), math.inf)


class Owner:
    """The budget owner: leases chunks, takes points back, logs what happened."""

    def __init__(self, log: list, fail_give_back: bool = False) -> None:
        self.left = {"camp": 1_000}
        self.log = log
        self.fail_give_back = fail_give_back

    def lease(self, key: str, needed: int) -> int:
        granted = min(self.left.get(key, 0), max(needed, 100))
        self.left[key] = self.left.get(key, 0) - granted
        return granted

    def available(self, key: str) -> int:
        return self.left.get(key, 0)

    def give_back(self, points: dict[str, int]) -> None:
        self.log.append(("give_back", dict(points)))
        if self.fail_give_back:
            raise JournalUnavailable("rules store away")
        for key, value in points.items():
            self.left[key] += value


def shard_with_a_chunk(rule_set: RuleSet, owner: Owner) -> ShardCore:
    core = ShardCore(PROGRAM)
    core.install_rules(compile_rules(rule_set, PROGRAM))
    core.apply_batch([c.EnrollMember("m", "e")], T0)
    core.apply_batch([c.Earn("m", "buy", "EUR", (c.Line("a", "food", 1, 1_000),))], T0, owner)
    assert core.budget_balances() == {"camp": 70}
    return core


def test_chunks_the_rules_no_longer_need_are_journaled_then_given_back():
    log: list = []
    owner = Owner(log)
    rules = RuleSet(version=1, rules=(budgeted("camp"),))
    core = shard_with_a_chunk(rules, owner)
    leases = BudgetLeases(owner, lambda record: log.append(("journal", record.events)), shard_index=0)
    leases.installed(rules)
    assert leases.before_batch(core, T0 + 1) == {}  # still live: kept
    assert leases.due_ms == math.inf and log == []
    leases.installed(RuleSet(version=2, rules=()))  # the campaign was deleted
    assert leases.before_batch(core, T0 + 2) == {"camp": 70}
    assert log == [
        ("journal", (e.BudgetReturned("", T0 + 2, budget_key="camp", points=70),)),
        ("give_back", {"camp": 70}),
    ]
    assert core.budget_balances() == {} and owner.left == {"camp": 1_000 - 30}


def test_a_graceful_stop_gives_every_chunk_back():
    log: list = []
    owner = Owner(log)
    rules = RuleSet(version=1, rules=(budgeted("camp"),))
    core = shard_with_a_chunk(rules, owner)
    leases = BudgetLeases(owner, lambda record: log.append(("journal", record.seq)), shard_index=0)
    leases.installed(rules)
    assert leases.give_all_back(core, T0 + 5) == {"camp": 70}
    assert [entry[0] for entry in log] == ["journal", "give_back"] and leases.due_ms == 0
    assert leases.give_all_back(core, T0 + 6) == {}  # nothing left: nothing journaled


def test_points_the_owner_cannot_take_back_are_lost_never_given_twice(log_lines):
    log: list = []
    owner = Owner(log, fail_give_back=True)
    core = shard_with_a_chunk(RuleSet(version=1, rules=(budgeted("camp"),)), owner)
    leases = BudgetLeases(owner, lambda record: log.append(("journal", record.seq)), shard_index=4)
    with log_lines(budgets.log) as lines:
        assert leases.give_all_back(core, T0 + 1) == {"camp": 70}  # journaled: the shard no longer holds them
    assert core.budget_balances() == {}
    assert "shard 4: budget points" in lines.text and "lost" in lines.text


def test_a_return_that_cannot_be_journaled_gives_nothing_back():
    log: list = []
    owner = Owner(log)
    core = shard_with_a_chunk(RuleSet(version=1, rules=(budgeted("camp"),)), owner)

    def write(record) -> None:
        raise JournalUnavailable("redis away")

    leases = BudgetLeases(owner, write, shard_index=0)
    with pytest.raises(JournalError):
        leases.give_all_back(core, T0 + 1)
    assert log == []  # the owner got nothing: the shell drops the core and recovers
