"""At most once per request_id: payload fingerprints, the outcomes kept for replays,
and failures (kept ones, as ``Failed`` events, and answers that are not kept).

Outcomes are kept encoded (``StoredOutcome.outcome``): a replay returns the very
bytes the first answer had, without re-encoding.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import msgspec

from loyalty.actors.ledger import commands as c
from loyalty.actors.ledger import events as e
from loyalty.actors.ledger.commands import command_kind
from loyalty.actors.ledger.ops.views import balance_of
from loyalty.actors.ledger.outcomes import Outcome
from loyalty.actors.ledger.state import Member, StoredOutcome
from loyalty.actors.ledger.status import Status

if TYPE_CHECKING:
    from loyalty.actors.ledger.ledger import Ledger

_encode = msgspec.msgpack.Encoder().encode
_blake2b = hashlib.blake2b

CONFLICT_MESSAGE = "this request_id was used before with a different payload"


def fingerprint(command: c.Command) -> int:
    """A stable 64-bit digest of a command's payload, to tell a replay from a conflict."""
    return int.from_bytes(_blake2b(_encode(command), digest_size=8).digest(), "big")


def replayed(command: c.Mutation, member: Member, digest: int, now_ms: int) -> bytes | None:
    """The stored outcome of an earlier request with this request_id and payload, a
    REQUEST_ID_CONFLICT for another payload, or None if the request_id is new."""
    stored = member.outcomes.get(command.request_id)
    if stored is None:
        return None
    if stored.fingerprint == digest:
        return stored.outcome
    return failure(command, Status.REQUEST_ID_CONFLICT, now_ms, CONFLICT_MESSAGE)


def keep(member: Member, event: e._Answer, outcome: Outcome) -> bytes:
    """Encode the outcome answering ``event`` and keep it under the event's
    request_id for replays; returns the encoded outcome."""
    encoded = _encode(outcome)
    member.outcomes[event.request_id] = StoredOutcome(event.fingerprint, event.at_ms, encoded)
    return encoded


def failure(command: c.Command, status: Status, now_ms: int, message: str) -> bytes:
    """An outcome that is not kept (the member does not exist, or a conflict)."""
    return _encode(Outcome(status=status, kind=command_kind(command), at_ms=now_ms, message=message))


def failed(command: c.Mutation, digest: int, now_ms: int, status: Status, message: str) -> e.Failed:
    """A business refusal, as the event that keeps its outcome for replays."""
    return e.Failed(
        command.member_id,
        now_ms,
        command.request_id,
        digest,
        kind=command_kind(command),
        status=status,
        message=message,
    )


def insufficient(command: c.Mutation, digest: int, now_ms: int, member: Member) -> e.Failed:
    available = balance_of(member, now_ms).available
    wanted = abs(command.points)
    return failed(
        command,
        digest,
        now_ms,
        Status.INSUFFICIENT_POINTS,
        f"needs {wanted} points, {available} available",
    )


def evolve_failed(ledger: Ledger, event: e.Failed) -> bytes:
    member = ledger.members[event.member_id]
    return keep(member, event, Outcome(status=event.status, kind=event.kind, at_ms=event.at_ms, message=event.message))
