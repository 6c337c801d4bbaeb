"""Locust users for loyalty.v1.LoyaltyService: a point-of-sale mix over gRPC.

Locust's documented gRPC pattern: gevent-friendly grpc (init_gevent), a client
interceptor that times every call and reports it with ``events.request``, and
ordinary blocking stubs. Each user is one till working through its own members:

    enroll (once per member) -> earn (1-8 line baskets) / balance look-up /
    reserve then capture or release / redeem / return (Reverse of an earlier earn)

Run headless with CSV output (loopback only):

    locust -f bench/locustfile.py --headless -u 50 -r 10 -t 60s \
        --host 127.0.0.1:50051 --csv bench/out/locust

Business refusals the mix provokes on purpose are not failures (e.g. a redeem
larger than the balance answered with INSUFFICIENT_POINTS); every other non-OK
status is. On a 2-core machine locust's gevent users top out at a few hundred
calls/s: use bench/loadgen.py for throughput, this file for a realistic mix.
"""

from __future__ import annotations

import random
import time
import uuid

import grpc
import grpc.experimental.gevent as grpc_gevent
from grpc_interceptor import ClientInterceptor
from locust import User, between, events, task
from locust.exception import LocustError

from loyalty.v1 import loyalty_pb2 as pb
from loyalty.v1 import loyalty_pb2_grpc as pb_grpc

grpc_gevent.init_gevent()

SKUS = [f"SKU-{index:05d}" for index in range(500)]
CATEGORIES = ["grocery", "fresh", "drinks", "household", "beauty", "toys", "garden"]
# Refusals that are a normal answer in a POS mix, not an error of the server.
EXPECTED_REFUSALS = {"INSUFFICIENT_POINTS", "RETURN_EXCEEDS_PURCHASE", "RESERVATION_EXPIRED"}
MEMBERS_PER_USER = 20


def error_reason(error: grpc.RpcError) -> str:
    """The ErrorInfo reason of a failed call ('' when there is none)."""
    try:
        from grpc_status import rpc_status
        from google.rpc import error_details_pb2

        status = rpc_status.from_call(error)
        for detail in status.details if status else ():
            info = error_details_pb2.ErrorInfo()
            if detail.Unpack(info):
                return info.reason
    except Exception:  # no details attached
        pass
    return ""


class LocustInterceptor(ClientInterceptor):
    """Times every unary call and fires locust's request event for it."""

    def __init__(self, environment) -> None:
        super().__init__()
        self.environment = environment

    def intercept(self, method, request_or_iterator, call_details):
        started = time.perf_counter()
        response = None
        exception = None
        length = 0
        call = method(request_or_iterator, call_details)
        try:
            response = call.result()
            length = response.ByteSize()
        except grpc.RpcError as error:
            reason = error_reason(error)
            if reason not in EXPECTED_REFUSALS:
                exception = error
        self.environment.events.request.fire(
            request_type="grpc",
            name=call_details.method.rsplit("/", 1)[-1],
            response_time=(time.perf_counter() - started) * 1000,
            response_length=length,
            response=response,
            context=None,
            exception=exception,
        )
        return call


class GrpcUser(User):
    """A locust User holding a blocking stub on an intercepted channel."""

    abstract = True
    stub_class = None

    def __init__(self, environment) -> None:
        super().__init__(environment)
        if not self.host:
            raise LocustError("give --host 127.0.0.1:PORT")
        if not self.host.startswith(("127.0.0.1:", "localhost:")):
            raise LocustError("only loopback targets (127.0.0.1:PORT) are allowed")
        self._channel = grpc.intercept_channel(
            grpc.insecure_channel(self.host), LocustInterceptor(environment)
        )
        self.stub = self.stub_class(self._channel)

    def on_stop(self) -> None:
        self._channel.close()


