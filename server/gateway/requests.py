"""Protobuf requests -> validated ledger commands. Nothing invalid reaches a shard.

Each reader raises FieldViolation naming the first bad field (with its path, e.g.
``purchase.lines[2].quantity``); the caller turns it into INVALID_ARGUMENT.
"""

from __future__ import annotations

import base64
import binascii

from loyalty.actors.ledger import commands as c
from loyalty.actors.ledger.currency import is_currency_code
from loyalty.actors.ledger.limits import (
    AMOUNT_MINOR_MAX,
    ATTRIBUTE_KEY_LENGTH_MAX,
    ATTRIBUTE_VALUE_LENGTH_MAX,
    ATTRIBUTES_MAX,
    ID_LENGTH_MAX,
    LABEL_LENGTH_MAX,
    PAGE_SIZE_MAX,
    POINTS_MAX,
    PURCHASE_LINES_MAX,
    QUANTITY_MAX,
    REASON_LENGTH_MAX,
    RESERVATION_TTL_S_MAX,
)
from loyalty.server.errors import FieldViolation
from loyalty.server.limits import PAGE_TOKEN_LENGTH_MAX
from loyalty.v1 import loyalty_pb2 as pb


def _identifier(field: str, value: str) -> str:
    if not value:
        raise FieldViolation(field, "is required")
    if len(value) > ID_LENGTH_MAX:
        raise FieldViolation(field, f"must be at most {ID_LENGTH_MAX} characters")
    # isprintable() is False for every whitespace character except the ASCII space.
    if not value.isprintable() or " " in value:
        raise FieldViolation(field, "must be printable characters without spaces")
    return value


def _label(field: str, value: str, *, required: bool = False, limit: int = LABEL_LENGTH_MAX) -> str:
    if required and not value:
        raise FieldViolation(field, "is required")
    if len(value) > limit:
        raise FieldViolation(field, f"must be at most {limit} characters")
    if not value.isprintable():
        raise FieldViolation(field, "must be printable characters")
    return value


def _bounded(field: str, value: int, low: int, high: int) -> int:
    if not low <= value <= high:
        raise FieldViolation(field, f"must be between {low} and {high}, got {value}")
    return value


def _attributes(field: str, attributes) -> dict[str, str]:
    if len(attributes) > ATTRIBUTES_MAX:
        raise FieldViolation(field, f"at most {ATTRIBUTES_MAX} attributes")
    result = {}
    for key, value in sorted(attributes.items()):
        _label(f"{field}[{key!r}]", key, required=True, limit=ATTRIBUTE_KEY_LENGTH_MAX)
        result[key] = _label(f"{field}[{key!r}]", value, limit=ATTRIBUTE_VALUE_LENGTH_MAX)
    return result


# The last millisecond of the year 9999: timestamps past it are refused.
TIMESTAMP_MS_MAX = 253_402_300_799_999


def _timestamp_ms(field: str, timestamp) -> int:
    milliseconds = timestamp.seconds * 1000 + timestamp.nanos // 1_000_000
    return _bounded(field, milliseconds, 0, TIMESTAMP_MS_MAX)


def enroll_member(request: pb.EnrollMemberRequest, prefix: str = "") -> c.EnrollMember:
    """EnrollMember -> command."""
    return c.EnrollMember(
        _identifier(prefix + "member_id", request.member_id),
        _identifier(prefix + "request_id", request.request_id),
        _attributes(prefix + "attributes", request.attributes),
    )


def _purchase(field: str, request: pb.EarnRequest) -> dict:
    """The validated purchase of an EarnRequest, as Earn command fields."""
    if not request.HasField("purchase"):
        raise FieldViolation(field, "is required")
    purchase = request.purchase
    if not is_currency_code(purchase.currency):
        raise FieldViolation(f"{field}.currency", "must be an ISO-4217 code such as EUR")
    if not purchase.lines:
        raise FieldViolation(f"{field}.lines", "at least one line is required")
    if len(purchase.lines) > PURCHASE_LINES_MAX:
        raise FieldViolation(f"{field}.lines", f"at most {PURCHASE_LINES_MAX} lines")
    lines = []
    for index, line in enumerate(purchase.lines):
        sku, category, quantity, amount_minor = line.sku, line.category, line.quantity, line.amount_minor
        fine = (
            0 < len(sku) <= LABEL_LENGTH_MAX
            and len(category) <= LABEL_LENGTH_MAX
            and 1 <= quantity <= QUANTITY_MAX
            and 0 <= amount_minor <= AMOUNT_MINOR_MAX
            and sku.isprintable()
            and category.isprintable()
        )
        if not fine:  # the slow path names the field
            where = f"{field}.lines[{index}]"
            _label(f"{where}.sku", sku, required=True)
            _label(f"{where}.category", category)
            _bounded(f"{where}.quantity", quantity, 1, QUANTITY_MAX)
            _bounded(f"{where}.amount_minor", amount_minor, 0, AMOUNT_MINOR_MAX)
        lines.append(c.Line(sku, category, quantity, amount_minor))
    occurred_at_ms = 0
    if purchase.HasField("occurred_at"):
        occurred_at_ms = _timestamp_ms(f"{field}.occurred_at", purchase.occurred_at)
    return {
        "currency": purchase.currency,
        "lines": tuple(lines),
        "channel": _label(f"{field}.channel", purchase.channel),
        "store_id": _label(f"{field}.store_id", purchase.store_id),
        "occurred_at_ms": occurred_at_ms,
    }


