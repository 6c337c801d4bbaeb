"""The ledger's journal records in public form (loyalty.server.events): real commands
run through ShardCore, one per batch as a shard might journal them, their records
translated into loyalty.v1 Events, and the events checked against what the ledger
answered: kinds in order, members, requests, the balance after each change (equal to
a GetBalance read right after it), cursors; and records from before the journal
carried balances still decode and translate, with the balance unset.
"""

from __future__ import annotations

import sys
import pathlib

import msgspec
import pytest

from loyalty.actors.ledger import CompiledProgram, Program, ShardCore, balance_of, codec
from loyalty.actors.ledger import commands as c
from loyalty.actors.ledger import events as e
from loyalty.actors.ledger.events import JournalRecord
from loyalty.actors.ledger.rules import Rule, RuleBudget, RuleConditions, RuleEffect, RuleSet, compile_rules
from loyalty.actors.ledger.status import Status
from loyalty.server.errors import FieldViolation
from loyalty.server.events import (
    AFTER_CURSOR_FIELD,
    KINDS,
    Cursor,
    decode_cursor,
    encode_cursor,
    event_kind,
    public_events,
)
from loyalty.server.gateway import responses
from loyalty.v1 import events_pb2 as pb

T0 = 1_795_262_400_000
SECOND_MS = 1_000
DAY_MS = 86_400_000
SHARD = 2
PROGRAM = CompiledProgram(Program(return_window_days=2, points_expiry_days=30, idempotency_retention_days=3))
RULES = RuleSet(
    version=3,
    rules=(
        Rule(rule_id="double-food", priority=5, conditions=RuleConditions(categories=("food",)),
             effect=RuleEffect(multiplier="2")),
        Rule(rule_id="welcome", priority=3, effect=RuleEffect(bonus_points=15), budget=RuleBudget(total_points=100)),
    ),
    budget_keys={"welcome": "budget:welcome:1"},
)
BASKET = (c.Line("apple", "food", 2, 1_000), c.Line("shoes", "apparel", 1, 5_000))


class BudgetOwner:
    """A campaign budget owner that grants whatever is asked while it lasts."""

    def __init__(self) -> None:
        self.left = {"budget:welcome:1": 100}

    def lease(self, key: str, needed: int) -> int:
        granted = min(self.left.get(key, 0), needed)
        self.left[key] -= granted
        return granted

    def available(self, key: str) -> int:
        return self.left.get(key, 0)


# (time, command) in order, each applied as its own batch.
SCENARIO: list[tuple[int, c.Command]] = [
    (T0, c.EnrollMember("alice", "enroll-a", {"tier": "gold"})),
    (T0, c.EnrollMember("bob", "enroll-b")),
    (T0, c.EnrollMember("alice", "enroll-again")),  # refused: Failed, not public
    (T0, c.EnrollMember("carol", "enroll-c")),
    (T0, c.Adjust("carol", "adj-c", 30, "welcome gift")),  # a lot expiring at T0 + 30 days
    (T0 + 1, c.Earn("alice", "buy-1", "EUR", BASKET, "pos", "berlin-1")),  # leases budget first
    (T0 + 1, c.Redeem("alice", "spend-0", 10)),  # still pending: refused
    (T0 + 3 * DAY_MS, c.Redeem("alice", "spend-1", 10)),
    (T0 + 3 * DAY_MS, c.Reserve("alice", "hold-1", 20, 600)),
    (T0 + 3 * DAY_MS, c.Capture("alice", "cap-1", "rsv-1", 8)),
    (T0 + 3 * DAY_MS, c.Reserve("alice", "hold-2", 5, 600)),
    (T0 + 3 * DAY_MS, c.Release("alice", "rel-2", "rsv-2")),
    (T0 + 3 * DAY_MS, c.Reserve("alice", "hold-3", 4, 1)),
    (T0 + 3 * DAY_MS, c.Adjust("bob", "adj-1", 50, "goodwill")),
    (T0 + 3 * DAY_MS, c.Adjust("alice", "adj-2", -7, "typo")),
    # hold-3 expired meanwhile: one record holds its expiry, then the return
    (T0 + 3 * DAY_MS + 5 * SECOND_MS, c.Reverse("alice", "ret-1", "buy-1", (c.ReturnLine("apple", 1),))),
    (T0 + 29 * DAY_MS, c.Reserve("carol", "hold-c", 30, 7 * 86_400)),
    (T0 + 31 * DAY_MS, c.Release("carol", "rel-c", "rsv-1")),  # the held lot expired meanwhile
    (T0 + 40 * DAY_MS, c.GetBalance("alice")),  # alice's lot expires, her old outcomes are pruned
    (T0 + 40 * DAY_MS, c.GetBalance("bob")),  # bob's adjustment lot expires
]

