"""Hostile input for every RPC: random bytes as the request body, and random field
values. The server never answers INTERNAL or UNKNOWN, stays up, and a watched
member's balance never changes on a rejected request."""

from __future__ import annotations

import uuid

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from loyalty.v1 import admin_pb2 as apb
from loyalty.v1 import loyalty_pb2 as pb
from loyalty.v1 import loyalty_pb2_grpc

# Answers that would mean the server broke rather than refused.
BROKEN = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.UNIMPLEMENTED}

FUZZ_SETTINGS = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _methods():
    for file, service in ((pb, "LoyaltyService"), (apb, "AdminService")):
        descriptor = file.DESCRIPTOR.services_by_name[service]
        for method in descriptor.methods:
            yield f"/{descriptor.full_name}/{method.name}", method


METHODS = dict(_methods())


class Harness:
    """An admin channel to the module's server and a member whose balance is watched."""

    def __init__(self, server) -> None:
        self.channel = grpc.insecure_channel(server.target)
        self.metadata = server.metadata(server.secrets["admin"])
        self.stub = loyalty_pb2_grpc.LoyaltyServiceStub(self.channel)
        self.member_id = f"watched-{uuid.uuid4().hex[:8]}"
        self.stub.EnrollMember(
            pb.EnrollMemberRequest(member_id=self.member_id, request_id="e"), metadata=self.metadata
        )
        purchase = pb.Purchase(
            currency="EUR", lines=[pb.PurchaseLine(sku="s", quantity=1, amount_minor=100_000)]
        )
        self.stub.Earn(
            pb.EarnRequest(member_id=self.member_id, request_id="p", purchase=purchase),
            metadata=self.metadata,
        )
        self.balance = self.read_balance()

    def read_balance(self) -> pb.Balance:
        return self.stub.GetBalance(pb.GetBalanceRequest(member_id=self.member_id), metadata=self.metadata)

    def call(self, full_name: str, body: bytes) -> grpc.StatusCode:
        """Send raw bytes; check the answer and the watched balance."""
        raw = self.channel.unary_unary(full_name, request_serializer=None, response_deserializer=None)
        try:
            raw(body, metadata=self.metadata, timeout=30)
            code = grpc.StatusCode.OK
        except grpc.RpcError as error:
            code = error.code()
            assert code not in BROKEN, (full_name, body, code, error.details())
        balance = self.read_balance()
        if code != grpc.StatusCode.OK:
            assert balance == self.balance, f"{full_name} was refused ({code.name}) but the balance changed"
        self.balance = balance
        return code


@pytest.fixture(scope="module")
def harness(secured_server):
    running = Harness(secured_server)
    yield running
    # Still up and serving normally after everything above.
    health = health_pb2_grpc.HealthStub(running.channel)
    assert health.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.SERVING
    purchase = pb.Purchase(currency="EUR", lines=[pb.PurchaseLine(sku="s", quantity=1, amount_minor=500)])
    earned = running.stub.Earn(
        pb.EarnRequest(member_id=running.member_id, request_id="after-fuzz", purchase=purchase),
        metadata=running.metadata,
    )
    assert earned.points == 5
    running.channel.close()


@FUZZ_SETTINGS
@given(method=st.sampled_from(sorted(METHODS)), body=st.binary(max_size=300))
def test_random_bytes_to_any_rpc_are_refused_cleanly(harness, method, body):
    harness.call(method, body)


def test_a_malformed_body_is_invalid_argument_naming_the_request(harness):
    assert (
        harness.call("/loyalty.v1.LoyaltyService/Earn", b"\xff\xff\xff\xff")
        == grpc.StatusCode.INVALID_ARGUMENT
    )


# --------------------------------------------------------------------------- random field values

INT64 = st.integers(-(2**63), 2**63 - 1)
INT32 = st.integers(-(2**31), 2**31 - 1)
TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=150)
SHORT = st.one_of(
    TEXT, st.text(alphabet="abcXYZ-_.09 ", max_size=12), st.sampled_from(["", "EUR", "JPY", "pos"])
)


@st.composite
def member_ids(draw):
    return draw(st.one_of(st.just(WATCHED[0]), SHORT))


WATCHED = [""]  # the harness's member id, set before the field tests run


def _timestamp():
    return st.builds(lambda s, n: {"seconds": s, "nanos": n}, INT64, st.integers(-(10**9), 10**9))


