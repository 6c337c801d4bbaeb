"""The gateway sends its batches to each shard over the shard's data channel (a TCP
connection the actor opens; Ray only says where it is). What a caller can see: the
same durable outcomes as through Ray, UNAVAILABLE for a journal outage or a shard
that is gone, INTERNAL for a shard bug, a connection with the wrong token refused,
and a shard restarted by Ray reconnected without the caller noticing.

Most tests use a ShardActor object in this process (the class Ray runs) behind a
stand-in for its Ray handle; the restart tests use real Ray actors.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket

import psutil
import pytest

from loyalty.actors.shard.channel_server import REQUEST_HEADER, TOKEN_BYTES
from loyalty.actors.shard.journal import JournalUnavailable
from loyalty.actors.ledger import codec
from loyalty.actors.ledger.commands import Earn, EnrollMember, GetBalance, Line
from loyalty.actors.ledger.status import Status
from loyalty.actors.shard.actor import ShardActor, ShardSettings, make_shard_actor
from loyalty.server.gateway.shard_channel import ShardChannel, ShardFailed
from loyalty.server.runtime.embedded_redis import EmbeddedRedis
from loyalty.server.gateway.router import classify_shard_error


class _LocalMethod:
    def __init__(self, method) -> None:
        self._method = method

    def remote(self, *args):
        future = asyncio.get_running_loop().create_future()
        future.set_result(self._method(*args))
        return future


class LocalHandle:
    """What ShardChannel needs of a Ray actor handle, for an in-process ShardActor."""

    def __init__(self, shard: ShardActor) -> None:
        self.channel_address = _LocalMethod(shard.channel_address)


def new_shard(redis_url: str, key_prefix: str, **overrides) -> ShardActor:
    return ShardActor(ShardSettings(shard_index=0, redis_url=redis_url, key_prefix=key_prefix, **overrides))


def enroll_and_earn(member: str, number: int) -> bytes:
    return codec.encode_commands([
        EnrollMember(member, f"{member}-enroll"),
        Earn(member, f"{member}-earn-{number}", "EUR", (Line("sku", "food", 1, 2_000),)),
    ])


def balance_of(shard: ShardActor, member: str) -> int:
    (outcome,) = codec.decode_outcomes(shard.apply(codec.encode_commands([GetBalance(member)])))
    assert outcome.status == Status.OK
    return outcome.balance.available


def test_outcomes_over_the_channel_are_journaled_like_those_through_ray(redis_server, key_prefix):
    shard = new_shard(redis_server.url, key_prefix)
    channel = ShardChannel(LocalHandle(shard))

    async def run() -> list:
        answers = [codec.decode_outcomes(await channel.call(enroll_and_earn(f"m{i}", i), 0)) for i in range(3)]
        channel.close()
        return answers

    answers = asyncio.run(run())
    assert [[outcome.status for outcome in pair] for pair in answers] == [[Status.OK, Status.OK]] * 3
    earned = answers[0][1].balance.available
    assert earned > 0
    # A new incarnation recovers from Redis alone: what the channel acknowledged is there.
    recovered = new_shard(redis_server.url, key_prefix)
    assert [balance_of(recovered, f"m{i}") for i in range(3)] == [earned] * 3
    # The same batch sent again is an idempotent retry: nothing applied twice.
    asyncio.run(ShardChannel(LocalHandle(recovered)).call(enroll_and_earn("m0", 0), 0))
    assert balance_of(recovered, "m0") == earned


def test_a_connection_with_the_wrong_token_is_closed_and_applies_nothing(redis_server, key_prefix):
    shard = new_shard(redis_server.url, key_prefix)
    host, port, token = shard.channel_address()
    seq_before = shard.describe()["seq"]
    payload = enroll_and_earn("intruder", 1)
    wrong = bytes(byte ^ 0xFF for byte in token)
    assert len(wrong) == TOKEN_BYTES
    with socket.create_connection((host, port), timeout=30) as conn:
        conn.sendall(wrong + REQUEST_HEADER.pack(len(payload), 0) + payload)
        try:
            answer = conn.recv(64)
        except ConnectionResetError:  # closed with our request unread
            answer = b""
        assert answer == b""  # closed without an answer
    assert shard.describe()["seq"] == seq_before


def test_a_shard_bug_is_internal_and_the_connection_stays_usable(redis_server, key_prefix):
    shard = new_shard(redis_server.url, key_prefix)
    channel = ShardChannel(LocalHandle(shard))

    async def run() -> bytes:
        with pytest.raises(ShardFailed) as failure:
            await channel.call(b"\xc1 not msgpack", 0)
        assert classify_shard_error(failure.value) is None  # surfaces as INTERNAL
        return await channel.call(enroll_and_earn("after-bug", 1), 0)

    outcomes = codec.decode_outcomes(asyncio.run(run()))
    assert [outcome.status for outcome in outcomes] == [Status.OK, Status.OK]
    assert channel.connects == 1


@pytest.mark.integration
def test_a_journal_outage_is_unavailable_and_the_shard_serves_again_after_it(tmp_path, key_prefix):
    with EmbeddedRedis(tmp_path / "redis", appendfsync="always") as redis_server:
        shard = new_shard(redis_server.url, key_prefix, redis_socket_timeout_s=2.0)
        channel = ShardChannel(LocalHandle(shard))
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(channel.call(enroll_and_earn("a", 1), 0))
            redis_server.kill()
            with pytest.raises(JournalUnavailable) as failure:
                loop.run_until_complete(channel.call(enroll_and_earn("b", 1), 0))
            assert classify_shard_error(failure.value).status == Status.SHARD_UNAVAILABLE
            redis_server.restart()
            # The caller's retry: same batch, same request_ids; the shard rebuilt its state.
            outcomes = codec.decode_outcomes(loop.run_until_complete(channel.call(enroll_and_earn("b", 1), 0)))
        finally:
            channel.close()
            loop.close()
        assert [outcome.status for outcome in outcomes] == [Status.OK, Status.OK]
        assert channel.connects == 1
        assert balance_of(new_shard(redis_server.url, key_prefix), "b") == outcomes[1].balance.available


def test_a_shard_killed_between_calls_is_reconnected_and_the_next_call_succeeds(ray_session, redis_server, key_prefix):
    import ray

    actor = make_shard_actor(
        ShardSettings(shard_index=0, redis_url=redis_server.url, key_prefix=key_prefix),
        name=f"{key_prefix}-shard",
    )
    channel = ShardChannel(actor)

    async def run() -> tuple[list, list]:
        first = codec.decode_outcomes(await channel.call(enroll_and_earn("k", 1), 0))
        os.kill(await actor.pid.remote(), signal.SIGKILL)
        # Not an error for the caller: the lost connection is re-resolved through Ray,
        # which waits for the new incarnation to recover, and the batch is sent again.
        second = codec.decode_outcomes(await channel.call(codec.encode_commands([GetBalance("k")]), 0))
        channel.close()
        return first, second

    try:
        first, second = asyncio.run(run())
    finally:
        ray.kill(actor)
    assert first[1].status == Status.OK
    assert second[0].balance.available == first[1].balance.available
    assert channel.connects == 2


def test_a_shard_that_is_gone_for_good_is_unavailable(ray_session, redis_server, key_prefix):
    import ray

    actor = make_shard_actor(
        ShardSettings(shard_index=0, redis_url=redis_server.url, key_prefix=key_prefix),
        name=f"{key_prefix}-shard",
    )
    channel = ShardChannel(actor)

    async def run() -> BaseException:
        await channel.call(enroll_and_earn("g", 1), 0)
        process = psutil.Process(await actor.pid.remote())
        ray.kill(actor, no_restart=True)
        process.wait(timeout=60)  # ray.kill returns before the process is gone
        try:
            await channel.call(enroll_and_earn("g", 2), 0)
        except Exception as error:  # noqa: BLE001 (the error is what the test looks at)
            return error
        finally:
            channel.close()
        raise AssertionError("a call to a dead shard succeeded")

    error = asyncio.run(run())
    assert classify_shard_error(error).status == Status.SHARD_UNAVAILABLE
