"""The ledger state machine of one shard: decide, then evolve.

``execute(command, now_ms, events)`` decides what a command does, appends the
resulting events to ``events`` and applies each one through ``apply``. Replaying a
journal calls ``apply`` alone, so live state and replayed state go through the same
code and cannot drift. The clock is an argument: nothing here reads the time.

Outcomes are returned as msgspec-encoded ``Outcome`` bytes, the same bytes kept for
idempotent replays, so a replay costs no re-encoding.
"""

from __future__ import annotations

import bisect
import hashlib
import typing
from collections.abc import Callable

import msgspec

from loyalty.actors.ledger import commands as c
from loyalty.actors.ledger import events as e
from loyalty.actors.ledger.earning import attribute_points, rate_parts, returned_share
from loyalty.actors.ledger.limits import (
    NEXT_EXPIRATIONS_MAX,
    PAGE_SIZE_DEFAULT,
    PAGE_SIZE_MAX,
    RESERVATION_TTL_S_DEFAULT,
    RESERVATIONS_PER_MEMBER_MAX,
    TRANSACTIONS_PER_MEMBER_MAX,
)
from loyalty.actors.ledger.outcomes import BalanceView, MemberView, Outcome, TransactionView
from loyalty.actors.ledger.program import CompiledProgram
from loyalty.actors.ledger.rules.budget import BudgetSource
from loyalty.actors.ledger.rules.compiler import CompiledRules
from loyalty.actors.ledger.rules.evaluation import evaluate_earn
from loyalty.actors.ledger.state import (
    EarnLine,
    EarnRecord,
    Hold,
    Lot,
    Member,
    Reservation,
    StoredOutcome,
    TransactionKind,
)
from loyalty.actors.ledger.status import Status

_encode = msgspec.msgpack.Encoder().encode
_decode_earn_lines = msgspec.msgpack.Decoder(list[EarnLine]).decode
_decode_member = msgspec.msgpack.Decoder(Member).decode
_blake2b = hashlib.blake2b
_NEVER_MS = 1 << 62  # sort key for lots that never expire

_SUCCESS_FIELDS = (
    "status",
    "kind",
    "at_ms",
    "message",
    "balance",
    "member",
    "points",
    "debt",
    "released",
    "reservation_id",
    "expires_at_ms",
    "available_at_ms",
    "lines",
    "transactions",
    "next_before_seq",
    "rules_version",
    "awards",
    "limits",
    "request_id",
)
assert Outcome.__struct_fields__ == _SUCCESS_FIELDS and Outcome.__struct_config__.array_like, (
    "Ledger._success encodes an Outcome as a tuple of exactly these fields"
)

_KINDS: dict[type, str] = {
    kind: kind.__struct_config__.tag for kind in typing.get_args(c.Command)
}
"""The short name of each command type (looked up on every operation)."""


def _lot_order(lot: Lot) -> tuple[int, int]:
    return (lot.expires_at_ms or _NEVER_MS, lot.lot_id)


def fingerprint(command: c.Command) -> int:
    """A stable 64-bit digest of a command's payload, to tell a replay from a conflict."""
    return int.from_bytes(_blake2b(_encode(command), digest_size=8).digest(), "big")


def command_kind(command: c.Command | type) -> str:
    """The short name of a command ("earn", "redeem", ...), as stored in outcomes."""
    return _KINDS[command if isinstance(command, type) else type(command)]


def balance_of(member: Member, now_ms: int) -> BalanceView:
    """The member's points as seen at now_ms."""
    lots = member.lots
    pending = 0
    if member.pending_until_max_ms > now_ms:  # some lot may still be pending
        pending = sum([lot.points for lot in lots if lot.pending_until_ms > now_ms])
    return BalanceView(
        member.held - pending,  # available
        pending,
        member.reserved,
        member.debt,
        member.earned,  # lifetime_earned
        member.redeemed,
        member.expired,
        member.reversed,
        member.adjusted_in,
        member.adjusted_out,
        _next_expirations(lots) if lots else (),
    )


def _next_expirations(lots: list[Lot]) -> tuple[tuple[int, int], ...]:
    """(points, expires_at_ms) of the first few expiry dates. Lots are sorted by
    expiry, so each date is one run of lots, and lots that never expire come last."""
    expirations: list[tuple[int, int]] = []
    date = points = 0  # the run being summed (date 0: none yet)
    for lot in lots:
        expires_at_ms = lot.expires_at_ms
        if expires_at_ms == date:
            points += lot.points
            continue
        if date:
            expirations.append((points, date))
            if len(expirations) == NEXT_EXPIRATIONS_MAX:
                return tuple(expirations)
        if not expires_at_ms:
            return tuple(expirations)
        date, points = expires_at_ms, lot.points
    if date:
        expirations.append((points, date))
    return tuple(expirations)