def basket(rng: random.Random) -> pb.Purchase:
    lines = [
        pb.PurchaseLine(sku=rng.choice(SKUS), category=rng.choice(CATEGORIES),
                        quantity=rng.randint(1, 3), amount_minor=rng.randint(50, 20_000))
        for _ in range(rng.randint(1, 8))
    ]
    return pb.Purchase(channel="pos", store_id=f"store-{rng.randrange(200):03d}", currency="EUR", lines=lines)


class PointOfSale(GrpcUser):
    """One till: a few members of its own, each enrolled on first sight."""

    stub_class = pb_grpc.LoyaltyServiceStub
    wait_time = between(0.0, 0.01)

    def on_start(self) -> None:
        self.rng = random.Random()
        self.prefix = f"lc-{uuid.uuid4().hex[:10]}"
        self.members: list[str] = []
        self.receipts: dict[str, list[tuple[str, pb.Purchase]]] = {}

    def rid(self) -> str:
        return uuid.uuid4().hex

    def member(self) -> str:
        if len(self.members) < MEMBERS_PER_USER and (not self.members or self.rng.random() < 0.1):
            member_id = f"{self.prefix}-{len(self.members)}"
            try:
                self.stub.EnrollMember(pb.EnrollMemberRequest(member_id=member_id, request_id=self.rid()))
            except grpc.RpcError:
                return self.members[0] if self.members else member_id
            self.members.append(member_id)
            self.receipts[member_id] = []
        return self.rng.choice(self.members)

    @task(10)
    def earn(self) -> None:
        member_id = self.member()
        purchase = basket(self.rng)
        request_id = self.rid()
        try:
            self.stub.Earn(pb.EarnRequest(member_id=member_id, request_id=request_id, purchase=purchase))
        except grpc.RpcError:
            return
        receipts = self.receipts.setdefault(member_id, [])
        receipts.append((request_id, purchase))
        del receipts[:-10]

    @task(6)
    def balance(self) -> None:
        try:
            self.stub.GetBalance(pb.GetBalanceRequest(member_id=self.member()))
        except grpc.RpcError:
            pass

    @task(3)
    def reserve_then_capture_or_release(self) -> None:
        member_id = self.member()
        points = self.rng.randint(1, 50)
        try:
            reserved = self.stub.Reserve(pb.ReserveRequest(
                member_id=member_id, request_id=self.rid(), points=points, ttl_seconds=300))
        except grpc.RpcError:
            return
        try:
            if self.rng.random() < 0.7:
                self.stub.Capture(pb.CaptureRequest(
                    member_id=member_id, request_id=self.rid(), reservation_id=reserved.reservation_id,
                    points=self.rng.randint(1, points)))
            else:
                self.stub.Release(pb.ReleaseRequest(
                    member_id=member_id, request_id=self.rid(), reservation_id=reserved.reservation_id))
        except grpc.RpcError:
            pass

    @task(2)
    def redeem(self) -> None:
        try:
            self.stub.Redeem(pb.RedeemRequest(
                member_id=self.member(), request_id=self.rid(), points=self.rng.randint(1, 40)))
        except grpc.RpcError:
            pass

    @task(1)
    def ret(self) -> None:
        member_id = self.member()
        receipts = self.receipts.get(member_id) or []
        if not receipts:
            return
        original, purchase = receipts.pop(self.rng.randrange(len(receipts)))
        lines = self.rng.sample(list(purchase.lines), k=self.rng.randint(1, len(purchase.lines)))
        try:
            self.stub.Reverse(pb.ReverseRequest(
                member_id=member_id, request_id=self.rid(), original_request_id=original,
                lines=[pb.ReturnLine(sku=line.sku, quantity=self.rng.randint(1, line.quantity)) for line in lines]))
        except grpc.RpcError:
            pass


@events.init.add_listener
def _check_host(environment, **_kwargs) -> None:
    host = environment.host or ""
    if host and not host.startswith(("127.0.0.1:", "localhost:")):
        raise LocustError("only loopback targets (127.0.0.1:PORT) are allowed")
