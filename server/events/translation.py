"""Journal records -> loyalty.v1 Event messages: the ledger's events in public form.

Pure: a record in, messages out; no Redis, no shard state. What each event needs
comes from the event itself and from the balance the record carries after it.
"""

from __future__ import annotations

import typing
from collections.abc import Callable

from loyalty.actors.ledger import events as e
from loyalty.actors.ledger.events import JournalRecord
from loyalty.actors.ledger.outcomes import BalanceView
from loyalty.server.events.cursors import Cursor, encode_cursor
from loyalty.server.gateway.responses import balance as balance_message
from loyalty.v1 import events_pb2 as pb

SKIPPED: frozenset[type] = frozenset({e.Failed, e.Pruned, e.BudgetLeased, e.BudgetReturned})
"""Ledger events with no public form: refusals kept for replays (they change no
points), the forgetting of old outcomes, and shard-level budget bookkeeping."""


def _set_time(target, milliseconds: int) -> None:
    target.seconds = milliseconds // 1000
    target.nanos = milliseconds % 1000 * 1_000_000


def _given_back(restores: tuple[e.Restore, ...], at_ms: int) -> int:
    """Held points that went back to the member: a restore into a lot whose expiry has
    passed expires at once (see ops/holds.py) and is not given back."""
    return sum(r.points for r in restores if not 0 < r.expires_at_ms <= at_ms)


def _enrolled(event: e.Enrolled, target: pb.Event) -> None:
    enrolled = target.enrolled
    enrolled.SetInParent()  # the kind is set even when there are no attributes
    enrolled.attributes.update(event.attributes)


def _earned(event: e.Earned, target: pb.Event) -> None:
    earned = target.earned
    earned.points = event.points
    earned.debt_repaid = event.debt_repaid
    # as EarnResponse: available now unless the return window keeps them pending
    _set_time(earned.available_at, max(event.pending_until_ms, event.at_ms))
    if event.expires_at_ms:
        _set_time(earned.expires_at, event.expires_at_ms)
    for sku, quantity, points in event.lines:
        earned.lines.add(sku=sku, quantity=quantity, points=points)
    earned.rules_version = event.rules_version
    # as EarnResponse.awards: one base award per line when no rule contributed
    awards = event.awards or [("", index, sku, points, "base") for index, (sku, _, points) in enumerate(event.lines)]
    for rule_id, line_index, sku, points, effect in awards:
        earned.awards.add(rule_id=rule_id, line_index=line_index, sku=sku, points=points, effect=effect)
    for rule_id, limit, points_cut in event.limits:
        earned.limits.add(rule_id=rule_id, limit=limit, points_cut=points_cut)


def _redeemed(event: e.Redeemed, target: pb.Event) -> None:
    target.redeemed.points = event.points


def _reserved(event: e.Reserved, target: pb.Event) -> None:
    reserved = target.reserved
    reserved.reservation_id = event.reservation_id
    reserved.points = event.points
    _set_time(reserved.expires_at, event.expires_at_ms)


def _captured(event: e.Captured, target: pb.Event) -> None:
    captured = target.captured
    captured.reservation_id = event.reservation_id
    captured.captured = event.captured
    captured.released = _given_back(event.restores, event.at_ms)


def _released(event: e.Released, target: pb.Event) -> None:
    released = target.released
    released.reservation_id = event.reservation_id
    released.released = _given_back(event.restores, event.at_ms)


def _reservation_expired(event: e.ReservationExpired, target: pb.Event) -> None:
    expired = target.reservation_expired
    expired.reservation_id = event.reservation_id
    expired.released = _given_back(event.restores, event.at_ms)


def _points_expired(event: e.LotExpired, target: pb.Event) -> None:
    target.points_expired.points = event.points


def _reversed(event: e.Reversed, target: pb.Event) -> None:
    reversed_ = target.reversed
    reversed_.original_request_id = event.original_request_id
    reversed_.points = event.points
    reversed_.debt_added = event.debt_added
    for line_index, quantity, points in event.returns:
        reversed_.lines.add(line_index=line_index, quantity=quantity, points=points)