def member_view(member: Member) -> MemberView:
    """The member's identity and labels."""
    return MemberView(member.member_id, dict(member.attributes), member.status, member.enrolled_at_ms)


def conservation_holds(member: Member) -> bool:
    """earned + adjusted_in + debt == lots + reserved + redeemed + expired + reversed
    + adjusted_out, nothing is negative, and the running lot total is exact."""
    held = 0
    for lot in member.lots:
        if lot.points <= 0:
            return False
        held += lot.points
    if held != member.held:
        return False
    counters = (
        member.earned,
        member.adjusted_in,
        member.debt,
        member.reserved,
        member.redeemed,
        member.expired,
        member.reversed,
        member.adjusted_out,
    )
    if min(counters) < 0:
        return False
    return member.earned + member.adjusted_in + member.debt == (
        held
        + member.reserved
        + member.redeemed
        + member.expired
        + member.reversed
        + member.adjusted_out
    )


class Ledger:
    """The members of one shard and every rule for changing them."""

    def __init__(self, program: CompiledProgram) -> None:
        self.program = program
        self.members: dict[str, Member] = {}
        self.rules: CompiledRules | None = None
        """The rules earns are evaluated with (None: the base program only)."""
        self.budgets: dict[str, int] = {}
        """Campaign budget points leased to this shard and not yet spent, by key."""
        self.budget_source: BudgetSource | None = None
        """The budget owner, set for the duration of a batch."""
        self._rates: dict[str, tuple[int, int]] = {}
        """The program's base earn rate per currency, as attribute_points takes it
        (filled as currencies are seen; the program never changes)."""
        self._deciders: dict[type, Callable] = {
            c.Redeem: self._decide_redeem,
            c.Reserve: self._decide_reserve,
            c.Capture: self._decide_capture,
            c.Release: self._decide_release,
            c.Reverse: self._decide_reverse,
            c.Adjust: self._decide_adjust,
        }
        self._readers: dict[type, Callable] = {
            c.GetMember: self._read_member,
            c.GetBalance: self._read_balance,
            c.ListTransactions: self._read_transactions,
            c.GetOperation: self._read_operation,
            c.SimulateEarn: self._read_simulated_earn,
        }
        self._evolvers: dict[type, Callable] = {
            e.Enrolled: self._evolve_enrolled,
            e.Earned: self._evolve_earned,
            e.Redeemed: self._evolve_redeemed,
            e.Reserved: self._evolve_reserved,
            e.Captured: self._evolve_captured,
            e.Released: self._evolve_released,
            e.Reversed: self._evolve_reversed,
            e.Adjusted: self._evolve_adjusted,
            e.Failed: self._evolve_failed,
            e.LotExpired: self._evolve_lot_expired,
            e.ReservationExpired: self._evolve_reservation_expired,
            e.Pruned: self._evolve_pruned,
            e.BudgetLeased: self._evolve_budget_leased,
            e.BudgetReturned: self._evolve_budget_returned,
        }

    # ------------------------------------------------------------------ entry points

    def execute(self, command: c.Command, now_ms: int, events: list[e.Event]) -> bytes:
        """Apply one command at now_ms; append its events; return the encoded Outcome."""
        kind = type(command)
        member = self.members.get(command.member_id)
        if kind is c.EnrollMember:
            return self._execute_enroll(command, member, now_ms, events)
        if member is None:
            return _failure(command, Status.MEMBER_NOT_FOUND, now_ms, "no member has this id")
        self._settle(member, now_ms, events)
        if kind is not c.Earn:
            reader = self._readers.get(kind)
            if reader is not None:
                return reader(command, member, now_ms)
        digest = fingerprint(command)
        replayed = _replayed(command, member, digest, now_ms)
        if replayed is not None:
            return replayed
        if kind is c.Earn:
            take_budget = self._budget_taker(now_ms, events)[0] if self.rules is not None else None
            event = self._decide_earn(command, member, now_ms, digest, take_budget)
        else:
            event = self._deciders[kind](command, member, now_ms, digest)
        return self._emit(event, events)

    def apply(self, event: e.Event) -> bytes | None:
        """Apply one event (live or replayed); return the encoded Outcome it answers."""
        return self._evolvers[type(event)](event)

    # ------------------------------------------------------------------ helpers

    def _emit(self, event: e.Event, events: list[e.Event]) -> bytes | None:
        events.append(event)
        return self.apply(event)

    def _settle(self, member: Member, now_ms: int, events: list[e.Event]) -> None:
        """Time-driven changes due by now_ms: expired holds, expired points, forgotten
        outcomes. Each is an event, so expiry is a ledger entry, never a silent drop."""
        if member.reservations:
            for reservation in [r for r in member.reservations.values() if r.expires_at_ms <= now_ms]:
                self._emit(
                    e.ReservationExpired(
                        member.member_id,
                        now_ms,
                        reservation_id=reservation.reservation_id,
                        restores=_restores(reservation.holds),
                    ),
                    events,
                )
        lots = member.lots
        while lots and 0 < lots[0].expires_at_ms <= now_ms:
            lot = lots[0]
            self._emit(e.LotExpired(member.member_id, now_ms, lot.lot_id, lot.points), events)
        cutoff_ms = now_ms - self.program.retention_ms
        if _anything_to_forget(member, cutoff_ms, now_ms):
            self._emit(e.Pruned(member.member_id, now_ms, outcomes_before_ms=cutoff_ms), events)

    def _take_available(self, member: Member, points: int, now_ms: int) -> list[e.Take] | None:
        """Lots to spend points from, earliest-expiring first; None if too few."""
        takes = []
        needed = points
        for lot in member.lots:
            if needed == 0:
                break
            if lot.pending_until_ms <= now_ms:
                used = min(needed, lot.points)
                takes.append(e.Take(lot.lot_id, used))
                needed -= used
        return takes if needed == 0 else None

    def _store(self, member: Member, event: e._Answer, outcome: Outcome) -> bytes:
        encoded = _encode(outcome)
        member.outcomes[event.request_id] = StoredOutcome(event.fingerprint, event.at_ms, encoded)
        return encoded

    def _success(
        self,
        owner: Member,
        event: e._Answer,
        kind: type,
        *,
        member: MemberView | None = None,
        points: int = 0,
        debt: int = 0,
        released: int = 0,
        reservation_id: str = "",
        expires_at_ms: int = 0,
        available_at_ms: int = 0,
        lines: tuple[tuple[str, int], ...] = (),
        rules_version: int = 0,
        awards: tuple[tuple[str, int, str, int, str], ...] = (),
        limits: tuple[tuple[str, str, int], ...] = (),
    ) -> bytes:
        """Store and return the OK outcome of ``event`` with the owner's balance.

        Encoded straight from a tuple of the Outcome's fields in declaration order:
        msgspec writes an array-like struct as exactly that array (every field, even
        with omit_defaults), and building the Outcome first would cost about as much
        as encoding it. The keywords are spelled out rather than taken as ``**fields``
        for the same reason."""
        at_ms = event.at_ms
        encoded = _encode(
            (
                Status.OK,  # status
                _KINDS[kind],  # kind
                at_ms,
                "",  # message
                balance_of(owner, at_ms),  # balance
                member,
                points,
                debt,
                released,
                reservation_id,
                expires_at_ms,
                available_at_ms,
                lines,
                (),  # transactions
                0,  # next_before_seq
                rules_version,
                awards,
                limits,
                "",  # request_id
            )
        )
        owner.outcomes[event.request_id] = StoredOutcome(event.fingerprint, at_ms, encoded)
        return encoded

    # ------------------------------------------------------------------ enroll

    def _execute_enroll(
        self, command: c.EnrollMember, member: Member | None, now_ms: int, events: list[e.Event]
    ) -> bytes:
        digest = fingerprint(command)
        if member is None:
            event = e.Enrolled(
                command.member_id, now_ms, command.request_id, digest, dict(command.attributes)
            )
            return self._emit(event, events)
        self._settle(member, now_ms, events)
        stored = member.outcomes.get(command.request_id)
        if stored is not None:
            if stored.fingerprint == digest:
                return stored.outcome
            return _failure(
                command,
                Status.REQUEST_ID_CONFLICT,
                now_ms,
                "this request_id was used before with a different payload",
            )
        failed = _failed(command, digest, now_ms, Status.MEMBER_ALREADY_EXISTS, "member id is taken")
        return self._emit(failed, events)

    def _evolve_enrolled(self, event: e.Enrolled) -> bytes:
        assert event.member_id not in self.members, "enrolled twice"
        member = Member(event.member_id, event.at_ms, dict(event.attributes))
        self.members[event.member_id] = member
        _record(member, event.request_id, TransactionKind.ENROLL, 0, event.at_ms)
        return self._success(member, event, c.EnrollMember, member=member_view(member))

    # ------------------------------------------------------------------ earn

    def _budget_taker(
        self, now_ms: int, events: list[e.Event] | None
    ) -> tuple[Callable[[str, int], int], dict[str, int]]:
        """take(key, points) for one earn: spends the shard's balance, leasing more from
        the owner when short (a BudgetLeased event, emitted before the earn's). With
        ``events`` None (a simulated earn) nothing is leased: the owner's available
        points stand in, and the second value says how many were borrowed, by key."""
        source = self.budget_source
        spent: dict[str, int] = {}
        borrowed: dict[str, int] = {}

        def take(key: str, points: int) -> int:
            held = self.budgets.get(key, 0) + borrowed.get(key, 0) - spent.get(key, 0)
            if held < points and source is not None:
                if events is None:
                    extra = min(points - held, source.available(key))
                    borrowed[key] = borrowed.get(key, 0) + extra
                else:
                    extra = source.lease(key, points - held)
                    assert extra >= 0, "a lease never takes points away"
                    if extra:
                        self._emit(e.BudgetLeased("", now_ms, budget_key=key, points=extra), events)
                held += extra
            taken = min(points, held)
            spent[key] = spent.get(key, 0) + taken
            return taken

        return take, borrowed

    def _decide_earn(
        self,
        command: c.Earn,
        member: Member,
        now_ms: int,
        digest: int,
        take_budget: Callable[[str, int], int] | None,
    ) -> e.Event:
        """The Earned event (or a stored failure). ``take_budget`` grants campaign
        budget (see _budget_taker); None only when no rules are installed."""
        if command.request_id in member.earns:
            # Its outcome was forgotten, but the purchase is still kept for returns:
            # earning again would pay twice and hide the original from returns.
            return _failed(
                command,
                digest,
                now_ms,
                Status.REQUEST_ID_CONFLICT,
                "a purchase with this request_id is still on record for returns",
            )
        rate = self._rates.get(command.currency)
        if rate is None:
            rate = self._rates[command.currency] = rate_parts(self.program.points_per_minor(command.currency))
        lines = command.lines
        points, shares = attribute_points([line.amount_minor for line in lines], rate)
        rules = self.rules
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
        program = self.program
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
            lines=tuple(
                [(line.sku, line.quantity, share) for line, share in zip(lines, shares, strict=True)]
            ),
            rules_version=rules_version,
            awards=awards,
            limits=limits,
            counters=counters,
            budgets=budgets,
        )

    def _evolve_earned(self, event: e.Earned) -> bytes:
        member = self.members[event.member_id]
        points, debt_repaid = event.points, event.debt_repaid
        member.debt -= debt_repaid
        member.earned += points
        lot_points = points - debt_repaid
        if lot_points:
            _insert_lot(member, Lot(event.lot_id, lot_points, event.expires_at_ms, event.pending_until_ms))
        if event.counters:
            _set_counters(member, event.counters)
        for key, spent in event.budgets:
            left = self.budgets[key] - spent
            assert left >= 0, f"budget {key!r} overspent"
            if left:
                self.budgets[key] = left
            else:
                del self.budgets[key]
        # (sku, quantity, points) is an EarnLine with nothing returned yet: its
        # trailing zero fields are left out and read back as their defaults
        member.earns[event.request_id] = EarnRecord(event.lot_id, event.keep_until_ms, _encode(event.lines))
        _record(member, event.request_id, TransactionKind.EARN, points, event.at_ms)
        pending = event.pending_until_ms > event.at_ms
        return self._success(
            member,
            event,
            c.Earn,
            points=points,
            debt=debt_repaid,
            expires_at_ms=event.expires_at_ms,
            available_at_ms=event.pending_until_ms if pending else event.at_ms,
            lines=tuple([(sku, line_points) for sku, _, line_points in event.lines]),
            rules_version=event.rules_version,
            awards=event.awards,
            limits=event.limits,
        )

    # ------------------------------------------------------------------ redeem

    def _decide_redeem(self, command: c.Redeem, member: Member, now_ms: int, digest: int) -> e.Event:
        takes = self._take_available(member, command.points, now_ms)
        if takes is None:
            return _insufficient(command, digest, now_ms, member)
        return e.Redeemed(
            member.member_id, now_ms, command.request_id, digest, command.points, tuple(takes)
        )

    def _evolve_redeemed(self, event: e.Redeemed) -> bytes:
        member = self.members[event.member_id]
        _apply_takes(member, event.takes)
        member.redeemed += event.points
        _record(member, event.request_id, TransactionKind.REDEEM, -event.points, event.at_ms)
        return self._success(member, event, c.Redeem, points=event.points)

    # ------------------------------------------------------------------ reserve

    def _decide_reserve(self, command: c.Reserve, member: Member, now_ms: int, digest: int) -> e.Event:
        if len(member.reservations) >= RESERVATIONS_PER_MEMBER_MAX:
            return _failed(
                command,
                digest,
                now_ms,
                Status.TOO_MANY_RESERVATIONS,
                f"at most {RESERVATIONS_PER_MEMBER_MAX} open reservations per member",
            )
        takes = self._take_available(member, command.points, now_ms)
        if takes is None:
            return _insufficient(command, digest, now_ms, member)
        expiry_by_lot = {lot.lot_id: lot.expires_at_ms for lot in member.lots}
        ttl_s = command.ttl_s or RESERVATION_TTL_S_DEFAULT
        return e.Reserved(
            member.member_id,
            now_ms,
            command.request_id,
            digest,
            reservation_id=f"rsv-{member.next_reservation_number}",
            points=command.points,
            expires_at_ms=now_ms + ttl_s * 1000,
            takes=tuple(e.Restore(t.lot_id, t.points, expiry_by_lot[t.lot_id]) for t in takes),
        )

    def _evolve_reserved(self, event: e.Reserved) -> bytes:
        member = self.members[event.member_id]
        _apply_takes(member, event.takes)
        holds = [Hold(t.lot_id, t.points, t.expires_at_ms) for t in event.takes]
        member.reservations[event.reservation_id] = Reservation(
            event.reservation_id, event.points, event.expires_at_ms, holds
        )
        member.reserved += event.points
        member.next_reservation_number += 1
        _record(
            member, event.request_id, TransactionKind.RESERVE, 0, event.at_ms, event.reservation_id
        )
        return self._success(
            member,
            event,
            c.Reserve,
            points=event.points,
            reservation_id=event.reservation_id,
            expires_at_ms=event.expires_at_ms,
        )

    # ------------------------------------------------------------------ capture / release

    def _open_reservation(
        self, command: c.Capture | c.Release, member: Member, now_ms: int, digest: int
    ) -> Reservation | e.Failed:
        reservation = member.reservations.get(command.reservation_id)
        if reservation is not None:
            return reservation
        if command.reservation_id in member.closed_reservations:
            return _failed(
                command,
                digest,
                now_ms,
                Status.RESERVATION_EXPIRED,
                "the reservation expired or was already captured or released",
            )
        return _failed(
            command, digest, now_ms, Status.RESERVATION_NOT_FOUND, "no such reservation"
        )

    def _decide_capture(self, command: c.Capture, member: Member, now_ms: int, digest: int) -> e.Event:
        reservation = self._open_reservation(command, member, now_ms, digest)
        if isinstance(reservation, e.Failed):
            return reservation
        captured = command.points or reservation.points
        if captured > reservation.points:
            return _failed(
                command,
                digest,
                now_ms,
                Status.CAPTURE_EXCEEDS_RESERVATION,
                f"the reservation holds {reservation.points} points",
            )
        restores = []
        to_capture = captured
        for hold in reservation.holds:
            used = min(to_capture, hold.points)
            to_capture -= used
            if hold.points > used:
                restores.append(e.Restore(hold.lot_id, hold.points - used, hold.expires_at_ms))
        return e.Captured(
            member.member_id,
            now_ms,
            command.request_id,
            digest,
            reservation_id=reservation.reservation_id,
            captured=captured,
            restores=tuple(restores),
        )

    def _evolve_captured(self, event: e.Captured) -> bytes:
        member = self.members[event.member_id]
        _close_reservation(member, event.reservation_id, event.at_ms)
        member.redeemed += event.captured
        _restore(member, event.restores)
        _record(
            member,
            event.request_id,
            TransactionKind.CAPTURE,
            -event.captured,
            event.at_ms,
            event.reservation_id,
        )
        _expire_restored(member, event.restores, event.at_ms)
        return self._success(
            member,
            event,
            c.Capture,
            points=event.captured,
            released=_given_back(event.restores, event.at_ms),
            reservation_id=event.reservation_id,
        )

    def _decide_release(self, command: c.Release, member: Member, now_ms: int, digest: int) -> e.Event:
        reservation = self._open_reservation(command, member, now_ms, digest)
        if isinstance(reservation, e.Failed):
            return reservation
        return e.Released(
            member.member_id,
            now_ms,
            command.request_id,
            digest,
            reservation_id=reservation.reservation_id,
            restores=_restores(reservation.holds),
        )

    def _evolve_released(self, event: e.Released) -> bytes:
        member = self.members[event.member_id]
        _close_reservation(member, event.reservation_id, event.at_ms)
        _restore(member, event.restores)
        _record(
            member, event.request_id, TransactionKind.RELEASE, 0, event.at_ms, event.reservation_id
        )
        _expire_restored(member, event.restores, event.at_ms)
        return self._success(
            member,
            event,
            c.Release,
            released=_given_back(event.restores, event.at_ms),
            reservation_id=event.reservation_id,
        )

    def _evolve_reservation_expired(self, event: e.ReservationExpired) -> None:
        member = self.members[event.member_id]
        _close_reservation(member, event.reservation_id, event.at_ms)
        _restore(member, event.restores)
        _record(
            member, "", TransactionKind.RESERVATION_EXPIRED, 0, event.at_ms, event.reservation_id
        )
        _expire_restored(member, event.restores, event.at_ms)
        return None

    # ------------------------------------------------------------------ reverse

    def _decide_reverse(self, command: c.Reverse, member: Member, now_ms: int, digest: int) -> e.Event:
        record = member.earns.get(command.original_request_id)
        if record is None:
            return _failed(
                command,
                digest,
                now_ms,
                Status.ORIGINAL_NOT_FOUND,
                "no purchase with that request_id is on record for this member",
            )
        returns = _plan_returns(_decode_earn_lines(record.lines), command.lines)
        if isinstance(returns, str):
            return _failed(command, digest, now_ms, Status.RETURN_EXCEEDS_PURCHASE, returns)
        points = sum(points for _, _, points in returns)
        takes = self._plan_clawback(member, record.lot_id, points, now_ms)
        taken = sum(take.points for take in takes)
        debt_added = points - taken if self.program.reversal_creates_debt else 0
        return e.Reversed(
            member.member_id,
            now_ms,
            command.request_id,
            digest,
            original_request_id=command.original_request_id,
            points=taken + debt_added,
            debt_added=debt_added,
            returns=tuple(returns),
            takes=tuple(takes),
        )

    def _plan_clawback(self, member: Member, own_lot_id: int, points: int, now_ms: int) -> list[e.Take]:
        """Where returned points come from: the purchase's own lot, then other pending
        lots, then available lots (earliest-expiring first). Reserved points are left
        alone; whatever is still missing is debt (or forgiven under policy "cap")."""
        order = sorted(
            member.lots,
            key=lambda lot: (lot.lot_id != own_lot_id, lot.pending_until_ms <= now_ms),
        )  # stable: keeps earliest-expiring order inside each group
        takes = []
        needed = points
        for lot in order:
            if needed == 0:
                break
            used = min(needed, lot.points)
            takes.append(e.Take(lot.lot_id, used))
            needed -= used
        return takes

    def _evolve_reversed(self, event: e.Reversed) -> bytes:
        member = self.members[event.member_id]
        record = member.earns[event.original_request_id]
        lines = _decode_earn_lines(record.lines)
        for index, quantity, points in event.returns:
            line = lines[index]
            line.returned_quantity += quantity
            line.returned_points += points
        record.lines = _encode(lines)
        _apply_takes(member, event.takes)
        member.debt += event.debt_added
        member.reversed += event.points
        _record(
            member,
            event.request_id,
            TransactionKind.REVERSE,
            -event.points,
            event.at_ms,
            event.original_request_id,
        )
        return self._success(member, event, c.Reverse, points=event.points, debt=event.debt_added)

    # ------------------------------------------------------------------ adjust

    def _decide_adjust(self, command: c.Adjust, member: Member, now_ms: int, digest: int) -> e.Event:
        header = (member.member_id, now_ms, command.request_id, digest)
        if command.points > 0:
            debt_repaid = min(command.points, member.debt)
            return e.Adjusted(
                *header,
                points=command.points,
                reason=command.reason,
                debt_repaid=debt_repaid,
                lot_id=member.next_lot_id if command.points > debt_repaid else 0,
                expires_at_ms=self.program.expires_at_ms(now_ms),
            )
        takes = self._take_available(member, -command.points, now_ms)
        if takes is None:
            return _insufficient(command, digest, now_ms, member)
        return e.Adjusted(*header, points=command.points, reason=command.reason, takes=tuple(takes))

    def _evolve_adjusted(self, event: e.Adjusted) -> bytes:
        member = self.members[event.member_id]
        if event.points > 0:
            member.debt -= event.debt_repaid
            member.adjusted_in += event.points
            lot_points = event.points - event.debt_repaid
            if lot_points:
                _insert_lot(member, Lot(event.lot_id, lot_points, event.expires_at_ms, 0))
        else:
            _apply_takes(member, event.takes)
            member.adjusted_out -= event.points
        _record(
            member, event.request_id, TransactionKind.ADJUST, event.points, event.at_ms, event.reason
        )
        return self._success(member, event, c.Adjust, points=event.points)

    # ------------------------------------------------------------------ failures, time

    def _evolve_failed(self, event: e.Failed) -> bytes:
        member = self.members[event.member_id]
        outcome = Outcome(
            status=event.status, kind=event.kind, at_ms=event.at_ms, message=event.message
        )
        return self._store(member, event, outcome)

    def _evolve_lot_expired(self, event: e.LotExpired) -> None:
        member = self.members[event.member_id]
        _apply_takes(member, (e.Take(event.lot_id, event.points),))
        member.expired += event.points
        _record(member, "", TransactionKind.EXPIRE, -event.points, event.at_ms)
        return None

    def _evolve_budget_leased(self, event: e.BudgetLeased) -> None:
        assert event.points > 0
        self.budgets[event.budget_key] = self.budgets.get(event.budget_key, 0) + event.points
        return None

    def _evolve_budget_returned(self, event: e.BudgetReturned) -> None:
        held = self.budgets.pop(event.budget_key, 0)
        assert held == event.points, f"returning {event.points} of budget {event.budget_key!r}, holding {held}"
        return None

    def _evolve_pruned(self, event: e.Pruned) -> None:
        member = self.members[event.member_id]
        cutoff_ms = event.outcomes_before_ms
        outcomes, closed = member.outcomes, member.closed_reservations
        while outcomes and next(iter(outcomes.values())).at_ms < cutoff_ms:
            del outcomes[next(iter(outcomes))]
        while closed and next(iter(closed.values())) < cutoff_ms:
            del closed[next(iter(closed))]
        while _first_earn_done(member, event.at_ms):
            del member.earns[next(iter(member.earns))]
        return None

    # ------------------------------------------------------------------ reads

    def _read_member(self, command: c.GetMember, member: Member, now_ms: int) -> bytes:
        return _encode(
            Outcome(
                kind=command_kind(command),
                at_ms=now_ms,
                member=member_view(member),
                balance=balance_of(member, now_ms),
            )
        )

    def _read_balance(self, command: c.GetBalance, member: Member, now_ms: int) -> bytes:
        return _encode(
            Outcome(kind=command_kind(command), at_ms=now_ms, balance=balance_of(member, now_ms))
        )

    def _read_transactions(self, command: c.ListTransactions, member: Member, now_ms: int) -> bytes:
        history = member.transactions
        page_size = min(command.page_size or PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX)
        end = len(history)
        if command.before_seq:
            end = bisect.bisect_left(history, command.before_seq, key=lambda t: t.seq)
        start = max(0, end - page_size)
        page = tuple(reversed(history[start:end]))
        next_before_seq = page[-1].seq if start > 0 and page else 0
        return _encode(
            Outcome(
                kind=command_kind(command),
                at_ms=now_ms,
                transactions=page,
                next_before_seq=next_before_seq,
            )
        )

    def _read_simulated_earn(self, command: c.SimulateEarn, member: Member, now_ms: int) -> bytes:
        """The outcome the equivalent Earn would get now, worked out on a scratch copy
        of the member and of the budget balances, which are then put back."""
        earn = c.Earn(
            command.member_id,
            command.request_id,
            command.currency,
            command.lines,
            command.channel,
            command.store_id,
            command.occurred_at_ms,
        )
        digest = fingerprint(earn)
        replayed = _replayed(earn, member, digest, now_ms) if earn.request_id else None
        if replayed is not None:
            return replayed
        take_budget, borrowed = self._budget_taker(now_ms, None)
        event = self._decide_earn(earn, member, now_ms, digest, take_budget)
        budgets = dict(self.budgets)
        for key, points in borrowed.items():
            self.budgets[key] = self.budgets.get(key, 0) + points
        self.members[member.member_id] = _decode_member(_encode(member))
        try:
            return self.apply(event)
        finally:
            self.members[member.member_id] = member
            self.budgets = budgets

    def _read_operation(self, command: c.GetOperation, member: Member, now_ms: int) -> bytes:
        stored = member.outcomes.get(command.request_id)
        if stored is None:
            return _failure(
                command,
                Status.OPERATION_NOT_FOUND,
                now_ms,
                "no outcome is stored for this request_id: it was never applied, "
                "or it is older than the retention window",
            )
        return stored.outcome


