"""The bytes the core produces are a persisted and a wire format: outcomes (sent to
gateways and kept for replays), journal records and snapshots. A fixed scenario that
goes through every operation family, success and failure, must produce exactly the
bytes it produced when this test was written; a refactoring of the core that changes
a single byte fails here. (Changing the format on purpose means a new snapshot format
version or event fields added at the end, and then a new digest below.)
"""

from __future__ import annotations

import hashlib

import msgspec

from loyalty.actors.ledger import CompiledProgram, Program, ShardCore, codec
from loyalty.actors.ledger import commands as c
from loyalty.actors.ledger.outcomes import Outcome
from loyalty.actors.ledger.rules import (
    Rule,
    RuleBudget,
    RuleCaps,
    RuleConditions,
    RuleEffect,
    RuleSet,
    RuleStacking,
    compile_rules,
)
from loyalty.actors.ledger.status import Status

T0 = 1_795_262_400_000  # a Saturday, 12:00 UTC
DAY_MS = 86_400_000
PROGRAM = CompiledProgram(Program(return_window_days=2, points_expiry_days=30, idempotency_retention_days=3))

RULES = RuleSet(
    version=7,
    rules=(
        Rule(rule_id="double-food", priority=5, conditions=RuleConditions(categories=("food",)),
             effect=RuleEffect(multiplier="2"), stacking=RuleStacking(multiplier_ceiling="2.5"),
             caps=RuleCaps(per_member_day=40)),
        Rule(rule_id="shoes-extra", priority=4, conditions=RuleConditions(skus=("shoes",)),
             effect=RuleEffect(points_per_unit="0.5", target="basket", rounding="half_up"),
             caps=RuleCaps(per_transaction=25)),
        Rule(rule_id="welcome", priority=3, effect=RuleEffect(bonus_points=15),
             stacking=RuleStacking(exclusive_group="bonus"), budget=RuleBudget(total_points=40)),
        Rule(rule_id="also-bonus", priority=2, effect=RuleEffect(bonus_points=99),
             stacking=RuleStacking(exclusive_group="bonus")),
    ),
    budget_keys={"welcome": "budget:welcome:1"},
)


class Owner:
    """A campaign budget owner leasing chunks of 20."""

    def __init__(self) -> None:
        self.left = {"budget:welcome:1": 40}

    def lease(self, key: str, needed: int) -> int:
        granted = min(self.left.get(key, 0), max(needed, 20))
        self.left[key] = self.left.get(key, 0) - granted
        return granted

    def available(self, key: str) -> int:
        return self.left.get(key, 0)


def _lines(*specs: tuple[str, str, int, int]) -> tuple[c.Line, ...]:
    return tuple(c.Line(*spec) for spec in specs)


BASKET = _lines(("apple", "food", 3, 1_250), ("shoes", "apparel", 1, 5_999), ("bread", "food", 2, 480))


def batches() -> list[tuple[int, list[c.Command]]]:
    """(now_ms, commands) of the scenario, in order."""
    return [
        (T0, [c.EnrollMember("alice", "e1", {"tier": "gold"}), c.EnrollMember("bob", "e1"),
              c.EnrollMember("alice", "e2"), c.EnrollMember("alice", "e1", {"tier": "gold"}),
              c.GetBalance("nobody")]),
        (T0 + 1, [c.Earn("alice", "buy-1", "EUR", BASKET, "pos", "berlin-1"),
                  c.Earn("bob", "buy-1", "EUR", _lines(("apple", "food", 1, 700)), "web", ""),
                  c.Earn("alice", "buy-1", "EUR", BASKET, "pos", "berlin-1"),  # replay
                  c.Earn("alice", "buy-1", "EUR", BASKET[:1], "pos", "berlin-1"),  # conflict
                  c.Redeem("alice", "spend-0", 10),  # still pending: insufficient
                  c.SimulateEarn("bob", "", "EUR", BASKET, "pos", "")]),
        (T0 + 3 * DAY_MS, [c.Redeem("alice", "spend-1", 12), c.Reserve("alice", "hold-1", 20, 60),
                           c.Reserve("alice", "hold-2", 5, 0), c.Capture("alice", "cap-1", "rsv-1", 8),
                           c.Release("alice", "rel-2", "rsv-2"), c.Capture("alice", "cap-x", "rsv-1"),
                           c.Capture("alice", "cap-y", "rsv-99"), c.Reserve("bob", "hold-b", 3, 1),
                           c.Adjust("bob", "adj-1", 50, "goodwill"), c.Adjust("bob", "adj-2", -7, "typo"),
                           c.Adjust("bob", "adj-3", -10**9, "too much"),
                           c.GetMember("alice"), c.ListTransactions("alice", 4), c.GetOperation("alice", "spend-1"),
                           c.GetOperation("alice", "never")]),
        (T0 + 3 * DAY_MS + 5_000, [c.GetBalance("bob"),  # bob's hold expired
                                   c.Reverse("alice", "ret-1", "buy-1", (c.ReturnLine("apple", 1),)),
                                   c.Reverse("alice", "ret-2", "buy-1", (c.ReturnLine("shoes", 2),)),
                                   c.Reverse("alice", "ret-3", "nothing"),
                                   c.Redeem("alice", "spend-2", 10**6),
                                   c.Reverse("alice", "ret-4", "buy-1"),
                                   c.ListTransactions("alice", 0, 5),
                                   c.Earn("bob", "buy-2", "USD", _lines(("x", "misc", 1, 999)))]),
        (T0 + 29 * DAY_MS, [c.Reserve("bob", "hold-late", 30, 7 * 24 * 3600)]),
        (T0 + 31 * DAY_MS, [c.Release("bob", "rel-late", "rsv-2")]),  # part of the hold expired meanwhile
        (T0 + 40 * DAY_MS, [c.GetBalance("alice"), c.GetBalance("bob"),  # lots expire, outcomes pruned
                            c.GetOperation("alice", "spend-1"), c.Redeem("bob", "spend-b", 1)]),
    ]