def _purchase():
    line = st.builds(pb.PurchaseLine, sku=SHORT, category=SHORT, quantity=INT64, amount_minor=INT64)
    return st.builds(
        lambda channel, store_id, currency, lines, occurred: pb.Purchase(
            channel=channel, store_id=store_id, currency=currency, lines=lines,
            **({"occurred_at": occurred} if occurred is not None and -62135596800 <= occurred["seconds"] <= 253402300799
               and 0 <= occurred["nanos"] < 10**9 else {}),
        ),
        SHORT, SHORT, SHORT, st.lists(line, max_size=4), st.none() | _timestamp(),
    )  # fmt: skip


def _mutations():
    ids = dict(member_id=member_ids(), request_id=SHORT)
    return {
        "enroll_member": st.builds(pb.EnrollMemberRequest, **ids, attributes=st.dictionaries(SHORT, TEXT, max_size=3)),
        "earn": st.builds(pb.EarnRequest, **ids, purchase=_purchase()),
        "redeem": st.builds(pb.RedeemRequest, **ids, points=INT64),
        "reserve": st.builds(pb.ReserveRequest, **ids, points=INT64, ttl_seconds=INT64),
        "capture": st.builds(pb.CaptureRequest, **ids, reservation_id=SHORT, points=INT64),
        "release": st.builds(pb.ReleaseRequest, **ids, reservation_id=SHORT),
        "reverse": st.builds(
            pb.ReverseRequest, **ids, original_request_id=SHORT,
            lines=st.lists(st.builds(pb.ReturnLine, sku=SHORT, quantity=INT64), max_size=3),
        ),
        "adjust": st.builds(pb.AdjustRequest, **ids, points=INT64, reason=TEXT),
    }  # fmt: skip


def _well_formed_mutations():
    """Requests that pass validation, with values inside the allowed ranges but sometimes past
    what the ledger grants (the watched member starts with 1,000 points): they reach the
    watched member's ledger, the only place a refusal could still move its balance."""
    ids = dict(member_id=member_ids(), request_id=st.uuids().map(str))
    points = st.integers(1, 2_000)
    word = st.text(alphabet="abcXYZ-_.09", min_size=1, max_size=12)
    line = st.builds(pb.PurchaseLine, sku=word, quantity=st.integers(1, 5), amount_minor=st.integers(1, 10_000))
    return {
        "enroll_member": st.builds(pb.EnrollMemberRequest, **ids),
        "earn": st.builds(pb.EarnRequest, **ids, purchase=st.builds(
            pb.Purchase, currency=st.just("EUR"), lines=st.lists(line, min_size=1, max_size=3))),
        "redeem": st.builds(pb.RedeemRequest, **ids, points=points),
        "reserve": st.builds(pb.ReserveRequest, **ids, points=points, ttl_seconds=st.integers(0, 3_600)),
        "capture": st.builds(pb.CaptureRequest, **ids, reservation_id=word, points=points),
        "release": st.builds(pb.ReleaseRequest, **ids, reservation_id=word),
        "reverse": st.builds(pb.ReverseRequest, **ids, original_request_id=word, lines=st.lists(
            st.builds(pb.ReturnLine, sku=word, quantity=st.integers(1, 5)), max_size=2)),
        "adjust": st.builds(pb.AdjustRequest, **ids, points=points | st.integers(-2_000, -1), reason=word),
    }  # fmt: skip


