"""Property tests of the pure ledger core.

A hypothesis state machine drives a ShardCore with a few members and a small pool of
request ids, alongside a model of what must be remembered (which members exist,
which request outcomes are retained). After every batch it checks idempotency against
that model, replays the batch's journal record into a replica (which must reach the
very same state), and after every step checks the conservation identity. At the end
the whole journal is replayed from scratch, and from every snapshot taken on the way.

All settings are per test (decorators / run_state_machine_as_test arguments): no
profile is registered, so nothing here changes other test files.
"""

from __future__ import annotations

import fractions
import itertools
import types
import typing
from collections import defaultdict
from dataclasses import dataclass

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from loyalty.actors.ledger import codec
from loyalty.actors.ledger import commands as c
from loyalty.actors.ledger import events as e
from loyalty.actors.ledger.core import ShardCore
from loyalty.actors.ledger.currency import minor_digits
from loyalty.actors.ledger.ledger import balance_of, conservation_holds
from loyalty.actors.ledger.outcomes import BalanceView, Outcome, TransactionView
from loyalty.actors.ledger.program import CompiledProgram, Program
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

SECOND = 1_000
DAY = 86_400_000
T0 = 1_700_000_000_000

MEMBERS = ("m1", "m2", "m3")
REQUEST_IDS = tuple(f"r{i}" for i in range(8))
CURRENCIES = ("USD", "EUR", "JPY", "KWD")
RATES = {"EUR": "1.5", "JPY": "0.01"}
SKUS = ("a", "b", "c")
RESERVATION_IDS = ("rsv-1", "rsv-2", "rsv-3", "rsv-4", "rsv-99")  # ids are rsv-1, rsv-2, ...
TTLS_S = (0, 1, 60, 86_400, 7 * 86_400)  # 0: the default (900 s)
HOLD_TTLS_S = (0, 600, 86_400, 7 * 86_400)  # for holds that should live to be closed
ADVANCES_MS = (
    1,
    SECOND,
    61 * SECOND,
    901 * SECOND,  # past the default reservation ttl
    DAY,
    2 * DAY,  # exactly the return window
    2 * DAY + 1,
    3 * DAY + 1,  # past the retention
    5 * DAY,  # exactly the points expiry
    7 * DAY + 1,  # past the longest reservation ttl
)


# ---------------------------------------------------------------------- strategies

request_ids = st.one_of(st.sampled_from(REQUEST_IDS), st.none())  # None: a fresh unique id
members = st.sampled_from(MEMBERS)
lines = st.lists(
    st.builds(
        c.Line,
        sku=st.sampled_from(SKUS),
        category=st.just("cat"),
        quantity=st.integers(1, 3),
        amount_minor=st.one_of(st.integers(0, 50_000), st.sampled_from([99, 100, 150, 999, 1_000])),
    ),
    min_size=1,
    max_size=4,
).map(tuple)
return_lines = st.one_of(
    st.just(()),  # everything that is left
    st.lists(st.builds(c.ReturnLine, st.sampled_from(SKUS), st.integers(1, 3)), min_size=1, max_size=3).map(tuple),
)


def mutations() -> st.SearchStrategy:
    """Any mutation the gateway lets through (the core asserts the rest: see
    test_ledger_scenarios.py), with a request id that may be None (filled in by the
    machine)."""
    return st.one_of(
        st.builds(
            c.EnrollMember,
            members,
            request_ids,
            st.sampled_from([{}, {"tier": "gold"}, {"tier": "silver", "region": "eu"}]),
        ),
        st.builds(c.Earn, members, request_ids, st.sampled_from(CURRENCIES), lines, st.just("web"), st.just("s1"), st.just(0)),
        st.builds(c.Redeem, members, request_ids, st.integers(1, 200)),
        st.builds(c.Capture, members, request_ids, st.sampled_from(RESERVATION_IDS), st.integers(0, 150)),
        st.builds(c.Release, members, request_ids, st.sampled_from(RESERVATION_IDS)),
        st.builds(
            c.Reverse, members, request_ids, st.one_of(st.sampled_from(REQUEST_IDS), st.just("unknown")), return_lines
        ),
        st.builds(
            c.Adjust,
            members,
            request_ids,
            st.one_of(st.integers(-200, -1), st.integers(1, 200)),
            st.sampled_from(["typo", "goodwill"]),
        ),
        st.builds(c.Reserve, members, request_ids, st.integers(1, 200), st.sampled_from(TTLS_S)),
    )


