"""Spending points and holding them: redeem, reserve, capture, release, and the
expiry of a reservation nobody captured or released.

A reservation takes points out of lots and remembers where each came from (with that
lot's expiry), so releasing puts them back exactly there. Points given back to a lot
that expired while they were held expire at once: had they not been held, they would
have expired with it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from loyalty.actors.ledger import commands as c
from loyalty.actors.ledger import events as e
from loyalty.actors.ledger.limits import (
    ID_LENGTH_MAX,
    POINTS_MAX,
    RESERVATION_TTL_S_DEFAULT,
    RESERVATION_TTL_S_MAX,
    RESERVATIONS_PER_MEMBER_MAX,
    UNVALIDATED,
)
from loyalty.actors.ledger.ops.book import apply_takes, insert_lot, record, take_available
from loyalty.actors.ledger.ops.idempotency import failed, insufficient, keep
from loyalty.actors.ledger.ops.views import balance_of
from loyalty.actors.ledger.outcomes import Outcome
from loyalty.actors.ledger.state import Hold, Lot, Member, Reservation, TransactionKind
from loyalty.actors.ledger.status import Status

if TYPE_CHECKING:
    from loyalty.actors.ledger.ledger import Ledger

_REDEEM = c.command_kind(c.Redeem)
_RESERVE = c.command_kind(c.Reserve)
_CAPTURE = c.command_kind(c.Capture)
_RELEASE = c.command_kind(c.Release)

# ---------------------------------------------------------------------- redeem


def decide_redeem(ledger: Ledger, command: c.Redeem, member: Member, now_ms: int, digest: int) -> e.Event:
    assert 0 < command.points <= POINTS_MAX, UNVALIDATED
    takes = take_available(member, command.points, now_ms)
    if takes is None:
        return insufficient(command, digest, now_ms, member)
    return e.Redeemed(member.member_id, now_ms, command.request_id, digest, command.points, tuple(takes))


def evolve_redeemed(ledger: Ledger, event: e.Redeemed) -> bytes:
    member = ledger.members[event.member_id]
    at_ms = event.at_ms
    apply_takes(member, event.takes)
    member.redeemed += event.points
    record(member, event.request_id, TransactionKind.REDEEM, -event.points, at_ms)
    outcome = Outcome(
        status=Status.OK, kind=_REDEEM, at_ms=at_ms, balance=balance_of(member, at_ms), points=event.points
    )
    return keep(member, event, outcome)


# ---------------------------------------------------------------------- reserve


def decide_reserve(ledger: Ledger, command: c.Reserve, member: Member, now_ms: int, digest: int) -> e.Event:
    assert 0 < command.points <= POINTS_MAX and 0 <= command.ttl_s <= RESERVATION_TTL_S_MAX, UNVALIDATED
    if len(member.reservations) >= RESERVATIONS_PER_MEMBER_MAX:
        return failed(
            command,
            digest,
            now_ms,
            Status.TOO_MANY_RESERVATIONS,
            f"at most {RESERVATIONS_PER_MEMBER_MAX} open reservations per member",
        )
    takes = take_available(member, command.points, now_ms)
    if takes is None:
        return insufficient(command, digest, now_ms, member)
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


def evolve_reserved(ledger: Ledger, event: e.Reserved) -> bytes:
    member = ledger.members[event.member_id]
    at_ms = event.at_ms
    apply_takes(member, event.takes)
    holds = [Hold(t.lot_id, t.points, t.expires_at_ms) for t in event.takes]
    member.reservations[event.reservation_id] = Reservation(
        event.reservation_id, event.points, event.expires_at_ms, holds
    )
    member.reserved += event.points
    member.next_reservation_number += 1
    record(member, event.request_id, TransactionKind.RESERVE, 0, at_ms, event.reservation_id)
    outcome = Outcome(
        status=Status.OK,
        kind=_RESERVE,
        at_ms=at_ms,
        balance=balance_of(member, at_ms),
        points=event.points,
        reservation_id=event.reservation_id,
        expires_at_ms=event.expires_at_ms,
    )
    return keep(member, event, outcome)


# ---------------------------------------------------------------------- capture / release


def _open_reservation(
    command: c.Capture | c.Release, member: Member, now_ms: int, digest: int
) -> Reservation | e.Failed:
    reservation = member.reservations.get(command.reservation_id)
    if reservation is not None:
        return reservation
    if command.reservation_id in member.closed_reservations:
        return failed(
            command,
            digest,
            now_ms,
            Status.RESERVATION_EXPIRED,
            "the reservation expired or was already captured or released",
        )
    return failed(command, digest, now_ms, Status.RESERVATION_NOT_FOUND, "no such reservation")


def decide_capture(ledger: Ledger, command: c.Capture, member: Member, now_ms: int, digest: int) -> e.Event:
    assert 0 < len(command.reservation_id) <= ID_LENGTH_MAX and 0 <= command.points <= POINTS_MAX, UNVALIDATED
    reservation = _open_reservation(command, member, now_ms, digest)
    if isinstance(reservation, e.Failed):
        return reservation
    captured = command.points or reservation.points
    if captured > reservation.points:
        return failed(
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


def evolve_captured(ledger: Ledger, event: e.Captured) -> bytes:
    member = ledger.members[event.member_id]
    at_ms = event.at_ms
    _close_reservation(member, event.reservation_id, at_ms)
    member.redeemed += event.captured
    _restore(member, event.restores)
    record(member, event.request_id, TransactionKind.CAPTURE, -event.captured, at_ms, event.reservation_id)
    _expire_restored(member, event.restores, at_ms)
    outcome = Outcome(
        status=Status.OK,
        kind=_CAPTURE,
        at_ms=at_ms,
        balance=balance_of(member, at_ms),
        points=event.captured,
        released=_given_back(event.restores, at_ms),
        reservation_id=event.reservation_id,
    )
    return keep(member, event, outcome)


def decide_release(ledger: Ledger, command: c.Release, member: Member, now_ms: int, digest: int) -> e.Event:
    assert 0 < len(command.reservation_id) <= ID_LENGTH_MAX, UNVALIDATED
    reservation = _open_reservation(command, member, now_ms, digest)
    if isinstance(reservation, e.Failed):
        return reservation
    return e.Released(
        member.member_id,
        now_ms,
        command.request_id,
        digest,
        reservation_id=reservation.reservation_id,
        restores=_restores_of(reservation.holds),
    )


def evolve_released(ledger: Ledger, event: e.Released) -> bytes:
    member = ledger.members[event.member_id]
    at_ms = event.at_ms
    _close_reservation(member, event.reservation_id, at_ms)
    _restore(member, event.restores)
    record(member, event.request_id, TransactionKind.RELEASE, 0, at_ms, event.reservation_id)
    _expire_restored(member, event.restores, at_ms)
    outcome = Outcome(
        status=Status.OK,
        kind=_RELEASE,
        at_ms=at_ms,
        balance=balance_of(member, at_ms),
        released=_given_back(event.restores, at_ms),
        reservation_id=event.reservation_id,
    )
    return keep(member, event, outcome)


# ---------------------------------------------------------------------- reservation expiry


def expired_reservations(member: Member, now_ms: int) -> list[e.ReservationExpired]:
    """The expiry of each open reservation due by now_ms (see expiry.settle)."""
    return [
        e.ReservationExpired(
            member.member_id,
            now_ms,
            reservation_id=reservation.reservation_id,
            restores=_restores_of(reservation.holds),
        )
        for reservation in member.reservations.values()
        if reservation.expires_at_ms <= now_ms
    ]


def evolve_reservation_expired(ledger: Ledger, event: e.ReservationExpired) -> None:
    member = ledger.members[event.member_id]
    _close_reservation(member, event.reservation_id, event.at_ms)
    _restore(member, event.restores)
    record(member, "", TransactionKind.RESERVATION_EXPIRED, 0, event.at_ms, event.reservation_id)
    _expire_restored(member, event.restores, event.at_ms)
    return None


# ---------------------------------------------------------------------- holds and lots


def _close_reservation(member: Member, reservation_id: str, at_ms: int) -> None:
    reservation = member.reservations.pop(reservation_id)
    member.reserved -= reservation.points
    member.closed_reservations[reservation_id] = at_ms


def _restores_of(holds: list[Hold]) -> tuple[e.Restore, ...]:
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
            insert_lot(member, Lot(restore.lot_id, restore.points, restore.expires_at_ms, 0))


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
                record(member, "", TransactionKind.EXPIRE, -lot.points, at_ms)
                break
