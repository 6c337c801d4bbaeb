"""Responses built for a Batch (responses.batch_response) and for unary calls are the
messages that setting every field of every outcome gives: leaving 0s unset, the
parsed result skeletons and the shared earn times change nothing a client sees."""

from __future__ import annotations

import msgspec
import pytest
from google.protobuf import timestamp_pb2
from google.rpc import status_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from loyalty.actors.ledger import codec
from loyalty.actors.ledger.outcomes import BalanceView, MemberView, Outcome
from loyalty.actors.ledger.status import Status
from loyalty.server import errors
from loyalty.server.gateway import batcher
from loyalty.server.gateway import responses
from loyalty.server.errors import FieldViolation, GatewayError
from loyalty.v1 import loyalty_pb2 as pb

EXAMPLES = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

AMOUNTS = st.sampled_from([0, 0, 1, 127, 128, 5_000, 2**40, -3])
TIMES_MS = st.sampled_from([0, 999, 1_000, 1_763_000_123_456, 1_794_536_123_000])


def timestamp(milliseconds: int) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=milliseconds // 1000, nanos=milliseconds % 1000 * 1_000_000)


# ----------------------------------------------------- every field set, by hand


def every_field_balance(view: BalanceView | None) -> pb.Balance:
    if view is None:
        return pb.Balance()
    return pb.Balance(
        available=view.available,
        pending=view.pending,
        reserved=view.reserved,
        debt=view.debt,
        lifetime_earned=view.lifetime_earned,
        redeemed=view.redeemed,
        expired=view.expired,
        reversed=view.reversed,
        adjusted_in=view.adjusted_in,
        adjusted_out=view.adjusted_out,
        next_expirations=[
            pb.PointsExpiration(points=points, expires_at=timestamp(at_ms)) for points, at_ms in view.next_expirations
        ],
    )


def every_field_earn(o: Outcome) -> pb.EarnResponse:
    result = pb.EarnResponse(
        points=o.points,
        balance=every_field_balance(o.balance),
        debt_repaid=o.debt,
        pending=o.available_at_ms > o.at_ms,
        available_at=timestamp(o.available_at_ms),
        lines=[pb.LinePoints(sku=sku, points=points) for sku, points in o.lines],
    )
    if o.expires_at_ms:
        result.expires_at.CopyFrom(timestamp(o.expires_at_ms))
    if o.rules_version:
        result.rules_version = o.rules_version
        awards = o.awards or [("", i, sku, points, "base") for i, (sku, points) in enumerate(o.lines)]
        result.awards.extend(
            pb.PointsAward(rule_id=r, line_index=i, sku=s, points=p, effect=e) for r, i, s, p, e in awards
        )
        result.limits.extend(pb.PointsLimit(rule_id=r, limit=n, points_cut=p) for r, n, p in o.limits)
    return result


EVERY_FIELD = {
    "enroll": lambda o: pb.Member(
        member_id=o.member.member_id,
        attributes=o.member.attributes,
        status=o.member.status,
        balance=every_field_balance(o.balance),
        enrolled_at=timestamp(o.member.enrolled_at_ms),
    ),
    "earn": every_field_earn,
    "redeem": lambda o: pb.RedeemResponse(balance=every_field_balance(o.balance), points=o.points),
    "reserve": lambda o: pb.ReserveResponse(
        reservation_id=o.reservation_id,
        expires_at=timestamp(o.expires_at_ms),
        balance=every_field_balance(o.balance),
        points=o.points,
    ),
    "capture": lambda o: pb.CaptureResponse(
        captured=o.points, balance=every_field_balance(o.balance), released=o.released
    ),
    "release": lambda o: pb.ReleaseResponse(balance=every_field_balance(o.balance), released=o.released),
    "reverse": lambda o: pb.ReverseResponse(
        points_reversed=o.points, balance=every_field_balance(o.balance), debt_added=o.debt
    ),
    "adjust": lambda o: pb.AdjustResponse(balance=every_field_balance(o.balance)),
}
RESULT_FIELDS = {kind: answer.field for kind, answer in responses.MUTATION_RESPONSES.items()}


def every_field_result(answer) -> pb.BatchResult:
    if isinstance(answer, status_pb2.Status):
        return pb.BatchResult(status=answer)
    if isinstance(answer, GatewayError):
        return pb.BatchResult(status=errors.rpc_status(answer.status, answer.message))
    if answer.status != Status.OK:
        return pb.BatchResult(status=errors.rpc_status(answer.status, answer.message))
    response = EVERY_FIELD[answer.kind](answer)
    return pb.BatchResult(status=status_pb2.Status(), **{RESULT_FIELDS[answer.kind]: response})


# -------------------------------------------------------------------- outcomes


balances = st.one_of(
    st.none(),
    st.just(BalanceView()),  # all 0: the balance must still be present
    st.builds(
        BalanceView,
        *[AMOUNTS] * 10,
        st.lists(st.tuples(AMOUNTS, TIMES_MS), max_size=3).map(tuple),
    ),
)


STATUSES = (Status.OK,) * 4 + (Status.INSUFFICIENT_POINTS, Status.MEMBER_NOT_FOUND)


