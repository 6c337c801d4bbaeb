"""The same SDK tests against the in-process fake and against the real server (Ray
shards and Redis): the fake behaves like the server because it runs the same code."""

from __future__ import annotations

import asyncio
import datetime
import uuid

import grpc
import pytest

from loyalty.clients import (
    AdjustItem,
    AsyncLoyaltyClient,
    CaptureExceedsReservation,
    ClientConfig,
    EarnItem,
    EarnResult,
    EnrollMemberItem,
    InsufficientPoints,
    InvalidArgument,
    Line,
    LoyaltyClient,
    LoyaltyError,
    MemberAlreadyExists,
    MemberNotFound,
    MemberStatus,
    OperationNotFound,
    OriginalNotFound,
    RedeemItem,
    RedeemResult,
    RequestIdConflict,
    ReservationExpired,
    ReservationNotFound,
    ReserveItem,
    ReturnExceedsPurchase,
    ReturnLine,
    TooManyReservations,
    TransactionKind,
)
from loyalty.clients.testing import FakeLoyaltyServer


@pytest.fixture(scope="module")
def fake_server():
    """One fake for the module (tests use their own member ids, as on the real server)."""
    with FakeLoyaltyServer() as fake:
        yield fake


@pytest.fixture(params=["fake", pytest.param("real", marks=pytest.mark.integration)])
def target(request) -> str:
    """The address of the fake or of the real server."""
    if request.param == "fake":
        return request.getfixturevalue("fake_server").target
    return request.getfixturevalue("loyalty_server").target


def no_sleep(_seconds: float) -> None:
    """Retries in tests do not wait."""


@pytest.fixture
def client(target):
    with LoyaltyClient(ClientConfig(target=target), sleep=no_sleep) as sdk:
        yield sdk


@pytest.fixture
def member(client) -> str:
    member_id = f"sdk-{uuid.uuid4().hex[:12]}"
    client.enroll_member(member_id, attributes={"tier": "gold"}, request_id="enroll")
    return member_id


def shoes(amount_minor: int = 5999, quantity: int = 1) -> Line:
    return Line(sku="shoes", quantity=quantity, amount_minor=amount_minor, category="apparel")


def test_enroll_get_member_and_replay(client):
    member_id = f"sdk-{uuid.uuid4().hex[:12]}"
    enrolled = client.enroll_member(member_id, attributes={"tier": "gold"}, request_id="e1")
    assert enrolled.member_id == member_id and enrolled.attributes == {"tier": "gold"}
    assert enrolled.status is MemberStatus.ACTIVE
    assert enrolled.enrolled_at.tzinfo is not None
    assert client.enroll_member(member_id, attributes={"tier": "gold"}, request_id="e1") == enrolled
    assert client.get_member(member_id) == enrolled
    with pytest.raises(MemberAlreadyExists) as raised:
        client.enroll_member(member_id, request_id="e2")
    error = raised.value
    assert (error.code, error.reason, error.request_id, error.retryable) == (
        grpc.StatusCode.ALREADY_EXISTS,
        "MEMBER_ALREADY_EXISTS",
        "e2",
        False,
    )
    assert error.details.domain == "loyalty.v1" and not error.outcome_unknown


def test_generated_request_ids_and_unknown_member(client):
    member_id = f"sdk-{uuid.uuid4().hex[:12]}"
    with pytest.raises(MemberNotFound) as raised:
        client.get_balance(member_id)
    assert raised.value.request_id is None  # a read has no request_id
    with pytest.raises(MemberNotFound) as raised:
        client.redeem(member_id, 5)
    assert len(raised.value.request_id) == 26  # generated, and reported


def test_earn_with_lines_and_balance(client, member):
    occurred_at = datetime.datetime(2026, 3, 1, 12, 30, tzinfo=datetime.timezone(datetime.timedelta(hours=1)))
    earned = client.earn(
        member,
        lines=[shoes(1999), Line(sku="socks", quantity=2, amount_minor=501)],
        currency="EUR",
        channel="pos",
        store_id="berlin-1",
        occurred_at=occurred_at,
        request_id="receipt-1",
    )
    assert isinstance(earned, EarnResult)
    assert earned.points == 25 and [(line.sku, line.points) for line in earned.lines] == [("shoes", 20), ("socks", 5)]
    assert not earned.pending and earned.expires_at > earned.available_at
    balance = client.get_balance(member)
    assert (balance.available, balance.lifetime_earned) == (25, 25)
    assert balance.next_expirations[0].points == 25
    assert balance.next_expirations[0].expires_at == earned.expires_at
    assert balance.next_expirations[0].expires_at.tzinfo is not None


