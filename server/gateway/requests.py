"""Protobuf requests -> validated ledger commands. Nothing invalid reaches a shard.

Each command's request is declared once below, in server/gateway/fields.py's terms:
its fields in the order they are checked, their bounds, and the command fields they
fill. A reader tries the spec's compiled check and, when that refuses, reads the spec
field by field to raise FieldViolation naming the first bad field (with its path,
e.g. ``purchase.lines[2].quantity``); the caller turns it into INVALID_ARGUMENT. A
Batch does the same for each item (``batch_items``), its paths under
``items[<index>].<kind>.``.
"""

from __future__ import annotations

from typing import NamedTuple

import msgspec

from loyalty.actors.ledger import commands as c
from loyalty.actors.ledger.limits import (
    AMOUNT_MINOR_MAX,
    ATTRIBUTE_KEY_LENGTH_MAX,
    ATTRIBUTE_VALUE_LENGTH_MAX,
    ATTRIBUTES_MAX,
    PAGE_SIZE_MAX,
    POINTS_MAX,
    PURCHASE_LINES_MAX,
    QUANTITY_MAX,
    REASON_LENGTH_MAX,
    RESERVATION_TTL_S_MAX,
)
from loyalty.server import page_tokens
from loyalty.server.errors import FieldViolation
from loyalty.server.gateway.fields import (
    CommandSpec,
    Currency,
    Identifier,
    Integer,
    Map,
    Message,
    Repeated,
    Text,
    Timestamp,
)
from loyalty.v1 import loyalty_pb2 as pb

# ------------------------------------------------------------------- the specs

_MEMBER_ID = Identifier("member_id")
_REQUEST_ID = Identifier("request_id")
_RESERVATION_ID = Identifier("reservation_id")

_PURCHASE = Message(
    "purchase",
    (
        Currency("currency"),
        Repeated(
            "lines",
            c.Line,
            (
                Text("sku", required=True),
                Text("category"),
                Integer("quantity", 1, QUANTITY_MAX),
                Integer("amount_minor", 0, AMOUNT_MINOR_MAX),
            ),
            count_max=PURCHASE_LINES_MAX,
            noun="line",
            required=True,
        ),
        Timestamp("occurred_at", into="occurred_at_ms"),
        Text("channel"),
        Text("store_id"),
    ),
)

ENROLL_MEMBER = CommandSpec(
    c.EnrollMember,
    (
        _MEMBER_ID,
        _REQUEST_ID,
        Map(
            "attributes",
            count_max=ATTRIBUTES_MAX,
            key_length_max=ATTRIBUTE_KEY_LENGTH_MAX,
            value_length_max=ATTRIBUTE_VALUE_LENGTH_MAX,
            noun="attribute",
        ),
    ),
)
EARN = CommandSpec(c.Earn, (_MEMBER_ID, _REQUEST_ID, _PURCHASE))
SIMULATE_EARN = CommandSpec(c.SimulateEarn, (_MEMBER_ID, Identifier("request_id", optional=True), _PURCHASE))
"""request_id optional: nothing is stored under it."""
REDEEM = CommandSpec(c.Redeem, (_MEMBER_ID, _REQUEST_ID, Integer("points", 1, POINTS_MAX)))
RESERVE = CommandSpec(
    c.Reserve,
    (
        _MEMBER_ID,
        _REQUEST_ID,
        Integer("points", 1, POINTS_MAX),
        Integer("ttl_seconds", 0, RESERVATION_TTL_S_MAX, into="ttl_s"),
    ),
)
"""ttl_seconds 0 keeps the server default."""
CAPTURE = CommandSpec(c.Capture, (_MEMBER_ID, _REQUEST_ID, _RESERVATION_ID, Integer("points", 0, POINTS_MAX)))
"""points 0 captures the whole hold."""
RELEASE = CommandSpec(c.Release, (_MEMBER_ID, _REQUEST_ID, _RESERVATION_ID))
REVERSE = CommandSpec(
    c.Reverse,
    (
        # Lines first: a reverse has always named a bad line before a bad id.
        Repeated(
            "lines",
            c.ReturnLine,
            (Text("sku", required=True), Integer("quantity", 1, QUANTITY_MAX)),
            count_max=PURCHASE_LINES_MAX,
            noun="line",
        ),
        _MEMBER_ID,
        _REQUEST_ID,
        Identifier("original_request_id"),
    ),
)
"""No lines: the whole purchase."""
ADJUST = CommandSpec(
    c.Adjust,
    (
        _MEMBER_ID,
        _REQUEST_ID,
        Integer("points", -POINTS_MAX, POINTS_MAX, nonzero=True),
        Text("reason", required=True, length_max=REASON_LENGTH_MAX),
    ),
)
"""points signed, never 0; a reason is required."""
GET_MEMBER = CommandSpec(c.GetMember, (_MEMBER_ID,))
GET_BALANCE = CommandSpec(c.GetBalance, (_MEMBER_ID,))
GET_OPERATION = CommandSpec(c.GetOperation, (_MEMBER_ID, _REQUEST_ID))


# ------------------------------------------------------------------- unary readers


def _read(spec: CommandSpec, request):
    command = spec.check(request)
    return spec.read(request) if command is None else command


def enroll_member(request: pb.EnrollMemberRequest) -> c.EnrollMember:
    """EnrollMember -> command."""
    return _read(ENROLL_MEMBER, request)


def earn(request: pb.EarnRequest) -> c.Earn:
    """Earn -> command."""
    return _read(EARN, request)


