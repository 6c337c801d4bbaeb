"""Ledger outcomes -> protobuf responses. Protobuf lives only in the gateway."""

from __future__ import annotations

from google.protobuf import timestamp_pb2

from loyalty.actors.ledger.outcomes import BalanceView, Outcome
from loyalty.actors.ledger.status import Status
from loyalty.server import errors
from loyalty.server.requests import encode_page_token
from loyalty.v1 import loyalty_pb2 as pb


def timestamp(milliseconds: int) -> timestamp_pb2.Timestamp:
    """A protobuf Timestamp for epoch milliseconds."""
    return timestamp_pb2.Timestamp(
        seconds=milliseconds // 1000, nanos=(milliseconds % 1000) * 1_000_000
    )


def balance(view: BalanceView | None) -> pb.Balance:
    """Balance message for a BalanceView."""
    if view is None:
        return pb.Balance()
    return pb.Balance(
        available=view.available,
        pending=view.pending,
        reserved=view.reserved,
        debt=view.debt,
        lifetime_earned=view.lifetime_earned,
        next_expirations=[
            pb.PointsExpiration(points=points, expires_at=timestamp(at_ms))
            for points, at_ms in view.next_expirations
        ],
        redeemed=view.redeemed,
        expired=view.expired,
        reversed=view.reversed,
        adjusted_in=view.adjusted_in,
        adjusted_out=view.adjusted_out,
    )


def member(outcome: Outcome) -> pb.Member:
    """Member message (EnrollMember, GetMember)."""
    view = outcome.member
    return pb.Member(
        member_id=view.member_id,
        attributes=view.attributes,
        status=view.status,
        balance=balance(outcome.balance),
        enrolled_at=timestamp(view.enrolled_at_ms),
    )


def _earn(outcome: Outcome) -> pb.EarnResponse:
    response = pb.EarnResponse(
        points=outcome.points,
        balance=balance(outcome.balance),
        debt_repaid=outcome.debt,
        pending=outcome.available_at_ms > outcome.at_ms,
        available_at=timestamp(outcome.available_at_ms),
        lines=[pb.LinePoints(sku=sku, points=points) for sku, points in outcome.lines],
    )
    if outcome.expires_at_ms:
        response.expires_at.CopyFrom(timestamp(outcome.expires_at_ms))
    return response


def _redeem(outcome: Outcome) -> pb.RedeemResponse:
    return pb.RedeemResponse(balance=balance(outcome.balance), points=outcome.points)


def _reserve(outcome: Outcome) -> pb.ReserveResponse:
    return pb.ReserveResponse(
        reservation_id=outcome.reservation_id,
        expires_at=timestamp(outcome.expires_at_ms),
        balance=balance(outcome.balance),
        points=outcome.points,
    )


def _capture(outcome: Outcome) -> pb.CaptureResponse:
    return pb.CaptureResponse(
        captured=outcome.points, balance=balance(outcome.balance), released=outcome.released
    )


def _release(outcome: Outcome) -> pb.ReleaseResponse:
    return pb.ReleaseResponse(balance=balance(outcome.balance), released=outcome.released)


def _reverse(outcome: Outcome) -> pb.ReverseResponse:
    return pb.ReverseResponse(
        points_reversed=outcome.points, balance=balance(outcome.balance), debt_added=outcome.debt
    )


def _adjust(outcome: Outcome) -> pb.AdjustResponse:
    return pb.AdjustResponse(balance=balance(outcome.balance))


# outcome kind -> (builder, name of the oneof field in Operation and BatchResult)
MUTATION_RESPONSES = {
    "enroll": (member, "enroll_member"),
    "earn": (_earn, "earn"),
    "redeem": (_redeem, "redeem"),
    "reserve": (_reserve, "reserve"),
    "capture": (_capture, "capture"),
    "release": (_release, "release"),
    "reverse": (_reverse, "reverse"),
    "adjust": (_adjust, "adjust"),
}


def mutation_response(outcome: Outcome):
    """The response message of a successful mutation."""
    builder, _ = MUTATION_RESPONSES[outcome.kind]
    return builder(outcome)


def error_status(outcome: Outcome):
    """google.rpc.Status for a failed outcome."""
    return errors.rpc_status(outcome.status, outcome.message)


def batch_result(outcome: Outcome) -> pb.BatchResult:
    """One item of a BatchResponse."""
    if outcome.status != Status.OK:
        return pb.BatchResult(status=error_status(outcome))
    builder, field = MUTATION_RESPONSES[outcome.kind]
    result = pb.BatchResult(status=errors.OK_STATUS)
    getattr(result, field).CopyFrom(builder(outcome))
    return result


def operation(member_id: str, request_id: str, outcome: Outcome) -> pb.Operation:
    """GetOperation's answer for a stored outcome (success or failure)."""
    result = pb.Operation(
        member_id=member_id, request_id=request_id, applied_at=timestamp(outcome.at_ms)
    )
    if outcome.status != Status.OK:
        result.status.CopyFrom(error_status(outcome))
        return result
    result.status.CopyFrom(errors.OK_STATUS)
    builder, field = MUTATION_RESPONSES[outcome.kind]
    getattr(result, field).CopyFrom(builder(outcome))
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
