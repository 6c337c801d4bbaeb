"""Ledger outcomes -> protobuf responses. Protobuf lives only in the gateway."""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import msgspec
from google.protobuf import timestamp_pb2
from google.rpc import status_pb2
from loyalty.actors.ledger.outcomes import BalanceView, Outcome
from loyalty.actors.ledger.status import Status
from loyalty.server import errors
from loyalty.server.errors import GatewayError
from loyalty.server.gateway.requests import encode_page_token
from loyalty.v1 import loyalty_pb2 as pb


def timestamp(milliseconds: int) -> timestamp_pb2.Timestamp:
    """A protobuf Timestamp for epoch milliseconds."""
    return timestamp_pb2.Timestamp(
        seconds=milliseconds // 1000, nanos=(milliseconds % 1000) * 1_000_000
    )


def _set_time(target: timestamp_pb2.Timestamp, milliseconds: int) -> None:
    target.seconds = milliseconds // 1000
    target.nanos = (milliseconds % 1000) * 1_000_000


# Responses are filled in place (message.field.x = ...) rather than built as separate
# messages and copied in: on a 10,000-item Batch this halves the gateway's cost. Scalars
# that are 0 are left unset (proto3 serializes a 0 and an unset field alike), which
# spares most of a Balance's fields; every sub-message that is filled has a field set
# unconditionally, which makes it present even when all of its numbers are 0.


def _fill_balance(target: pb.Balance, view: BalanceView | None) -> None:
    if view is None:
        target.SetInParent()
        return
    target.available = view.available  # unconditionally: the balance is present
    if view.pending:
        target.pending = view.pending
    if view.reserved:
        target.reserved = view.reserved
    if view.debt:
        target.debt = view.debt
    if view.lifetime_earned:
        target.lifetime_earned = view.lifetime_earned
    if view.redeemed:
        target.redeemed = view.redeemed
    if view.expired:
        target.expired = view.expired
    if view.reversed:
        target.reversed = view.reversed
    if view.adjusted_in:
        target.adjusted_in = view.adjusted_in
    if view.adjusted_out:
        target.adjusted_out = view.adjusted_out
    if view.next_expirations:
        add_expiration = target.next_expirations.add
        for points, at_ms in view.next_expirations:
            expiration = add_expiration()
            expiration.points = points
            expires_at = expiration.expires_at
            expires_at.seconds = at_ms // 1000
            expires_at.nanos = at_ms % 1000 * 1_000_000


def balance(view: BalanceView | None) -> pb.Balance:
    """Balance message for a BalanceView."""
    result = pb.Balance()
    _fill_balance(result, view)
    return result


def _fill_member(target: pb.Member, outcome: Outcome) -> None:
    view = outcome.member
    target.member_id = view.member_id
    target.attributes.update(view.attributes)
    target.status = view.status
    _fill_balance(target.balance, outcome.balance)
    _set_time(target.enrolled_at, view.enrolled_at_ms)


def member(outcome: Outcome) -> pb.Member:
    """Member message (EnrollMember, GetMember)."""
    result = pb.Member()
    _fill_member(result, outcome)
    return result


def _fill_earn_times(target: pb.EarnResponse, available_at_ms: int, expires_at_ms: int) -> None:
    _set_time(target.available_at, available_at_ms)
    if expires_at_ms:
        _set_time(target.expires_at, expires_at_ms)


def _fill_earn_amounts(target: pb.EarnResponse, outcome: Outcome) -> None:
    """Everything of an EarnResponse but its times."""
    if outcome.points:
        target.points = outcome.points
    _fill_balance(target.balance, outcome.balance)
    if outcome.debt:
        target.debt_repaid = outcome.debt
    if outcome.available_at_ms > outcome.at_ms:
        target.pending = True
    if outcome.lines:
        add_line = target.lines.add
        for sku, points in outcome.lines:
            line = add_line()
            line.sku = sku
            line.points = points
    if not outcome.rules_version:
        return  # no rules: lines are the whole breakdown (and the hot path stays lean)
    target.rules_version = outcome.rules_version
    awards = outcome.awards or [("", index, sku, points, "base") for index, (sku, points) in enumerate(outcome.lines)]
    for rule_id, line_index, sku, points, effect in awards:
        award = target.awards.add()
        award.rule_id = rule_id
        award.line_index = line_index
        award.sku = sku
        award.points = points
        award.effect = effect
    for rule_id, limit_name, points_cut in outcome.limits:
        limit = target.limits.add()
        limit.rule_id = rule_id
        limit.limit = limit_name
        limit.points_cut = points_cut