# ---------------------------------------------------------------------- module helpers


def _replayed(command: c.Mutation, member: Member, digest: int, now_ms: int) -> bytes | None:
    """The stored outcome of an earlier request with this request_id and payload, a
    REQUEST_ID_CONFLICT for another payload, or None if the request_id is new."""
    stored = member.outcomes.get(command.request_id)
    if stored is None:
        return None
    if stored.fingerprint == digest:
        return stored.outcome
    return _failure(
        command, Status.REQUEST_ID_CONFLICT, now_ms, "this request_id was used before with a different payload"
    )


def _failure(command: c.Command, status: Status, now_ms: int, message: str) -> bytes:
    """An outcome that is not stored (the member does not exist, or a conflict)."""
    return _encode(Outcome(status=status, kind=command_kind(command), at_ms=now_ms, message=message))


def _failed(command: c.Mutation, digest: int, now_ms: int, status: Status, message: str) -> e.Failed:
    return e.Failed(
        command.member_id,
        now_ms,
        command.request_id,
        digest,
        kind=command_kind(command),
        status=status,
        message=message,
    )


def _insufficient(command: c.Mutation, digest: int, now_ms: int, member: Member) -> e.Failed:
    available = balance_of(member, now_ms).available
    wanted = abs(command.points)
    return _failed(
        command,
        digest,
        now_ms,
        Status.INSUFFICIENT_POINTS,
        f"needs {wanted} points, {available} available",
    )


