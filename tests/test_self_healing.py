"""The embedded default heals itself, tested against a real ``loyalty serve``.

kill -9 of the server's own embedded Redis (as the OOM killer would) under a steady
load of earns: nobody but the server restarts it. The server must serve again by
itself, its health must go NOT_SERVING and back to SERVING, no zombie may be left,
nothing acknowledged may be lost and every in-doubt earn must resolve through
GetOperation. The same with several kills in a row, with Redis killed while a shard
is restarting, and with an external Redis that stays down longer than every retry
window.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import uuid

import grpc
import psutil
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from loyalty.actors.routing import shard_of
from loyalty.server.runtime.embedded_redis import RESTART_BACKOFF_MAX_S, EmbeddedRedis, free_port
from loyalty.server.gateway.health import HEALTH_PROBE_TIMEOUT_S
from loyalty.v1 import loyalty_pb2 as pb
from loyalty.v1 import loyalty_pb2_grpc

from conftest import ServerThread, server_config

SERVICE = "loyalty.v1.LoyaltyService"
# Every wait below is bounded by this: docs/reliability.md promises service again within
# seconds of Redis being back; a minute leaves room for a loaded CI machine.
HEAL_DEADLINE_S = 60.0
CALL_TIMEOUT_S = 5.0


class HealthWatch(threading.Thread):
    """Records every status a health Watch stream delivers for one service name."""

    def __init__(self, target: str, service: str) -> None:
        super().__init__(daemon=True)
        self._channel = grpc.insecure_channel(target)
        self._stream = health_pb2_grpc.HealthStub(self._channel).Watch(
            health_pb2.HealthCheckRequest(service=service))
        self.statuses: list[int] = []
        self._changed = threading.Condition()

    def run(self) -> None:
        try:
            for response in self._stream:
                with self._changed:
                    self.statuses.append(response.status)
                    self._changed.notify_all()
        except grpc.RpcError:
            pass

    def wait_for(self, predicate, timeout_s: float = HEAL_DEADLINE_S) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: predicate(self.statuses), timeout=timeout_s)

    def close(self) -> None:
        self._stream.cancel()
        self._channel.close()


def went_down_and_up(statuses: list[int], since: int) -> bool:
    """NOT_SERVING then SERVING among the statuses after position ``since``."""
    later = statuses[since:]
    if health_pb2.HealthCheckResponse.NOT_SERVING not in later:
        return False
    down_at = later.index(health_pb2.HealthCheckResponse.NOT_SERVING)
    return health_pb2.HealthCheckResponse.SERVING in later[down_at:]


class EarnLoad(threading.Thread):
    """One member, earns of 10 points with unique request_ids, until stopped."""

    def __init__(self, target: str, member_id: str) -> None:
        super().__init__(daemon=True)
        self._channel = grpc.insecure_channel(target)
        self.stub = loyalty_pb2_grpc.LoyaltyServiceStub(self._channel)
        self.member_id = member_id
        self.acknowledged: list[str] = []
        self.in_doubt: list[str] = []
        self.unexpected: list[str] = []
        self.stopping = threading.Event()
        self._progress = threading.Condition()

    def run(self) -> None:
        while not self.stopping.is_set():
            request_id = uuid.uuid4().hex
            try:
                self.stub.Earn(pb.EarnRequest(
                    member_id=self.member_id, request_id=request_id,
                    purchase=pb.Purchase(channel="pos", store_id="s1", currency="EUR", lines=[
                        pb.PurchaseLine(sku="a", category="c", quantity=1, amount_minor=1_000)])),
                    timeout=CALL_TIMEOUT_S)
            except grpc.RpcError as error:
                if error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    self.in_doubt.append(request_id)
                    self.stopping.wait(0.05)  # back off as a till would
                else:
                    self.unexpected.append(f"{error.code().name}: {error.details()}")
                continue
            with self._progress:
                self.acknowledged.append(request_id)
                self._progress.notify_all()

    def wait_for_acks(self, count: int) -> bool:
        """Block until ``count`` more earns were acknowledged."""
        with self._progress:
            target = len(self.acknowledged) + count
            return self._progress.wait_for(lambda: len(self.acknowledged) >= target, timeout=HEAL_DEADLINE_S)

    def stop(self) -> None:
        self.stopping.set()
        self.join(HEAL_DEADLINE_S)
        self._channel.close()


def check_nothing_lost(stub, load: EarnLoad) -> None:
    """Every acknowledged earn applied, every in-doubt one resolved, balance adds up."""
    applied = 0
    for request_id in load.acknowledged + load.in_doubt:
        try:
            stub.GetOperation(pb.GetOperationRequest(member_id=load.member_id, request_id=request_id),
                              timeout=CALL_TIMEOUT_S)
            applied += 1
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.NOT_FOUND, error.details()
            assert request_id not in load.acknowledged, f"acknowledged earn {request_id} was lost"
    balance = stub.GetBalance(pb.GetBalanceRequest(member_id=load.member_id), timeout=CALL_TIMEOUT_S)
    assert balance.available == 10 * applied
    assert load.unexpected == []


@pytest.fixture
def serve(ray_session, tmp_path):
    """A real ``loyalty serve`` on its embedded defaults (joining this session's Ray)."""
    import ray

    port = free_port()
    log_path = tmp_path / "serve.log"
    namespace = f"heal-{uuid.uuid4().hex[:8]}"
    with open(log_path, "w") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "loyalty.server.cli.main", "serve", "--port", str(port), "--shards", "2",
             "--data-dir", str(tmp_path / "data"), "--ray-address", ray.get_runtime_context().gcs_address,
             "--namespace", namespace],
            stdout=log_file, stderr=subprocess.STDOUT, text=True,
        )
    target = f"127.0.0.1:{port}"
    try:
        with grpc.insecure_channel(target) as channel:
            grpc.channel_ready_future(channel).result(timeout=HEAL_DEADLINE_S * 2)
            stub = loyalty_pb2_grpc.LoyaltyServiceStub(channel)
            yield Served(process, target, stub, log_path, namespace)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=HEAL_DEADLINE_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Served:
    def __init__(self, process, target, stub, log_path, namespace) -> None:
        self.process, self.target, self.stub, self.log_path, self.namespace = (
            process, target, stub, log_path, namespace)

    def redis(self) -> psutil.Process:
        (child,) = [p for p in psutil.Process(self.process.pid).children() if "redis-server" in p.name()]
        return child

    def zombies(self) -> list[psutil.Process]:
        return [p for p in psutil.Process(self.process.pid).children(recursive=True)
                if p.status() == psutil.STATUS_ZOMBIE]

    def shard_pid(self, index: int) -> int:
        import ray

        names = [entry["name"] for entry in ray.util.list_named_actors(all_namespaces=True)
                 if entry["namespace"] == self.namespace and entry["name"].endswith(f"-shard-{index}")]
        return ray.get(ray.get_actor(names[0], namespace=self.namespace).pid.remote())


