"""A Batch validated in one pass (requests.batch_items) gives exactly what each item's
reader gives: the same commands, and the same first bad field and message for every
invalid item."""

from __future__ import annotations

import pytest
from google.protobuf import timestamp_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from loyalty.actors.ledger.limits import (
    AMOUNT_MINOR_MAX,
    ATTRIBUTES_MAX,
    ID_LENGTH_MAX,
    LABEL_LENGTH_MAX,
    POINTS_MAX,
    PURCHASE_LINES_MAX,
    QUANTITY_MAX,
    REASON_LENGTH_MAX,
    RESERVATION_TTL_S_MAX,
)
from loyalty.actors.ledger import commands as c
from loyalty.server.gateway import requests
from loyalty.server.gateway.fields import CommandSpec, Identifier
from loyalty.server.errors import FieldViolation
from loyalty.server.limits import TIMESTAMP_MS_MAX
from loyalty.v1 import loyalty_pb2 as pb

EXAMPLES = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])



def field(valid: list, invalid: list) -> st.SearchStrategy:
    """A valid value nine times in ten: whole items are often valid, and an invalid
    one often has a single bad field."""
    return st.integers(0, 9).flatmap(lambda n: st.sampled_from(valid if n else invalid))


# Values at and around every limit the readers check.
IDENTIFIERS = field(
    ["m-1", "member-2", "x" * ID_LENGTH_MAX, "né"],
    ["", "x" * (ID_LENGTH_MAX + 1), "has space", "tab\there", "\x00"],
)
LABELS = field(["", "pos", "food", "y" * LABEL_LENGTH_MAX, "ça va"], ["y" * (LABEL_LENGTH_MAX + 1), "new\nline"])
SKUS = field(["sku-1", "sku 2", "z" * LABEL_LENGTH_MAX], ["", "z" * (LABEL_LENGTH_MAX + 1), "\x07"])
CURRENCIES = field(["EUR", "USD", "JPY"], ["", "eur", "EURO", "E1R", "ÉUR"])
POINTS = field([1, 2, 500, POINTS_MAX], [0, -1, POINTS_MAX + 1])
SIGNED_POINTS = field([1, -1, 500, POINTS_MAX, -POINTS_MAX], [0, POINTS_MAX + 1, -POINTS_MAX - 1])
CAPTURE_POINTS = field([0, 1, POINTS_MAX], [-1, POINTS_MAX + 1])
QUANTITIES = field([1, 3, QUANTITY_MAX], [0, -2, QUANTITY_MAX + 1])
AMOUNTS = field([0, 999, AMOUNT_MINOR_MAX], [-1, AMOUNT_MINOR_MAX + 1])
TTLS = field([0, 60, RESERVATION_TTL_S_MAX], [-1, RESERVATION_TTL_S_MAX + 1])
REASONS = field(["goodwill", "r" * REASON_LENGTH_MAX], ["", "r" * (REASON_LENGTH_MAX + 1), "bad\x1b"])
LINE_COUNTS = field([1, 1, 2, 4, PURCHASE_LINES_MAX], [0, PURCHASE_LINES_MAX + 1])
OCCURRED_AT_MS = field([None, None, 0, 1_700_000_000_123, TIMESTAMP_MS_MAX], [TIMESTAMP_MS_MAX + 1, -1])
ATTRIBUTE_COUNTS = field([0, 0, 1, 3, ATTRIBUTES_MAX], [ATTRIBUTES_MAX + 1])
ATTRIBUTE_KEYS = field(["tier", "zip", "k" * 64], ["", "k" * 65, "k\n"])
ATTRIBUTE_VALUES = field(["gold", "", "v" * 256], ["v" * 257, "v\t"])