def _anything_to_forget(member: Member, cutoff_ms: int, now_ms: int) -> bool:
    """Whether the oldest outcome or closed reservation is older than cutoff_ms, or
    the oldest kept purchase is kept until at or before now_ms (each is checked on
    every operation, so the oldest entries are looked at directly)."""
    outcomes = member.outcomes
    if outcomes and next(iter(outcomes.values())).at_ms < cutoff_ms:
        return True
    closed = member.closed_reservations
    if closed and next(iter(closed.values())) < cutoff_ms:
        return True
    earns = member.earns
    return bool(earns) and 0 < next(iter(earns.values())).kept_until_ms <= now_ms


def _first_earn_done(member: Member, now_ms: int) -> bool:
    if not member.earns:
        return False
    kept_until_ms = next(iter(member.earns.values())).kept_until_ms
    return 0 < kept_until_ms <= now_ms


def _set_counters(member: Member, counters: tuple[tuple[str, int, int], ...]) -> None:
    """Set (or, for period -1, delete) a member's cap counters; None when none are left."""
    table = member.counters if member.counters is not None else {}
    for key, period, points in counters:
        if period < 0:
            table.pop(key, None)
        else:
            table[key] = (period, points)
    member.counters = table or None


def _insert_lot(member: Member, lot: Lot) -> None:
    assert lot.points > 0
    lots = member.lots
    if not lots or _lot_order(lots[-1]) <= _lot_order(lot):  # usual: the newest lot expires last
        lots.append(lot)
    else:
        bisect.insort(lots, lot, key=_lot_order)
    member.held += lot.points
    member.pending_until_max_ms = max(member.pending_until_max_ms, lot.pending_until_ms)
    member.next_lot_id = max(member.next_lot_id, lot.lot_id + 1)