def _adjusted(event: e.Adjusted, target: pb.Event) -> None:
    adjusted = target.adjusted
    adjusted.points = event.points
    adjusted.reason = event.reason
    adjusted.debt_repaid = event.debt_repaid
    if event.points > 0 and event.expires_at_ms:
        _set_time(adjusted.expires_at, event.expires_at_ms)


FILLERS: dict[type, Callable] = {
    e.Enrolled: _enrolled,
    e.Earned: _earned,
    e.Redeemed: _redeemed,
    e.Reserved: _reserved,
    e.Captured: _captured,
    e.Released: _released,
    e.ReservationExpired: _reservation_expired,
    e.LotExpired: _points_expired,
    e.Reversed: _reversed,
    e.Adjusted: _adjusted,
}
"""fill(ledger event, Event message): sets the message's ``kind``."""

KINDS: dict[type, int] = {
    e.Enrolled: pb.EVENT_KIND_ENROLLED,
    e.Earned: pb.EVENT_KIND_EARNED,
    e.Redeemed: pb.EVENT_KIND_REDEEMED,
    e.Reserved: pb.EVENT_KIND_RESERVED,
    e.Captured: pb.EVENT_KIND_CAPTURED,
    e.Released: pb.EVENT_KIND_RELEASED,
    e.ReservationExpired: pb.EVENT_KIND_RESERVATION_EXPIRED,
    e.LotExpired: pb.EVENT_KIND_POINTS_EXPIRED,
    e.Reversed: pb.EVENT_KIND_REVERSED,
    e.Adjusted: pb.EVENT_KIND_ADJUSTED,
}
"""The EventKind of each exposed ledger event (what a filter on kinds matches)."""

KIND_FIELD_OFFSET = 15
"""Event.kind field number = EventKind number + this (see events.proto)."""

# Every ledger event is either exposed or skipped on purpose, and exposed ones are
# exactly those whose balance the shard records.
assert set(FILLERS) | SKIPPED == set(typing.get_args(e.Event)) and not set(FILLERS) & SKIPPED, "an event unaccounted for"
assert set(FILLERS) == e.BALANCE_EVENTS == set(KINDS), "exposed events and recorded balances differ"


def event_kind(message: pb.Event) -> int:
    """The EventKind of an Event message (EVENT_KIND_UNSPECIFIED if none is set)."""
    which = message.WhichOneof("kind")
    if which is None:
        return pb.EVENT_KIND_UNSPECIFIED
    return pb.Event.DESCRIPTOR.fields_by_name[which].number - KIND_FIELD_OFFSET


assert all(
    pb.Event.DESCRIPTOR.oneofs_by_name["kind"].fields[position].number == kind + KIND_FIELD_OFFSET
    for position, kind in enumerate(sorted(KINDS.values()))
), "events.proto: Event.kind field numbers no longer follow EventKind"



def public_events(shard: int, seq: int, record: JournalRecord) -> list[pb.Event]:
    """The public events of the journal record at ``seq`` on ``shard``, in journal
    order, each with its cursor, member, time, request and balance (unset when the
    record predates recorded balances)."""
    balances = record.balances
    recorded = len(balances) == len(record.events)
    messages = []
    for index, event in enumerate(record.events):
        fill = FILLERS.get(type(event))
        if fill is None:  # in SKIPPED
            continue
        message = pb.Event(cursor=encode_cursor(Cursor(shard, seq, index)), member_id=event.member_id)
        _set_time(message.time, event.at_ms)
        request_id = getattr(event, "request_id", "")  # time-driven events answer no request
        if request_id:
            message.request_id = request_id
        view: BalanceView | None = balances[index] if recorded else None
        if view is not None:
            message.balance.CopyFrom(balance_message(view))
        fill(event, message)
        messages.append(message)
    return messages
