"""Reads: a member, a balance, a page of history, a kept outcome, and a simulated
earn. Nothing here changes state (a simulated earn runs on a scratch copy)."""

from __future__ import annotations

import bisect
from typing import TYPE_CHECKING

import msgspec

from loyalty.actors.ledger import commands as c
from loyalty.actors.ledger.commands import command_kind
from loyalty.actors.ledger.limits import PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX
from loyalty.actors.ledger.ops.earn import budget_taker, decide_earn
from loyalty.actors.ledger.ops.idempotency import failure, fingerprint, replayed
from loyalty.actors.ledger.ops.views import balance_of, member_view
from loyalty.actors.ledger.outcomes import Outcome
from loyalty.actors.ledger.state import Member
from loyalty.actors.ledger.status import Status

if TYPE_CHECKING:
    from loyalty.actors.ledger.ledger import Ledger

_encode = msgspec.msgpack.Encoder().encode
_decode_member = msgspec.msgpack.Decoder(Member).decode


def read_member(ledger: Ledger, command: c.GetMember, member: Member, now_ms: int) -> bytes:
    return _encode(
        Outcome(
            kind=command_kind(command),
            at_ms=now_ms,
            member=member_view(member),
            balance=balance_of(member, now_ms),
        )
    )


def read_balance(ledger: Ledger, command: c.GetBalance, member: Member, now_ms: int) -> bytes:
    return _encode(Outcome(kind=command_kind(command), at_ms=now_ms, balance=balance_of(member, now_ms)))


def read_transactions(ledger: Ledger, command: c.ListTransactions, member: Member, now_ms: int) -> bytes:
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


def read_operation(ledger: Ledger, command: c.GetOperation, member: Member, now_ms: int) -> bytes:
    stored = member.outcomes.get(command.request_id)
    if stored is None:
        return failure(
            command,
            Status.OPERATION_NOT_FOUND,
            now_ms,
            "no outcome is stored for this request_id: it was never applied, "
            "or it is older than the retention window",
        )
    return stored.outcome


def read_simulated_earn(ledger: Ledger, command: c.SimulateEarn, member: Member, now_ms: int) -> bytes:
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
    answer = replayed(earn, member, digest, now_ms) if earn.request_id else None
    if answer is not None:
        return answer
    take_budget, borrowed = budget_taker(ledger, now_ms, None)
    event = decide_earn(ledger, earn, member, now_ms, digest, take_budget)
    budgets = dict(ledger.budgets)
    for key, points in borrowed.items():
        ledger.budgets[key] = ledger.budgets.get(key, 0) + points
    ledger.members[member.member_id] = _decode_member(_encode(member))
    try:
        return ledger.apply(event)
    finally:
        ledger.members[member.member_id] = member
        ledger.budgets = budgets
