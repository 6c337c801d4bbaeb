"""A Batch is routed to its shards in chunks, one future per shard call, and answered
exactly as one future per item would answer it: same results, same order, same
per-item errors when a shard call fails."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from loyalty.actors.ledger import CompiledProgram, Program, ShardCore, codec
from loyalty.actors.ledger import commands as c
from loyalty.actors.ledger.status import Status
from loyalty.actors.routing import shard_of
from loyalty.server import errors
from loyalty.server.gateway import requests
from loyalty.server.gateway.batcher import ShardBatcher
from loyalty.server.errors import FieldViolation, GatewayError
from loyalty.server.gateway.servicer import LoyaltyService
from loyalty.server.gateway.router import ShardRouter
from loyalty.server.gateway.routing import ShardChunk
from loyalty.v1 import loyalty_pb2 as pb

SHARDS = 3
NOW_MS = 1_763_000_000_000


class Shard:
    """A ledger core answering shard calls in this process; may be told to fail."""

    def __init__(self) -> None:
        self.core = ShardCore(CompiledProgram(Program()))
        self.fail_with: BaseException | None = None
        self.failing_calls: set[int] = set()
        """Calls (counted from 1) that fail with ConnectionError."""
        self.calls = 0

    async def call(self, payload: bytes) -> bytes:
        self.calls += 1
        number = self.calls
        await asyncio.sleep(0)  # answered later, like a real shard
        if self.fail_with is not None:
            raise self.fail_with
        if number in self.failing_calls:
            raise ConnectionError("journal down")
        outcomes, _ = self.core.apply_batch(codec.decode_commands(payload), NOW_MS)
        return codec.encode_outcomes(outcomes)


def classify(error: BaseException) -> GatewayError | None:
    if isinstance(error, ConnectionError):
        return GatewayError(Status.SHARD_UNAVAILABLE, f"shard unavailable: {type(error).__name__}")
    return None


def batchers(shards: list[Shard], *, queue_max: int = 50_000, call_max: int = 10_000) -> list[ShardBatcher]:
    return [
        ShardBatcher(shard.call, classify_error=classify, queue_operations_max=queue_max, call_operations_max=call_max)
        for shard in shards
    ]


class PerItemRouter:
    """A router sending every command on its own: one chunk (and future) per command."""

    def __init__(self, router: ShardRouter) -> None:
        self._router = router

    async def execute(self, command):
        return await self._router.execute(command)

    def submit_chunks(self, commands):
        chunks = []
        for position, command in enumerate(commands):
            batcher = self._router.batchers[shard_of(command.member_id, len(self._router.batchers))]
            chunks.append(ShardChunk([position], batcher.submit_group([command])))
        return chunks


class Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code


class Context:
    async def abort(self, code, details, trailing_metadata=()):
        raise Aborted(code, details)


def purchase(amount_minor: int) -> pb.Purchase:
    return pb.Purchase(currency="EUR", lines=[pb.PurchaseLine(sku="a", quantity=1, amount_minor=amount_minor)])


def mixed_batch(tag: str) -> pb.BatchRequest:
    """Enrolments, earns, redeems (some refused by the ledger) and invalid items, over
    members on every shard."""
    members = [f"member-{i}" for i in range(12)]
    items = [pb.BatchItem(enroll_member=pb.EnrollMemberRequest(member_id=m, request_id=f"e-{tag}")) for m in members]
    for i, member in enumerate(members):
        earn = pb.EarnRequest(member_id=member, request_id=f"p-{tag}", purchase=purchase(100 * i))
        items.append(pb.BatchItem(earn=earn))
        items.append(pb.BatchItem(redeem=pb.RedeemRequest(member_id=member, request_id=f"r-{tag}", points=i)))
        if i % 4 == 0:
            items.append(pb.BatchItem())
        if i % 5 == 0:
            items.append(pb.BatchItem(redeem=pb.RedeemRequest(member_id=member, request_id="", points=1)))
    return pb.BatchRequest(items=items)


# Seconds a scenario may take: each takes milliseconds, so this only ends a hang.
SCENARIO_TIMEOUT_S = 30


def run(scenario):
    return asyncio.run(asyncio.wait_for(scenario(), SCENARIO_TIMEOUT_S))


@pytest.mark.parametrize("shard_count", [1, SHARDS])
def test_chunks_answer_as_per_item_futures_do(shard_count):
    async def scenario():
        chunked = LoyaltyService(ShardRouter(batchers([Shard() for _ in range(shard_count)])))
        per_item = LoyaltyService(PerItemRouter(ShardRouter(batchers([Shard() for _ in range(shard_count)]))))
        for tag in ("first", "first", "second"):  # the second "first" replays stored outcomes
            request = mixed_batch(tag)
            expected = await per_item.Batch(request, Context())
            assert await chunked.Batch(request, Context()) == expected
        codes = [result.status.code for result in expected.results]
        assert grpc.StatusCode.INVALID_ARGUMENT.value[0] in codes and grpc.StatusCode.OK.value[0] in codes

    run(scenario)


def test_batches_in_flight_together_share_shard_calls_and_keep_their_order():
    async def scenario():
        shards = [Shard() for _ in range(SHARDS)]
        service = LoyaltyService(ShardRouter(batchers(shards)))
        reference = LoyaltyService(PerItemRouter(ShardRouter(batchers([Shard() for _ in range(SHARDS)]))))
        requests = [mixed_batch(f"t{i}") for i in range(4)]
        together = await asyncio.gather(*(service.Batch(request, Context()) for request in requests))
        assert sum(shard.calls for shard in shards) < SHARDS * len(requests)  # group commit
        for request, response in zip(requests, together, strict=True):
            assert response == await reference.Batch(request, Context())

    run(scenario)


def test_a_failed_shard_call_fails_only_its_items():
    async def scenario():
        shards = [Shard() for _ in range(SHARDS)]
        service = LoyaltyService(ShardRouter(batchers(shards)))
        shards[1].fail_with = ConnectionError("journal down")
        request = mixed_batch("x")
        results = (await service.Batch(request, Context())).results
        down = errors.rpc_status(Status.SHARD_UNAVAILABLE, "shard unavailable: ConnectionError")
        for index, (item, result) in enumerate(zip(request.items, results, strict=True)):
            try:
                command = requests.batch_item(index, item)
            except FieldViolation:
                assert result.status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
                continue
            if shard_of(command.member_id, SHARDS) == 1:
                assert result.status == down and result.WhichOneof("response") is None
            else:
                assert result.status.code in (0, grpc.StatusCode.FAILED_PRECONDITION.value[0])

    run(scenario)


def test_a_group_split_over_two_calls_gets_each_call_s_answers():
    async def scenario():
        shard = Shard()
        (batcher,) = batchers([shard], call_max=2)
        shard.failing_calls = {3}  # the group's second call
        busy = batcher.submit_group([_redeem("first")])  # in flight: what follows queues
        group = batcher.submit_group([_redeem(f"r{i}") for i in range(4)])
        await busy
        answers = await group
        assert batcher.calls_made == 3
        assert [answer.status for answer in answers[:2]] == [Status.MEMBER_NOT_FOUND] * 2
        assert isinstance(answers[2], GatewayError) and answers[2] is answers[3]
        assert answers[2].status == Status.SHARD_UNAVAILABLE

    run(scenario)


def test_an_unclassified_shard_failure_fails_the_whole_call():
    async def scenario():
        shards = [Shard() for _ in range(SHARDS)]
        service = LoyaltyService(ShardRouter(batchers(shards)))
        shards[2].fail_with = AssertionError("bug in a shard")
        with pytest.raises(AssertionError, match="bug in a shard"):
            await service.Batch(mixed_batch("y"), Context())

    run(scenario)


def test_a_batch_that_does_not_fit_a_shard_queue_is_refused_whole():
    async def scenario():
        shards = [Shard() for _ in range(SHARDS)]
        router = ShardRouter(batchers(shards, queue_max=20))
        service = LoyaltyService(router)
        busy = router.batchers[1].submit_group([_redeem("busy")])  # in flight
        backlog = router.batchers[1].submit_group([_redeem(f"q{i}") for i in range(15)])
        with pytest.raises(Aborted) as refused:
            await service.Batch(mixed_batch("z"), Context())  # fits every queue but shard 1's
        assert refused.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "shard 1 is behind" in str(refused.value)
        assert [batcher.queued for batcher in router.batchers] == [0, 15, 0]
        await asyncio.gather(busy, backlog)
        assert [shard.calls for shard in shards] == [0, 2, 0]

    run(scenario)


def test_a_caller_that_gives_up_does_not_disturb_the_shard_call():
    async def scenario():
        shard = Shard()
        (batcher,) = batchers([shard])
        busy = batcher.submit_group([_redeem("busy")])  # in flight: the next two share a call
        abandoned = batcher.submit_group([_redeem("a")])
        kept = batcher.submit_group([_redeem("b")])
        abandoned.cancel()
        await busy
        (answer,) = await kept
        assert answer.status == Status.MEMBER_NOT_FOUND
        assert shard.calls == 2

    run(scenario)


def test_an_empty_or_all_invalid_batch_calls_no_shard():
    async def scenario():
        shards = [Shard() for _ in range(SHARDS)]
        service = LoyaltyService(ShardRouter(batchers(shards)))
        assert len((await service.Batch(pb.BatchRequest(), Context())).results) == 0
        results = (await service.Batch(pb.BatchRequest(items=[pb.BatchItem()] * 3), Context())).results
        assert [r.status.code for r in results] == [grpc.StatusCode.INVALID_ARGUMENT.value[0]] * 3
        assert not any(shard.calls for shard in shards)

    run(scenario)


def _redeem(request_id: str) -> c.Redeem:
    return c.Redeem("nobody", request_id, 1)