def run() -> tuple[list[bytes], ShardCore]:
    core = ShardCore(PROGRAM, compress_after=0)
    core.install_rules(compile_rules(RULES, PROGRAM))
    owner = Owner()
    produced: list[bytes] = []
    for now_ms, commands in batches():
        outcomes, record = core.apply_batch(commands, now_ms, owner)
        produced.append(codec.encode_outcomes(outcomes))
        if record is not None:
            produced.append(codec.encode_record(record))
    record, _ = core.return_budgets(keep=set(), now_ms=T0 + 41 * DAY_MS)
    produced.append(codec.encode_record(record))
    produced.extend(core.snapshot_chunks())
    produced.append(core.state_bytes())
    return produced, core


# The digest of every byte run() produced since journal records carry the balance
# after each event (JournalRecord.balances, a field added at the end with a default).
# Outcomes, events, snapshots and state bytes did not change: with each record encoded
# without that field, run() still gives the digest pinned before it,
# 68be23172690630ff37b8f87d651cc4e (tests/test_public_events.py checks this).
PINNED_DIGEST = "9e4bab3ce192cf06e633b3c39780ca12"


def _digest(produced: list[bytes]) -> str:
    hasher = hashlib.blake2b(digest_size=16)
    for chunk in produced:
        hasher.update(len(chunk).to_bytes(8, "big"))
        hasher.update(chunk)
    return hasher.hexdigest()


def test_the_scenario_exercises_every_outcome_family():
    produced, _ = run()
    outcomes = [o for payload in produced[:-1] for o in _try_outcomes(payload)]
    statuses = {o.status for o in outcomes}
    assert statuses >= {
        Status.OK, Status.MEMBER_NOT_FOUND, Status.MEMBER_ALREADY_EXISTS, Status.INSUFFICIENT_POINTS,
        Status.REQUEST_ID_CONFLICT, Status.RESERVATION_NOT_FOUND, Status.RESERVATION_EXPIRED,
        Status.ORIGINAL_NOT_FOUND, Status.RETURN_EXCEEDS_PURCHASE, Status.OPERATION_NOT_FOUND,
    }
    kinds = {o.kind for o in outcomes if o.status == Status.OK}
    assert kinds == {"enroll", "earn", "redeem", "reserve", "capture", "release", "reverse", "adjust",
                     "get_member", "get_balance", "list_transactions"}
    assert any(o.awards for o in outcomes) and any(o.limits for o in outcomes)


def _try_outcomes(payload: bytes) -> list[Outcome]:
    try:
        return codec.decode_outcomes(payload)
    except msgspec.ValidationError:
        return []  # a journal record or a snapshot chunk


def test_outcomes_journal_records_and_snapshots_are_byte_identical_to_the_pinned_format():
    produced, _ = run()
    assert _digest(produced) == PINNED_DIGEST


def test_every_outcome_is_the_array_of_all_outcome_fields_in_declaration_order():
    # What gateways decode and replays return: a msgpack array of the 19 Outcome
    # fields, defaults included, whatever built it.
    produced, _ = run()
    checked = 0
    for payload in produced:
        if not _try_outcomes(payload):
            continue
        for raw in msgspec.msgpack.decode(payload, type=list[msgspec.Raw]):
            decoded = codec.decode_outcome(raw)
            fields = tuple(getattr(decoded, name) for name in Outcome.__struct_fields__)
            assert len(fields) == 19 and msgspec.msgpack.encode(fields) == bytes(raw)
            checked += 1
    assert checked == 40
