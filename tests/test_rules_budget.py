"""Campaign budgets against a real Redis: several shards earning at once never grant
more than the total, chunks nobody needs come back, and crashes never overspend.

Shards here are ShardActor objects in this process (the class Ray runs), one thread
each, so each one applies its batches in order while all of them race on the budget.
"""

from __future__ import annotations

import asyncio
import random
import threading

import msgspec
import pytest
import redis.asyncio

from loyalty.actors.shard.journal import JournalUnavailable
from loyalty.actors.ledger import codec
from loyalty.actors.ledger.commands import Earn, EnrollMember, GetBalance, Line
from loyalty.actors.ledger.program import CompiledProgram, Program
from loyalty.actors.ledger.rules import Rule, RuleBudget, RuleEffect
from loyalty.actors.ledger.status import Status
from loyalty.actors.shard.rules_source import ShardRulesSource, account_of
from loyalty.actors.shard.actor import ShardActor, ShardSettings
from loyalty.server.stores.rules import RulesStore

RULE_ID = "campaign"
SHARD_COUNT = 3
MEMBERS_PER_SHARD = 4


def campaign(total_points: int, *, enabled: bool = True) -> Rule:
    """5 extra points per euro, until the campaign's points run out."""
    return Rule(rule_id=RULE_ID, enabled=enabled, effect=RuleEffect(points_per_unit="5"),
                budget=RuleBudget(total_points=total_points))


def change(redis_url: str, key_prefix: str, method: str, *args, **kwargs):
    """Run one RulesStore change (the gateway side) and return its result."""

    async def run():
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            store = RulesStore(client, program=CompiledProgram(Program()), key_prefix=key_prefix)
            return await getattr(store, method)(*args, **kwargs)
        finally:
            await client.aclose()

    return asyncio.run(run())


class Shards:
    """SHARD_COUNT shard objects on one Redis, with what they granted."""

    def __init__(self, redis_url: str, key_prefix: str) -> None:
        self.redis_url, self.key_prefix = redis_url, key_prefix
        self.shards = [self._start(index) for index in range(SHARD_COUNT)]
        self.granted = [0] * SHARD_COUNT
        self.budget_cuts = 0
        self.members = [[f"s{index}-m{m}" for m in range(MEMBERS_PER_SHARD)] for index in range(SHARD_COUNT)]
        for index in range(SHARD_COUNT):
            self.apply(index, [EnrollMember(member, "enroll") for member in self.members[index]], 0)

    def _start(self, index: int) -> ShardActor:
        return ShardActor(ShardSettings(shard_index=index, redis_url=self.redis_url, key_prefix=self.key_prefix))

    def apply(self, index: int, commands, version: int):
        outcomes = codec.decode_outcomes(self.shards[index].apply(codec.encode_commands(commands), version))
        for outcome in outcomes:
            self.granted[index] += sum(points for rule_id, _, _, points, _ in outcome.awards if rule_id == RULE_ID)
            self.budget_cuts += sum(1 for rule_id, limit, _ in outcome.limits if (rule_id, limit) == (RULE_ID, "budget"))
        return outcomes

    def held(self) -> int:
        return sum(sum(shard._core.budget_balances().values()) for shard in self.shards if shard._core is not None)

    def crash(self, index: int) -> None:
        """Lose a shard's memory: the next batch rebuilds it from snapshot and journal."""
        self.shards[index]._core = None


def remaining_of(redis_client, key_prefix: str, budget_key: str) -> tuple[int, int]:
    return ShardRulesSource(redis_client, key_prefix=key_prefix).budget_account(account_of(budget_key))


def budget_key_of(redis_client, key_prefix: str, version: int) -> str:
    return ShardRulesSource(redis_client, key_prefix=key_prefix).rule_set(version).budget_keys[RULE_ID]