def _apply_takes(member: Member, takes) -> None:
    for take in takes:
        for index, lot in enumerate(member.lots):
            if lot.lot_id == take.lot_id:
                assert 0 < take.points <= lot.points, "a take never exceeds its lot"
                lot.points -= take.points
                member.held -= take.points
                if lot.points == 0:
                    del member.lots[index]
                break
        else:
            raise AssertionError(f"take from unknown lot {take.lot_id}")


def _restores(holds: list[Hold]) -> tuple[e.Restore, ...]:
    return tuple(e.Restore(hold.lot_id, hold.points, hold.expires_at_ms) for hold in holds)


def _restore(member: Member, restores) -> None:
    """Put held points back into the lots they came from (recreating emptied lots)."""
    for restore in restores:
        for lot in member.lots:
            if lot.lot_id == restore.lot_id:
                lot.points += restore.points
                member.held += restore.points
                break
        else:
            _insert_lot(member, Lot(restore.lot_id, restore.points, restore.expires_at_ms, 0))


def _given_back(restores, at_ms: int) -> int:
    """Held points that went back to the member (not those that expired on the way)."""
    return sum(r.points for r in restores if not 0 < r.expires_at_ms <= at_ms)


def _expire_restored(member: Member, restores, at_ms: int) -> None:
    """Lots that got held points back after their expiry date expire now: the points
    would have expired had they not been held. Called after the restoring entry is
    recorded, so the history shows the release first and the expiry after it."""
    for restore in restores:
        if not 0 < restore.expires_at_ms <= at_ms:
            continue
        for index, lot in enumerate(member.lots):
            if lot.lot_id == restore.lot_id:
                del member.lots[index]
                member.held -= lot.points
                member.expired += lot.points
                _record(member, "", TransactionKind.EXPIRE, -lot.points, at_ms)
                break