def enroll(stub, member_id: str) -> None:
    stub.EnrollMember(pb.EnrollMemberRequest(member_id=member_id, request_id="enroll"), timeout=CALL_TIMEOUT_S)


def test_killed_embedded_redis_is_restarted_by_the_server_itself(serve):
    enroll(serve.stub, "heal-a")
    watch = HealthWatch(serve.target, SERVICE)
    watch.start()
    load = EarnLoad(serve.target, "heal-a")
    load.start()
    try:
        assert watch.wait_for(lambda s: s and s[-1] == health_pb2.HealthCheckResponse.SERVING)
        for _kill in range(3):  # several kills in a row
            assert load.wait_for_acks(20)
            seen = len(watch.statuses)
            old = serve.redis()
            os.kill(old.pid, signal.SIGKILL)
            assert watch.wait_for(lambda s: went_down_and_up(s, seen)), watch.statuses
            assert load.wait_for_acks(20), "the server did not serve again by itself"
            assert serve.redis().pid != old.pid
            assert serve.zombies() == []
    finally:
        load.stop()
        watch.close()
    check_nothing_lost(serve.stub, load)
    log_text = serve.log_path.read_text()
    assert "was killed by SIGKILL; restarting it" in log_text
    assert "embedded Redis on port" in log_text and "is back after" in log_text
    assert "Traceback" not in log_text


def test_redis_killed_while_a_shard_restarts(serve):
    member_id = next(f"heal-b{n}" for n in range(1000) if shard_of(f"heal-b{n}", 2) == 0)
    enroll(serve.stub, member_id)
    load = EarnLoad(serve.target, member_id)
    load.start()
    try:
        assert load.wait_for_acks(20)
        shard_pid = serve.shard_pid(0)
        os.kill(shard_pid, signal.SIGKILL)
        os.kill(serve.redis().pid, signal.SIGKILL)
        # Ray restarts the shard while Redis is down: the new incarnation must wait
        # for Redis and recover, not die for good.
        assert load.wait_for_acks(20), "the server did not serve again by itself"
        assert serve.shard_pid(0) != shard_pid
        assert serve.zombies() == []
    finally:
        load.stop()
    health = health_pb2_grpc.HealthStub(grpc.insecure_channel(serve.target))
    assert health.Check(health_pb2.HealthCheckRequest(service="")).status == health_pb2.HealthCheckResponse.SERVING
    check_nothing_lost(serve.stub, load)


def test_external_redis_down_longer_than_every_retry_window(ray_session, tmp_path, key_prefix):
    external = EmbeddedRedis(tmp_path / "external", appendfsync="always")
    external.start()
    running = ServerThread(server_config(external.url, key_prefix)).start()
    try:
        enroll_channel = grpc.insecure_channel(running.target)
        stub = loyalty_pb2_grpc.LoyaltyServiceStub(enroll_channel)
        enroll(stub, "heal-c")
        watch = HealthWatch(running.target, SERVICE)
        watch.start()
        assert watch.wait_for(lambda s: s and s[-1] == health_pb2.HealthCheckResponse.SERVING)
        seen = len(watch.statuses)
        external.kill()
        assert watch.wait_for(lambda s: health_pb2.HealthCheckResponse.NOT_SERVING in s[seen:])
        # The outage is held longer than any retry window or backoff in the server.
        outage_s = 2 * max(HEALTH_PROBE_TIMEOUT_S, RESTART_BACKOFF_MAX_S)
        threading.Event().wait(outage_s)
        with pytest.raises(grpc.RpcError) as refused:
            stub.Earn(pb.EarnRequest(member_id="heal-c", request_id="during", purchase=pb.Purchase(
                channel="pos", store_id="s1", currency="EUR",
                lines=[pb.PurchaseLine(sku="a", category="c", quantity=1, amount_minor=1_000)])),
                timeout=CALL_TIMEOUT_S)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        external.restart()
        assert watch.wait_for(lambda s: went_down_and_up(s, seen)), watch.statuses
        load = EarnLoad(running.target, "heal-c")
        load.start()
        assert load.wait_for_acks(5)
        load.stop()
        watch.close()
        enroll_channel.close()
    finally:
        running.stop()
        external.stop()
