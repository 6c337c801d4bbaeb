"""Rules inside the shard core: campaign budgets as a shard sees them (leases in
chunks, cuts, returns, replay and snapshots), SimulateEarn, and versions."""

from __future__ import annotations

import msgspec
import pytest

from loyalty.actors.ledger import CompiledProgram, Program, ShardCore, codec
from loyalty.actors.ledger import commands as c
from loyalty.actors.ledger import events as e
from loyalty.actors.ledger.rules import (
    Rule,
    RuleBudget,
    RuleCaps,
    RuleEffect,
    RuleSet,
    compile_rules,
)
from loyalty.actors.ledger.status import Status

T0 = 1_795_262_400_000  # a Saturday, 12:00 UTC
PROGRAM = CompiledProgram(Program(points_expiry_days=0))
LINES = (c.Line("a", "food", 1, 1000),)


class FakeBudget:
    """A budget owner: points not yet granted to any shard, leased in chunks."""

    def __init__(self, remaining: dict[str, int], chunk: int = 100) -> None:
        self.remaining = dict(remaining)
        self.chunk = chunk
        self.leases: list[tuple[str, int, int]] = []

    def lease(self, budget_key: str, points_needed: int) -> int:
        granted = min(self.remaining.get(budget_key, 0), max(points_needed, self.chunk))
        self.remaining[budget_key] = self.remaining.get(budget_key, 0) - granted
        self.leases.append((budget_key, points_needed, granted))
        return granted

    def available(self, budget_key: str) -> int:
        return self.remaining.get(budget_key, 0)

    def give_back(self, returned: dict[str, int]) -> None:
        for key, points in returned.items():
            self.remaining[key] += points


def campaign(bonus: int = 30, total: int = 1000, **fields) -> Rule:
    return Rule(rule_id="camp", effect=RuleEffect(bonus_points=bonus), budget=RuleBudget(total_points=total), **fields)


def make_core(*rules: Rule, version: int = 1, members: int = 3) -> ShardCore:
    core = ShardCore(PROGRAM)
    core.install_rules(compile_rules(RuleSet(version=version, rules=rules, budget_keys={"camp": "budget:camp:1"}), PROGRAM))
    core.apply_batch([c.EnrollMember(f"m{i}", "enrol", {}) for i in range(members)], T0)
    return core


def earn(core: ShardCore, member: str, request_id: str, budget=None, now_ms: int = T0):
    outcomes, record = core.apply_batch([c.Earn(member, request_id, "EUR", LINES)], now_ms, budget)
    return codec.decode_outcome(outcomes[0]), record


def test_a_shard_leases_a_chunk_once_and_spends_it_locally():
    core, owner = make_core(campaign()), FakeBudget({"budget:camp:1": 1000}, chunk=100)
    outcome, record = earn(core, "m0", "r1", owner)
    assert outcome.points == 10 + 30
    assert [type(event) for event in record.events] == [e.BudgetLeased, e.Earned]
    assert record.events[0] == e.BudgetLeased("", T0, budget_key="budget:camp:1", points=100)
    assert record.events[1].budgets == (("budget:camp:1", 30),)
    assert core.budget_balances() == {"budget:camp:1": 70}
    for i in range(2):  # 70 left locally: no more leases
        _, record = earn(core, f"m{i + 1}", "r1", owner)
        assert [type(event) for event in record.events] == [e.Earned]
    assert owner.leases == [("budget:camp:1", 30, 100)]
    assert core.budget_balances() == {"budget:camp:1": 10}


def test_an_exhausted_budget_cuts_the_earn_and_says_so():
    core, owner = make_core(campaign(bonus=30)), FakeBudget({"budget:camp:1": 50}, chunk=20)
    first, _ = earn(core, "m0", "r1", owner)
    second, _ = earn(core, "m1", "r1", owner)
    third, _ = earn(core, "m2", "r1", owner)
    assert [o.points - 10 for o in (first, second, third)] == [30, 20, 0]
    assert second.limits == (("camp", "budget", 10),)
    assert third.limits == (("camp", "budget", 30),)
    assert owner.remaining["budget:camp:1"] == 0 and core.budget_balances() == {}