def _close_reservation(member: Member, reservation_id: str, at_ms: int) -> None:
    reservation = member.reservations.pop(reservation_id)
    member.reserved -= reservation.points
    member.closed_reservations[reservation_id] = at_ms


def _plan_returns(
    earned: list[EarnLine], lines: tuple[c.ReturnLine, ...]
) -> list[tuple[int, int, int]] | str:
    """(line index, quantity, points) for each part of a return, or why it is refused."""
    returned = [line.returned_quantity for line in earned]
    plan = []
    if not lines:
        for index, line in enumerate(earned):
            remaining = line.quantity - returned[index]
            if remaining > 0:
                plan.append((index, remaining, line.points - line.returned_points))
        return plan or "every line of this purchase was already returned"
    for wanted in lines:
        needed = wanted.quantity
        for index, line in enumerate(earned):
            if needed == 0:
                break
            remaining = line.quantity - returned[index]
            if line.sku != wanted.sku or remaining <= 0:
                continue
            quantity = min(needed, remaining)
            points = returned_share(line.points, line.quantity, returned[index], quantity)
            plan.append((index, quantity, points))
            returned[index] += quantity
            needed -= quantity
        if needed:
            return f"sku {wanted.sku!r}: {wanted.quantity} returned but only {wanted.quantity - needed} left to return"
    return plan


def _record(
    member: Member, request_id: str, kind: TransactionKind, points: int, at_ms: int, reference: str = ""
) -> None:
    """Append a history entry and check the conservation identity (the lot sum is
    computed here anyway)."""
    held = member.held
    assert member.earned + member.adjusted_in + member.debt == (
        held + member.reserved + member.redeemed + member.expired + member.reversed + member.adjusted_out
    ), f"conservation broken for member {member.member_id!r}"
    assert member.debt >= 0 and member.reserved >= 0
    seq = member.next_transaction_seq
    member.next_transaction_seq = seq + 1
    member.transactions.append(
        TransactionView(seq, request_id, kind, points, held + member.reserved - member.debt, at_ms, reference)
    )
    if len(member.transactions) > TRANSACTIONS_PER_MEMBER_MAX:
        del member.transactions[0]
