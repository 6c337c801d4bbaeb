"""Shared by both clients: Python arguments -> request messages, responses -> results.

Each builder returns a ``Call``: which RPC, the request, how to read the response,
and, for a mutation, the request_id that every retry of the call reuses.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable, Sequence
from typing import Any

from google.protobuf import timestamp_pb2

from loyalty.clients import models as m
from loyalty.clients.errors import error_from_status
from loyalty.clients.ids import new_request_id
from loyalty.v1 import loyalty_pb2 as pb

# Items in one Batch RPC: the server refuses more (its BATCH_ITEMS_MAX, in
# server/limits.py, which the SDK must not import; tests/test_sdk_shared.py checks the
# two agree), because a larger call would exceed the message size limit and hold up
# every other caller of the shards it touches.
BATCH_ITEMS_MAX = 10_000

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


@dataclasses.dataclass(frozen=True)
class Call:
    """One RPC ready to send (and send again)."""

    method: str
    """The stub attribute, e.g. "Earn"."""
    request: Any
    """The request message."""
    parse: Callable[[Any], Any]
    """Response message -> SDK result."""
    request_id: str | None = None
    """The mutation's idempotency key; None for reads and Batch (whose items carry one each)."""
    mutation: bool = False
    """True when the call changes state (its outcome may be unknown after a failure)."""
    item_request_ids: tuple[str, ...] = ()
    """A Batch's request_ids, one per item, in order."""


# ----------------------------------------------------------------------------- time