def _fill_earn(target: pb.EarnResponse, outcome: Outcome) -> None:
    _fill_earn_times(target, outcome.available_at_ms, outcome.expires_at_ms)
    _fill_earn_amounts(target, outcome)


def _fill_redeem(target: pb.RedeemResponse, outcome: Outcome) -> None:
    _fill_balance(target.balance, outcome.balance)
    if outcome.points:
        target.points = outcome.points


def _fill_reserve(target: pb.ReserveResponse, outcome: Outcome) -> None:
    if outcome.reservation_id:
        target.reservation_id = outcome.reservation_id
    _set_time(target.expires_at, outcome.expires_at_ms)
    _fill_balance(target.balance, outcome.balance)
    if outcome.points:
        target.points = outcome.points


def _fill_capture(target: pb.CaptureResponse, outcome: Outcome) -> None:
    if outcome.points:
        target.captured = outcome.points
    _fill_balance(target.balance, outcome.balance)
    if outcome.released:
        target.released = outcome.released


def _fill_release(target: pb.ReleaseResponse, outcome: Outcome) -> None:
    _fill_balance(target.balance, outcome.balance)
    if outcome.released:
        target.released = outcome.released


def _fill_reverse(target: pb.ReverseResponse, outcome: Outcome) -> None:
    if outcome.points:
        target.points_reversed = outcome.points
    _fill_balance(target.balance, outcome.balance)
    if outcome.debt:
        target.debt_added = outcome.debt


def _fill_adjust(target: pb.AdjustResponse, outcome: Outcome) -> None:
    _fill_balance(target.balance, outcome.balance)


class MutationResponse(msgspec.Struct, frozen=True, array_like=True):
    """How a successful mutation of one kind is answered."""

    message_type: type
    fill: Callable[[Any, Outcome], None]
    """Fills a ``message_type`` from the outcome."""
    field: str
    """The name of the response's field in the oneof of Operation and BatchResult."""


MUTATION_RESPONSES = {
    "enroll": MutationResponse(pb.Member, _fill_member, "enroll_member"),
    "earn": MutationResponse(pb.EarnResponse, _fill_earn, "earn"),
    "redeem": MutationResponse(pb.RedeemResponse, _fill_redeem, "redeem"),
    "reserve": MutationResponse(pb.ReserveResponse, _fill_reserve, "reserve"),
    "capture": MutationResponse(pb.CaptureResponse, _fill_capture, "capture"),
    "release": MutationResponse(pb.ReleaseResponse, _fill_release, "release"),
    "reverse": MutationResponse(pb.ReverseResponse, _fill_reverse, "reverse"),
    "adjust": MutationResponse(pb.AdjustResponse, _fill_adjust, "adjust"),
}
"""Outcome kind -> how its success is answered."""


def mutation_response(outcome: Outcome):
    """The response message of a successful mutation."""
    answer = MUTATION_RESPONSES[outcome.kind]
    result = answer.message_type()
    answer.fill(result, outcome)
    return result


def error_status(outcome: Outcome):
    """google.rpc.Status for a failed outcome."""
    return errors.rpc_status(outcome.status, outcome.message)


def _fill_answer(target, outcome: Outcome) -> None:
    """Status plus the oneof response of an Operation."""
    if outcome.status != Status.OK:
        target.status.CopyFrom(error_status(outcome))
        return
    target.status.SetInParent()  # code 0: OK
    answer = MUTATION_RESPONSES[outcome.kind]
    answer.fill(getattr(target, answer.field), outcome)


def _batch_wire(result: pb.BatchResult) -> bytes:
    """A BatchResponse holding just ``result``, serialized. Serialized responses
    concatenate: joined, these parse as one BatchResponse with all their results."""
    return pb.BatchResponse(results=[result]).SerializeToString()


# A Batch response is parsed in one call from each result's skeleton, serialized by
# protobuf: its status, which response it holds, and for an earn its two times (the
# same for every earn a shard call applied, so a few skeletons serve a whole Batch).
# Each result is then filled in place. This costs less per item than adding results
# and setting each status and time.
_EMPTY_RESULT_WIRE = _batch_wire(pb.BatchResult())