def simulate_earn(request: pb.EarnRequest) -> c.SimulateEarn:
    """SimulateEarn -> read command."""
    return _read(SIMULATE_EARN, request)


def redeem(request: pb.RedeemRequest) -> c.Redeem:
    """Redeem -> command."""
    return _read(REDEEM, request)


def reserve(request: pb.ReserveRequest) -> c.Reserve:
    """Reserve -> command."""
    return _read(RESERVE, request)


def capture(request: pb.CaptureRequest) -> c.Capture:
    """Capture -> command."""
    return _read(CAPTURE, request)


def release(request: pb.ReleaseRequest) -> c.Release:
    """Release -> command."""
    return _read(RELEASE, request)


def reverse(request: pb.ReverseRequest) -> c.Reverse:
    """Reverse -> command."""
    return _read(REVERSE, request)


def adjust(request: pb.AdjustRequest) -> c.Adjust:
    """Adjust -> command."""
    return _read(ADJUST, request)


def get_member(request: pb.GetMemberRequest) -> c.GetMember:
    """GetMember -> command."""
    return _read(GET_MEMBER, request)


def get_balance(request: pb.GetBalanceRequest) -> c.GetBalance:
    """GetBalance -> command."""
    return _read(GET_BALANCE, request)


def get_operation(request: pb.GetOperationRequest) -> c.GetOperation:
    """GetOperation -> command."""
    return _read(GET_OPERATION, request)


# Two requests have a rule that is no single field's (a page token bound to its
# member; one of two amounts), and neither is a Batch item: their readers are written
# out, from the same field kinds.

_CURRENCY = Currency("currency")
_QUOTE_AMOUNT_MINOR = Integer("amount_minor", 0, AMOUNT_MINOR_MAX)
_QUOTE_POINTS = Integer("points", 0, POINTS_MAX)


class RedemptionQuery(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """What a QuoteRedemption asks: the value of an amount in points, or of points as
    an amount, in one currency (the other of the two is None)."""

    currency: str
    amount_minor: int | None
    points: int | None


def quote_redemption(request: pb.QuoteRedemptionRequest) -> RedemptionQuery:
    """QuoteRedemption -> what it asks."""
    currency = _CURRENCY.check("currency", request.currency)
    which = request.WhichOneof("quote")
    if which == "amount_minor":
        return RedemptionQuery(currency, _QUOTE_AMOUNT_MINOR.check("amount_minor", request.amount_minor), None)
    if which == "points":
        return RedemptionQuery(currency, None, _QUOTE_POINTS.check("points", request.points))
    raise FieldViolation("quote", "set amount_minor or points")


def list_transactions(request: pb.ListTransactionsRequest) -> c.ListTransactions:
    """ListTransactions -> command (page_size 0: default; above the maximum: the maximum)."""
    member_id = _MEMBER_ID.check("member_id", request.member_id)
    if request.page_size < 0:
        raise FieldViolation("page_size", "must not be negative")
    before_seq = decode_page_token(member_id, request.page_token) if request.page_token else 0
    return c.ListTransactions(member_id, min(request.page_size, PAGE_SIZE_MAX), before_seq)


def encode_page_token(member_id: str, before_seq: int) -> str:
    """An opaque page token, bound to the member it was issued for."""
    if not before_seq:
        return ""
    return page_tokens.encode_page_token((before_seq, member_id))


def decode_page_token(member_id: str, token: str) -> int:
    """The transaction sequence a page token continues before."""
    seq, owner = page_tokens.decode_page_token(token, tuple[int, str])
    if owner != member_id or seq <= 0:
        raise FieldViolation("page_token", "is not a token this server issued for this member")
    return seq


# ------------------------------------------------------------------- Batch

BATCH_SPECS = {
    "enroll_member": ENROLL_MEMBER,
    "earn": EARN,
    "redeem": REDEEM,
    "reserve": RESERVE,
    "capture": CAPTURE,
    "release": RELEASE,
    "reverse": REVERSE,
    "adjust": ADJUST,
}
"""A BatchItem's oneof name -> the spec of its request."""

_BATCH_CHECKS = {which: spec.check for which, spec in BATCH_SPECS.items()}


def batch_item(index: int, item: pb.BatchItem) -> c.Mutation:
    """One Batch item read field by field: its command, or FieldViolation for the
    first bad field, named items[<index>].<kind>.<field>."""
    which = item.WhichOneof("operation")
    if which is None:
        raise FieldViolation(f"items[{index}]", "no operation is set")
    return BATCH_SPECS[which].read(getattr(item, which), f"items[{index}].{which}.")


class BatchCommands(NamedTuple):
    """A Batch's items read: the commands of the valid ones, and what was wrong with
    the others."""

    commands: list[c.Mutation]
    indexes: list[int]
    """The item index of each command."""
    violations: dict[int, FieldViolation]
    """By item index."""


def batch_items(items) -> BatchCommands:
    """A Batch's items, each read as ``batch_item`` reads it, in one pass: the compiled
    check of each item's spec, and the field-by-field read only for an item it refuses."""
    commands: list[c.Mutation] = []
    indexes: list[int] = []
    violations: dict[int, FieldViolation] = {}
    checks = _BATCH_CHECKS
    for index, item in enumerate(items):
        which = item.WhichOneof("operation")
        check = checks.get(which)  # None for an item without an operation
        command = check(getattr(item, which)) if check is not None else None
        if command is None:
            try:
                command = batch_item(index, item)
            except FieldViolation as violation:
                violations[index] = violation
                continue
        commands.append(command)
        indexes.append(index)
    return BatchCommands(commands, indexes, violations)