def test_redeem_insufficient_points_and_replays(client, member):
    client.earn(member, lines=[shoes(5000)], currency="EUR", request_id="p1")
    first = client.redeem(member, 20, request_id="r1")
    assert isinstance(first, RedeemResult) and (first.points, first.balance.available) == (20, 30)
    assert client.redeem(member, 20, request_id="r1") == first  # replayed, not applied twice
    with pytest.raises(InsufficientPoints) as raised:
        client.redeem(member, 31, request_id="r2")
    assert raised.value.code == grpc.StatusCode.FAILED_PRECONDITION and not raised.value.retryable
    with pytest.raises(RequestIdConflict):
        client.redeem(member, 5, request_id="r1")
    assert client.get_balance(member).available == 30


def test_reserve_capture_release_and_their_errors(client, member):
    client.earn(member, lines=[shoes(10000)], currency="EUR", request_id="p1")
    hold = client.reserve(member, 40, ttl=datetime.timedelta(minutes=10))
    assert (hold.points, hold.balance.available, hold.balance.reserved) == (40, 60, 40)
    assert hold.expires_at is not None and hold.expires_at.tzinfo is not None
    with pytest.raises(CaptureExceedsReservation):
        client.capture(member, hold.reservation_id, points=41)
    captured = client.capture(member, hold.reservation_id, points=25)
    assert (captured.captured, captured.released, captured.balance.available, captured.balance.redeemed) == (25, 15, 75, 25)
    with pytest.raises(ReservationExpired):
        client.release(member, hold.reservation_id)
    with pytest.raises(ReservationNotFound):
        client.capture(member, "rsv-does-not-exist")
    second = client.reserve(member, 30)
    released = client.release(member, second.reservation_id)
    assert (released.released, released.balance.available, released.balance.reserved) == (30, 75, 0)


def test_too_many_reservations(client, member):
    client.earn(member, lines=[shoes(100000)], currency="EUR", request_id="p1")
    holds = client.batch([ReserveItem(member, 1) for _ in range(64)])
    assert all(item.ok for item in holds)
    with pytest.raises(TooManyReservations):
        client.reserve(member, 1)


def test_partial_return_and_its_errors(client, member):
    client.earn(
        member,
        lines=[shoes(8999), Line(sku="socks", quantity=3, amount_minor=1500)],
        currency="EUR",
        request_id="order-1",
    )
    returned = client.reverse(member, "order-1", lines=[ReturnLine("socks", 1)])
    assert (returned.points_reversed, returned.debt_added) == (5, 0)
    with pytest.raises(ReturnExceedsPurchase):
        client.reverse(member, "order-1", lines=[ReturnLine("socks", 3)])
    with pytest.raises(OriginalNotFound):
        client.reverse(member, "order-unknown")
    rest = client.reverse(member, "order-1")  # everything not returned yet
    assert rest.points_reversed == 104 - 5 and rest.balance.available == 0


def test_adjust_and_invalid_arguments_name_the_field(client, member):
    assert client.adjust(member, 10, reason="goodwill").balance.adjusted_in == 10
    assert client.adjust(member, -4, reason="correction").balance.available == 6
    with pytest.raises(InvalidArgument) as raised:
        client.adjust(member, 0, reason="nothing")
    assert [field for field, _ in raised.value.field_violations] == ["points"]
    with pytest.raises(InvalidArgument) as raised:
        client.earn(member, lines=[Line(sku="x", quantity=0, amount_minor=100)], currency="EUR")
    assert raised.value.field_violations[0][0] == "purchase.lines[0].quantity"
    with pytest.raises(ValueError):  # caught before sending: a naive time is ambiguous
        client.earn(member, lines=[shoes()], currency="EUR", occurred_at=datetime.datetime(2026, 1, 1))


def test_transactions_page_and_iterate_newest_first(client, member):
    for index in range(5):
        client.earn(member, lines=[shoes(100 * (index + 1))], currency="EUR", request_id=f"p{index}")
    page = client.list_transactions(member, page_size=2)
    assert len(page.transactions) == 2 and page.next_page_token
    every = list(client.iter_transactions(member, page_size=2))
    assert [t.request_id for t in every] == ["p4", "p3", "p2", "p1", "p0", "enroll"]
    assert every[0].kind is TransactionKind.EARN and every[-1].kind is TransactionKind.ENROLL
    assert every[0].points == 5 and every[0].balance_after == 15 and every[0].time.tzinfo is not None
    assert list(client.iter_transactions(member)) == every


