"""Every RPC and error code over real gRPC, with real Ray shards and a real Redis."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from loyalty.clients import connect, error_details
from loyalty.v1 import loyalty_pb2 as pb


def error_of(call: pytest.ExceptionInfo) -> tuple[grpc.StatusCode, str, list[str]]:
    """(code, ErrorInfo reason, BadRequest fields) of a failed call."""
    details = error_details(call.value)
    assert details.domain == "loyalty.v1"
    return details.code, details.reason, [field for field, _ in details.field_violations]


def purchase(*amounts_minor: int, currency: str = "EUR", skus: tuple[str, ...] = ()) -> pb.Purchase:
    return pb.Purchase(
        channel="pos",
        store_id="store-1",
        currency=currency,
        lines=[
            pb.PurchaseLine(
                sku=skus[i] if skus else f"sku-{i}", category="food", quantity=1, amount_minor=amount
            )
            for i, amount in enumerate(amounts_minor)
        ],
    )


@pytest.fixture
def member(stub, member_id: str) -> str:
    stub.EnrollMember(pb.EnrollMemberRequest(member_id=member_id, request_id="enroll", attributes={"tier": "gold"}))
    return member_id


def earn(stub, member: str, request_id: str, *amounts_minor: int, **kwargs) -> pb.EarnResponse:
    return stub.Earn(pb.EarnRequest(member_id=member, request_id=request_id, purchase=purchase(*amounts_minor, **kwargs)))


def test_enroll_then_get_member(stub, member_id):
    enrolled = stub.EnrollMember(
        pb.EnrollMemberRequest(member_id=member_id, request_id="r1", attributes={"tier": "gold"})
    )
    assert enrolled.member_id == member_id and enrolled.attributes["tier"] == "gold"
    assert enrolled.status == pb.MEMBER_STATUS_ACTIVE
    fetched = stub.GetMember(pb.GetMemberRequest(member_id=member_id))
    assert fetched.member_id == member_id and fetched.enrolled_at == enrolled.enrolled_at


def test_enroll_replay_returns_member_but_new_request_is_already_exists(stub, member_id):
    first = stub.EnrollMember(pb.EnrollMemberRequest(member_id=member_id, request_id="r1"))
    assert stub.EnrollMember(pb.EnrollMemberRequest(member_id=member_id, request_id="r1")) == first
    with pytest.raises(grpc.RpcError) as call:
        stub.EnrollMember(pb.EnrollMemberRequest(member_id=member_id, request_id="r2"))
    assert error_of(call)[:2] == (grpc.StatusCode.ALREADY_EXISTS, "MEMBER_ALREADY_EXISTS")


def test_earn_gives_one_point_per_whole_unit_and_shows_in_balance(stub, member):
    response = earn(stub, member, "p1", 1999, 501)  # 25.00 EUR
    assert response.points == 25
    assert [line.points for line in response.lines] == [20, 5]
    balance = stub.GetBalance(pb.GetBalanceRequest(member_id=member))
    assert (balance.available, balance.lifetime_earned) == (25, 25)
    assert balance.next_expirations[0].points == 25


def test_earn_in_a_zero_decimal_currency(stub, member):
    assert earn(stub, member, "p1", 1500, currency="JPY").points == 1500


def test_redeem_and_insufficient_points(stub, member):
    earn(stub, member, "p1", 5000)
    assert stub.Redeem(pb.RedeemRequest(member_id=member, request_id="r1", points=20)).balance.available == 30
    with pytest.raises(grpc.RpcError) as call:
        stub.Redeem(pb.RedeemRequest(member_id=member, request_id="r2", points=31))
    assert error_of(call)[:2] == (grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_POINTS")
    assert stub.GetBalance(pb.GetBalanceRequest(member_id=member)).available == 30


def test_unknown_member_is_not_found(stub, member_id):
    with pytest.raises(grpc.RpcError) as call:
        stub.GetBalance(pb.GetBalanceRequest(member_id=member_id))
    assert error_of(call)[:2] == (grpc.StatusCode.NOT_FOUND, "MEMBER_NOT_FOUND")
    with pytest.raises(grpc.RpcError) as call:
        earn(stub, member_id, "p1", 100)
    assert error_of(call)[:2] == (grpc.StatusCode.NOT_FOUND, "MEMBER_NOT_FOUND")


def test_replay_returns_original_response_and_conflict_changes_nothing(stub, member):
    first = earn(stub, member, "p1", 1000)
    assert earn(stub, member, "p1", 1000) == first
    with pytest.raises(grpc.RpcError) as call:
        earn(stub, member, "p1", 9900)
    assert error_of(call)[:2] == (grpc.StatusCode.ALREADY_EXISTS, "REQUEST_ID_CONFLICT")
    assert stub.GetBalance(pb.GetBalanceRequest(member_id=member)).available == 10


def test_a_failed_request_replays_its_failure(stub, member):
    with pytest.raises(grpc.RpcError):
        stub.Redeem(pb.RedeemRequest(member_id=member, request_id="r1", points=5))
    earn(stub, member, "p1", 1000)
    with pytest.raises(grpc.RpcError) as call:
        stub.Redeem(pb.RedeemRequest(member_id=member, request_id="r1", points=5))
    assert error_of(call)[1] == "INSUFFICIENT_POINTS"


def test_reserve_capture_part_releases_the_rest(stub, member):
    earn(stub, member, "p1", 10000)
    reserved = stub.Reserve(pb.ReserveRequest(member_id=member, request_id="h1", points=40, ttl_seconds=600))
    assert (reserved.balance.available, reserved.balance.reserved) == (60, 40)
    assert reserved.expires_at.seconds > 0
    captured = stub.Capture(
        pb.CaptureRequest(member_id=member, request_id="c1", reservation_id=reserved.reservation_id, points=25)
    )
    assert (captured.captured, captured.released) == (25, 15)
    assert (captured.balance.available, captured.balance.reserved, captured.balance.redeemed) == (75, 0, 25)
    with pytest.raises(grpc.RpcError) as call:
        stub.Release(pb.ReleaseRequest(member_id=member, request_id="x1", reservation_id=reserved.reservation_id))
    assert error_of(call)[:2] == (grpc.StatusCode.FAILED_PRECONDITION, "RESERVATION_EXPIRED")


def test_release_and_reservation_errors(stub, member):
    earn(stub, member, "p1", 10000)
    reserved = stub.Reserve(pb.ReserveRequest(member_id=member, request_id="h1", points=30))
    with pytest.raises(grpc.RpcError) as call:
        stub.Capture(
            pb.CaptureRequest(member_id=member, request_id="c1", reservation_id=reserved.reservation_id, points=31)
        )
    assert error_of(call)[:2] == (grpc.StatusCode.FAILED_PRECONDITION, "CAPTURE_EXCEEDS_RESERVATION")
    released = stub.Release(
        pb.ReleaseRequest(member_id=member, request_id="l1", reservation_id=reserved.reservation_id)
    )
    assert (released.released, released.balance.available) == (30, 100)
    with pytest.raises(grpc.RpcError) as call:
        stub.Capture(pb.CaptureRequest(member_id=member, request_id="c2", reservation_id="rsv-999"))
    assert error_of(call)[:2] == (grpc.StatusCode.NOT_FOUND, "RESERVATION_NOT_FOUND")


def test_partial_return_claws_back_exactly_the_returned_lines(stub, member):
    earn(stub, member, "p1", 3000, 2000, skus=("shoes", "socks"))
    reversed_ = stub.Reverse(
        pb.ReverseRequest(member_id=member, request_id="ret1", original_request_id="p1",
                          lines=[pb.ReturnLine(sku="socks", quantity=1)])
    )
    assert reversed_.points_reversed == 20 and reversed_.balance.available == 30
    with pytest.raises(grpc.RpcError) as call:
        stub.Reverse(pb.ReverseRequest(member_id=member, request_id="ret2", original_request_id="p1",
                                       lines=[pb.ReturnLine(sku="socks", quantity=1)]))
    assert error_of(call)[:2] == (grpc.StatusCode.FAILED_PRECONDITION, "RETURN_EXCEEDS_PURCHASE")
    whole = stub.Reverse(pb.ReverseRequest(member_id=member, request_id="ret3", original_request_id="p1"))
    assert whole.points_reversed == 30 and whole.balance.available == 0
    with pytest.raises(grpc.RpcError) as call:
        stub.Reverse(pb.ReverseRequest(member_id=member, request_id="ret4", original_request_id="nope"))
    assert error_of(call)[:2] == (grpc.StatusCode.NOT_FOUND, "ORIGINAL_NOT_FOUND")


def test_return_after_spending_creates_debt_repaid_by_next_earn(stub, member):
    earn(stub, member, "p1", 5000)
    stub.Redeem(pb.RedeemRequest(member_id=member, request_id="r1", points=50))
    reversed_ = stub.Reverse(pb.ReverseRequest(member_id=member, request_id="ret", original_request_id="p1"))
    assert (reversed_.points_reversed, reversed_.debt_added, reversed_.balance.debt) == (50, 50, 50)
    assert reversed_.balance.available == 0
    repaid = earn(stub, member, "p2", 8000)
    assert (repaid.points, repaid.debt_repaid, repaid.balance.debt, repaid.balance.available) == (80, 50, 0, 30)


def test_adjust_both_ways(stub, member):
    assert stub.Adjust(pb.AdjustRequest(member_id=member, request_id="a1", points=70, reason="goodwill")).balance.available == 70
    assert stub.Adjust(pb.AdjustRequest(member_id=member, request_id="a2", points=-20, reason="fix")).balance.available == 50
    with pytest.raises(grpc.RpcError) as call:
        stub.Adjust(pb.AdjustRequest(member_id=member, request_id="a3", points=-51, reason="fix"))
    assert error_of(call)[1] == "INSUFFICIENT_POINTS"


def test_list_transactions_pages_newest_first(stub, member):
    for index in range(5):
        earn(stub, member, f"p{index}", 100 * (index + 1))
    seen, token = [], ""
    while True:
        page = stub.ListTransactions(pb.ListTransactionsRequest(member_id=member, page_size=2, page_token=token))
        assert len(page.transactions) <= 2
        seen += [t.request_id for t in page.transactions]
        token = page.next_page_token
        if not token:
            break
    assert seen == ["p4", "p3", "p2", "p1", "p0", "enroll"]
    newest = stub.ListTransactions(pb.ListTransactionsRequest(member_id=member, page_size=1)).transactions[0]
    assert (newest.kind, newest.points, newest.balance_after) == (pb.TRANSACTION_KIND_EARN, 5, 15)
    with pytest.raises(grpc.RpcError) as call:
        stub.ListTransactions(pb.ListTransactionsRequest(member_id=member, page_token="garbage!"))
    assert error_of(call)[0] == grpc.StatusCode.INVALID_ARGUMENT


def test_get_operation_resolves_applied_failed_and_unknown_requests(stub, member):
    earned = earn(stub, member, "p1", 4200)
    operation = stub.GetOperation(pb.GetOperationRequest(member_id=member, request_id="p1"))
    assert operation.status.code == 0 and operation.earn == earned
    with pytest.raises(grpc.RpcError):
        stub.Redeem(pb.RedeemRequest(member_id=member, request_id="r1", points=999))
    failed = stub.GetOperation(pb.GetOperationRequest(member_id=member, request_id="r1"))
    assert failed.status.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert not failed.HasField("redeem")
    with pytest.raises(grpc.RpcError) as call:
        stub.GetOperation(pb.GetOperationRequest(member_id=member, request_id="never"))
    assert error_of(call)[:2] == (grpc.StatusCode.NOT_FOUND, "OPERATION_NOT_FOUND")


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.EarnRequest(member_id="", request_id="r"), "member_id"),
        (pb.EarnRequest(member_id="m", request_id="x" * 129), "request_id"),
        (pb.EarnRequest(member_id="m", request_id="r"), "purchase"),
        (pb.EarnRequest(member_id="m", request_id="r", purchase=pb.Purchase(currency="euro")), "purchase.currency"),
        (pb.EarnRequest(member_id="m", request_id="r", purchase=pb.Purchase(currency="EUR")), "purchase.lines"),
        (
            pb.EarnRequest(member_id="m", request_id="r", purchase=pb.Purchase(
                currency="EUR", lines=[pb.PurchaseLine(sku="a", quantity=1, amount_minor=5),
                                       pb.PurchaseLine(sku="b", quantity=0, amount_minor=5)])),
            "purchase.lines[1].quantity",
        ),
        (
            pb.EarnRequest(member_id="m", request_id="r", purchase=pb.Purchase(
                currency="EUR", lines=[pb.PurchaseLine(sku="a", quantity=1, amount_minor=-5)])),
            "purchase.lines[0].amount_minor",
        ),
    ],
)
def test_invalid_earn_names_the_field(stub, request_, field):
    with pytest.raises(grpc.RpcError) as call:
        stub.Earn(request_)
    assert error_of(call) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD", [field])


@pytest.mark.parametrize(
    ("method", "request_", "field"),
    [
        ("Redeem", pb.RedeemRequest(member_id="m", request_id="r", points=0), "points"),
        ("Reserve", pb.ReserveRequest(member_id="m", request_id="r", points=1, ttl_seconds=-1), "ttl_seconds"),
        ("Capture", pb.CaptureRequest(member_id="m", request_id="r"), "reservation_id"),
        ("Adjust", pb.AdjustRequest(member_id="m", request_id="r", points=0, reason="x"), "points"),
        ("Adjust", pb.AdjustRequest(member_id="m", request_id="r", points=5), "reason"),
        ("ListTransactions", pb.ListTransactionsRequest(member_id="m", page_size=-1), "page_size"),
    ],
)
def test_invalid_fields_of_other_rpcs(stub, method, request_, field):
    with pytest.raises(grpc.RpcError) as call:
        getattr(stub, method)(request_)
    assert error_of(call) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD", [field])


def test_batch_keeps_order_with_per_item_errors(stub, member):
    items = [
        pb.BatchItem(earn=pb.EarnRequest(member_id=member, request_id="b1", purchase=purchase(1000))),
        pb.BatchItem(redeem=pb.RedeemRequest(member_id=member, request_id="b2", points=500)),
        pb.BatchItem(redeem=pb.RedeemRequest(member_id=member, request_id="b3", points=4)),
        pb.BatchItem(redeem=pb.RedeemRequest(member_id=member, request_id="b4", points=-1)),
        pb.BatchItem(earn=pb.EarnRequest(member_id="nobody-" + member, request_id="b5", purchase=purchase(1))),
        pb.BatchItem(),
    ]
    results = stub.Batch(pb.BatchRequest(items=items)).results
    assert [r.status.code for r in results] == [0, 9, 0, 3, 5, 3]
    assert results[0].earn.points == 10 and results[2].redeem.balance.available == 6
    assert "items[3].redeem.points" in results[3].status.message
    again = stub.Batch(pb.BatchRequest(items=items[:3])).results
    assert list(again) == list(results[:3])


def test_batch_spanning_members_on_every_shard(stub, member_id):
    members = [f"{member_id}-{i}" for i in range(50)]
    enrolls = [pb.BatchItem(enroll_member=pb.EnrollMemberRequest(member_id=m, request_id="e")) for m in members]
    assert all(r.status.code == 0 for r in stub.Batch(pb.BatchRequest(items=enrolls)).results)
    earns = [
        pb.BatchItem(earn=pb.EarnRequest(member_id=m, request_id="p", purchase=purchase(100 * (i + 1))))
        for i, m in enumerate(members)
    ]
    results = stub.Batch(pb.BatchRequest(items=earns)).results
    assert [r.earn.points for r in results] == list(range(1, 51))


def test_batch_over_the_limit_is_rejected(stub):
    items = [pb.BatchItem(redeem=pb.RedeemRequest(member_id="m", request_id=f"r{i}", points=1)) for i in range(10_001)]
    with pytest.raises(grpc.RpcError) as call:
        stub.Batch(pb.BatchRequest(items=items))
    assert error_of(call) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD", ["items"])


def test_connect_gives_a_working_stub_and_error_details_reads_violations(loyalty_server, member_id):
    channel, stub = connect(loyalty_server.target)
    with channel:
        with pytest.raises(grpc.RpcError) as call:
            stub.Redeem(pb.RedeemRequest(member_id=member_id, request_id="r", points=-5))
    details = error_details(call.value)
    assert (details.code, details.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD")
    assert details.field_violations[0][0] == "points" and "between" in details.field_violations[0][1]


def test_health_is_serving_and_reflection_lists_the_service(loyalty_server):
    with grpc.insecure_channel(loyalty_server.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "loyalty.v1.LoyaltyService"):
            answer = health.Check(health_pb2.HealthCheckRequest(service=service))
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        names = {service.name for reply in replies for service in reply.list_services_response.service}
    assert "loyalty.v1.LoyaltyService" in names and "grpc.health.v1.Health" in names