def earn_storm(
    shards: Shards, version: int, *, seed: int, batches: int, crash_rate: float = 0.0, euros_max: int = 60
) -> None:
    """Every shard applies ``batches`` random batches of earns concurrently."""
    failures: list[BaseException] = []

    def run(index: int) -> None:
        rng = random.Random(seed * 100 + index)
        try:
            for batch in range(batches):
                if rng.random() < crash_rate:
                    shards.crash(index)
                earns = [
                    Earn(rng.choice(shards.members[index]), f"e{seed}-{batch}-{n}", "EUR",
                         (Line("sku", "food", 1, rng.randint(1, euros_max) * 100),))
                    for n in range(rng.randint(1, 6))
                ]
                outcomes = shards.apply(index, earns, version)
                assert all(outcome.status == Status.OK for outcome in outcomes)
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=run, args=(index,)) for index in range(SHARD_COUNT)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_concurrent_shards_never_exceed_the_budget_and_unused_chunks_come_back(
    redis_server, redis_client, key_prefix, seed
):
    total = random.Random(seed).randint(1_000, 6_000)
    version = change(redis_server.url, key_prefix, "replace", [campaign(total)]).version
    shards = Shards(redis_server.url, key_prefix)
    key = budget_key_of(redis_client, key_prefix, version)
    earn_storm(shards, version, seed=seed, batches=40, crash_rate=0.1)
    remaining, stored_total = remaining_of(redis_client, key_prefix, key)
    granted = sum(shards.granted)
    assert stored_total == total
    assert granted <= total
    assert shards.budget_cuts > 0  # the campaign really ran out while shards competed
    assert remaining >= 0 and remaining + shards.held() + granted == total
    # The campaign ends: every shard gives its unused chunks back on its next batch.
    ended = change(redis_server.url, key_prefix, "delete", RULE_ID).version
    for index in range(SHARD_COUNT):
        shards.apply(index, [GetBalance(shards.members[index][0])], ended)
    assert shards.held() == 0
    assert remaining_of(redis_client, key_prefix, key)[0] + granted == total


def test_disabling_gives_chunks_back_and_raising_the_total_lets_shards_go_on(redis_server, redis_client, key_prefix):
    version = change(redis_server.url, key_prefix, "replace", [campaign(2_000)]).version
    shards = Shards(redis_server.url, key_prefix)
    key = budget_key_of(redis_client, key_prefix, version)
    earn_storm(shards, version, seed=7, batches=3, euros_max=5)
    assert shards.held() > 0
    disabled = change(redis_server.url, key_prefix, "replace", [campaign(2_000, enabled=False)]).version
    for index in range(SHARD_COUNT):
        shards.apply(index, [GetBalance(shards.members[index][0])], disabled)
    assert shards.held() == 0
    assert remaining_of(redis_client, key_prefix, key)[0] + sum(shards.granted) == 2_000
    # Enabled again with a larger total: the same account, 3,000 more points.
    raised = change(redis_server.url, key_prefix, "replace", [campaign(5_000)]).version
    earn_storm(shards, raised, seed=8, batches=40)
    granted = sum(shards.granted)
    assert 2_000 < granted <= 5_000
    remaining, stored_total = remaining_of(redis_client, key_prefix, key)
    assert stored_total == 5_000 and remaining + shards.held() + granted == 5_000


def test_lowering_the_total_below_what_shards_hold_never_overspends(redis_server, redis_client, key_prefix):
    version = change(redis_server.url, key_prefix, "replace", [campaign(6_000)]).version
    shards = Shards(redis_server.url, key_prefix)
    key = budget_key_of(redis_client, key_prefix, version)
    earn_storm(shards, version, seed=11, batches=2)
    spent_before = sum(shards.granted)
    lowered = change(redis_server.url, key_prefix, "replace", [campaign(spent_before + 10)]).version
    earn_storm(shards, lowered, seed=12, batches=30)
    assert sum(shards.granted) <= spent_before + 10
    remaining, _ = remaining_of(redis_client, key_prefix, key)
    assert remaining + shards.held() + sum(shards.granted) == spent_before + 10


def test_a_crash_after_leasing_and_before_journaling_strands_points_but_never_overspends(
    redis_server, redis_client, key_prefix, monkeypatch
):
    version = change(redis_server.url, key_prefix, "replace", [campaign(3_000)]).version
    shards = Shards(redis_server.url, key_prefix)
    key = budget_key_of(redis_client, key_prefix, version)
    victim = shards.shards[0]
    real_append = victim._journal.append

    def append_then_die(epoch, seq, payload):
        raise JournalUnavailable("the shard died before its record reached Redis")

    monkeypatch.setattr(victim._journal, "append", append_then_die)
    with pytest.raises(JournalUnavailable):
        shards.apply(0, [Earn(shards.members[0][0], "lost", "EUR", (Line("sku", "food", 1, 10_000),))], version)
    monkeypatch.setattr(victim._journal, "append", real_append)
    stranded = 3_000 - remaining_of(redis_client, key_prefix, key)[0]
    assert stranded > 0  # leased from the owner, never journaled: gone, not spendable twice
    earn_storm(shards, version, seed=5, batches=40)
    granted = sum(shards.granted)
    remaining, _ = remaining_of(redis_client, key_prefix, key)
    assert granted <= 3_000 - stranded
    assert remaining + shards.held() + granted + stranded == 3_000