def to_datetime(timestamp: timestamp_pb2.Timestamp) -> datetime.datetime:
    """A protobuf Timestamp as an aware UTC datetime (microsecond precision)."""
    return _EPOCH + datetime.timedelta(seconds=timestamp.seconds, microseconds=timestamp.nanos // 1000)


def _optional_datetime(message, field: str) -> datetime.datetime | None:
    return to_datetime(getattr(message, field)) if message.HasField(field) else None


def to_timestamp(moment: datetime.datetime) -> timestamp_pb2.Timestamp:
    """An aware datetime as a protobuf Timestamp. Naive datetimes are refused: their
    meaning depends on the machine's time zone, and a till's clock setting must not
    change which day a purchase happened on."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("datetimes must be timezone-aware (e.g. datetime.now(datetime.UTC))")
    elapsed = moment - _EPOCH
    seconds, microseconds = divmod(elapsed // datetime.timedelta(microseconds=1), 1_000_000)
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=microseconds * 1000)


# ----------------------------------------------------------------------------- responses


def _enum_name(enum_class, enum_type, prefix: str, value: int):
    try:
        text = enum_type.Name(value).removeprefix(prefix)
    except ValueError:  # a number newer than these stubs
        return str(value)
    try:
        return enum_class(text)
    except ValueError:  # a name newer than this SDK: keep it readable
        return text


def balance(message: pb.Balance) -> m.Balance:
    """Balance message -> Balance."""
    return m.Balance(
        available=message.available,
        pending=message.pending,
        reserved=message.reserved,
        debt=message.debt,
        lifetime_earned=message.lifetime_earned,
        next_expirations=tuple(
            m.PointsExpiration(e.points, to_datetime(e.expires_at)) for e in message.next_expirations
        ),
        redeemed=message.redeemed,
        expired=message.expired,
        reversed=message.reversed,
        adjusted_in=message.adjusted_in,
        adjusted_out=message.adjusted_out,
    )


def member(message: pb.Member) -> m.Member:
    """Member message -> Member."""
    return m.Member(
        member_id=message.member_id,
        attributes=dict(message.attributes),
        status=_enum_name(m.MemberStatus, pb.MemberStatus, "MEMBER_STATUS_", message.status),
        balance=balance(message.balance),
        enrolled_at=to_datetime(message.enrolled_at),
    )


def earn_result(message: pb.EarnResponse) -> m.EarnResult:
    """EarnResponse -> EarnResult."""
    return m.EarnResult(
        points=message.points,
        balance=balance(message.balance),
        debt_repaid=message.debt_repaid,
        pending=message.pending,
        available_at=_optional_datetime(message, "available_at"),
        expires_at=_optional_datetime(message, "expires_at"),
        lines=tuple(m.LinePoints(line.sku, line.points) for line in message.lines),
        rules_version=message.rules_version,
        awards=tuple(
            m.PointsAward(award.rule_id, award.sku, award.line_index, award.points, award.effect)
            for award in message.awards
        ),
        limits=tuple(m.PointsLimit(limit.rule_id, limit.limit, limit.points_cut) for limit in message.limits),
    )


def redeem_result(message: pb.RedeemResponse) -> m.RedeemResult:
    """RedeemResponse -> RedeemResult."""
    return m.RedeemResult(points=message.points, balance=balance(message.balance))


def reserve_result(message: pb.ReserveResponse) -> m.ReserveResult:
    """ReserveResponse -> ReserveResult."""
    return m.ReserveResult(
        reservation_id=message.reservation_id,
        points=message.points,
        expires_at=_optional_datetime(message, "expires_at"),
        balance=balance(message.balance),
    )


def capture_result(message: pb.CaptureResponse) -> m.CaptureResult:
    """CaptureResponse -> CaptureResult."""
    return m.CaptureResult(captured=message.captured, released=message.released, balance=balance(message.balance))


def release_result(message: pb.ReleaseResponse) -> m.ReleaseResult:
    """ReleaseResponse -> ReleaseResult."""
    return m.ReleaseResult(released=message.released, balance=balance(message.balance))


def reverse_result(message: pb.ReverseResponse) -> m.ReverseResult:
    """ReverseResponse -> ReverseResult."""
    return m.ReverseResult(
        points_reversed=message.points_reversed, debt_added=message.debt_added, balance=balance(message.balance)
    )


def adjust_result(message: pb.AdjustResponse) -> m.AdjustResult:
    """AdjustResponse -> AdjustResult."""
    return m.AdjustResult(balance=balance(message.balance))


# oneof field of Operation and BatchResult -> reader of that response
_MUTATION_READERS: dict[str, Callable[[Any], m.MutationResult]] = {
    "enroll_member": member,
    "earn": earn_result,
    "redeem": redeem_result,
    "reserve": reserve_result,
    "capture": capture_result,
    "release": release_result,
    "reverse": reverse_result,
    "adjust": adjust_result,
}


def _mutation_result(message) -> m.MutationResult | None:
    which = message.WhichOneof("response")
    return None if which is None else _MUTATION_READERS[which](getattr(message, which))


def operation(message: pb.Operation) -> m.Operation:
    """Operation message -> Operation."""
    failed = message.HasField("status") and message.status.code != 0
    return m.Operation(
        member_id=message.member_id,
        request_id=message.request_id,
        applied_at=_optional_datetime(message, "applied_at"),
        result=None if failed else _mutation_result(message),
        error=error_from_status(message.status, request_id=message.request_id) if failed else None,
    )


def transaction(message: pb.Transaction) -> m.Transaction:
    """Transaction message -> Transaction."""
    return m.Transaction(
        request_id=message.request_id,
        kind=_enum_name(m.TransactionKind, pb.TransactionKind, "TRANSACTION_KIND_", message.kind),
        points=message.points,
        balance_after=message.balance_after,
        time=to_datetime(message.time),
        reference=message.reference,
    )


def transaction_page(message: pb.ListTransactionsResponse) -> m.TransactionPage:
    """ListTransactionsResponse -> TransactionPage."""
    return m.TransactionPage(tuple(transaction(t) for t in message.transactions), message.next_page_token)


def batch_results(request_ids: Sequence[str]) -> Callable[[pb.BatchResponse], list[m.BatchItemResult]]:
    """A reader of a BatchResponse whose items were sent with these request_ids."""

    def parse(message: pb.BatchResponse) -> list[m.BatchItemResult]:
        results = []
        for request_id, item in zip(request_ids, message.results, strict=True):
            if item.status.code != 0:
                results.append(m.BatchItemResult(request_id, None, error_from_status(item.status, request_id=request_id)))
            else:
                results.append(m.BatchItemResult(request_id, _mutation_result(item), None))
        return results

    return parse


# ----------------------------------------------------------------------------- requests


def _purchase_lines(lines: Sequence[m.Line]) -> list[pb.PurchaseLine]:
    return [
        pb.PurchaseLine(sku=line.sku, category=line.category, quantity=line.quantity, amount_minor=line.amount_minor)
        for line in lines
    ]


def _ttl_seconds(ttl: datetime.timedelta | float | None) -> int:
    if ttl is None:
        return 0  # the server's default
    seconds = ttl.total_seconds() if isinstance(ttl, datetime.timedelta) else float(ttl)
    if seconds <= 0:
        raise ValueError("ttl must be positive (None keeps the server default)")
    # Whole seconds on the wire; rounding up never shortens a hold the caller asked for.
    return max(1, int(-(-seconds // 1)))


def _request(item: m.BatchOperation, request_id: str):
    """(oneof field name, request message) of a batch item."""
    match item:
        case m.EnrollMemberItem():
            return "enroll_member", pb.EnrollMemberRequest(
                member_id=item.member_id, request_id=request_id, attributes=item.attributes
            )
        case m.EarnItem():
            purchase = pb.Purchase(
                channel=item.channel, store_id=item.store_id, currency=item.currency, lines=_purchase_lines(item.lines)
            )
            if item.occurred_at is not None:
                purchase.occurred_at.CopyFrom(to_timestamp(item.occurred_at))
            return "earn", pb.EarnRequest(member_id=item.member_id, request_id=request_id, purchase=purchase)
        case m.RedeemItem():
            return "redeem", pb.RedeemRequest(member_id=item.member_id, request_id=request_id, points=item.points)
        case m.ReserveItem():
            return "reserve", pb.ReserveRequest(
                member_id=item.member_id, request_id=request_id, points=item.points, ttl_seconds=_ttl_seconds(item.ttl)
            )
        case m.CaptureItem():
            return "capture", pb.CaptureRequest(
                member_id=item.member_id, request_id=request_id, reservation_id=item.reservation_id, points=item.points
            )
        case m.ReleaseItem():
            return "release", pb.ReleaseRequest(
                member_id=item.member_id, request_id=request_id, reservation_id=item.reservation_id
            )
        case m.ReverseItem():
            return "reverse", pb.ReverseRequest(
                member_id=item.member_id,
                request_id=request_id,
                original_request_id=item.original_request_id,
                lines=[pb.ReturnLine(sku=line.sku, quantity=line.quantity) for line in item.lines],
            )
        case m.AdjustItem():
            return "adjust", pb.AdjustRequest(
                member_id=item.member_id, request_id=request_id, points=item.points, reason=item.reason
            )
    raise TypeError(f"not a batch item: {item!r}")


# The unary RPC and result reader of each item type.
_UNARY = {
    "enroll_member": ("EnrollMember", member),
    "earn": ("Earn", earn_result),
    "redeem": ("Redeem", redeem_result),
    "reserve": ("Reserve", reserve_result),
    "capture": ("Capture", capture_result),
    "release": ("Release", release_result),
    "reverse": ("Reverse", reverse_result),
    "adjust": ("Adjust", adjust_result),
}


def mutation(item: m.BatchOperation) -> Call:
    """The unary call for one mutation, with its request_id fixed (generated if None)."""
    request_id = item.request_id or new_request_id()
    field, request = _request(item, request_id)
    method, parse = _UNARY[field]
    return Call(method, request, parse, request_id, mutation=True)


def batch(items: Sequence[m.BatchOperation]) -> Call:
    """The Batch call for up to BATCH_ITEMS_MAX items, request_ids fixed."""
    if len(items) > BATCH_ITEMS_MAX:
        raise ValueError(f"at most {BATCH_ITEMS_MAX} items per batch; use batch_operations for more")
    request_ids, batch_items = [], []
    for item in items:
        request_id = item.request_id or new_request_id()
        field, request = _request(item, request_id)
        request_ids.append(request_id)
        batch_items.append(pb.BatchItem(**{field: request}))
    # The Batch as a whole has no request_id of its own: every item carries one, so
    # resending the whole Batch applies each item at most once.
    return Call(
        "Batch", pb.BatchRequest(items=batch_items), batch_results(request_ids), mutation=True,
        item_request_ids=tuple(request_ids),
    )


def simulate_earn(item: m.EarnItem) -> Call:
    """SimulateEarn: the Earn's request without a request_id of its own (nothing is applied)."""
    _, request = _request(item, item.request_id or "")
    return Call("SimulateEarn", request, earn_result)


def quote_redemption(currency: str, amount_minor: int | None, points: int | None) -> Call:
    """QuoteRedemption for an amount or for points (exactly one)."""
    if (amount_minor is None) == (points is None):
        raise ValueError("give exactly one of amount_minor and points")
    request = pb.QuoteRedemptionRequest(currency=currency)
    if amount_minor is not None:
        request.amount_minor = amount_minor
    else:
        request.points = points
    parse = lambda message: m.RedemptionQuote(message.currency, message.amount_minor, message.points)  # noqa: E731
    return Call("QuoteRedemption", request, parse)


def get_member(member_id: str) -> Call:
    """GetMember."""
    return Call("GetMember", pb.GetMemberRequest(member_id=member_id), member)


def get_balance(member_id: str) -> Call:
    """GetBalance."""
    return Call("GetBalance", pb.GetBalanceRequest(member_id=member_id), lambda message: balance(message))


def list_transactions(member_id: str, page_size: int, page_token: str) -> Call:
    """ListTransactions."""
    request = pb.ListTransactionsRequest(member_id=member_id, page_size=page_size, page_token=page_token)
    return Call("ListTransactions", request, transaction_page)


def get_operation(member_id: str, request_id: str) -> Call:
    """GetOperation."""
    return Call("GetOperation", pb.GetOperationRequest(member_id=member_id, request_id=request_id), operation)


def chunks(items: Sequence[m.BatchOperation], size: int) -> list[Sequence[m.BatchOperation]]:
    """``items`` cut into Batch-sized runs, in order."""
    if not 1 <= size <= BATCH_ITEMS_MAX:
        raise ValueError(f"items_per_call must be between 1 and {BATCH_ITEMS_MAX}")
    return [items[start : start + size] for start in range(0, len(items), size)]


def flatten(results: Sequence[m.BatchItemResult]) -> list[m.MutationResult | Any]:
    """Per-item result or error instance, as batch_operations returns them."""
    return [item.result if item.error is None else item.error for item in results]
