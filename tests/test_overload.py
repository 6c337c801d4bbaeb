"""Overload and limits: a burst far past capacity is turned away at once with
RESOURCE_EXHAUSTED, queues stay bounded, and service is normal afterwards.

"Capacity" is made small and deterministic: the module's server has its own Redis,
which the tests pause (SIGSTOP) so the shard cannot journal and falls behind; every
call admitted meanwhile waits, and the limits must turn the rest away."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid

import grpc
import pytest

from loyalty.clients import error_details
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from loyalty.clients.errors import RateLimited, error_from_rpc_error
from loyalty.server.runtime.embedded_redis import EmbeddedRedis
from loyalty.server.limits import SHARD_QUEUE_OPERATIONS_MAX
from loyalty.server.security.config import Limits, SecuritySettings
from loyalty.v1 import loyalty_pb2 as pb
from loyalty.v1 import loyalty_pb2_grpc

CONCURRENT_RPCS_MAX = 16
MESSAGE_BYTES_MAX = 1024 * 1024
BOUND_S = 60.0  # every poll below gives up after this long


@pytest.fixture(scope="module")
def redis_to_pause(tmp_path_factory):
    server = EmbeddedRedis(tmp_path_factory.mktemp("paused-redis"), appendfsync="everysec")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def limited(ray_session, redis_to_pause):
    from conftest import SecuredServer

    limits = Limits(
        concurrent_rpcs_max=CONCURRENT_RPCS_MAX,
        key_requests_burst=1_000_000,  # the queue test sends 80,000 operations at once
        key_redemptions_burst=2,
        key_redemptions_per_s=0.001,
        page_size_max=2,
        message_bytes_max=MESSAGE_BYTES_MAX,
    )
    running = SecuredServer(redis_to_pause.url, shards=1, security=SecuritySettings(limits=limits))
    yield running
    running.stop()


@contextlib.contextmanager
def _paused(redis_server: EmbeddedRedis):
    """The shard cannot journal while this lasts: it falls behind."""
    os.kill(redis_server.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(redis_server.pid, signal.SIGCONT)


def _earn(member_id: str, request_id: str, amount_minor: int = 1000) -> pb.EarnRequest:
    purchase = pb.Purchase(
        currency="EUR", lines=[pb.PurchaseLine(sku="s", quantity=1, amount_minor=amount_minor)]
    )
    return pb.EarnRequest(member_id=member_id, request_id=request_id, purchase=purchase)


async def _wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + BOUND_S
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        await asyncio.sleep(0.01)


async def _outcome(call):
    try:
        await call
        return grpc.StatusCode.OK, ""
    except grpc.RpcError as error:
        return error.code(), error_details(error).reason


def _wait_until_normal(stub, metadata, member_id: str) -> pb.EarnResponse:
    """After a burst the server heals by itself: an Earn succeeds again."""
    deadline = time.monotonic() + BOUND_S
    while True:
        try:
            return stub.Earn(_earn(member_id, f"after-{uuid.uuid4().hex[:6]}"), metadata=metadata, timeout=30)
        except grpc.RpcError as error:
            assert error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED), error
            assert time.monotonic() < deadline, "the server did not recover"


@pytest.fixture
def member(limited):
    member_id = f"m-{uuid.uuid4().hex[:10]}"
    metadata = limited.metadata(limited.secrets["admin"])
    with grpc.insecure_channel(limited.target) as channel:
        stub = loyalty_pb2_grpc.LoyaltyServiceStub(channel)
        stub.EnrollMember(pb.EnrollMemberRequest(member_id=member_id, request_id="e"), metadata=metadata)
        stub.Earn(_earn(member_id, "seed", 100_000), metadata=metadata)
    return member_id


def test_calls_past_the_concurrency_limit_are_refused_at_once_and_service_resumes(
    limited, redis_to_pause, member
):
    metadata = limited.metadata(limited.secrets["admin"])
    burst = 10 * CONCURRENT_RPCS_MAX

    async def run():
        async with grpc.aio.insecure_channel(limited.target) as channel:
            stub = loyalty_pb2_grpc.LoyaltyServiceStub(channel)
            with _paused(redis_to_pause):
                tasks = [
                    asyncio.ensure_future(
                        _outcome(stub.Earn(_earn(member, f"burst-{i}"), metadata=metadata, timeout=120))
                    )
                    for i in range(burst)
                ]
                refused = burst - CONCURRENT_RPCS_MAX
                # While the admitted calls wait for the shard, every other one is
                # answered: the server does not queue calls past its limit.
                await _wait_for(lambda: sum(task.done() for task in tasks) >= refused, "the refusals")
                early = [task.result() for task in tasks if task.done()]
            return early, await asyncio.gather(*tasks)

    early, outcomes = asyncio.run(run())
    assert len(early) == burst - CONCURRENT_RPCS_MAX
    assert {code for code, _ in early} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
    admitted = [code for code, _ in outcomes if code != grpc.StatusCode.RESOURCE_EXHAUSTED]
    assert len(admitted) == CONCURRENT_RPCS_MAX  # these waited for the shard; no more
    with grpc.insecure_channel(limited.target) as channel:
        stub = loyalty_pb2_grpc.LoyaltyServiceStub(channel)
        _wait_until_normal(stub, metadata, member)
        for index, (code, _) in enumerate(outcomes):
            if code == grpc.StatusCode.RESOURCE_EXHAUSTED:  # refused: never applied
                error = None
                try:
                    stub.GetOperation(
                        pb.GetOperationRequest(member_id=member, request_id=f"burst-{index}"),
                        metadata=metadata,
                    )
                except grpc.RpcError as caught:
                    error = caught
                assert error is not None and error_details(error).reason == "OPERATION_NOT_FOUND"


def test_a_shard_that_falls_behind_keeps_a_bounded_queue_and_turns_new_work_away(
    limited, redis_to_pause, member
):
    metadata = limited.metadata(limited.secrets["admin"])
    batcher = limited.thread.server.router.batchers[0]
    items_per_batch = 10_000
    batches = SHARD_QUEUE_OPERATIONS_MAX // items_per_batch + 2  # five fill the queue, two too many

    def batch(index: int) -> pb.BatchRequest:
        # One item on the watched member (to see afterwards whether the Batch was
        # applied); the rest are cheap for the shard (unknown members).
        first = pb.BatchItem(
            release=pb.ReleaseRequest(member_id=member, request_id=f"b{index}", reservation_id="none")
        )
        ghosts = [
            pb.BatchItem(
                release=pb.ReleaseRequest(member_id=f"ghost-{item}", request_id="r", reservation_id="none")
            )
            for item in range(items_per_batch - 1)
        ]
        return pb.BatchRequest(items=[first, *ghosts])

    requests = [batch(index) for index in range(batches)]
    peak = []

    async def run():
        async with grpc.aio.insecure_channel(limited.target) as channel:
            stub = loyalty_pb2_grpc.LoyaltyServiceStub(channel)
            with _paused(redis_to_pause):
                calls_before = batcher.calls_made
                # This one reaches the shard, which then waits for Redis: behind.
                stuck = asyncio.ensure_future(
                    _outcome(stub.Earn(_earn(member, "stuck"), metadata=metadata, timeout=120))
                )
                await _wait_for(lambda: batcher.calls_made > calls_before, "the shard call")
                tasks = [
                    asyncio.ensure_future(_outcome(stub.Batch(request, metadata=metadata, timeout=120)))
                    for request in requests
                ]
                await _wait_for(lambda: sum(task.done() for task in tasks) >= 2, "the overloaded batches")
                await _wait_for(lambda: batcher.queued == SHARD_QUEUE_OPERATIONS_MAX, "a full queue")
                peak.append(batcher.queued)
                early = [task.result() for task in tasks if task.done()]
            return early, await asyncio.gather(*tasks), await stuck

    early, outcomes, _ = asyncio.run(run())
    assert peak == [SHARD_QUEUE_OPERATIONS_MAX]  # full, and not one operation more
    assert early == [(grpc.StatusCode.RESOURCE_EXHAUSTED, "OVERLOADED")] * 2
    assert sum(code == grpc.StatusCode.RESOURCE_EXHAUSTED for code, _ in outcomes) == 2
    with grpc.insecure_channel(limited.target) as channel:
        stub = loyalty_pb2_grpc.LoyaltyServiceStub(channel)
        _wait_until_normal(stub, metadata, member)
        assert batcher.queued == 0
        for index, (code, _) in enumerate(outcomes):
            request = pb.GetOperationRequest(member_id=member, request_id=f"b{index}")
            if code == grpc.StatusCode.RESOURCE_EXHAUSTED:  # a refused Batch applied nothing
                with pytest.raises(grpc.RpcError) as caught:
                    stub.GetOperation(request, metadata=metadata)
                assert error_details(caught.value).reason == "OPERATION_NOT_FOUND"
            elif code == grpc.StatusCode.OK:  # an admitted one was applied (its item failed, stored)
                assert (
                    stub.GetOperation(request, metadata=metadata).status.code
                    == grpc.StatusCode.NOT_FOUND.value[0]
                )


def test_a_key_past_its_redemption_rate_is_rate_limited_with_retry_details(limited, member):
    admin = limited.metadata(limited.secrets["admin"])
    pos = limited.metadata(limited.secrets["pos"])
    with grpc.insecure_channel(limited.target) as channel:
        stub = loyalty_pb2_grpc.LoyaltyServiceStub(channel)
        before = stub.GetBalance(pb.GetBalanceRequest(member_id=member), metadata=admin).available
        for index in range(2):  # the burst
            stub.Redeem(pb.RedeemRequest(member_id=member, request_id=f"r{index}", points=1), metadata=pos)
        with pytest.raises(grpc.RpcError) as caught:
            stub.Redeem(pb.RedeemRequest(member_id=member, request_id="r-too-many", points=1), metadata=pos)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        details = error_details(caught.value)
        assert details.reason == "RATE_LIMITED" and details.metadata["bucket"] == "redemptions"
        assert int(details.metadata["retry_after_ms"]) > 0
        sdk_error = error_from_rpc_error(caught.value)  # what the SDK makes of it
        assert isinstance(sdk_error, RateLimited) and sdk_error.retry_after_s > 0
        status = rpc_status.from_call(caught.value)
        retry_infos = [d for d in status.details if d.Is(error_details_pb2.RetryInfo.DESCRIPTOR)]
        assert len(retry_infos) == 1
        # The refused redemption changed nothing; reads with the same key go on, and
        # so do redemptions with another key (buckets are per key).
        assert stub.GetBalance(pb.GetBalanceRequest(member_id=member), metadata=pos).available == before - 2
        stub.Redeem(pb.RedeemRequest(member_id=member, request_id="r-admin", points=1), metadata=admin)
        with pytest.raises(grpc.RpcError) as caught:  # Reserve shares the redemption bucket
            stub.Reserve(pb.ReserveRequest(member_id=member, request_id="h", points=1), metadata=pos)
        assert error_details(caught.value).reason == "RATE_LIMITED"
        # A Batch's redeem and reserve items count one each: three never fit a burst of two.
        items = [
            pb.BatchItem(redeem=pb.RedeemRequest(member_id=member, request_id=f"rb{i}", points=1))
            for i in range(3)
        ]
        ecommerce = limited.metadata(limited.secrets["ecommerce"])
        with pytest.raises(grpc.RpcError) as caught:
            stub.Batch(pb.BatchRequest(items=items), metadata=ecommerce)
        details = error_details(caught.value)
        assert (
            details.reason == "RATE_LIMITED" and "retry_after_ms" not in details.metadata
        )  # split it instead
        assert stub.Batch(pb.BatchRequest(items=items[:2]), metadata=ecommerce).results[1].status.code == 0
        assert stub.GetBalance(pb.GetBalanceRequest(member_id=member), metadata=admin).available == before - 5


def test_pages_are_capped_by_the_configured_page_size(limited, member):
    admin = limited.metadata(limited.secrets["admin"])
    with grpc.insecure_channel(limited.target) as channel:
        stub = loyalty_pb2_grpc.LoyaltyServiceStub(channel)
        stub.Earn(_earn(member, "third"), metadata=admin)  # three transactions: enrol, seed, this
        page = stub.ListTransactions(
            pb.ListTransactionsRequest(member_id=member, page_size=500), metadata=admin
        )
        assert len(page.transactions) == 2 and page.next_page_token


def test_a_message_past_the_size_limit_is_refused_before_it_is_read(limited, member):
    admin = limited.metadata(limited.secrets["admin"])
    with grpc.insecure_channel(limited.target) as channel:
        stub = loyalty_pb2_grpc.LoyaltyServiceStub(channel)
        huge = pb.EnrollMemberRequest(
            member_id="huge", request_id="h", attributes={"blob": "x" * (MESSAGE_BYTES_MAX + 1)}
        )
        with pytest.raises(grpc.RpcError) as caught:
            stub.EnrollMember(huge, metadata=admin)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert stub.GetBalance(pb.GetBalanceRequest(member_id=member), metadata=admin).available > 0