def test_a_crash_between_journaling_a_return_and_giving_it_back_loses_those_points_only(
    redis_server, redis_client, key_prefix, monkeypatch
):
    version = change(redis_server.url, key_prefix, "replace", [campaign(3_000)]).version
    shards = Shards(redis_server.url, key_prefix)
    key = budget_key_of(redis_client, key_prefix, version)
    earn_storm(shards, version, seed=9, batches=2, euros_max=5)
    held = shards.held()
    assert held > 0
    for shard in shards.shards:
        def give_back_fails(points):
            raise JournalUnavailable("Redis went away after the record was journaled")

        monkeypatch.setattr(shard._rules_source, "give_back", give_back_fails)
    for index in range(SHARD_COUNT):
        shards.crash(index)  # the returns are replayed from the journal, not redone
    ended = change(redis_server.url, key_prefix, "delete", RULE_ID).version
    for index in range(SHARD_COUNT):
        shards.apply(index, [GetBalance(shards.members[index][0])], ended)
    assert shards.held() == 0
    # A restart replays the BudgetReturned records: the shards hold nothing, and do not
    # give the points back a second time.
    monkeypatch.undo()
    restarted = [ShardActor(ShardSettings(shard_index=i, redis_url=redis_server.url, key_prefix=key_prefix))
                 for i in range(SHARD_COUNT)]
    assert all(shard._core.budget_balances() == {} for shard in restarted)
    remaining, _ = remaining_of(redis_client, key_prefix, key)
    assert remaining + sum(shards.granted) + held == 3_000


def test_graceful_stop_gives_every_chunk_back(redis_server, redis_client, key_prefix):
    version = change(redis_server.url, key_prefix, "replace", [campaign(4_000)]).version
    shards = Shards(redis_server.url, key_prefix)
    key = budget_key_of(redis_client, key_prefix, version)
    earn_storm(shards, version, seed=13, batches=3, euros_max=5)
    assert shards.held() > 0
    returned = sum(sum(shard.return_all_budgets().values()) for shard in shards.shards)
    assert returned > 0 and shards.held() == 0
    assert remaining_of(redis_client, key_prefix, key)[0] + sum(shards.granted) == 4_000
    # After a restart the shards hold nothing (the returns were journaled) and lease anew.
    restarted = [ShardActor(ShardSettings(shard_index=i, redis_url=redis_server.url, key_prefix=key_prefix))
                 for i in range(SHARD_COUNT)]
    assert all(shard._core.budget_balances() == {} for shard in restarted)


def test_a_campaign_that_has_ended_gives_its_chunks_back(redis_server, redis_client, key_prefix):
    import datetime

    from loyalty.actors.ledger.rules import RuleSchedule

    version = change(redis_server.url, key_prefix, "replace", [campaign(4_000)]).version
    shards = Shards(redis_server.url, key_prefix)
    key = budget_key_of(redis_client, key_prefix, version)
    earn_storm(shards, version, seed=17, batches=3, euros_max=5)
    assert shards.held() > 0
    ended = msgspec.structs.replace(
        campaign(4_000), schedule=RuleSchedule(end_time=datetime.datetime(2001, 1, 1, tzinfo=datetime.UTC)))
    over = change(redis_server.url, key_prefix, "replace", [ended]).version
    assert budget_key_of(redis_client, key_prefix, over) == key  # same budget, only its schedule changed
    granted_before = sum(shards.granted)
    earn_storm(shards, over, seed=18, batches=2)
    assert shards.held() == 0 and sum(shards.granted) == granted_before
    assert remaining_of(redis_client, key_prefix, key)[0] + granted_before == 4_000
