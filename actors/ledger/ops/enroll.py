"""Enrolling a member: the one command that works on a member who does not exist yet."""

from __future__ import annotations

from typing import TYPE_CHECKING

from loyalty.actors.ledger import commands as c
from loyalty.actors.ledger import events as e
from loyalty.actors.ledger.limits import ATTRIBUTES_MAX, ID_LENGTH_MAX, UNVALIDATED
from loyalty.actors.ledger.ops.book import record
from loyalty.actors.ledger.ops.expiry import settle
from loyalty.actors.ledger.ops.idempotency import failed, fingerprint, keep, replayed
from loyalty.actors.ledger.ops.views import balance_of, member_view
from loyalty.actors.ledger.outcomes import Outcome
from loyalty.actors.ledger.state import Member, TransactionKind
from loyalty.actors.ledger.status import Status

if TYPE_CHECKING:
    from loyalty.actors.ledger.ledger import Ledger

_ENROLL = c.command_kind(c.EnrollMember)


def execute_enroll(
    ledger: Ledger, command: c.EnrollMember, member: Member | None, now_ms: int, events: list[e.Event]
) -> bytes:
    """Enroll a new member; for an existing one, replay the request that enrolled it
    (or any other kept one), else refuse with MEMBER_ALREADY_EXISTS."""
    assert 0 < len(command.request_id) <= ID_LENGTH_MAX and len(command.attributes) <= ATTRIBUTES_MAX, UNVALIDATED
    digest = fingerprint(command)
    if member is None:
        event = e.Enrolled(command.member_id, now_ms, command.request_id, digest, dict(command.attributes))
        return ledger.emit(event, events)
    settle(ledger, member, now_ms, events)
    answer = replayed(command, member, digest, now_ms)
    if answer is not None:
        return answer
    return ledger.emit(failed(command, digest, now_ms, Status.MEMBER_ALREADY_EXISTS, "member id is taken"), events)


def evolve_enrolled(ledger: Ledger, event: e.Enrolled) -> bytes:
    assert event.member_id not in ledger.members, "enrolled twice"
    at_ms = event.at_ms
    member = Member(event.member_id, at_ms, dict(event.attributes))
    ledger.members[event.member_id] = member
    record(member, event.request_id, TransactionKind.ENROLL, 0, at_ms)
    outcome = Outcome(
        status=Status.OK, kind=_ENROLL, at_ms=at_ms, balance=balance_of(member, at_ms), member=member_view(member)
    )
    return keep(member, event, outcome)