EXPECTED = [  # (kind, member, request_id) of every public event, in journal order
    (pb.EVENT_KIND_ENROLLED, "alice", "enroll-a"),
    (pb.EVENT_KIND_ENROLLED, "bob", "enroll-b"),
    (pb.EVENT_KIND_ENROLLED, "carol", "enroll-c"),
    (pb.EVENT_KIND_ADJUSTED, "carol", "adj-c"),
    (pb.EVENT_KIND_EARNED, "alice", "buy-1"),
    (pb.EVENT_KIND_REDEEMED, "alice", "spend-1"),
    (pb.EVENT_KIND_RESERVED, "alice", "hold-1"),
    (pb.EVENT_KIND_CAPTURED, "alice", "cap-1"),
    (pb.EVENT_KIND_RESERVED, "alice", "hold-2"),
    (pb.EVENT_KIND_RELEASED, "alice", "rel-2"),
    (pb.EVENT_KIND_RESERVED, "alice", "hold-3"),
    (pb.EVENT_KIND_ADJUSTED, "bob", "adj-1"),
    (pb.EVENT_KIND_ADJUSTED, "alice", "adj-2"),
    (pb.EVENT_KIND_RESERVATION_EXPIRED, "alice", ""),
    (pb.EVENT_KIND_REVERSED, "alice", "ret-1"),
    (pb.EVENT_KIND_RESERVED, "carol", "hold-c"),
    (pb.EVENT_KIND_RELEASED, "carol", "rel-c"),
    (pb.EVENT_KIND_POINTS_EXPIRED, "alice", ""),
    (pb.EVENT_KIND_POINTS_EXPIRED, "bob", ""),
]


class Run(msgspec.Struct):
    """What the scenario produced: per journaled record, its seq, the record, and
    the GetBalance of each member it touched, read right after it."""

    records: list[JournalRecord]
    balances_after: list[dict[str, object]]


def run_scenario() -> Run:
    core = ShardCore(PROGRAM)
    core.install_rules(compile_rules(RULES, PROGRAM))
    owner = BudgetOwner()
    result = Run([], [])
    for now_ms, command in SCENARIO:
        _, record = core.apply_batch([command], now_ms, owner)
        if record is None:
            continue
        members = sorted({event.member_id for event in record.events if event.member_id})
        outcomes, nothing = core.apply_batch([c.GetBalance(member) for member in members], now_ms)
        assert nothing is None, "nothing was due at the same moment"
        views = [codec.decode_outcome(outcome) for outcome in outcomes]
        assert all(view.status == Status.OK for view in views)
        result.records.append(codec.decode_record(codec.encode_record(record)))  # as a consumer reads it
        result.balances_after.append({member: view.balance for member, view in zip(members, views)})
    return result


@pytest.fixture(scope="module")
def scenario() -> Run:
    return run_scenario()


def translated(run: Run) -> list[list[pb.Event]]:
    return [public_events(SHARD, record.seq, record) for record in run.records]


def test_the_public_events_are_the_changes_in_journal_order(scenario):
    events = [event for batch in translated(scenario) for event in batch]
    assert [(event_kind(event), event.member_id, event.request_id) for event in events] == EXPECTED
    assert all(event.time.ToMilliseconds() > 0 for event in events)
    assert events[0].time.ToMilliseconds() == T0
    assert events[-1].time.ToMilliseconds() == T0 + 40 * DAY_MS


def test_refusals_pruning_and_budget_leases_are_not_public_but_are_in_the_records(scenario):
    journaled = {type(event) for record in scenario.records for event in record.events}
    assert {e.Failed, e.Pruned, e.BudgetLeased} <= journaled  # the scenario has each
    assert len([event for batch in translated(scenario) for event in batch]) == len(EXPECTED)