def test_without_a_budget_source_only_the_local_balance_is_spent():
    core = make_core(campaign())
    outcome, record = earn(core, "m0", "r1", None)
    assert outcome.points == 10 and outcome.limits == (("camp", "budget", 30),)
    assert all(not isinstance(event, e.BudgetLeased) for event in record.events)


def test_budgets_are_never_overspent_across_shards():
    owner = FakeBudget({"budget:camp:1": 95}, chunk=40)
    shards = [make_core(campaign(bonus=7)) for _ in range(3)]
    granted = 0
    for round_number in range(10):
        for shard in shards:
            outcome, _ = earn(shard, f"m{round_number % 3}", f"r{round_number}", owner)
            granted += outcome.points - 10
    held = sum(sum(shard.budget_balances().values()) for shard in shards)
    assert granted + held + owner.remaining["budget:camp:1"] == 95
    assert granted <= 95
    for shard in shards:
        _, returned = shard.return_budgets(keep=set())
        owner.give_back(returned)
    assert granted + owner.remaining["budget:camp:1"] == 95


def test_return_budgets_keeps_what_is_still_live_and_journals_the_rest():
    core, owner = make_core(campaign()), FakeBudget({"budget:camp:1": 1000, "old": 0}, chunk=100)
    earn(core, "m0", "r1", owner)
    assert core.return_budgets(keep={"budget:camp:1"}) == (None, {})
    seq = core.seq
    record, returned = core.return_budgets(keep=set())
    assert returned == {"budget:camp:1": 70}
    assert record.seq == seq + 1 and record.events == (e.BudgetReturned("", T0, budget_key="budget:camp:1", points=70),)
    assert core.budget_balances() == {}
    assert core.return_budgets(keep=set()) == (None, {})


def test_replay_and_snapshots_restore_budget_balances():
    core, owner = make_core(campaign()), FakeBudget({"budget:camp:1": 1000}, chunk=100)
    records = []
    for i in range(3):
        _, record = earn(core, f"m{i}", "r1", owner)
        records.append(record)
    snapshot = list(core.snapshot_chunks())
    _, record = earn(core, "m0", "r2", owner)
    records.append(record)
    return_record, _ = core.return_budgets(keep=set())
    records.append(return_record)
    replayed = ShardCore(PROGRAM)
    replayed.replay(codec.decode_record(codec.encode_record(make_core_enrol_record())))
    for record in records:
        replayed.replay(codec.decode_record(codec.encode_record(record)))
    assert replayed.state_bytes() == core.state_bytes()
    restored = ShardCore(PROGRAM)
    restored.load_snapshot(snapshot)
    assert restored.budget_balances() == {"budget:camp:1": 10}
    for record in records[3:]:
        restored.replay(record)
    assert restored.state_bytes() == core.state_bytes()


def make_core_enrol_record() -> e.JournalRecord:
    """The enrolment record make_core journals first (seq 1)."""
    _, record = ShardCore(PROGRAM).apply_batch([c.EnrollMember(f"m{i}", "enrol", {}) for i in range(3)], T0)
    return record


def old_format_chunks(core: ShardCore, version: int) -> list[bytes]:
    """The core's state as formats 2 and 3 wrote it: member chunks are arrays of Members."""
    header = msgspec.msgpack.decode(next(iter(core.snapshot_chunks())))
    fields = header[1:4] if version == 2 else [*header[1:4], header[4]]  # format 2 had four fields
    members = sorted(core.ledger.members.values(), key=lambda member: member.member_id)
    return [msgspec.msgpack.encode([version, *fields]), msgspec.msgpack.encode(members)]


@pytest.mark.parametrize("version", [2, 3])
def test_format_2_and_3_snapshots_are_still_read(version):
    core = make_core(campaign())
    earn(core, "m0", "r1", FakeBudget({"budget:camp:1": 10}))
    restored = ShardCore(PROGRAM)
    restored.load_snapshot(old_format_chunks(core, version))
    if version == 2:
        assert restored.budget_balances() == {}
        restored.ledger.budgets = dict(core.ledger.budgets)
    assert restored.state_bytes() == core.state_bytes()


