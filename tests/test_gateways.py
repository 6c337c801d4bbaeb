"""``loyalty serve --gateways 2``: two processes share the port and the shards."""

from __future__ import annotations

import signal
import subprocess
import sys
import uuid

import grpc
import psutil
import ray

from loyalty.server.runtime.embedded_redis import free_port
from loyalty.v1 import loyalty_pb2 as pb
from loyalty.v1 import loyalty_pb2_grpc


def _gateway_workers(process: subprocess.Popen) -> list[psutil.Process]:
    children = psutil.Process(process.pid).children(recursive=True)
    return [child for child in children if "loyalty.server.runtime.gateway_process" in " ".join(child.cmdline())]


def test_two_gateway_processes_serve_one_ledger_and_stop_together(ray_session, tmp_path):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "loyalty.server.cli.main", "serve", "--port", str(port), "--gateways", "2",
         "--data-dir", str(tmp_path / "data"), "--ray-address", ray.get_runtime_context().gcs_address],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        for line in process.stdout:
            if "loyalty: ready" in line:
                break
        else:
            raise AssertionError(f"loyalty serve exited with {process.wait()}")
        workers = _gateway_workers(process)
        assert len(workers) == 1
        member = f"m-{uuid.uuid4().hex[:8]}"
        channels = [
            grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)])
            for _ in range(8)
        ]
        stubs = [loyalty_pb2_grpc.LoyaltyServiceStub(channel) for channel in channels]
        stubs[0].EnrollMember(pb.EnrollMemberRequest(member_id=member, request_id="e"))
        for index, stub in enumerate(stubs):  # connections land on either process
            stub.Earn(pb.EarnRequest(member_id=member, request_id=f"p{index}", purchase=pb.Purchase(
                currency="EUR", lines=[pb.PurchaseLine(sku="s", quantity=1, amount_minor=1000)])))
        for stub in stubs:
            assert stub.GetBalance(pb.GetBalanceRequest(member_id=member)).available == 80
        for channel in channels:
            channel.close()
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=120)
    assert process.returncode == 0, output
    assert not any(worker.is_running() and worker.status() != psutil.STATUS_ZOMBIE for worker in workers)