def earn(request: pb.EarnRequest, prefix: str = "") -> c.Earn:
    """Earn -> command."""
    member_id = _identifier(prefix + "member_id", request.member_id)
    request_id = _identifier(prefix + "request_id", request.request_id)
    return c.Earn(member_id, request_id, **_purchase(prefix + "purchase", request))


def simulate_earn(request: pb.EarnRequest) -> c.SimulateEarn:
    """SimulateEarn -> read command (request_id optional: nothing is stored under it)."""
    member_id = _identifier("member_id", request.member_id)
    request_id = _identifier("request_id", request.request_id) if request.request_id else ""
    return c.SimulateEarn(member_id, request_id, **_purchase("purchase", request))


def quote_redemption(request: pb.QuoteRedemptionRequest) -> tuple[str, int | None, int | None]:
    """QuoteRedemption -> (currency, amount_minor or None, points or None)."""
    if not is_currency_code(request.currency):
        raise FieldViolation("currency", "must be an ISO-4217 code such as EUR")
    which = request.WhichOneof("quote")
    if which == "amount_minor":
        return request.currency, _bounded("amount_minor", request.amount_minor, 0, AMOUNT_MINOR_MAX), None
    if which == "points":
        return request.currency, None, _bounded("points", request.points, 0, POINTS_MAX)
    raise FieldViolation("quote", "set amount_minor or points")


def redeem(request: pb.RedeemRequest, prefix: str = "") -> c.Redeem:
    """Redeem -> command."""
    return c.Redeem(
        _identifier(prefix + "member_id", request.member_id),
        _identifier(prefix + "request_id", request.request_id),
        _bounded(prefix + "points", request.points, 1, POINTS_MAX),
    )


def reserve(request: pb.ReserveRequest, prefix: str = "") -> c.Reserve:
    """Reserve -> command (ttl_seconds 0 keeps the server default)."""
    return c.Reserve(
        _identifier(prefix + "member_id", request.member_id),
        _identifier(prefix + "request_id", request.request_id),
        _bounded(prefix + "points", request.points, 1, POINTS_MAX),
        _bounded(prefix + "ttl_seconds", request.ttl_seconds, 0, RESERVATION_TTL_S_MAX),
    )


def capture(request: pb.CaptureRequest, prefix: str = "") -> c.Capture:
    """Capture -> command (points 0 captures the whole hold)."""
    return c.Capture(
        _identifier(prefix + "member_id", request.member_id),
        _identifier(prefix + "request_id", request.request_id),
        _identifier(prefix + "reservation_id", request.reservation_id),
        _bounded(prefix + "points", request.points, 0, POINTS_MAX),
    )


def release(request: pb.ReleaseRequest, prefix: str = "") -> c.Release:
    """Release -> command."""
    return c.Release(
        _identifier(prefix + "member_id", request.member_id),
        _identifier(prefix + "request_id", request.request_id),
        _identifier(prefix + "reservation_id", request.reservation_id),
    )


def reverse(request: pb.ReverseRequest, prefix: str = "") -> c.Reverse:
    """Reverse -> command (no lines: the whole purchase)."""
    if len(request.lines) > PURCHASE_LINES_MAX:
        raise FieldViolation(prefix + "lines", f"at most {PURCHASE_LINES_MAX} lines")
    lines = tuple(
        c.ReturnLine(
            _label(f"{prefix}lines[{index}].sku", line.sku, required=True),
            _bounded(f"{prefix}lines[{index}].quantity", line.quantity, 1, QUANTITY_MAX),
        )
        for index, line in enumerate(request.lines)
    )
    return c.Reverse(
        _identifier(prefix + "member_id", request.member_id),
        _identifier(prefix + "request_id", request.request_id),
        _identifier(prefix + "original_request_id", request.original_request_id),
        lines,
    )