def test_unknown_snapshot_formats_are_refused():
    core = make_core(campaign())
    chunks = list(core.snapshot_chunks())
    header = msgspec.msgpack.decode(chunks[0])
    with pytest.raises(ValueError, match="not supported"):
        ShardCore(PROGRAM).load_snapshot([msgspec.msgpack.encode([1, *header[1:4]]), *chunks[1:]])


# ------------------------------------------------------------------ SimulateEarn


def simulate_then_earn(core: ShardCore, member: str, request_id: str, owner, lines=LINES):
    before = core.state_bytes()
    budget_before = dict(owner.remaining) if owner else None
    outcomes, record = core.apply_batch([c.SimulateEarn(member, request_id, "EUR", lines)], T0, owner)
    assert record is None, "a simulation journals nothing"
    assert core.state_bytes() == before, "a simulation changes nothing"
    if owner:
        assert owner.remaining == budget_before, "a simulation leases nothing"
    simulated = outcomes[0]
    outcomes, _ = core.apply_batch([c.Earn(member, request_id or "real", "EUR", lines)], T0, owner)
    return codec.decode_outcome(simulated), codec.decode_outcome(outcomes[0])


def test_simulate_earn_equals_the_earn_that_follows():
    rules = (campaign(bonus=30), Rule(rule_id="capped", effect=RuleEffect(multiplier="2"), caps=RuleCaps(per_member_day=15)))
    core, owner = make_core(*rules), FakeBudget({"budget:camp:1": 45}, chunk=40)
    for i, request_id in enumerate(["a", "b", "c"]):
        simulated, real = simulate_then_earn(core, "m0", request_id, owner)
        assert simulated == real
        assert simulated.rules_version == 1
        assert bool(simulated.awards) == (i < 2)  # the third got nothing from rules
    # The third earn found the budget and the daily cap spent: the simulation said so too.
    assert {rule: limit for rule, limit, _ in simulated.limits} == {"camp": "budget", "capped": "day"}


def test_simulate_earn_without_a_request_id_and_for_unknown_members():
    core = make_core(campaign())
    outcomes, _ = core.apply_batch([c.SimulateEarn("nobody", "", "EUR", LINES)], T0)
    assert codec.decode_outcome(outcomes[0]).status == Status.MEMBER_NOT_FOUND
    simulated, real = simulate_then_earn(core, "m0", "", None)
    assert simulated.points == real.points == 10


def test_simulate_earn_of_a_used_request_id_answers_like_a_retry():
    core = make_core(campaign())
    earn(core, "m0", "r1")
    stored = core.ledger.members["m0"].outcomes["r1"].outcome
    outcomes, _ = core.apply_batch(
        [c.SimulateEarn("m0", "r1", "EUR", LINES), c.SimulateEarn("m0", "r1", "EUR", LINES * 2)], T0
    )
    assert outcomes[0] == stored
    assert codec.decode_outcome(outcomes[1]).status == Status.REQUEST_ID_CONFLICT


# ------------------------------------------------------------------ versions


def test_each_earn_records_the_version_it_was_evaluated_with():
    core = make_core(Rule(rule_id="x", effect=RuleEffect(multiplier="2")), version=4)
    first, record = earn(core, "m0", "r1")
    assert (first.rules_version, first.points, record.events[-1].rules_version) == (4, 20, 4)
    core.install_rules(compile_rules(RuleSet(version=5, rules=(Rule(rule_id="x", effect=RuleEffect(multiplier="3")),)), PROGRAM))
    assert core.rules_version == 5
    second, _ = earn(core, "m0", "r2")
    assert (second.rules_version, second.points) == (5, 30)
    core.install_rules(None)
    third, _ = earn(core, "m0", "r3")
    assert (core.rules_version, third.rules_version, third.points) == (0, 0, 10)
    # A retry of the first earn returns what it got then, under version 4.
    retry, _ = earn(core, "m0", "r1")
    assert retry == first