reads = st.one_of(
    st.builds(c.GetMember, members),
    st.builds(c.GetBalance, members),
    st.builds(c.ListTransactions, members, st.sampled_from([0, 1, 3]), st.sampled_from([0, 2, 5])),
    st.builds(c.GetOperation, members, st.sampled_from(REQUEST_IDS)),
)


def changed(command: c.Mutation) -> c.Mutation:
    """The same request id with another payload."""
    replace = msgspec.structs.replace
    if isinstance(command, c.EnrollMember):
        return replace(command, attributes={**command.attributes, "changed": "yes"})
    if isinstance(command, c.Earn):
        return replace(command, lines=command.lines + (c.Line("z", "cat", 1, 100),))
    if isinstance(command, (c.Redeem, c.Reserve, c.Capture)):
        return replace(command, points=command.points + 1)
    if isinstance(command, c.Release):
        return replace(command, reservation_id=command.reservation_id + "x")
    if isinstance(command, c.Reverse):
        return replace(command, original_request_id=command.original_request_id + "x")
    assert isinstance(command, c.Adjust)
    return replace(command, reason=command.reason + "!")


def expected_earn_points(command: c.Earn) -> int:
    """The earn rule computed independently: floor(total x rate / 10^digits)."""
    rate = fractions.Fraction(RATES.get(command.currency, "1"))
    total = sum(line.amount_minor for line in command.lines)
    return int(total * rate / 10 ** minor_digits(command.currency) // 1)


# ---------------------------------------------------------------------- the machine


@dataclass
class Remembered:
    """A request outcome the core must still know (while retained)."""

    command: c.Mutation
    at_ms: int
    outcome: bytes | None = None


class LedgerMachine(RuleBasedStateMachine):
    """Drives one ShardCore; subclasses choose another program."""

    PROGRAM = Program(
        currency_points_per_unit=RATES,
        return_window_days=2,
        points_expiry_days=5,
        idempotency_retention_days=3,
    )

    def __init__(self) -> None:
        super().__init__()
        self.program = CompiledProgram(self.PROGRAM)
        self.retention_ms = self.program.retention_ms
        # One member stays decoded between batches, the rest are kept encoded (and
        # compressed once four are): every batch moves members between the forms,
        # and the replica (everything decoded) must still end up in the same state.
        self.core = ShardCore(self.program, hot_members=1, compress_after=4)
        self.replica = ShardCore(self.program)
        self.now = T0
        self.records: list[e.JournalRecord] = []
        self.snapshots: list[tuple[list[bytes], int]] = []
        self.sent: list[c.Mutation] = []
        self.remembered: dict[tuple[str, str], Remembered] = {}
        self.enrolled: set[str] = set()
        self.reservations_issued: dict[str, set[str]] = defaultdict(set)
        self.answer_times: dict[tuple[str, str], list[int]] = defaultdict(list)
        self.purchases: dict[tuple[str, str], list[list[int]]] = {}  # [qty, points, qty back, points back]
        self.kept_until: dict[tuple[str, str], int] = {}  # purchases kept for returns (0: forever)
        self.fresh_ids = itertools.count(1)
        self.healthy = True  # false while a batch is under way (teardown then checks nothing)
        self.budget = None  # the campaign budget owner (RulesMachine has one)

    # -------------------------------------------------------------- sending, with the model

    def _fill(self, command: c.Command) -> c.Command:
        if getattr(command, "request_id", "") is None:
            return msgspec.structs.replace(command, request_id=f"u{next(self.fresh_ids)}")
        return command

    def send(self, *commands: c.Command) -> list[Outcome]:
        self.healthy = False
        commands = tuple(self._fill(command) for command in commands)
        plans: list[tuple[str, Remembered | None]] = []
        expected_answers: list[tuple[str, str]] = []
        cutoff = self.now - self.retention_ms
        for command in commands:
            member_id = command.member_id
            if not isinstance(command, c.MUTATION_TYPES):
                if member_id not in self.enrolled:
                    plans.append(("not_found", None))
                elif isinstance(command, c.GetOperation):
                    entry = self.remembered.get((member_id, command.request_id))
                    plans.append(("operation", entry if entry and entry.at_ms >= cutoff else None))
                else:
                    plans.append(("read", None))
                continue
            key = (member_id, command.request_id)
            if member_id not in self.enrolled and not isinstance(command, c.EnrollMember):
                plans.append(("not_found", None))
                continue
            entry = self.remembered.get(key)
            if member_id in self.enrolled and entry is not None and entry.at_ms >= cutoff:
                plans.append(("replay" if entry.command == command else "conflict", entry))
                continue
            if isinstance(command, c.Earn) and self._purchase_kept(key):
                # Its outcome was forgotten but the purchase is still kept: a stored conflict.
                self.remembered[key] = Remembered(command, self.now)
                expected_answers.append(key)
                plans.append(("kept_purchase", self.remembered[key]))
                continue
            was_member = member_id in self.enrolled
            self.enrolled.add(member_id)
            entry = Remembered(command, self.now)
            self.remembered[key] = entry
            expected_answers.append(key)
            plans.append(("fresh_existing" if was_member else "fresh_new", entry))

        raw_outcomes, record = self.core.apply_batch(list(commands), self.now, self.budget)

        outcomes = [codec.decode_outcome(raw) for raw in raw_outcomes]
        for index, (command, (plan, entry), raw, outcome) in enumerate(
            zip(commands, plans, raw_outcomes, outcomes, strict=True)
        ):
            kind = type(command).__struct_config__.tag
            if plan == "not_found":
                assert outcome.status == Status.MEMBER_NOT_FOUND, (command, outcome)
                assert outcome.kind == kind
            elif plan == "read":
                assert outcome.status == Status.OK, (command, outcome)
                last_for_member = all(later.member_id != command.member_id for later in commands[index + 1 :])
                if isinstance(command, c.ListTransactions) and last_for_member:
                    self._check_page(command, outcome)  # against the history as it is now
            elif plan == "operation":
                if entry is None:
                    assert outcome.status == Status.OPERATION_NOT_FOUND, (command, outcome)
                else:  # never contradicts what the request got
                    assert raw == entry.outcome, (command, outcome)
            elif plan == "replay":
                assert raw == entry.outcome, (command, outcome, codec.decode_outcome(entry.outcome))
            elif plan == "conflict":
                assert outcome.status == Status.REQUEST_ID_CONFLICT, (command, outcome)
            elif plan == "kept_purchase":
                assert outcome.status == Status.REQUEST_ID_CONFLICT, (command, outcome)
                entry.outcome = raw
            else:
                entry.outcome = raw
                self._check_fresh(command, outcome, existed=plan == "fresh_existing")

        self.last_plans = [plan for plan, _ in plans]
        answers = [event for event in (record.events if record else ()) if isinstance(event, e._Answer)]
        assert [(event.member_id, event.request_id) for event in answers] == expected_answers
        for event in answers:
            assert event.at_ms == self.now
        if record is not None:
            self._journal(record)
        else:
            assert self.core.seq == len(self.records)
        self.healthy = True
        return outcomes

    def _check_page(self, command: c.ListTransactions, outcome: Outcome) -> None:
        """A page is the newest transactions below before_seq, newest first."""
        history = self.core.ledger.members[command.member_id].transactions
        below = [t for t in history if not command.before_seq or t.seq < command.before_seq]
        expected = below[::-1][: command.page_size or 50]
        assert list(outcome.transactions) == expected
        more = len(below) > len(expected)
        assert outcome.next_before_seq == (expected[-1].seq if more else 0)

    def _purchase_kept(self, key: tuple[str, str]) -> bool:
        if key not in self.kept_until:
            return False
        until = self.kept_until[key]
        return until == 0 or until > self.now

    def _check_fresh(self, command: c.Mutation, outcome: Outcome, existed: bool) -> None:
        """A request the core had to apply (not replay): sanity of its outcome."""
        if isinstance(command, c.Earn) and outcome.status == Status.OK:
            expiry_ms, window_ms = self.program.points_expiry_ms, self.program.return_window_ms
            self.kept_until[(command.member_id, command.request_id)] = (
                max(self.now + expiry_ms, self.now + window_ms) if expiry_ms else 0
            )
        assert outcome.status not in (
            Status.MEMBER_NOT_FOUND,
            Status.REQUEST_ID_CONFLICT,
            Status.OPERATION_NOT_FOUND,
        ), (command, outcome)
        assert outcome.kind == type(command).__struct_config__.tag
        assert outcome.at_ms == self.now
        if outcome.status == Status.OK:
            assert outcome.balance is not None
        if isinstance(command, c.EnrollMember):
            assert outcome.status == (Status.MEMBER_ALREADY_EXISTS if existed else Status.OK), outcome
        elif isinstance(command, c.Earn):
            assert outcome.status == Status.OK
            self._check_earn_points(command, outcome)
            assert len(outcome.lines) == len(command.lines)
            assert sum(points for _, points in outcome.lines) == outcome.points
            assert all(points >= 0 for _, points in outcome.lines)
        elif isinstance(command, c.Reserve) and outcome.status == Status.OK:
            assert outcome.reservation_id not in self.reservations_issued[command.member_id]
            self.reservations_issued[command.member_id].add(outcome.reservation_id)
        elif isinstance(command, (c.Capture, c.Release)):
            if command.reservation_id not in self.reservations_issued[command.member_id]:
                assert outcome.status == Status.RESERVATION_NOT_FOUND, (command, outcome)
            if isinstance(command, c.Capture) and outcome.status == Status.OK:
                assert outcome.points == (command.points or outcome.points)
                assert outcome.released >= 0
        elif isinstance(command, c.Adjust):
            if command.points > 0:
                assert outcome.status == Status.OK
            if outcome.status == Status.OK:
                assert outcome.points == command.points
        elif isinstance(command, c.Redeem) and outcome.status == Status.OK:
            assert outcome.points == command.points
        elif isinstance(command, c.Reverse) and outcome.status == Status.OK:
            assert 0 <= outcome.debt <= outcome.points
            if not self.program.reversal_creates_debt:
                assert outcome.debt == 0

    def _check_earn_points(self, command: c.Earn, outcome: Outcome) -> None:
        """Without rules, the program's rate alone (a subclass checks rules)."""
        assert outcome.points == expected_earn_points(command), (command, outcome)
        assert outcome.rules_version == 0 and outcome.awards == () and outcome.limits == ()

    def _journal(self, record: e.JournalRecord) -> None:
        """Keep a record; it must survive the codec and replay to the live state."""
        assert record.seq == len(self.records) + 1 == self.core.seq
        assert record.now_ms == self.now
        encoded = codec.encode_record(record)
        decoded = codec.decode_record(encoded)
        assert decoded == record
        assert codec.encode_record(decoded) == encoded
        self.records.append(record)
        self.replica.replay(decoded)
        assert self.replica.state_bytes() == self.core.state_bytes()
        for event in record.events:
            if isinstance(event, e._Answer):
                self.answer_times[(event.member_id, event.request_id)].append(event.at_ms)
            if isinstance(event, e.Earned):
                self.purchases[(event.member_id, event.request_id)] = [[q, p, 0, 0] for _, q, p in event.lines]
            elif isinstance(event, e.Reversed):
                self._check_return(event)

    def _check_return(self, event: e.Reversed) -> None:
        """Returns never claw back more than a line earned, and exactly that once every
        unit of the line is back, however the units were returned."""
        lines = self.purchases[(event.member_id, event.original_request_id)]
        for index, quantity, points in event.returns:
            line = lines[index]
            line[2] += quantity
            line[3] += points
            assert quantity > 0 and points >= 0
            assert line[2] <= line[0] and line[3] <= line[1], (event, line)
            if line[2] == line[0]:
                assert line[3] == line[1], (event, line)
        planned = sum(points for _, _, points in event.returns)
        taken = sum(take.points for take in event.takes)
        assert event.points == taken + event.debt_added
        if self.program.reversal_creates_debt:
            assert event.points == planned
        else:
            assert event.debt_added == 0 and event.points <= planned

    # -------------------------------------------------------------- rules

    @initialize()
    def enroll_members(self) -> None:
        """m1 and m2 start with spendable points; m3 does not exist until enrolled."""
        self.send(
            c.EnrollMember("m1", "e1", {}),
            c.EnrollMember("m2", "e2", {"tier": "gold"}),
            c.Adjust("m1", "init", 300, "welcome"),
            c.Adjust("m2", "init", 300, "welcome"),
        )

    @rule(command=mutations())
    def mutate(self, command: c.Mutation) -> None:
        self.sent.append(self._fill(command))
        self.send(self.sent[-1])

    def send_watched(self, command: c.Mutation) -> tuple[BalanceView | None, Outcome | None]:
        """Send one mutation after settling its member at this time. Returns the balance
        just before and the outcome, the latter only if the core had to apply it."""
        self.sent.append(command)
        (read,) = self.send(c.GetBalance(command.member_id))
        (outcome,) = self.send(command)
        fresh = self.last_plans[0].startswith("fresh")
        return read.balance, (outcome if fresh else None)

    @rule(member_id=members, request_id=request_ids, currency=st.sampled_from(CURRENCIES), lines=lines)
    def earn(self, member_id, request_id, currency, lines) -> None:
        command = self._fill(c.Earn(member_id, request_id, currency, lines, "pos", "s2", 0))
        before, outcome = self.send_watched(command)
        if outcome is None:
            return
        after = outcome.balance
        assert outcome.debt == min(outcome.points, before.debt)
        assert after.debt == before.debt - outcome.debt
        new_points = outcome.points - outcome.debt
        if self.program.return_window_ms:
            assert (after.pending, after.available) == (before.pending + new_points, before.available)
        else:
            assert (after.pending, after.available) == (before.pending, before.available + new_points)
        assert after.lifetime_earned == before.lifetime_earned + outcome.points
        assert outcome.available_at_ms == self.now + self.program.return_window_ms
        assert outcome.expires_at_ms == self.program.expires_at_ms(self.now)

    @rule(member_id=members, request_id=request_ids, points=st.integers(1, 80))
    def redeem(self, member_id, request_id, points) -> None:
        before, outcome = self.send_watched(self._fill(c.Redeem(member_id, request_id, points)))
        if outcome is None:
            return
        if before.available >= points:
            assert outcome.status == Status.OK, (before, outcome)
            assert outcome.balance.available == before.available - points
            assert outcome.balance.redeemed == before.redeemed + points
            assert outcome.balance.pending == before.pending
        else:
            assert outcome.status == Status.INSUFFICIENT_POINTS, (before, outcome)

    @rule(member_id=members, request_id=request_ids, points=st.integers(1, 80), ttl_s=st.sampled_from(HOLD_TTLS_S))
    def reserve(self, member_id, request_id, points, ttl_s) -> None:
        before, outcome = self.send_watched(self._fill(c.Reserve(member_id, request_id, points, ttl_s)))
        if outcome is None:
            return
        if outcome.status == Status.TOO_MANY_RESERVATIONS:
            assert len(self.core.ledger.members[member_id].reservations) == 64
        elif before.available >= points:
            assert outcome.status == Status.OK, (before, outcome)
            assert outcome.balance.available == before.available - points
            assert outcome.balance.reserved == before.reserved + points
            assert outcome.expires_at_ms == self.now + (ttl_s or 900) * SECOND
        else:
            assert outcome.status == Status.INSUFFICIENT_POINTS, (before, outcome)

    @precondition(lambda self: any(self.reservations_issued.values()))
    @rule(data=st.data(), request_id=request_ids, release=st.booleans())
    def close_issued_reservation(self, data, request_id, release) -> None:
        """Capture (some, all, or too much) or release a reservation the core handed out."""
        member_id = data.draw(st.sampled_from(sorted(m for m, ids in self.reservations_issued.items() if ids)))
        reservation_id = data.draw(st.sampled_from(sorted(self.reservations_issued[member_id])))
        open_ = self.core.ledger.members[member_id].reservations.get(reservation_id)
        points = data.draw(st.integers(0, (open_.points if open_ else 50) + 2))
        if release:
            command = c.Release(member_id, request_id, reservation_id)
        else:
            command = c.Capture(member_id, request_id, reservation_id, points)
        command = self._fill(command)
        self.sent.append(command)
        self.send(command)

    @precondition(lambda self: any(isinstance(command, c.Earn) for command in self.sent))
    @rule(data=st.data(), request_id=request_ids, returns=return_lines)
    def reverse_purchase(self, data, request_id, returns) -> None:
        """Return (part of) a purchase that was sent, or all that is left of it."""
        purchase = data.draw(st.sampled_from([cmd for cmd in self.sent if isinstance(cmd, c.Earn)]))
        command = self._fill(c.Reverse(purchase.member_id, request_id, purchase.request_id, returns))
        self.sent.append(command)
        self.send(command)

    @rule(commands=st.lists(st.one_of(mutations(), reads), min_size=2, max_size=4))
    def batch(self, commands) -> None:
        commands = [self._fill(command) for command in commands]
        self.sent.extend(command for command in commands if isinstance(command, c.MUTATION_TYPES))
        self.send(*commands)

    @rule(command=reads)
    def read(self, command) -> None:
        self.send(command)

    @rule(delta=st.sampled_from(ADVANCES_MS))
    def advance(self, delta) -> None:
        self.now += delta

    @precondition(lambda self: self.sent)
    @rule(data=st.data())
    def replay_exactly(self, data) -> None:
        """An earlier request again: its stored outcome, or (after retention) a fresh apply."""
        self.send(data.draw(st.sampled_from(self.sent)))

    @precondition(lambda self: self.sent)
    @rule(data=st.data())
    def replay_changed(self, data) -> None:
        """An earlier request id with another payload: a conflict that changes nothing."""
        command = changed(data.draw(st.sampled_from(self.sent)))
        key = (command.member_id, command.request_id)
        entry = self.remembered.get(key)
        conflict = (
            command.member_id in self.enrolled
            and entry is not None
            and entry.at_ms >= self.now - self.retention_ms
            and entry.command != command
        )
        self.send(c.GetBalance(command.member_id))  # settles anything due at this time
        before, seq = self.core.state_bytes(), self.core.seq
        (outcome,) = self.send(command)
        if conflict:
            assert outcome.status == Status.REQUEST_ID_CONFLICT
            assert self.core.seq == seq, "a conflict was journaled"
            assert self.core.state_bytes() == before
        else:
            self.sent.append(command)

    @rule()
    def check_operations(self) -> None:
        """Every remembered outcome, asked for again: identical while retained."""
        for (member_id, request_id) in list(self.remembered)[:10]:
            self.send(c.GetOperation(member_id, request_id))

    @rule()
    def take_snapshot(self) -> None:
        chunks = list(self.core.snapshot_chunks())
        restored = ShardCore(self.program)
        restored.load_snapshot(chunks)
        assert restored.state_bytes() == self.core.state_bytes()
        self.snapshots.append((chunks, len(self.records)))

    # -------------------------------------------------------------- invariants

    @invariant()
    def every_member_conserves_points(self) -> None:
        totals = defaultdict(int)
        for member_id, member in self.core.ledger.members.items():
            assert member_id in self.enrolled
            assert conservation_holds(member), member_id
            balance = balance_of(member, self.now)
            for field in msgspec.structs.fields(BalanceView):
                value = getattr(balance, field.name)
                if isinstance(value, int):
                    assert value >= 0, (member_id, field.name, balance)
                    totals[field.name] += value
            held = balance.available + balance.pending
            assert held == sum(lot.points for lot in member.lots)
            assert member.reserved == sum(r.points for r in member.reservations.values())
            for reservation in member.reservations.values():
                assert reservation.points == sum(hold.points for hold in reservation.holds)
            if member.transactions:
                assert member.transactions[-1].balance_after == held + member.reserved - member.debt
                _assert_history_is_a_running_sum(member.transactions)
        assert set(self.core.ledger.members) == self.enrolled
        assert totals["lifetime_earned"] + totals["adjusted_in"] + totals["debt"] == (
            totals["available"]
            + totals["pending"]
            + totals["reserved"]
            + totals["redeemed"]
            + totals["expired"]
            + totals["reversed"]
            + totals["adjusted_out"]
        )

    @invariant()
    def each_request_is_applied_at_most_once_while_retained(self) -> None:
        for key, times in self.answer_times.items():
            for earlier, later in itertools.pairwise(times):
                assert later - earlier > self.retention_ms, (key, times)

    # -------------------------------------------------------------- at the end

    def teardown(self) -> None:
        if not self.healthy:
            return  # a batch failed: that failure is the report
        fresh = ShardCore(self.program)
        for record in self.records:
            fresh.replay(codec.decode_record(codec.encode_record(record)))
        assert fresh.state_bytes() == self.core.state_bytes()
        for chunks, applied in self.snapshots:
            restored = ShardCore(self.program)
            restored.load_snapshot(chunks)
            for record in self.records[applied:]:
                restored.replay(record)
            assert restored.state_bytes() == self.core.state_bytes()


def _assert_history_is_a_running_sum(history: list[TransactionView]) -> None:
    """Each entry's points is the change of the balance it reports after it."""
    for previous, entry in itertools.pairwise(history):
        assert previous.balance_after + entry.points == entry.balance_after, (previous, entry)


class CapMachine(LedgerMachine):
    """Another program: points available at once, returns capped (no debt), points
    that never expire, and a short retention."""

    PROGRAM = Program(
        currency_points_per_unit=RATES,
        return_window_days=0,
        points_expiry_days=0,
        idempotency_retention_days=1,
        reversal_policy="cap",
    )


class FakeBudgetOwner:
    """Campaign budgets not yet granted to the shard, leased in chunks."""

    def __init__(self, totals: dict[str, int], chunk: int) -> None:
        self.remaining = dict(totals)
        self.chunk = chunk

    def lease(self, budget_key: str, points_needed: int) -> int:
        granted = min(self.remaining[budget_key], max(points_needed, self.chunk))
        self.remaining[budget_key] -= granted
        return granted

    def available(self, budget_key: str) -> int:
        return self.remaining[budget_key]


def _rule_versions(program: CompiledProgram):
    """Two live versions that differ: caps, a budget, stacking, every effect kind."""
    first = (
        Rule(rule_id="double", priority=5, effect=RuleEffect(multiplier="2"), caps=RuleCaps(per_member_day=40)),
        Rule(
            rule_id="cat",
            priority=4,
            conditions=RuleConditions(skus=("a",)),
            effect=RuleEffect(points_per_unit="0.5", target="basket", rounding="up"),
            stacking=RuleStacking(exclusive_group="g", multiplier_ceiling="2.5"),
        ),
        Rule(
            rule_id="camp",
            effect=RuleEffect(bonus_points=7),
            budget=RuleBudget(total_points=60),
            caps=RuleCaps(per_member_lifetime=20),
        ),
        Rule(rule_id="first", conditions=RuleConditions(first_purchase=True), effect=RuleEffect(bonus_points=3)),
    )
    second = (
        Rule(rule_id="triple-b", conditions=RuleConditions(skus=("b",)), effect=RuleEffect(multiplier="3", rounding="half_up")),
        Rule(rule_id="camp", effect=RuleEffect(bonus_points=11), budget=RuleBudget(total_points=60)),
        Rule(rule_id="tx", effect=RuleEffect(points_per_unit="2"), caps=RuleCaps(per_transaction=15, per_member_week=30)),
    )
    return [
        compile_rules(RuleSet(version=1, rules=first, budget_keys={"camp": "camp-1"}), program),
        compile_rules(RuleSet(version=2, rules=second, budget_keys={"camp": "camp-2"}), program),
    ]


class RulesMachine(LedgerMachine):
    """The same machine with rules installed (two versions, switched at random), cap
    counters and two campaign budgets with a fake owner. Checks, besides everything
    LedgerMachine checks: the breakdown adds up, SimulateEarn equals the Earn that
    follows it, a budget is never overspent, returned budget goes back."""

    BUDGETS = {"camp-1": 60, "camp-2": 60}

    def __init__(self) -> None:
        super().__init__()
        self.versions = _rule_versions(self.program)
        self.core.install_rules(self.versions[0])
        self.budget = FakeBudgetOwner(self.BUDGETS, chunk=15)
        self.spent = dict.fromkeys(self.BUDGETS, 0)

    def _check_earn_points(self, command: c.Earn, outcome: Outcome) -> None:
        assert outcome.points >= expected_earn_points(command)
        assert outcome.rules_version == self.core.rules_version
        if outcome.awards:
            assert sum(award[3] for award in outcome.awards) == outcome.points
        else:
            assert outcome.points == expected_earn_points(command)
        assert all(cut > 0 for _, _, cut in outcome.limits)

    def _journal(self, record: e.JournalRecord) -> None:
        super()._journal(record)
        for event in record.events:
            if isinstance(event, e.Earned):
                for key, points in event.budgets:
                    self.spent[key] += points
            elif isinstance(event, e.BudgetReturned):
                self.budget.remaining[event.budget_key] += event.points
        held = self.core.budget_balances()
        for key, total in self.BUDGETS.items():
            assert self.spent[key] + held.get(key, 0) + self.budget.remaining[key] == total
            assert self.spent[key] <= total

    @rule(version=st.sampled_from([0, 1, None]))
    def change_rules(self, version) -> None:
        self.core.install_rules(None if version is None else self.versions[version])

    @rule(data=st.data())
    def return_unused_budget(self, data) -> None:
        keep = data.draw(st.sampled_from([set(), {"camp-1"}, {"camp-2"}]))
        record, returned = self.core.return_budgets(keep, now_ms=self.now)
        assert (record is None) == (not returned)
        assert all(key not in keep for key in returned)
        if record is not None:
            self._journal(record)

    @rule(member_id=members, currency=st.sampled_from(CURRENCIES), lines=lines)
    def simulate_then_earn(self, member_id, currency, lines) -> None:
        if member_id not in self.enrolled:
            return
        before = self.core.state_bytes()
        owner_before = dict(self.budget.remaining)
        raw, record = self.core.apply_batch([c.SimulateEarn(member_id, "", currency, lines, "web", "s1")], self.now, self.budget)
        if record is not None:  # time-driven settling (expiry) happens on reads too
            self._journal(record)
            before = self.core.state_bytes()
        assert self.core.state_bytes() == before and self.budget.remaining == owner_before
        simulated = codec.decode_outcome(raw[0])
        (real,) = self.send(c.Earn(member_id, None, currency, lines, "web", "s1", 0))
        assert simulated == real


MACHINE_SETTINGS = settings(
    max_examples=150,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def test_state_machine_with_return_window_expiry_and_debt():
    run_state_machine_as_test(LedgerMachine, settings=MACHINE_SETTINGS)


def test_state_machine_with_capped_returns_and_no_expiry():
    run_state_machine_as_test(CapMachine, settings=MACHINE_SETTINGS)


def test_state_machine_with_rules_caps_and_budgets():
    run_state_machine_as_test(RulesMachine, settings=MACHINE_SETTINGS)


# ---------------------------------------------------------------------- codec round trips


def _strategy_for(annotation) -> st.SearchStrategy:
    """Values of a persisted field type, within what msgpack carries."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is int:
        return st.integers(-(2**63), 2**63 - 1)
    if annotation is str:
        return st.text(max_size=6)
    if annotation is bytes:
        return st.binary(max_size=8)
    if origin is dict:
        return st.dictionaries(_strategy_for(args[0]), _strategy_for(args[1]), max_size=3)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return st.lists(_strategy_for(args[0]), max_size=3).map(tuple)
    if origin is tuple:
        return st.tuples(*map(_strategy_for, args))
    if origin in (typing.Union, types.UnionType):
        return st.one_of(*map(_strategy_for, args))
    if annotation is type(None):
        return st.none()
    if isinstance(annotation, type) and issubclass(annotation, msgspec.Struct):
        hints = typing.get_type_hints(annotation)
        return st.builds(
            annotation,
            **{field.name: _strategy_for(hints[field.name]) for field in msgspec.structs.fields(annotation)},
        )
    raise NotImplementedError(annotation)


EVENT_TYPES = typing.get_args(e.Event)
events = st.one_of(*map(_strategy_for, EVENT_TYPES))
records = st.builds(
    e.JournalRecord, st.integers(1, 2**63 - 1), st.integers(0, 2**62), st.lists(events, max_size=6).map(tuple)
)


def test_every_event_type_is_generated():
    assert set(EVENT_TYPES) >= {e.Enrolled, e.Earned, e.Reserved, e.Pruned, e.Failed}
    assert len(EVENT_TYPES) == 14


@settings(max_examples=150, deadline=None)
@given(records)
def test_journal_records_survive_the_codec(record):
    encoded = codec.encode_record(record)
    decoded = codec.decode_record(encoded)
    assert decoded == record
    assert type(decoded.events) is tuple
    assert [type(event) for event in decoded.events] == [type(event) for event in record.events]
    assert codec.encode_record(decoded) == encoded


@settings(max_examples=75, deadline=None)
@given(st.lists(_strategy_for(Outcome), max_size=4))
def test_outcomes_survive_the_codec(outcomes):
    encoded = [codec.encode(outcome) for outcome in outcomes]
    assert [codec.decode_outcome(raw) for raw in encoded] == outcomes
    assert codec.decode_outcomes(codec.encode_outcomes(encoded)) == outcomes


@settings(max_examples=75, deadline=None)
@given(st.lists(st.one_of(mutations(), reads), max_size=5))
def test_command_batches_survive_the_codec(commands):
    commands = [msgspec.structs.replace(cmd, request_id="x") if getattr(cmd, "request_id", "") is None else cmd for cmd in commands]
    assert codec.decode_commands(codec.encode_commands(commands)) == commands


def test_snapshot_of_many_members_spans_chunks(monkeypatch):
    monkeypatch.setattr(codec, "SNAPSHOT_MEMBERS_PER_CHUNK", 3)
    core = ShardCore(CompiledProgram(Program()))
    core.apply_batch([c.EnrollMember(f"m{i}", "e", {}) for i in range(7)], T0)
    core.apply_batch([c.Adjust(f"m{i}", "a", i + 1, "welcome") for i in range(7)], T0 + 1)
    chunks = list(core.snapshot_chunks())
    assert len(chunks) == 1 + 3
    restored = ShardCore(CompiledProgram(Program()))
    restored.load_snapshot(chunks)
    assert restored.state_bytes() == core.state_bytes()
    assert (restored.seq, restored.now_ms) == (2, T0 + 1)
    with pytest.raises(ValueError, match="incomplete"):
        ShardCore(CompiledProgram(Program())).load_snapshot(chunks[:-1])