@st.composite
def purchases(draw) -> pb.Purchase | None:
    if draw(st.integers(0, 19)) == 0:
        return None  # no purchase at all
    line_count = draw(LINE_COUNTS)
    template = [
        pb.PurchaseLine(sku=draw(SKUS), category=draw(LABELS), quantity=draw(QUANTITIES), amount_minor=draw(AMOUNTS))
        for _ in range(min(line_count, 3))
    ]
    lines = [template[i % len(template)] for i in range(line_count)] if template else []
    purchase = pb.Purchase(currency=draw(CURRENCIES), lines=lines, channel=draw(LABELS), store_id=draw(LABELS))
    occurred = draw(OCCURRED_AT_MS)
    if occurred is not None:
        purchase.occurred_at.CopyFrom(
            timestamp_pb2.Timestamp(seconds=occurred // 1000, nanos=occurred % 1000 * 1_000_000)
        )
    return purchase


@st.composite
def items(draw) -> pb.BatchItem:
    kind = draw(
        st.sampled_from(
            ["earn", "earn", "enroll_member", "redeem", "reserve", "capture", "release", "reverse", "adjust", None]
        )
    )
    ids = {"member_id": draw(IDENTIFIERS), "request_id": draw(IDENTIFIERS)}
    if kind is None:
        return pb.BatchItem()
    if kind == "earn":
        return pb.BatchItem(earn=pb.EarnRequest(**ids, purchase=draw(purchases())))
    if kind == "enroll_member":
        attributes = {
            f"{draw(ATTRIBUTE_KEYS)}{suffix}": draw(ATTRIBUTE_VALUES)
            for suffix in ["", *range(1, draw(ATTRIBUTE_COUNTS))]
        } if draw(st.booleans()) else {}
        return pb.BatchItem(enroll_member=pb.EnrollMemberRequest(**ids, attributes=attributes))
    if kind == "redeem":
        return pb.BatchItem(redeem=pb.RedeemRequest(**ids, points=draw(POINTS)))
    if kind == "reserve":
        return pb.BatchItem(reserve=pb.ReserveRequest(**ids, points=draw(POINTS), ttl_seconds=draw(TTLS)))
    if kind == "capture":
        return pb.BatchItem(
            capture=pb.CaptureRequest(**ids, reservation_id=draw(IDENTIFIERS), points=draw(CAPTURE_POINTS))
        )
    if kind == "release":
        return pb.BatchItem(release=pb.ReleaseRequest(**ids, reservation_id=draw(IDENTIFIERS)))
    if kind == "reverse":
        lines = [pb.ReturnLine(sku=draw(SKUS), quantity=draw(QUANTITIES)) for _ in range(draw(st.integers(0, 2)))]
        return pb.BatchItem(
            reverse=pb.ReverseRequest(**ids, original_request_id=draw(IDENTIFIERS), lines=lines)
        )
    return pb.BatchItem(adjust=pb.AdjustRequest(**ids, points=draw(SIGNED_POINTS), reason=draw(REASONS)))


def one_at_a_time(batch: list[pb.BatchItem]):
    """What reading each item with its reader gives, as batch_items reports it."""
    commands, indexes, violations = [], [], {}
    for index, item in enumerate(batch):
        try:
            commands.append(requests.batch_item(index, item))
            indexes.append(index)
        except FieldViolation as violation:
            violations[index] = (violation.field, violation.description)
    return commands, indexes, violations


def in_one_pass(batch: list[pb.BatchItem]):
    commands, indexes, violations = requests.batch_items(pb.BatchRequest(items=batch).items)
    return commands, indexes, {index: (v.field, v.description) for index, v in violations.items()}


@EXAMPLES
@given(st.lists(items(), max_size=12))
def test_one_pass_reads_every_item_as_its_reader_does(batch):
    assert in_one_pass(batch) == one_at_a_time(batch)


def valid_items() -> list[pb.BatchItem]:
    """One valid item of every kind."""
    purchase = pb.Purchase(
        currency="EUR",
        channel="pos",
        store_id="s-1",
        lines=[
            pb.PurchaseLine(sku="a", category="food", quantity=2, amount_minor=250),
            pb.PurchaseLine(sku="b", quantity=1, amount_minor=0),
        ],
        occurred_at=timestamp_pb2.Timestamp(seconds=1_700_000_000, nanos=5_000_000),
    )
    return [
        pb.BatchItem(
            enroll_member=pb.EnrollMemberRequest(member_id="m", request_id="e", attributes={"b": "2", "a": "1"})
        ),
        pb.BatchItem(earn=pb.EarnRequest(member_id="m", request_id="p", purchase=purchase)),
        pb.BatchItem(redeem=pb.RedeemRequest(member_id="m", request_id="r", points=5)),
        pb.BatchItem(reserve=pb.ReserveRequest(member_id="m", request_id="h", points=5, ttl_seconds=60)),
        pb.BatchItem(capture=pb.CaptureRequest(member_id="m", request_id="c", reservation_id="h", points=2)),
        pb.BatchItem(release=pb.ReleaseRequest(member_id="m", request_id="l", reservation_id="h")),
        pb.BatchItem(reverse=pb.ReverseRequest(member_id="m", request_id="v", original_request_id="p")),
        pb.BatchItem(adjust=pb.AdjustRequest(member_id="m", request_id="a", points=-3, reason="fix")),
    ]


def test_valid_items_of_every_kind_take_the_same_commands():
    batch = valid_items()
    commands, indexes, violations = in_one_pass(batch)
    assert (commands, indexes, violations) == one_at_a_time(batch)
    assert indexes == list(range(len(batch))) and not violations
    assert list(commands[0].attributes) == ["a", "b"]  # sorted, as the reader sorts them
    assert commands[1].occurred_at_ms == 1_700_000_000_005


def _set_time(timestamp, milliseconds: int) -> None:
    timestamp.seconds, timestamp.nanos = milliseconds // 1000, milliseconds % 1000 * 1_000_000


# (oneof name, how to break one field of its valid request)
ONE_BAD_FIELD = [
    *[
        (kind, lambda r, f=f, v=v: setattr(r, f, v))
        for kind in ("enroll_member", "earn", "redeem", "reserve", "capture", "release", "reverse", "adjust")
        for f in ("member_id", "request_id")
        for v in ("", "x" * (ID_LENGTH_MAX + 1), "a b", "a\tb", "\x00")
    ],
    # the request already holds two attributes: one too many
    ("enroll_member", lambda r: r.attributes.update({f"k{i}": "v" for i in range(ATTRIBUTES_MAX - 1)})),
    ("enroll_member", lambda r: r.attributes.update({"": "v"})),
    ("enroll_member", lambda r: r.attributes.update({"k" * 65: "v"})),
    ("enroll_member", lambda r: r.attributes.update({"k\n": "v"})),
    ("enroll_member", lambda r: r.attributes.update({"c": "v" * 257})),
    ("enroll_member", lambda r: r.attributes.update({"c": "v\x1b"})),
    ("earn", lambda r: r.ClearField("purchase")),
    ("earn", lambda r: r.purchase.ClearField("lines")),
    ("earn", lambda r: r.purchase.lines.extend([r.purchase.lines[0]] * (PURCHASE_LINES_MAX - 1))),
    *[("earn", lambda r, v=v: setattr(r.purchase, "currency", v)) for v in ("", "eur", "EURO", "E1R", "ÉUR")],
    *[
        ("earn", lambda r, f=f, v=v: setattr(r.purchase, f, v))
        for f in ("channel", "store_id")
        for v in ("y" * (LABEL_LENGTH_MAX + 1), "a\nb")
    ],
    *[("earn", lambda r, v=v: setattr(r.purchase.lines[1], "sku", v)) for v in ("", "z" * 65, "\x07")],
    *[("earn", lambda r, v=v: setattr(r.purchase.lines[1], "category", v)) for v in ("z" * 65, "\x07")],
    *[("earn", lambda r, v=v: setattr(r.purchase.lines[1], "quantity", v)) for v in (0, -1, QUANTITY_MAX + 1)],
    *[("earn", lambda r, v=v: setattr(r.purchase.lines[1], "amount_minor", v)) for v in (-1, AMOUNT_MINOR_MAX + 1)],
    *[("earn", lambda r, v=v: _set_time(r.purchase.occurred_at, v)) for v in (-1, TIMESTAMP_MS_MAX + 1)],
    *[("redeem", lambda r, v=v: setattr(r, "points", v)) for v in (0, -1, POINTS_MAX + 1)],
    *[("reserve", lambda r, v=v: setattr(r, "points", v)) for v in (0, -1, POINTS_MAX + 1)],
    *[("reserve", lambda r, v=v: setattr(r, "ttl_seconds", v)) for v in (-1, RESERVATION_TTL_S_MAX + 1)],
    *[("capture", lambda r, v=v: setattr(r, "points", v)) for v in (-1, POINTS_MAX + 1)],
    *[
        (kind, lambda r, v=v: setattr(r, "reservation_id", v))
        for kind in ("capture", "release")
        for v in ("", "x" * (ID_LENGTH_MAX + 1), "a b")
    ],
    *[("reverse", lambda r, v=v: setattr(r, "original_request_id", v)) for v in ("", "a b")],
    ("reverse", lambda r: r.lines.add(sku="", quantity=1)),
    ("reverse", lambda r: r.lines.add(sku="a", quantity=0)),
    *[("adjust", lambda r, v=v: setattr(r, "points", v)) for v in (0, POINTS_MAX + 1, -POINTS_MAX - 1)],
    *[("adjust", lambda r, v=v: setattr(r, "reason", v)) for v in ("", "r" * (REASON_LENGTH_MAX + 1), "a\x1bb")],
]


def test_each_single_bad_field_is_named_as_its_reader_names_it():
    batch = []
    for kind, spoil in ONE_BAD_FIELD:
        (item,) = [item for item in valid_items() if item.WhichOneof("operation") == kind]
        spoil(getattr(item, kind))
        batch.append(item)
    commands, indexes, violations = in_one_pass(batch)
    assert (commands, indexes, violations) == one_at_a_time(batch)
    assert not commands, "every item has one bad field"
    assert len(violations) == len(ONE_BAD_FIELD)


def test_an_invalid_item_names_its_own_index_and_first_bad_field():
    good = pb.BatchItem(redeem=pb.RedeemRequest(member_id="m", request_id="r", points=1))
    bad_line = pb.PurchaseLine(sku="a", quantity=0, amount_minor=1)
    batch = [
        good,
        pb.BatchItem(
            earn=pb.EarnRequest(member_id="m", request_id="p", purchase=pb.Purchase(currency="EUR", lines=[bad_line]))
        ),
        pb.BatchItem(),
        good,
    ]
    _, indexes, violations = in_one_pass(batch)
    assert indexes == [0, 3]
    assert violations == {
        1: ("items[1].earn.purchase.lines[0].quantity", "must be between 1 and 1000000, got 0"),
        2: ("items[2]", "no operation is set"),
    }


@EXAMPLES
@given(ids=IDENTIFIERS, request_id=st.sampled_from(["", "r-1", "a b"]), purchase=purchases())
def test_the_unary_only_specs_check_what_they_read(ids, request_id, purchase):
    """The compiled check of each spec outside Batch accepts what its read accepts and
    builds the same command."""
    earn = pb.EarnRequest(member_id=ids, request_id=request_id, purchase=purchase)
    for spec, request in [
        (requests.SIMULATE_EARN, earn),
        (requests.GET_MEMBER, pb.GetMemberRequest(member_id=ids)),
        (requests.GET_BALANCE, pb.GetBalanceRequest(member_id=ids)),
        (requests.GET_OPERATION, pb.GetOperationRequest(member_id=ids, request_id=request_id)),
    ]:
        command = spec.check(request)  # None: refused
        try:
            assert spec.read(request) == command
        except FieldViolation:
            assert command is None


def test_a_spec_must_fill_every_field_of_its_command():
    with pytest.raises(ValueError, match="Redeem"):
        CommandSpec(c.Redeem, (Identifier("member_id"), Identifier("request_id")))