def adjust(request: pb.AdjustRequest, prefix: str = "") -> c.Adjust:
    """Adjust -> command (points signed, never 0; a reason is required)."""
    member_id = _identifier(prefix + "member_id", request.member_id)
    request_id = _identifier(prefix + "request_id", request.request_id)
    points = _bounded(prefix + "points", request.points, -POINTS_MAX, POINTS_MAX)
    if points == 0:
        raise FieldViolation(prefix + "points", "must not be 0")
    reason = _label(prefix + "reason", request.reason, required=True, limit=REASON_LENGTH_MAX)
    return c.Adjust(member_id, request_id, points, reason)


def get_member(request: pb.GetMemberRequest) -> c.GetMember:
    """GetMember -> command."""
    return c.GetMember(_identifier("member_id", request.member_id))


def get_balance(request: pb.GetBalanceRequest) -> c.GetBalance:
    """GetBalance -> command."""
    return c.GetBalance(_identifier("member_id", request.member_id))


def get_operation(request: pb.GetOperationRequest) -> c.GetOperation:
    """GetOperation -> command."""
    return c.GetOperation(
        _identifier("member_id", request.member_id),
        _identifier("request_id", request.request_id),
    )


def list_transactions(request: pb.ListTransactionsRequest) -> c.ListTransactions:
    """ListTransactions -> command (page_size 0: default; above the maximum: the maximum)."""
    member_id = _identifier("member_id", request.member_id)
    if request.page_size < 0:
        raise FieldViolation("page_size", "must not be negative")
    before_seq = decode_page_token(member_id, request.page_token) if request.page_token else 0
    return c.ListTransactions(member_id, min(request.page_size, PAGE_SIZE_MAX), before_seq)


def encode_page_token(member_id: str, before_seq: int) -> str:
    """An opaque page token, bound to the member it was issued for."""
    if not before_seq:
        return ""
    return base64.urlsafe_b64encode(f"{before_seq}:{member_id}".encode()).decode()


def decode_page_token(member_id: str, token: str) -> int:
    """The transaction sequence a page token continues before."""
    if len(token) > PAGE_TOKEN_LENGTH_MAX:  # ours are a number and an id, base64
        raise FieldViolation("page_token", "is not a token this server issued")
    try:
        text = base64.urlsafe_b64decode(token.encode()).decode()
        seq_text, _, owner = text.partition(":")
        seq = int(seq_text)
    except (binascii.Error, UnicodeError, ValueError):
        raise FieldViolation("page_token", "is not a token this server issued") from None
    if owner != member_id or seq <= 0:
        raise FieldViolation("page_token", "is not a token this server issued for this member")
    return seq


# Batch items: oneof name -> (reader, name of the response field)
BATCH_READERS = {
    "enroll_member": enroll_member,
    "earn": earn,
    "redeem": redeem,
    "reserve": reserve,
    "capture": capture,
    "release": release,
    "reverse": reverse,
    "adjust": adjust,
}


def batch_item(index: int, item: pb.BatchItem) -> c.Mutation:
    """One Batch item -> command; violations are named items[i].<kind>.<field>."""
    which = item.WhichOneof("operation")
    if which is None:
        raise FieldViolation(f"items[{index}]", "no operation is set")
    return BATCH_READERS[which](getattr(item, which), f"items[{index}].{which}.")


# ------------------------------------------------------------------- Batch fast path
#
# A Batch carries up to BATCH_OPERATIONS_MAX items, so per-item overhead dominates its
# cost. The checkers below accept exactly what the readers above accept and build the
# same command, with no field names built and no exception raised; they return None
# for anything else, and the reader then names the first bad field. A checker may be
# stricter than its reader (the reader decides), never looser.


def _is_identifier(value: str) -> bool:
    return 0 < len(value) <= ID_LENGTH_MAX and value.isprintable() and " " not in value


def _is_label(value: str, limit: int = LABEL_LENGTH_MAX) -> bool:
    return len(value) <= limit and value.isprintable()


_valid_currencies: set[str] = set()
"""Currency codes seen valid (at most 26**3: every code is three letters)."""


