"""Nothing acknowledged is lost: a shard killed under load, a restarted gateway, and
``loyalty serve`` stopped with SIGTERM and started again on the same data dir."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import grpc
import pytest
import ray

from conftest import ServerThread, server_config
from loyalty.server.runtime.embedded_redis import free_port
from loyalty.v1 import loyalty_pb2 as pb
from loyalty.v1 import loyalty_pb2_grpc

RETRY_DEADLINE_S = 120.0


def purchase(amount_minor: int) -> pb.Purchase:
    return pb.Purchase(
        currency="EUR", lines=[pb.PurchaseLine(sku="sku", quantity=1, amount_minor=amount_minor)]
    )


def call_until_answered(method, request):
    """Retry a call whose outcome is unknown (UNAVAILABLE) with the same request,
    as a POS would; the request_id makes every retry safe."""
    deadline = time.monotonic() + RETRY_DEADLINE_S
    while True:
        try:
            return method(request, timeout=30)
        except grpc.RpcError as error:
            retryable = error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
            if not retryable or time.monotonic() > deadline:
                raise


@pytest.fixture
def private_server(ray_session, redis_server, key_prefix):
    """A server of the test's own, so killing its shards disturbs no other test."""
    running = ServerThread(server_config(redis_server.url, key_prefix, snapshot_every_events=40)).start()
    try:
        yield running
    finally:
        running.stop()


def test_shard_actor_killed_under_load_loses_no_acknowledged_operation(private_server):
    members = [f"m{i}" for i in range(16)]
    acknowledged: dict[str, tuple[str, int]] = {}
    lock = threading.Lock()
    halfway = threading.Event()
    failures: list[BaseException] = []
    per_client, clients = 60, 4

    with grpc.insecure_channel(private_server.target) as channel:
        stub = loyalty_pb2_grpc.LoyaltyServiceStub(channel)
        stub.Batch(pb.BatchRequest(items=[
            pb.BatchItem(enroll_member=pb.EnrollMemberRequest(member_id=m, request_id="enroll")) for m in members
        ]))

        def client(number: int) -> None:
            try:
                for index in range(per_client):
                    member = members[(number * 7 + index) % len(members)]
                    request_id = f"c{number}-{index}"
                    amount = 100 * (1 + (index % 9))
                    response = call_until_answered(
                        stub.Earn, pb.EarnRequest(member_id=member, request_id=request_id, purchase=purchase(amount))
                    )
                    assert response.points == amount // 100
                    with lock:
                        acknowledged[request_id] = (member, response.points)
                        if len(acknowledged) >= per_client * clients // 3:
                            halfway.set()
            except BaseException as error:  # reported by the main thread
                failures.append(error)
                halfway.set()

        threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
        for thread in threads:
            thread.start()
        halfway.wait()
        victim = private_server.server.actors[0]
        old_pid = ray.get(victim.pid.remote())
        os.kill(old_pid, signal.SIGKILL)
        for thread in threads:
            thread.join()
        assert not failures, failures

        assert len(acknowledged) == per_client * clients
        assert ray.get(victim.pid.remote()) != old_pid, "the shard came back as a new process"
        expected: dict[str, int] = {m: 0 for m in members}
        for member, points in acknowledged.values():
            expected[member] += points
        for member in members:
            assert stub.GetBalance(pb.GetBalanceRequest(member_id=member)).available == expected[member]
        for request_id, (member, points) in acknowledged.items():
            operation = stub.GetOperation(pb.GetOperationRequest(member_id=member, request_id=request_id))
            assert operation.earn.points == points


def test_restarted_server_keeps_balances_outcomes_and_open_holds(ray_session, redis_server, key_prefix):
    config = server_config(redis_server.url, key_prefix, snapshot_every_events=5)
    first = ServerThread(config).start()
    try:
        with grpc.insecure_channel(first.target) as channel:
            stub = loyalty_pb2_grpc.LoyaltyServiceStub(channel)
            for index in range(12):
                member = f"m{index}"
                stub.EnrollMember(pb.EnrollMemberRequest(member_id=member, request_id="e"))
                stub.Earn(pb.EarnRequest(member_id=member, request_id="p1", purchase=purchase(10_000 + index * 100)))
                stub.Redeem(pb.RedeemRequest(member_id=member, request_id="r1", points=10))
            hold = stub.Reserve(pb.ReserveRequest(member_id="m0", request_id="h1", points=30, ttl_seconds=3600))
            earned_before = stub.Earn(pb.EarnRequest(member_id="m5", request_id="p1", purchase=purchase(10_500)))
            balances_before = {
                f"m{i}": stub.GetBalance(pb.GetBalanceRequest(member_id=f"m{i}")) for i in range(12)
            }
    finally:
        first.stop()

    second = ServerThread(config).start()
    try:
        with grpc.insecure_channel(second.target) as channel:
            stub = loyalty_pb2_grpc.LoyaltyServiceStub(channel)
            for member, balance in balances_before.items():
                assert stub.GetBalance(pb.GetBalanceRequest(member_id=member)) == balance
            replayed = stub.Earn(pb.EarnRequest(member_id="m5", request_id="p1", purchase=purchase(10_500)))
            assert replayed == earned_before
            captured = stub.Capture(
                pb.CaptureRequest(member_id="m0", request_id="c1", reservation_id=hold.reservation_id)
            )
            assert captured.captured == 30 and captured.balance.reserved == 0
    finally:
        second.stop()


def _start_serve(port: int, data_dir, ray_address: str) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-m", "loyalty.server.cli.main", "serve", "--port", str(port),
         "--data-dir", str(data_dir), "--ray-address", ray_address, "--shards", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    for line in process.stdout:
        if "loyalty: ready" in line:
            return process
    raise AssertionError(f"loyalty serve exited with {process.wait()} before it was ready")


def _stop_serve(process: subprocess.Popen) -> str:
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 0, output
    return output


def test_loyalty_serve_stops_on_sigterm_and_restarts_with_every_balance(ray_session, tmp_path):
    ray_address = ray.get_runtime_context().gcs_address
    data_dir = tmp_path / "data"
    port = free_port()
    member = f"m-{uuid.uuid4().hex[:8]}"

    process = _start_serve(port, data_dir, ray_address)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = loyalty_pb2_grpc.LoyaltyServiceStub(channel)
            stub.EnrollMember(pb.EnrollMemberRequest(member_id=member, request_id="e"))
            stub.Earn(pb.EarnRequest(member_id=member, request_id="p1", purchase=purchase(12_345)))
            stub.Redeem(pb.RedeemRequest(member_id=member, request_id="r1", points=23))
    finally:
        output = _stop_serve(process)
    assert "loyalty: stopped" in output
    assert (data_dir / "redis.log").exists()

    process = _start_serve(port, data_dir, ray_address)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = loyalty_pb2_grpc.LoyaltyServiceStub(channel)
            balance = stub.GetBalance(pb.GetBalanceRequest(member_id=member))
            assert (balance.available, balance.redeemed, balance.lifetime_earned) == (100, 23, 123)
    finally:
        _stop_serve(process)