def test_each_balance_equals_get_balance_right_after_the_change(scenario):
    checked = 0
    for batch, balances_after in zip(translated(scenario), scenario.balances_after):
        last = {event.member_id: event for event in batch}  # a member's last change in the record
        for member, event in last.items():
            assert event.HasField("balance")
            assert event.balance == responses.balance(balances_after[member]), (member, event.request_id)
            checked += 1
    assert checked == len(EXPECTED) - 1  # every change but the one followed, in its record, by another


def test_every_recorded_balance_is_the_ledgers_after_that_very_event(scenario):
    # Replayed event by event: the balance journaled with each event is the one the
    # ledger computes right after applying it (so also when a record holds several
    # changes of one member, e.g. an expiry before the command that settled it).
    replica = ShardCore(PROGRAM)
    recorded = 0
    for record in scenario.records:
        assert len(record.balances) == len(record.events)
        for event, view in zip(record.events, record.balances):
            replica.ledger.apply(event)
            if type(event) in e.BALANCE_EVENTS:
                assert view == balance_of(replica.ledger.members[event.member_id], event.at_ms)
                recorded += 1
            else:
                assert view is None
        replica.ledger.members.settle()
    assert recorded == len(EXPECTED)


def test_the_events_carry_what_each_change_did(scenario):
    events = {event.request_id or f"{event.member_id}:{event_kind(event)}": event
              for batch in translated(scenario) for event in batch}
    assert dict(events["enroll-a"].enrolled.attributes) == {"tier": "gold"}
    earned = events["buy-1"].earned
    # apples for 10.00 EUR earn 10 at the base rate, doubled; shoes 50; the welcome
    # bonus of 15 is the basket's, spread over the lines' totals
    awards = [(award.rule_id, award.line_index, award.points, award.effect) for award in earned.awards]
    assert awards == [("", 0, 10, "base"), ("", 1, 50, "base"), ("double-food", 0, 10, "multiplier"),
                      ("welcome", -1, 15, "bonus_points")]
    assert earned.points == 10 + 50 + 10 + 15 and earned.rules_version == 3
    assert [(line.sku, line.quantity) for line in earned.lines] == [("apple", 2), ("shoes", 1)]
    assert sum(line.points for line in earned.lines) == earned.points
    assert events["buy-1"].balance.pending == earned.points and events["buy-1"].balance.available == 0
    assert earned.available_at.ToMilliseconds() == T0 + 1 + 2 * DAY_MS
    assert earned.expires_at.ToMilliseconds() == T0 + 1 + 30 * DAY_MS
    assert events["spend-1"].redeemed.points == 10
    assert (events["hold-1"].reserved.reservation_id, events["hold-1"].reserved.points) == ("rsv-1", 20)
    assert events["hold-1"].reserved.expires_at.ToMilliseconds() == T0 + 3 * DAY_MS + 600 * SECOND_MS
    assert (events["cap-1"].captured.captured, events["cap-1"].captured.released) == (8, 12)
    assert (events["rel-2"].released.reservation_id, events["rel-2"].released.released) == ("rsv-2", 5)
    assert (events["adj-1"].adjusted.points, events["adj-1"].adjusted.reason) == (50, "goodwill")
    assert events["adj-1"].adjusted.HasField("expires_at")
    assert events["adj-2"].adjusted.points == -7 and not events["adj-2"].adjusted.HasField("expires_at")
    expired = events[f"alice:{pb.EVENT_KIND_RESERVATION_EXPIRED}"].reservation_expired
    assert (expired.reservation_id, expired.released) == ("rsv-3", 4)
    reversed_ = events["ret-1"].reversed
    returned = earned.lines[0].points // 2  # one apple of two
    assert reversed_.original_request_id == "buy-1" and reversed_.points == returned and not reversed_.debt_added
    assert [(line.line_index, line.quantity, line.points) for line in reversed_.lines] == [(0, 1, returned)]
    # alice's lot (what she had left of the purchase) and bob's adjustment expire
    alice_expiry = events[f"alice:{pb.EVENT_KIND_POINTS_EXPIRED}"]
    assert alice_expiry.points_expired.points == earned.points - 10 - 8 - 7 - returned
    assert alice_expiry.balance.available == 0 and alice_expiry.balance.expired == alice_expiry.points_expired.points
    assert events[f"bob:{pb.EVENT_KIND_POINTS_EXPIRED}"].points_expired.points == 50
    # a hold given back into a lot past its expiry: nothing comes back, it expires
    assert (events["rel-c"].released.released, events["rel-c"].balance.expired) == (0, 30)
    assert events["rel-c"].balance.available == 0