def _check_earn(request: pb.EarnRequest) -> c.Earn | None:
    member_id, request_id, purchase = request.member_id, request.request_id, request.purchase
    lines = purchase.lines  # lines only when the purchase is set: no HasField needed
    currency, channel, store_id = purchase.currency, purchase.channel, purchase.store_id
    if not (
        0 < len(lines) <= PURCHASE_LINES_MAX
        and _is_identifier(member_id)
        and _is_identifier(request_id)
        and _is_label(channel)
        and _is_label(store_id)
    ):
        return None
    if currency not in _valid_currencies:
        if not is_currency_code(currency):
            return None
        _valid_currencies.add(currency)
    checked_lines = []
    for line in lines:
        sku, category, quantity, amount_minor = line.sku, line.category, line.quantity, line.amount_minor
        if not (
            0 < len(sku) <= LABEL_LENGTH_MAX
            and len(category) <= LABEL_LENGTH_MAX
            and 1 <= quantity <= QUANTITY_MAX
            and 0 <= amount_minor <= AMOUNT_MINOR_MAX
            and sku.isprintable()
            and category.isprintable()
        ):
            return None
        checked_lines.append(c.Line(sku, category, quantity, amount_minor))
    occurred_at_ms = 0
    if purchase.HasField("occurred_at"):
        occurred_at = purchase.occurred_at
        occurred_at_ms = occurred_at.seconds * 1000 + occurred_at.nanos // 1_000_000
        if not 0 <= occurred_at_ms <= TIMESTAMP_MS_MAX:
            return None
    return c.Earn(member_id, request_id, currency, tuple(checked_lines), channel, store_id, occurred_at_ms)


def _check_enroll_member(request: pb.EnrollMemberRequest) -> c.EnrollMember | None:
    member_id, request_id, attributes = request.member_id, request.request_id, request.attributes
    if not (_is_identifier(member_id) and _is_identifier(request_id)):
        return None
    if not attributes:
        return c.EnrollMember(member_id, request_id, {})
    if len(attributes) > ATTRIBUTES_MAX:
        return None
    checked = dict(sorted(attributes.items()))
    for key, value in checked.items():
        if not (key and _is_label(key, ATTRIBUTE_KEY_LENGTH_MAX) and _is_label(value, ATTRIBUTE_VALUE_LENGTH_MAX)):
            return None
    return c.EnrollMember(member_id, request_id, checked)


def _check_redeem(request: pb.RedeemRequest) -> c.Redeem | None:
    member_id, request_id, points = request.member_id, request.request_id, request.points
    if _is_identifier(member_id) and _is_identifier(request_id) and 1 <= points <= POINTS_MAX:
        return c.Redeem(member_id, request_id, points)
    return None


def _check_reserve(request: pb.ReserveRequest) -> c.Reserve | None:
    member_id, request_id, points, ttl_s = request.member_id, request.request_id, request.points, request.ttl_seconds
    if (
        _is_identifier(member_id)
        and _is_identifier(request_id)
        and 1 <= points <= POINTS_MAX
        and 0 <= ttl_s <= RESERVATION_TTL_S_MAX
    ):
        return c.Reserve(member_id, request_id, points, ttl_s)
    return None


def _check_capture(request: pb.CaptureRequest) -> c.Capture | None:
    member_id, request_id, reservation_id = request.member_id, request.request_id, request.reservation_id
    points = request.points
    if (
        _is_identifier(member_id)
        and _is_identifier(request_id)
        and _is_identifier(reservation_id)
        and 0 <= points <= POINTS_MAX
    ):
        return c.Capture(member_id, request_id, reservation_id, points)
    return None


def _check_release(request: pb.ReleaseRequest) -> c.Release | None:
    member_id, request_id, reservation_id = request.member_id, request.request_id, request.reservation_id
    if _is_identifier(member_id) and _is_identifier(request_id) and _is_identifier(reservation_id):
        return c.Release(member_id, request_id, reservation_id)
    return None


def _check_adjust(request: pb.AdjustRequest) -> c.Adjust | None:
    member_id, request_id, points, reason = request.member_id, request.request_id, request.points, request.reason
    if (
        _is_identifier(member_id)
        and _is_identifier(request_id)
        and -POINTS_MAX <= points <= POINTS_MAX
        and points
        and reason
        and _is_label(reason, REASON_LENGTH_MAX)
    ):
        return c.Adjust(member_id, request_id, points, reason)
    return None


# oneof name -> checker; kinds without one (reverse) always go through their reader.
_BATCH_CHECKERS = {
    "enroll_member": _check_enroll_member,
    "earn": _check_earn,
    "redeem": _check_redeem,
    "reserve": _check_reserve,
    "capture": _check_capture,
    "release": _check_release,
    "adjust": _check_adjust,
}


def batch_items(items) -> tuple[list[c.Mutation], list[int], dict[int, FieldViolation]]:
    """A Batch's items -> (commands, the item index of each command, violations by
    item index): what ``batch_item`` gives for each item, in one pass."""
    commands: list[c.Mutation] = []
    indexes: list[int] = []
    violations: dict[int, FieldViolation] = {}
    checkers = _BATCH_CHECKERS
    for index, item in enumerate(items):
        which = item.WhichOneof("operation")
        checker = checkers.get(which)
        command = checker(getattr(item, which)) if checker is not None else None
        if command is None:
            try:
                command = batch_item(index, item)
            except FieldViolation as violation:
                violations[index] = violation
                continue
        commands.append(command)
        indexes.append(index)
    return commands, indexes, violations