def test_get_operation_and_resolve(client, member):
    client.earn(member, lines=[shoes(1000)], currency="EUR", request_id="p1")
    with pytest.raises(InsufficientPoints):
        client.redeem(member, 500, request_id="r-failed")
    applied = client.get_operation(member, "p1")
    assert applied.succeeded and isinstance(applied.result, EarnResult) and applied.result.points == 10
    assert applied.applied_at.tzinfo is not None
    failed = client.resolve(member, "r-failed")
    assert not failed.succeeded and isinstance(failed.error, InsufficientPoints)
    assert failed.error.request_id == "r-failed" and failed.result is None
    with pytest.raises(OperationNotFound):
        client.get_operation(member, "never-sent")
    assert client.resolve(member, "never-sent") is None
    assert client.resolve(f"nobody-{uuid.uuid4().hex[:8]}", "never-sent") is None


def test_batch_keeps_order_with_per_item_errors(client, member):
    results = client.batch(
        [
            EarnItem(member, [shoes(1000)], "EUR", request_id="b1"),
            RedeemItem(member, 500),
            RedeemItem(member, 4),
            AdjustItem(member, 0, "invalid"),
            EnrollMemberItem(member),
        ]
    )
    assert [item.ok for item in results] == [True, False, True, False, False]
    assert results[0].request_id == "b1" and results[0].result.points == 10
    assert isinstance(results[1].error, InsufficientPoints) and results[1].error.request_id == results[1].request_id
    assert results[2].unwrap().balance.available == 6
    assert isinstance(results[3].error, InvalidArgument)
    assert results[3].error.field_violations[0][0] == "items[3].adjust.points"
    assert isinstance(results[4].error, MemberAlreadyExists)
    with pytest.raises(InsufficientPoints):
        results[1].unwrap()


def test_batch_operations_split_into_calls_in_order(client):
    members = [f"sdk-{uuid.uuid4().hex[:12]}" for _ in range(3)]
    items = [EnrollMemberItem(member_id) for member_id in members]
    items += [EarnItem(member_id, [shoes(100 * (i + 1))], "EUR") for i, member_id in enumerate(members)]
    items.append(RedeemItem(members[0], 1000))
    results = client.batch_operations(items, items_per_call=2)
    assert [type(result).__name__ for result in results] == ["Member"] * 3 + ["EarnResult"] * 3 + ["InsufficientPoints"]
    assert [result.points for result in results[3:6]] == [1, 2, 3]
    assert isinstance(results[-1], LoyaltyError)


def test_async_client_does_the_same(target):
    member_id = f"sdk-{uuid.uuid4().hex[:12]}"

    async def no_wait(_seconds: float) -> None:
        pass

    async def scenario():
        async with AsyncLoyaltyClient(target, sleep=no_wait) as client:
            await client.enroll_member(member_id)
            earned = await client.earn(member_id, lines=[shoes(2500)], currency="EUR", request_id="p1")
            hold = await client.reserve(member_id, 20)
            captured = await client.capture(member_id, hold.reservation_id, points=5)
            with pytest.raises(InsufficientPoints) as raised:
                await client.redeem(member_id, 100)
            results = await client.batch_operations([RedeemItem(member_id, 1), RedeemItem(member_id, 999)], items_per_call=1)
            history = [t.kind async for t in client.iter_transactions(member_id, page_size=2)]
            operation = await client.resolve(member_id, "p1")
            missing = await client.resolve(member_id, "never-sent")
            balance = await client.get_balance(member_id)
            return earned, captured, raised.value, results, history, operation, missing, balance

    earned, captured, error, results, history, operation, missing, balance = asyncio.run(scenario())
    assert earned.points == 25 and (captured.captured, captured.released) == (5, 15)
    assert len(error.request_id) == 26
    assert isinstance(results[0], RedeemResult) and isinstance(results[1], InsufficientPoints)
    assert history == ["REDEEM", "CAPTURE", "RESERVE", "EARN", "ENROLL"]
    assert operation.result == earned and missing is None
    assert balance.available == 25 - 5 - 1


def test_the_sdk_and_the_server_have_the_same_limits():
    """The SDK keeps copies of the server's limits (it must not import the server)."""
    from loyalty.clients import BATCH_ITEMS_MAX
    from loyalty.clients import config as client_config
    from loyalty.server import limits as server_limits

    assert BATCH_ITEMS_MAX == server_limits.BATCH_ITEMS_MAX
    assert client_config.MESSAGE_BYTES_MAX == server_limits.MESSAGE_BYTES_MAX