def _requests():
    hostile, well_formed = _mutations(), _well_formed_mutations()
    mutations = [*hostile.items(), *well_formed.items()]
    rpc_of = {
        "enroll_member": "EnrollMember", "earn": "Earn", "redeem": "Redeem", "reserve": "Reserve",
        "capture": "Capture", "release": "Release", "reverse": "Reverse", "adjust": "Adjust",
    }  # fmt: skip
    loyalty = [st.tuples(st.just(rpc_of[kind]), strategy) for kind, strategy in hostile.items()]
    item = st.one_of(
        *[
            st.builds(lambda r, k=kind: pb.BatchItem(**{k: r}), strategy)
            for kind, strategy in mutations
        ]
    )
    loyalty += [
        st.tuples(st.just("SimulateEarn"), st.builds(pb.EarnRequest, member_id=member_ids(), purchase=_purchase())),
        st.tuples(st.just("GetMember"), st.builds(pb.GetMemberRequest, member_id=member_ids())),
        st.tuples(st.just("GetBalance"), st.builds(pb.GetBalanceRequest, member_id=member_ids())),
        st.tuples(st.just("GetOperation"), st.builds(pb.GetOperationRequest, member_id=member_ids(), request_id=SHORT)),
        st.tuples(st.just("ListTransactions"), st.builds(
            pb.ListTransactionsRequest, member_id=member_ids(), page_size=INT32, page_token=SHORT)),
        st.tuples(st.just("Batch"), st.builds(
            pb.BatchRequest, items=st.lists(item | st.just(pb.BatchItem()), max_size=5))),
        st.tuples(st.just("QuoteRedemption"), st.one_of(
            st.builds(pb.QuoteRedemptionRequest, currency=SHORT, amount_minor=INT64),
            st.builds(pb.QuoteRedemptionRequest, currency=SHORT, points=INT64))),
    ]  # fmt: skip
    admin = [
        st.tuples(st.just("CreateApiKey"), st.builds(
            apb.CreateApiKeyRequest, name=SHORT, role=st.integers(-5, 10),
            channels=st.lists(SHORT, max_size=3), store_ids=st.lists(SHORT, max_size=3))),
        st.tuples(st.just("RotateApiKey"), st.builds(apb.RotateApiKeyRequest, key_id=SHORT)),
        st.tuples(st.just("RevokeApiKey"), st.builds(apb.RevokeApiKeyRequest, key_id=SHORT)),
        st.tuples(st.just("ListApiKeys"), st.builds(
            apb.ListApiKeysRequest, page_size=INT32, page_token=SHORT, include_revoked=st.booleans())),
        st.tuples(st.just("ListAuditEvents"), st.builds(apb.ListAuditEventsRequest, page_size=INT32, page_token=SHORT)),
        st.tuples(st.just("GetRule"), st.builds(apb.GetRuleRequest, rule_id=SHORT)),
        st.tuples(st.just("DeleteRule"), st.builds(apb.DeleteRuleRequest, rule_id=SHORT, etag=SHORT,
                                                   validate_only=st.just(True))),
        st.tuples(st.just("ListRules"), st.builds(apb.ListRulesRequest, page_size=INT32, page_token=SHORT)),
    ]  # fmt: skip
    # About a third each: hostile values for any LoyaltyService RPC, well-formed mutations,
    # and AdminService RPCs.
    return st.one_of(
        st.tuples(st.just("loyalty.v1.LoyaltyService"), st.one_of(*loyalty)),
        st.tuples(st.just("loyalty.v1.LoyaltyService"), st.one_of(
            *[st.tuples(st.just(rpc_of[kind]), strategy) for kind, strategy in well_formed.items()])),
        st.tuples(st.just("loyalty.v1.AdminService"), st.one_of(*admin)),
    )


@FUZZ_SETTINGS
@given(data=st.data())
def test_random_field_values_are_refused_cleanly_and_never_move_a_balance_when_refused(harness, data):
    WATCHED[0] = harness.member_id
    service, (name, request) = data.draw(_requests())
    harness.call(f"/{service}/{name}", request.SerializeToString())


MUTATING_RPCS = {"EnrollMember", "Earn", "Redeem", "Reserve", "Capture", "Release", "Reverse", "Adjust", "Batch"}


def _member_ids_of(request) -> set[str]:
    if isinstance(request, pb.BatchRequest):
        operations = [item.WhichOneof("operation") for item in request.items]
        return {getattr(item, kind).member_id for item, kind in zip(request.items, operations) if kind}
    return {request.member_id} if hasattr(request, "member_id") else set()


@pytest.mark.parametrize(
    "answer",
    ["moves the balance", "is refused by the ledger", "is refused by validation"],
)
def test_the_fuzzers_requests_reach_the_watched_member(harness, answer):
    """The field fuzzing above can only catch a refused request that moved a balance if its
    own strategy (_requests) sends the watched member requests that pass validation: some
    the ledger applies and some it refuses. Search that strategy for each kind of answer."""
    WATCHED[0] = harness.member_id

    def sent(drawn) -> bool:
        service, (name, request) = drawn
        before = harness.balance
        code = harness.call(f"/{service}/{name}", request.SerializeToString())
        if harness.member_id not in _member_ids_of(request):
            return False
        if answer == "moves the balance":
            return harness.balance != before
        if answer == "is refused by the ledger":
            return name in MUTATING_RPCS and code not in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT)
        return code == grpc.StatusCode.INVALID_ARGUMENT

    found = []

    @settings(max_examples=500, phases=[Phase.generate], database=None, deadline=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(drawn=_requests())
    def search(drawn):
        if not found and sent(drawn):
            found.append(drawn)

    search()
    assert found, f"none of 500 requests drawn from _requests() to the watched member {answer}"
