"""The per-shard micro-batcher: group commit, order, bounded queue, failure fan-out."""

from __future__ import annotations

import asyncio

import pytest

from loyalty.actors.ledger import codec
from loyalty.actors.ledger import commands as c
from loyalty.actors.ledger.outcomes import Outcome
from loyalty.actors.ledger.status import Status
from loyalty.server.gateway.batcher import ShardBatcher
from loyalty.server.errors import GatewayError


class FakeShard:
    """Answers each batch with outcomes naming the command's request_id; holds each
    call open until the test releases it, to control what is in flight."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.gates: list[asyncio.Event] = []
        self.fail_with: BaseException | None = None

    async def call(self, payload: bytes) -> bytes:
        commands = codec.decode_commands(payload)
        self.batches.append([command.request_id for command in commands])
        gate = asyncio.Event()
        self.gates.append(gate)
        await gate.wait()
        if self.fail_with is not None:
            raise self.fail_with
        return codec.encode_outcomes(
            [codec.encode(Outcome(kind="redeem", message=command.request_id)) for command in commands]
        )


def redeem(request_id: str) -> c.Redeem:
    return c.Redeem("m", request_id, 1)


def batcher_for(shard: FakeShard, *, queue_max: int = 100, call_max: int = 100) -> ShardBatcher:
    def classify(error: BaseException) -> GatewayError | None:
        if isinstance(error, ConnectionError):
            return GatewayError(Status.SHARD_UNAVAILABLE, "down")
        return None

    return ShardBatcher(
        shard.call, classify_error=classify, queue_operations_max=queue_max, call_operations_max=call_max
    )


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)  # let scheduled callbacks run; no waiting on time


def submit(batcher, commands) -> list[asyncio.Future]:
    """One future per command over submit_group's one future for all of them."""
    group = batcher.submit_group(commands)
    futures = [asyncio.get_running_loop().create_future() for _ in commands]

    def resolve(done: asyncio.Future) -> None:
        for future, answer in zip(futures, done.result(), strict=True):
            if isinstance(answer, BaseException):
                future.set_exception(answer)
            else:
                future.set_result(answer)

    group.add_done_callback(resolve)
    return futures


def test_requests_arriving_during_a_call_share_the_next_call_in_order():
    async def scenario():
        shard = FakeShard()
        batcher = batcher_for(shard)
        first = submit(batcher, [redeem("a")])
        await settle()
        later = submit(batcher, [redeem("b")]) + submit(batcher, [redeem("c"), redeem("d")])
        await settle()
        assert shard.batches == [["a"]]  # one call in flight at a time
        shard.gates[0].set()
        assert [o.message for o in await asyncio.gather(*first)] == ["a"]
        await settle()
        assert shard.batches == [["a"], ["b", "c", "d"]]
        shard.gates[1].set()
        assert [o.message for o in await asyncio.gather(*later)] == ["b", "c", "d"]
        assert batcher.calls_made == 2

    asyncio.run(scenario())


def test_calls_are_capped_at_the_call_size_limit():
    async def scenario():
        shard = FakeShard()
        batcher = batcher_for(shard, call_max=2)
        submit(batcher, [redeem("a")])
        await settle()
        futures = submit(batcher, [redeem(x) for x in "bcde"])
        for _ in range(3):
            await settle()
            shard.gates[-1].set()
        await asyncio.gather(*futures)
        assert shard.batches == [["a"], ["b", "c"], ["d", "e"]]

    asyncio.run(scenario())


def test_a_full_queue_refuses_at_once_and_accepts_again_after_draining():
    async def scenario():
        shard = FakeShard()
        batcher = batcher_for(shard, queue_max=3)
        submit(batcher, [redeem("a")])  # in flight, not queued
        await settle()
        queued = submit(batcher, [redeem(x) for x in "bcd"])
        with pytest.raises(GatewayError) as refused:
            submit(batcher, [redeem("e")])
        assert refused.value.status == Status.OVERLOADED
        shard.gates[0].set()
        await settle()
        shard.gates[1].set()
        await asyncio.gather(*queued)
        assert [o.message for o in await asyncio.gather(*queued)] == ["b", "c", "d"]
        again = submit(batcher, [redeem("e")])
        await settle()
        shard.gates[2].set()
        assert (await again[0]).message == "e"

    asyncio.run(scenario())


def test_a_failed_call_fails_every_caller_of_that_batch_only():
    async def scenario():
        shard = FakeShard()
        batcher = batcher_for(shard)
        doomed = submit(batcher, [redeem("a"), redeem("b")])
        await settle()
        survivor = submit(batcher, [redeem("c")])
        shard.fail_with = ConnectionError("journal down")
        shard.gates[0].set()
        for future in doomed:
            with pytest.raises(GatewayError) as failure:
                await future
            assert failure.value.status == Status.SHARD_UNAVAILABLE
        shard.fail_with = None
        await settle()
        shard.gates[1].set()
        assert (await survivor[0]).message == "c"

    asyncio.run(scenario())


def test_an_unclassified_failure_reaches_callers_unchanged():
    async def scenario():
        shard = FakeShard()
        batcher = batcher_for(shard)
        (future,) = submit(batcher, [redeem("a")])
        shard.fail_with = AssertionError("bug in a shard")
        await settle()
        shard.gates[0].set()
        with pytest.raises(AssertionError):
            await future

    asyncio.run(scenario())