def test_cursors_increase_strictly_and_name_each_events_place(scenario):
    seen: list[tuple[str, Cursor]] = []
    for record, batch in zip(scenario.records, translated(scenario)):
        for event in batch:
            cursor = decode_cursor(event.cursor)
            assert (cursor.shard, cursor.seq) == (SHARD, record.seq)
            named = record.events[cursor.index]  # the index is the event's in the record
            assert (KINDS[type(named)], named.member_id) == (event_kind(event), event.member_id)
            seen.append((event.cursor, cursor))
    assert len(seen) == len(EXPECTED)
    for (text_before, before), (text_after, after) in zip(seen, seen[1:]):
        assert before < after and text_before < text_after
    assert len({text for text, _ in seen}) == len(seen)


def test_a_cursor_round_trips_at_the_limits_of_its_parts():
    for cursor in (Cursor(0, 0, 0), Cursor(7, 123_456_789, 42), Cursor(0xFFFF, 2**64 - 1, 0xFFFFFF)):
        assert decode_cursor(encode_cursor(cursor)) == cursor
    with pytest.raises(ValueError):
        encode_cursor(Cursor(0x10000, 1, 0))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "0" + "0" * 26,  # another format version
        encode_cursor(Cursor(1, 2, 3))[:-1],  # too short
        encode_cursor(Cursor(1, 2, 3)) + "0",  # too long
        encode_cursor(Cursor(0xAB, 0xCD, 0xEF)).upper(),  # not as issued
        "1" + "_" * 26,
        "1" + " 0" * 13,
        "1" + "g" * 26,
    ],
)
def test_a_malformed_cursor_is_a_field_violation_naming_the_field(text):
    with pytest.raises(FieldViolation) as raised:
        decode_cursor(text)
    assert raised.value.field == AFTER_CURSOR_FIELD == "after_cursor"
    with pytest.raises(FieldViolation) as raised:
        decode_cursor(text, field="start_cursor")
    assert raised.value.field == "start_cursor"


def _as_before_balances(record: JournalRecord) -> bytes:
    """The bytes the record had when records were [seq, now_ms, events]."""
    return msgspec.msgpack.encode((record.seq, record.now_ms, record.events))


def test_a_record_from_before_balances_decodes_and_translates_with_the_balance_unset(scenario):
    for record, batch in zip(scenario.records, translated(scenario)):
        old = codec.decode_record(_as_before_balances(record))
        assert old.balances == () and old.events == record.events
        translated_old = public_events(SHARD, old.seq, old)
        assert not any(event.HasField("balance") for event in translated_old)
        for new_event, old_event in zip(batch, translated_old, strict=True):
            new_event.ClearField("balance")
            assert old_event == new_event  # everything else alike


def test_a_record_carrying_balances_replays_to_the_same_state_as_one_without(scenario):
    with_balances, without = ShardCore(PROGRAM), ShardCore(PROGRAM)
    for record in scenario.records:
        with_balances.replay(record)
        without.replay(codec.decode_record(_as_before_balances(record)))
    assert with_balances.state_bytes() == without.state_bytes()


def test_only_records_changed_in_the_pinned_wire_format():
    # Outcomes, events, snapshots and state bytes are as before balances were
    # recorded: the wire-format scenario, its records encoded without the new field,
    # gives the digest pinned before (see tests/test_ledger_wire_format.py).
    sys.path.insert(0, str(pathlib.Path(__file__).parent))
    try:
        import test_ledger_wire_format as wire
    finally:
        sys.path.pop(0)
    original = codec.encode_record
    codec.encode_record = lambda record: _as_before_balances(record) if record is not None else original(record)
    try:
        produced, _ = wire.run()
    finally:
        codec.encode_record = original
    assert wire._digest(produced) == "68be23172690630ff37b8f87d651cc4e"
    assert wire._digest(wire.run()[0]) == wire.PINNED_DIGEST