@st.composite
def outcomes(draw, statuses=STATUSES) -> Outcome:
    kind = draw(st.sampled_from(sorted(EVERY_FIELD)))
    status = draw(st.sampled_from(statuses))
    at_ms = draw(TIMES_MS)
    fields = {
        "status": status,
        "kind": kind,
        "at_ms": at_ms,
        "message": "" if status == Status.OK else f"{status.name.lower()} for this one",
        "balance": draw(balances) if status == Status.OK else None,
        "points": draw(AMOUNTS),
        "debt": draw(AMOUNTS),
        "released": draw(AMOUNTS),
        "reservation_id": draw(st.sampled_from(["", "hold-1"])),
        "expires_at_ms": draw(TIMES_MS),
        "available_at_ms": draw(st.sampled_from([at_ms, at_ms + 86_400_000, 0])),
        "lines": tuple(draw(st.lists(st.tuples(st.sampled_from(["a", "sku-2", ""]), AMOUNTS), max_size=3))),
    }
    if kind == "enroll" and status == Status.OK:
        attributes = draw(st.dictionaries(st.sampled_from(["tier", "zip"]), st.sampled_from(["", "gold"])))
        fields["member"] = MemberView("m-1", attributes, draw(st.sampled_from([0, 1])), draw(TIMES_MS))
    if kind == "earn" and draw(st.booleans()):
        fields["rules_version"] = draw(st.sampled_from([1, 7]))
        award = st.tuples(st.just("r1"), st.integers(-1, 2), st.just("a"), AMOUNTS, st.just("bonus_points"))
        fields["awards"] = tuple(draw(st.lists(award, max_size=2)))
        fields["limits"] = tuple(draw(st.lists(st.tuples(st.just("r1"), st.just("cap"), AMOUNTS), max_size=1)))
    return Outcome(**fields)


SHARD_DOWN = GatewayError(Status.SHARD_UNAVAILABLE, "shard unavailable: RayActorError")
REFUSED = errors.invalid_argument(FieldViolation("items[3].redeem.points", "must be between 1 and 10, got 0"))

answers = st.one_of(outcomes(), outcomes(), outcomes(), st.just(SHARD_DOWN), st.just(REFUSED))


def as_decoded_by_the_gateway(answer):
    """The answer as a shard call would hand it over (outcomes go over the wire)."""
    if isinstance(answer, Outcome):
        return batcher.decode_outcomes(codec.encode_outcomes([codec.encode(answer)]))[0]
    return answer


def same(actual, expected) -> None:
    assert actual == expected
    assert actual.SerializeToString(deterministic=True) == expected.SerializeToString(deterministic=True)


@EXAMPLES
@given(st.lists(answers, max_size=8))
def test_a_batch_response_holds_every_answer_in_order(items):
    expected = pb.BatchResponse(results=[every_field_result(answer) for answer in items])
    same(responses.batch_response(items), expected)
    same(responses.batch_response([as_decoded_by_the_gateway(answer) for answer in items]), expected)


@EXAMPLES
@given(outcomes(statuses=[Status.OK]))  # only a success has a response message; failures: below
def test_unary_responses_are_unchanged(outcome):
    same(responses.mutation_response(outcome), EVERY_FIELD[outcome.kind](outcome))
    operation = responses.operation("m-1", "r-1", outcome)
    expected = pb.Operation(member_id="m-1", request_id="r-1", applied_at=timestamp(outcome.at_ms))
    response = EVERY_FIELD[outcome.kind](outcome)
    expected.MergeFrom(pb.Operation(status=status_pb2.Status(), **{RESULT_FIELDS[outcome.kind]: response}))
    same(operation, expected)
    if outcome.kind == "earn":
        same(responses.earn_simulation(outcome), every_field_earn(outcome))


@EXAMPLES
@given(outcomes(statuses=[Status.INSUFFICIENT_POINTS, Status.MEMBER_NOT_FOUND]))
def test_a_stored_failure_is_an_operation_holding_its_error_status(outcome):
    expected = pb.Operation(member_id="m-1", request_id="r-1", applied_at=timestamp(outcome.at_ms),
                            status=errors.rpc_status(outcome.status, outcome.message))  # fmt: skip
    same(responses.operation("m-1", "r-1", outcome), expected)


def test_earns_of_many_shard_calls_keep_their_own_times():
    def earn(at_ms: int) -> Outcome:
        return Outcome(kind="earn", at_ms=at_ms, balance=BalanceView(available=1), points=1,
                       available_at_ms=at_ms, expires_at_ms=at_ms + 1_000)

    items = [earn(1_000 + 7 * (i % (responses.EARN_SKELETONS_MAX + 3))) for i in range(300)]
    same(responses.batch_response(items), pb.BatchResponse(results=[every_field_result(o) for o in items]))


def test_an_unclassified_failure_is_raised_not_answered():
    with pytest.raises(AssertionError, match="bug in a shard"):
        responses.batch_response([Outcome(kind="redeem"), AssertionError("bug in a shard")])


@EXAMPLES
@given(st.lists(outcomes(), max_size=4))
def test_the_gateway_decodes_outcomes_field_for_field(items):
    payload = codec.encode_outcomes([codec.encode(outcome) for outcome in items])
    by_gateway, by_codec = batcher.decode_outcomes(payload), codec.decode_outcomes(payload)
    assert [msgspec.to_builtins(o) for o in by_gateway] == [msgspec.to_builtins(o) for o in by_codec]
    assert all(isinstance(outcome, Outcome) for outcome in by_gateway)


def test_the_gateway_outcome_has_the_outcome_s_fields_in_order():
    (outcome,) = batcher.decode_outcomes(codec.encode_outcomes([codec.encode(Outcome(kind="redeem"))]))
    assert [f.name for f in msgspec.structs.fields(type(outcome))] == [f.name for f in msgspec.structs.fields(Outcome)]