class _ResultFiller(msgspec.Struct, frozen=True, array_like=True):
    """Fills the response inside a parsed skeleton of a successful BatchResult."""

    fill: Callable[[Any, Outcome], None]
    response_of: Callable[[pb.BatchResult], Any]
    """The result's response message (its oneof field)."""


_SUCCESS_SKELETONS = {
    kind: _batch_wire(pb.BatchResult(status=status_pb2.Status(), **{answer.field: answer.message_type()}))
    for kind, answer in MUTATION_RESPONSES.items()
}
"""Outcome kind -> the skeleton of its successful result (earns use _earn_skeleton)."""

_SUCCESS_FILLERS = {
    kind: _ResultFiller(answer.fill, operator.attrgetter(answer.field)) for kind, answer in MUTATION_RESPONSES.items()
}
"""Outcome kind -> its filler; an earn's skeleton holds its times already."""
_SUCCESS_FILLERS["earn"] = _ResultFiller(_fill_earn_amounts, operator.attrgetter("earn"))

# Earn skeletons kept, by (available_at_ms, expires_at_ms); past this many the memo
# starts afresh. A Batch meets one pair per shard call that carried it.
EARN_SKELETONS_MAX = 64
_earn_skeletons: dict[tuple[int, int], bytes] = {}


def _earn_skeleton(available_at_ms: int, expires_at_ms: int) -> bytes:
    key = (available_at_ms, expires_at_ms)
    skeleton = _earn_skeletons.get(key)
    if skeleton is None:
        if len(_earn_skeletons) >= EARN_SKELETONS_MAX:
            _earn_skeletons.clear()
        earn = pb.EarnResponse()
        _fill_earn_times(earn, available_at_ms, expires_at_ms)
        skeleton = _earn_skeletons[key] = _batch_wire(pb.BatchResult(status=status_pb2.Status(), earn=earn))
    return skeleton


def batch_response(answers: list) -> pb.BatchResponse:
    """The BatchResponse with one result per item, in order, from each item's answer:
    its Outcome, its own google.rpc.Status (an item that was refused), or the
    GatewayError of the shard call that carried it. Any other exception is raised."""
    skeletons: list[bytes] = []
    fillers: list[_ResultFiller | None] = []  # per item; None: its result is just a status
    contents: list = []  # per item: the successful Outcome, or the error status
    failures: dict[int, status_pb2.Status] = {}  # id(GatewayError) -> its status
    for answer in answers:
        if isinstance(answer, Outcome):
            if not answer.status:
                kind = answer.kind
                if kind == "earn":
                    skeletons.append(_earn_skeleton(answer.available_at_ms, answer.expires_at_ms))
                else:
                    skeletons.append(_SUCCESS_SKELETONS[kind])
                fillers.append(_SUCCESS_FILLERS[kind])
                contents.append(answer)
                continue
            answer = error_status(answer)
        elif isinstance(answer, GatewayError):
            status = failures.get(id(answer))
            if status is None:
                status = failures[id(answer)] = errors.rpc_status(answer.status, answer.message)
            answer = status
        elif isinstance(answer, BaseException):
            raise answer
        skeletons.append(_EMPTY_RESULT_WIRE)
        fillers.append(None)
        contents.append(answer)
    response = pb.BatchResponse.FromString(b"".join(skeletons))
    for result, filler, content in zip(response.results, fillers, contents, strict=True):
        if filler is None:
            result.status.CopyFrom(content)
        else:
            filler.fill(filler.response_of(result), content)
    return response


def operation(member_id: str, request_id: str, outcome: Outcome) -> pb.Operation:
    """GetOperation's answer for a stored outcome (success or failure)."""
    result = pb.Operation(member_id=member_id, request_id=request_id)
    _set_time(result.applied_at, outcome.at_ms)
    _fill_answer(result, outcome)
    return result


def earn_simulation(outcome: Outcome) -> pb.EarnResponse:
    """SimulateEarn's answer: the EarnResponse the Earn would get."""
    result = pb.EarnResponse()
    _fill_earn(result, outcome)
    return result


def transactions(member_id: str, outcome: Outcome) -> pb.ListTransactionsResponse:
    """A page of transactions."""
    return pb.ListTransactionsResponse(
        transactions=[
            pb.Transaction(
                request_id=t.request_id,
                kind=t.kind,
                points=t.points,
                balance_after=t.balance_after,
                time=timestamp(t.at_ms),
                reference=t.reference,
            )
            for t in outcome.transactions
        ],
        next_page_token=encode_page_token(member_id, outcome.next_before_seq),
    )
