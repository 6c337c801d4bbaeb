"""Fault injection with a checker that can see loss (``loyalty chaos``, tests/test_faults.py).

A run starts a gateway with its own shard actors on a Redis the caller owns, lets
several clients run a mixed workload (earn, redeem, reserve, capture, release,
reverse, adjust, balance reads) with unique request_ids, and meanwhile injects
faults in rotation with quiet periods between them:

* ``shard_kill``: SIGKILL of a shard actor's process (Ray restarts it);
* ``redis_kill``: SIGKILL of Redis, then a restart (by the run) from its append-only file;
* ``redis_crash``: SIGKILL of Redis and nobody but the server's own supervisor restarts
  it (the Redis must be a supervised EmbeddedRedis, as ``loyalty serve`` runs);
* ``redis_pause``: SIGSTOP of Redis, then SIGCONT;
* ``gateway_restart``: the gateway and its shards stopped, a new one started on
  another port (clients reconnect);
* ``stale_incarnation``: a second actor for shard 0 claims a newer epoch; the old
  incarnation's next append must be refused and must not land.

After the faults heal, :func:`check` asks the server about every operation and
replays every shard journal in a fresh process, and the :class:`ChaosReport` says
what was lost, applied twice, or otherwise wrong. The negative control (the shard's
test-only ``unsafe_acknowledge_before_journal`` switch) shows the checker sees loss.

``python -m loyalty.server.chaos.run replay --redis-url URL --key-prefix P --shards N``
prints every member's balance rebuilt from the journals alone, as JSON.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import dataclasses
import json
import os
import pathlib
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable

import grpc
import msgspec
import redis
from grpc_status import rpc_status

from loyalty.actors.shard.journal import FencedError, ShardJournal
from loyalty.actors.ledger import codec
from loyalty.actors.ledger import commands as c
from loyalty.actors.ledger.core import ShardCore
from loyalty.actors.ledger.ledger import balance_of
from loyalty.actors.ledger.program import CompiledProgram, Program
from loyalty.actors.ledger.status import Status
from loyalty.actors.routing import shard_of
from loyalty.actors.shard.actor import ShardSettings, make_shard_actor
from loyalty.v1 import loyalty_pb2 as pb
from loyalty.v1 import loyalty_pb2_grpc

FAULTS = ("shard_kill", "redis_kill", "redis_crash", "redis_pause", "gateway_restart", "stale_incarnation")
"""Every fault type, in the order a run rotates through them."""

BALANCE_FIELDS = (
    "available", "pending", "reserved", "debt", "lifetime_earned",
    "redeemed", "expired", "reversed", "adjusted_in", "adjusted_out",
)
"""The Balance terms compared between the live server and a journal replay."""

# A member gets at most this many operations (plus its enrollment), so its whole
# history stays within the 100 transactions ListTransactions keeps and the checker
# can see every applied operation there exactly once.
OPS_PER_MEMBER = 60

# Each client spreads its operations over this many members at a time.
ACTIVE_MEMBERS_PER_CLIENT = 3

# A call that gets no answer within this long has an unknown outcome.
CALL_TIMEOUT_S = 10.0

# Outcomes whose call failed this way may or may not have been applied.
UNKNOWN_CODES = frozenset({
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.INTERNAL,
})

# Codes among UNKNOWN_CODES that the server should never send: a fault must turn
# into UNAVAILABLE (or a timeout), so these are reported as unexpected.
UNEXPECTED_CODES = frozenset({grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL})

# After an unknown outcome a client backs off this long before its next call, as a
# POS would, instead of turning an outage into thousands of failed calls.
UNKNOWN_BACKOFF_S = 0.2

# Bound on every "retry until answered" loop (recovery probes, enrollments, the
# checker's reads): a server that has not recovered by then fails the run.
RECOVERY_DEADLINE_S = 120.0

# Pause between attempts of those loops.
RETRY_INTERVAL_S = 0.1

# Threads the checker uses to ask the server about operations.
CHECKER_THREADS = 8


# --------------------------------------------------------------------------- settings


class ChaosSettings(msgspec.Struct, frozen=True, kw_only=True):
    """One run: the workload, the faults, and how the shards are configured."""

    shards: int = 2
    clients: int = 4
    faults: tuple[str, ...] = FAULTS
    """Fault types, injected in this order, round and round."""
    cycles: int = 1
    """Rounds through ``faults`` (ignored when duration_s is set)."""
    duration_s: float = 0.0
    """Inject faults until this much time has passed (0: run ``cycles`` rounds)."""
    warmup_s: float = 2.0
    """Workload without faults before the first one."""
    quiet_s: float = 2.0
    """Workload without faults after each recovery."""
    redis_down_s: float = 1.0
    """How long Redis stays dead before its restart."""
    redis_pause_s: float = 3.0
    """How long Redis stays stopped (longer than the shards' Redis timeout)."""
    redis_socket_timeout_s: float = 2.0
    """The shards' Redis timeout (shorter than production so a pause is noticed)."""
    snapshot_every_events: int = 500
    """Small, so runs cross snapshots and journal trims."""
    seed: int = 0
    key_prefix: str = ""
    """Redis key prefix and Ray namespace; empty: a fresh one."""
    unsafe_acknowledge_before_journal: bool = False
    """The negative control: shards acknowledge before journaling (test only)."""


# --------------------------------------------------------------------------- history


@dataclasses.dataclass
class OpRecord:
    """One mutation as the client saw it."""

    client: int
    member_id: str
    request_id: str
    kind: str
    result: str
    """"ok", "failed" (an answer: the request was applied and failed), "unknown"
    (no answer: timeout, UNAVAILABLE) or "refused" (must not have been applied)."""
    response: object = None
    """The response message (ok) or the google.rpc.Status (failed); None if unseen."""
    code: str = ""


@dataclasses.dataclass
class FaultRecord:
    """One injected fault and how long the server took to take writes again."""

    kind: str
    detail: str
    recovery_s: float | None = None
    """From injection to every shard accepting a write again (None: never)."""
    held_s: float = 0.0
    """How long the fault was deliberately kept in place (Redis down or stopped,
    gateway being replaced) before it was healed; part of recovery_s."""


class History:
    """Everything the clients and the fault runner observed, thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.ops: list[OpRecord] = []
        self.reads: list[tuple[str, tuple[int, ...]]] = []
        """(member_id, Balance terms in BALANCE_FIELDS order) of every balance seen."""
        self.members: list[str] = []
        self.faults: list[FaultRecord] = []
        self.unexpected_codes: collections.Counter[str] = collections.Counter()
        self.failures: list[str] = []
        """Errors that stopped a client or the runner (the run is then not ok)."""

    def add_op(self, record: OpRecord) -> None:
        """Record one mutation and what the client learned about it."""
        with self._lock:
            self.ops.append(record)

    def add_read(self, member_id: str, balance: pb.Balance) -> None:
        """Record a balance the server showed (a read, or inside a response)."""
        terms = tuple(getattr(balance, name) for name in BALANCE_FIELDS)
        with self._lock:
            self.reads.append((member_id, terms))

    def add_member(self, member_id: str) -> None:
        """Record a member the run enrolls (before the enrollment is sent)."""
        with self._lock:
            self.members.append(member_id)

    def add_unexpected(self, code: grpc.StatusCode) -> None:
        """Count a failure code a fault should never produce."""
        with self._lock:
            self.unexpected_codes[code.name] += 1


# --------------------------------------------------------------------------- gateway


class Endpoint:
    """Where the gateway listens now; a restart bumps the generation."""

    def __init__(self, target: str) -> None:
        self._lock = threading.Lock()
        self.target = target
        self.generation = 0

    def move_to(self, target: str) -> None:
        """The gateway now listens on ``target``."""
        with self._lock:
            self.target = target
            self.generation += 1

    def current(self) -> tuple[str, int]:
        """The target and its generation."""
        with self._lock:
            return self.target, self.generation


class Connection:
    """A blocking stub that follows the Endpoint across gateway restarts."""

    def __init__(self, endpoint: Endpoint) -> None:
        self._endpoint = endpoint
        self._generation = -1
        self._channel: grpc.Channel | None = None
        self.stub: loyalty_pb2_grpc.LoyaltyServiceStub | None = None
        self.refresh()

    def refresh(self) -> None:
        """Reconnect if the gateway moved."""
        target, generation = self._endpoint.current()
        if generation == self._generation:
            return
        if self._channel is not None:
            self._channel.close()
        self._channel = grpc.insecure_channel(target)
        self.stub = loyalty_pb2_grpc.LoyaltyServiceStub(self._channel)
        self._generation = generation

    def close(self) -> None:
        """Close the channel."""
        if self._channel is not None:
            self._channel.close()
            self._channel = None


class Gateway:
    """A LoyaltyServer with freshly started shard actors (built from the chaos run's
    shard settings), its gRPC side on a background loop so blocking stubs can call it
    from this process."""

    def __init__(self, redis_url: str, key_prefix: str, template: ShardSettings, shards: int) -> None:
        self._redis_url = redis_url
        self._key_prefix = key_prefix
        self._template = template
        self._shards = shards
        self.server = None
        self._background = None

    @property
    def actors(self) -> list:
        """The shard actors, by shard index."""
        return self.server.actors

    @property
    def target(self) -> str:
        """host:port of the gRPC server."""
        return f"127.0.0.1:{self.server.port}"

    def start(self) -> Gateway:
        """Start the shards (each recovers from Redis) and then the gRPC server."""
        from loyalty.server.runtime.app import LoyaltyServer, ServerConfig
        from loyalty.server.runtime.background import BackgroundGateway
        from loyalty.server.gateway.router import start_shard_actors

        config = ServerConfig(
            host="127.0.0.1", port=0, shards=self._shards, redis_url=self._redis_url,
            key_prefix=self._key_prefix, namespace=self._key_prefix,
        )
        self.server = LoyaltyServer(config)
        # Fresh names per start: a restarted gateway never collides with actors Ray
        # is still tearing down (and fencing keeps such stragglers from writing).
        names = [f"{self._key_prefix}-{uuid.uuid4().hex[:8]}-shard-{index}" for index in range(self._shards)]
        self.server.actor_names = names
        self.server.actors = start_shard_actors(self._template, names, namespace=self._key_prefix)
        self._background = BackgroundGateway(self.server, thread_name="chaos-gateway")
        try:
            self._background.start(timeout_s=RECOVERY_DEADLINE_S)
        except BaseException:
            self.server.close_backends()
            raise
        return self

    def stop(self) -> None:
        """Drain and stop the gRPC server, then kill its shard actors."""
        if self._background is not None:
            self._background.stop(grace_s=2, timeout_s=RECOVERY_DEADLINE_S)
            self._background = None
        self.server.close_backends()


# --------------------------------------------------------------------------- workload


@dataclasses.dataclass
class _MemberState:
    """What one client knows about one of its members (from acknowledged answers)."""

    member_id: str
    ops: int = 0
    available: int = 0
    reservations: list[str] = dataclasses.field(default_factory=list)
    earns: list[tuple[str, dict[str, int]]] = dataclasses.field(default_factory=list)


_RPCS = {
    # kind: (stub method, Operation oneof field)
    "enroll": ("EnrollMember", "enroll_member"),
    "earn": ("Earn", "earn"),
    "redeem": ("Redeem", "redeem"),
    "reserve": ("Reserve", "reserve"),
    "capture": ("Capture", "capture"),
    "release": ("Release", "release"),
    "reverse": ("Reverse", "reverse"),
    "adjust": ("Adjust", "adjust"),
}

_MIX = (
    ("earn", 30), ("redeem", 12), ("reserve", 12), ("capture", 8), ("release", 6),
    ("reverse", 8), ("adjust", 8), ("read", 10),
)


def call_until_answered(call: Callable[[], object], *, deadline_s: float = RECOVERY_DEADLINE_S,
                        refresh: Callable[[], None] | None = None):
    """Repeat an idempotent call while its outcome is unknown, up to a deadline.
    Answers (including errors such as NOT_FOUND) are returned or raised at once."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            return call()
        except grpc.RpcError as error:
            if error.code() not in UNKNOWN_CODES or time.monotonic() > deadline:
                raise
        if refresh is not None:
            refresh()
        time.sleep(RETRY_INTERVAL_S)


class _WorkloadClient(threading.Thread):
    """One client: a stream of random operations on a few members of its own."""

    def __init__(self, number: int, run: ChaosRun) -> None:
        super().__init__(name=f"chaos-client-{number}", daemon=True)
        self._number = number
        self._run = run
        self._random = random.Random(run.settings.seed * 1_000 + number)
        self._members: list[_MemberState] = []
        self._member_count = 0

    def run(self) -> None:
        """Run operations until the run stops (pausing while it is paused)."""
        connection = Connection(self._run.endpoint)
        try:
            while not self._run.stopping.is_set():
                if not self._run.begin_operation():
                    continue
                try:
                    self._step(connection)
                finally:
                    self._run.end_operation()
        except BaseException as error:  # reported in the run's failures
            self._run.history.failures.append(f"client {self._number}: {error!r}")
        finally:
            connection.close()

    def _step(self, connection: Connection) -> None:
        while len(self._members) < ACTIVE_MEMBERS_PER_CLIENT:
            self._members.append(self._enroll(connection))
        state = self._random.choice(self._members)
        kind, request = self._operation(state)
        if kind == "read":
            self._read(connection, state)
        else:
            self._mutate(connection, state, kind, request)
        state.ops += 1
        if state.ops >= OPS_PER_MEMBER:
            self._members.remove(state)

    def _enroll(self, connection: Connection) -> _MemberState:
        member_id = f"{self._run.run_id}-c{self._number}-m{self._member_count}"
        self._member_count += 1
        self._run.history.add_member(member_id)
        self._run.enroll(connection, member_id, client=self._number)
        return _MemberState(member_id)

    def _operation(self, state: _MemberState) -> tuple[str, object]:
        rng = self._random
        kind = rng.choices([k for k, _ in _MIX], weights=[w for _, w in _MIX])[0]
        if kind in ("capture", "release") and not state.reservations:
            kind = "reserve"
        if kind == "reverse" and not state.earns:
            kind = "earn"
        member_id = state.member_id
        request_id = f"{member_id}-op{state.ops}"
        if kind == "earn":
            lines = [
                pb.PurchaseLine(sku=f"sku{n}", category="chaos", quantity=rng.randint(1, 3),
                                amount_minor=rng.randint(100, 4_000))
                for n in range(rng.randint(1, 3))
            ]
            return kind, pb.EarnRequest(member_id=member_id, request_id=request_id, purchase=pb.Purchase(
                channel="pos", store_id="chaos", currency="EUR", lines=lines))
        if kind == "redeem":
            points = rng.randint(1, state.available + 20)
            return kind, pb.RedeemRequest(member_id=member_id, request_id=request_id, points=points)
        if kind == "reserve":
            points = rng.randint(1, state.available // 2 + 10)
            return kind, pb.ReserveRequest(member_id=member_id, request_id=request_id, points=points,
                                           ttl_seconds=3_600)
        if kind == "capture":
            reservation_id = state.reservations.pop(rng.randrange(len(state.reservations)))
            points = rng.choice([0, 0, 1, 5])
            return kind, pb.CaptureRequest(member_id=member_id, request_id=request_id,
                                           reservation_id=reservation_id, points=points)
        if kind == "release":
            reservation_id = state.reservations.pop(rng.randrange(len(state.reservations)))
            return kind, pb.ReleaseRequest(member_id=member_id, request_id=request_id,
                                           reservation_id=reservation_id)
        if kind == "reverse":
            index = rng.randrange(len(state.earns))
            original, remaining = state.earns[index]
            skus = [sku for sku, quantity in remaining.items() if quantity > 0]
            if not skus or rng.random() < 0.3:
                state.earns.pop(index)  # no lines: the rest of the purchase
                return kind, pb.ReverseRequest(member_id=member_id, request_id=request_id,
                                               original_request_id=original)
            sku = rng.choice(skus)
            remaining[sku] -= 1
            return kind, pb.ReverseRequest(member_id=member_id, request_id=request_id,
                                           original_request_id=original,
                                           lines=[pb.ReturnLine(sku=sku, quantity=1)])
        if kind == "adjust":
            points = rng.choice([rng.randint(1, 50), -rng.randint(1, 20)])
            return kind, pb.AdjustRequest(member_id=member_id, request_id=request_id, points=points,
                                          reason="chaos")
        return "read", pb.GetBalanceRequest(member_id=member_id)

    def _read(self, connection: Connection, state: _MemberState) -> None:
        try:
            balance = connection.stub.GetBalance(pb.GetBalanceRequest(member_id=state.member_id),
                                                 timeout=CALL_TIMEOUT_S)
        except grpc.RpcError as error:
            self._after_failure(connection, error)
            return
        self._run.history.add_read(state.member_id, balance)
        state.available = balance.available

    def _mutate(self, connection: Connection, state: _MemberState, kind: str, request) -> None:
        method = getattr(connection.stub, _RPCS[kind][0])
        record = OpRecord(self._number, state.member_id, request.request_id, kind, "unknown")
        try:
            response = method(request, timeout=CALL_TIMEOUT_S)
        except grpc.RpcError as error:
            code = error.code()
            record.code = code.name
            if code in UNKNOWN_CODES:
                self._run.history.add_op(record)
                self._after_failure(connection, error)
                return
            if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                record.result = "refused"  # refused before it reached the member
            elif code == grpc.StatusCode.INVALID_ARGUMENT:
                raise AssertionError(f"the workload sent an invalid {kind}: {error.details()}") from error
            else:
                record.result = "failed"
                record.response = rpc_status.from_call(error)
            self._run.history.add_op(record)
            return
        record.result, record.response, record.code = "ok", response, "OK"
        self._run.history.add_op(record)
        if response.HasField("balance"):
            self._run.history.add_read(state.member_id, response.balance)
            state.available = response.balance.available
        if kind == "reserve":
            state.reservations.append(response.reservation_id)
        elif kind == "earn":
            state.earns.append((request.request_id, {line.sku: line.quantity for line in request.purchase.lines}))

    def _after_failure(self, connection: Connection, error: grpc.RpcError) -> None:
        if error.code() in UNEXPECTED_CODES:
            self._run.history.add_unexpected(error.code())
        self._run.stopping.wait(UNKNOWN_BACKOFF_S)
        connection.refresh()


# --------------------------------------------------------------------------- the run


class ChaosRun:
    """A workload with rotating faults against a gateway on the caller's Redis.

    The caller owns Redis (an EmbeddedRedis, so it can be killed and restarted) and
    Ray (already initialised). Call :meth:`execute` from a thread that outlives the
    run (normally the main thread): Redis restarts are tied to the calling thread.
    """

    def __init__(self, redis_server, settings: ChaosSettings, *, log: Callable[[str], None] = print) -> None:
        unknown = set(settings.faults) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown faults {sorted(unknown)}; known: {', '.join(FAULTS)}")
        self.redis = redis_server
        self.settings = settings
        self.run_id = settings.key_prefix or f"chaos-{uuid.uuid4().hex[:8]}"
        self.key_prefix = self.run_id
        self.log = log
        self.history = History()
        self.template = ShardSettings(
            shard_index=0,
            redis_url=redis_server.url,
            key_prefix=self.key_prefix,
            # Under the unsafe switch memory runs ahead of the journal, so every
            # snapshot would be refused (and logged): do not attempt any.
            snapshot_every_events=(2**62 if settings.unsafe_acknowledge_before_journal
                                   else settings.snapshot_every_events),
            redis_socket_timeout_s=settings.redis_socket_timeout_s,
            unsafe_acknowledge_before_journal=settings.unsafe_acknowledge_before_journal,
        )
        self.gateway: Gateway | None = None
        self.endpoint: Endpoint | None = None
        self.stopping = threading.Event()
        self.running = threading.Event()
        self._in_flight = 0
        self._in_flight_changed = threading.Condition()
        self._probe_count = 0
        self._stale_count = 0
        self._healed_at = 0.0
        self._workload_s = 0.0

    # ------------------------------------------------------------- helpers

    def begin_operation(self) -> bool:
        """Called by a client before an operation: False (after a short bounded
        wait) while the workload is paused, else the operation counts as in flight."""
        with self._in_flight_changed:
            if not self._in_flight_changed.wait_for(self.running.is_set, timeout=0.5):
                return False
            self._in_flight += 1
            return True

    def end_operation(self) -> None:
        """Called by a client after an operation begun with begin_operation."""
        with self._in_flight_changed:
            self._in_flight -= 1
            self._in_flight_changed.notify_all()

    def _resume_workload(self) -> None:
        with self._in_flight_changed:
            self.running.set()
            self._in_flight_changed.notify_all()

    def _pause_workload(self) -> None:
        """Stop clients from starting operations and wait for those in flight."""
        with self._in_flight_changed:
            self.running.clear()
            drained = self._in_flight_changed.wait_for(
                lambda: self._in_flight == 0, timeout=RECOVERY_DEADLINE_S
            )
        if not drained:
            raise RuntimeError("client operations did not finish while pausing the workload")

    def enroll(self, connection: Connection, member_id: str, *, client: int) -> None:
        """Enroll a member, retrying with the same request_id until it is answered."""
        request = pb.EnrollMemberRequest(member_id=member_id, request_id="enroll")
        response = call_until_answered(
            lambda: connection.stub.EnrollMember(request, timeout=CALL_TIMEOUT_S),
            refresh=connection.refresh,
        )
        self.history.add_op(OpRecord(client, member_id, "enroll", "enroll", "ok", response, "OK"))

    def _member_on_shard(self, stem: str, shard: int) -> str:
        for attempt in range(100_000):
            member_id = f"{stem}-{attempt}"
            if shard_of(member_id, self.settings.shards) == shard:
                return member_id
        raise RuntimeError(f"no member id routes to shard {shard}")

    def _probe(self, connection: Connection) -> float:
        """Wait (bounded) until every shard accepts a write again: enroll a fresh
        member on each. Returns when the last shard answered (monotonic time)."""
        self._probe_count += 1
        done_at = time.monotonic()
        for shard in range(self.settings.shards):
            member_id = self._member_on_shard(f"{self.run_id}-probe{self._probe_count}", shard)
            self.history.add_member(member_id)
            self.enroll(connection, member_id, client=-1)
            done_at = time.monotonic()
        return done_at

    # ------------------------------------------------------------- faults

    def _fault_shard_kill(self, number: int) -> str:
        shard = number % self.settings.shards
        import ray

        actor = self.gateway.actors[shard]
        pid = ray.get(actor.pid.remote(), timeout=RECOVERY_DEADLINE_S)
        os.kill(pid, signal.SIGKILL)
        return f"shard {shard} pid {pid} killed with SIGKILL"

    def _fault_redis_kill(self, number: int) -> str:
        pid = self.redis.pid
        self.redis.kill()
        self.stopping.wait(self.settings.redis_down_s)
        self.redis.restart()
        self._healed_at = time.monotonic()
        return f"redis pid {pid} killed with SIGKILL, restarted from its AOF as pid {self.redis.pid}"

    def _fault_redis_crash(self, number: int) -> str:
        if not getattr(self.redis, "supervised", False):
            raise RuntimeError("redis_crash needs a supervised Redis (EmbeddedRedis(supervised=True))")
        restarts, pid = self.redis.restarts, self.redis.pid
        os.kill(pid, signal.SIGKILL)
        if not self.redis.wait_until_restarted(restarts, timeout_s=RECOVERY_DEADLINE_S):
            raise RuntimeError(f"the supervisor did not restart Redis within {RECOVERY_DEADLINE_S:g} s")
        self._healed_at = time.monotonic()
        return f"redis pid {pid} killed with SIGKILL; the supervisor restarted it as pid {self.redis.pid}"

    def _fault_redis_pause(self, number: int) -> str:
        pid = self.redis.pid
        os.kill(pid, signal.SIGSTOP)
        try:
            self.stopping.wait(self.settings.redis_pause_s)
        finally:
            os.kill(pid, signal.SIGCONT)
            self._healed_at = time.monotonic()
        return f"redis pid {pid} stopped (SIGSTOP) for {self.settings.redis_pause_s:g}s, then SIGCONT"

    def _fault_gateway_restart(self, number: int) -> str:
        old_target = self.gateway.target
        self.gateway.stop()
        self.gateway = Gateway(self.redis.url, self.key_prefix, self.template, self.settings.shards).start()
        self.endpoint.move_to(self.gateway.target)
        self._healed_at = time.monotonic()
        return f"gateway {old_target} stopped, new gateway on {self.gateway.target}"

    def _fault_stale_incarnation(self, number: int) -> str:
        """A second actor for shard 0 takes a newer epoch; the old incarnation's next
        append must be refused (FencedError) and nothing it wrote may land. Then the
        old one, serving the gateway again, re-recovers and fences the newcomer."""
        import ray

        self._stale_count += 1
        tag = f"{self.run_id}-stale{self._stale_count}"
        shard = 0
        old_actor = self.gateway.actors[shard]
        connection = Connection(self.endpoint)
        try:
            member_id = self._member_on_shard(tag, shard)
            self.history.add_member(member_id)
            self.enroll(connection, member_id, client=-2)
            self._pause_workload()
            settings = msgspec.structs.replace(self.template, shard_index=shard)
            newcomer = make_shard_actor(settings, name=f"{tag}-newcomer", namespace=self.key_prefix)
            try:
                epoch = ray.get(newcomer.describe.remote(), timeout=RECOVERY_DEADLINE_S)["epoch"]
                # The newcomer writes: acknowledged, so it must survive.
                self._direct(newcomer, member_id, f"{tag}-newcomer-write", 5, expect_fenced=False)
                # The old incarnation tries to append: refused, and must not land.
                self._direct(old_actor, member_id, f"{tag}-old-write", 7, expect_fenced=True)
                if self._journal_mentions(shard, f"{tag}-old-write"):
                    self.history.failures.append(f"{tag}: the fenced append reached the journal")
                self._resume_workload()
                # The gateway's next write to shard 0 makes the old actor recover
                # (new epoch); from then on the newcomer is the stale one.
                self._probe(connection)
                self._direct(newcomer, member_id, f"{tag}-newcomer-late-write", 9, expect_fenced=True)
            finally:
                ray.kill(newcomer, no_restart=True)
        finally:
            self._resume_workload()
            connection.close()
        return (f"shard {shard}: second incarnation took epoch {epoch}; the old one's append was "
                f"fenced, then it re-recovered and fenced the second")

    def _direct(self, actor, member_id: str, request_id: str, points: int, *, expect_fenced: bool) -> None:
        """Send one Adjust straight to a shard actor, bypassing the gateway, and
        record it (acknowledged, or refused when it must be fenced)."""
        import ray

        payload = codec.encode_commands([c.Adjust(member_id, request_id, points=points, reason="chaos")])
        try:
            (outcome,) = codec.decode_outcomes(ray.get(actor.apply.remote(payload), timeout=RECOVERY_DEADLINE_S))
        except ray.exceptions.RayTaskError as error:
            if not (expect_fenced and isinstance(error, FencedError)):
                raise
            self.history.add_op(OpRecord(-2, member_id, request_id, "adjust", "refused", None, "FENCED"))
            return
        if expect_fenced:
            self.history.failures.append(f"{request_id}: a stale incarnation's append was not fenced")
            self.history.add_op(OpRecord(-2, member_id, request_id, "adjust", "unknown"))
            return
        result = "ok" if outcome.status == Status.OK else "failed"
        self.history.add_op(OpRecord(-2, member_id, request_id, "adjust", result, None, Status(outcome.status).name))

    def _journal_mentions(self, shard: int, text: str) -> bool:
        client = redis.Redis.from_url(self.redis.url)
        try:
            entries = client.xrange(f"{{{self.key_prefix}:shard:{shard}}}:journal")
        finally:
            client.close()
        needle = text.encode()
        return any(needle in fields.get(b"d", b"") for _entry_id, fields in entries)

    # ------------------------------------------------------------- running

    def execute(self) -> ChaosReport:
        """Run the workload and the faults, heal, check; return the report."""
        settings = self.settings
        started = time.monotonic()
        self.gateway = Gateway(self.redis.url, self.key_prefix, self.template, settings.shards).start()
        self.endpoint = Endpoint(self.gateway.target)
        clients = [_WorkloadClient(number, self) for number in range(settings.clients)]
        runner = Connection(self.endpoint)
        try:
            self._resume_workload()
            for client in clients:
                client.start()
            self.stopping.wait(settings.warmup_s)
            number = 0
            while not self._faults_done(number, started):
                kind = settings.faults[number % len(settings.faults)]
                self._inject(kind, number, runner)
                number += 1
                self.stopping.wait(settings.quiet_s)
            self.stopping.set()
            self._resume_workload()
            for client in clients:
                client.join(RECOVERY_DEADLINE_S)
                if client.is_alive():
                    self.history.failures.append(f"{client.name} did not stop")
            self._probe(runner)
            self._workload_s = time.monotonic() - started
            self.log(f"chaos: workload stopped after {self._workload_s:.1f}s; checking")
            report = check(self, runner)
            report.workload_s = self._workload_s
        finally:
            self.stopping.set()
            self._resume_workload()
            runner.close()
            self.gateway.stop()
        report.duration_s = time.monotonic() - started
        return report

    def _faults_done(self, number: int, started: float) -> bool:
        if self.settings.duration_s > 0:
            return time.monotonic() - started >= self.settings.duration_s
        return number >= self.settings.cycles * len(self.settings.faults)

    def _inject(self, kind: str, number: int, runner: Connection) -> None:
        injected = time.monotonic()
        self._healed_at = injected
        record = FaultRecord(kind, "")
        self.history.faults.append(record)
        try:
            record.detail = getattr(self, f"_fault_{kind}")(number)
            record.held_s = self._healed_at - injected
            runner.refresh()
            recovered = self._probe(runner)
            record.recovery_s = recovered - injected
        except Exception as error:  # the run continues; the report says what failed
            self.history.failures.append(f"fault {kind}: {error!r}")
            record.detail = record.detail or f"failed: {error!r}"
        self.log(f"chaos: {kind}: {record.detail}; recovered in "
                 + (f"{record.recovery_s:.2f}s" if record.recovery_s is not None else "(never)"))


# --------------------------------------------------------------------------- checker


@dataclasses.dataclass
class ChaosReport:
    """What a run did and what the checker found. ``ok`` iff nothing was wrong."""

    settings: ChaosSettings
    faults: list[FaultRecord]
    members: int = 0
    acknowledged_ok: int = 0
    acknowledged_failed: int = 0
    reads: int = 0
    unknown: int = 0
    unknown_applied: int = 0
    unknown_not_applied: int = 0
    unknown_unresolved: int = 0
    refused: int = 0
    lost: int = 0
    """Acknowledged operations the server no longer knows (or no longer lists)."""
    applied_twice: int = 0
    """Request ids listed more than once in a member's history."""
    changed_outcomes: int = 0
    """Acknowledged operations whose stored outcome differs from the answer given."""
    refused_but_applied: int = 0
    phantom: int = 0
    """History entries no applied operation accounts for."""
    negative_reads: int = 0
    conservation_violations: int = 0
    history_sum_mismatches: int = 0
    replay_mismatches: int = 0
    """Members whose balance rebuilt from the journals differs from the live one."""
    totals: dict[str, int] = dataclasses.field(default_factory=dict)
    unexpected_codes: dict[str, int] = dataclasses.field(default_factory=dict)
    refused_codes: dict[str, int] = dataclasses.field(default_factory=dict)
    failures: list[str] = dataclasses.field(default_factory=list)
    examples: list[str] = dataclasses.field(default_factory=list)
    duration_s: float = 0.0
    """The whole run: start, workload with faults, check."""
    workload_s: float = 0.0
    """The workload with faults (until the clients stopped)."""

    @property
    def violations(self) -> int:
        """Every discrepancy found, summed (0 for a correct run)."""
        return (self.lost + self.applied_twice + self.changed_outcomes + self.refused_but_applied
                + self.phantom + self.negative_reads + self.conservation_violations
                + self.history_sum_mismatches + self.replay_mismatches + self.unknown_unresolved)

    @property
    def unrecovered_faults(self) -> int:
        """Faults after which the server never took writes again."""
        return sum(1 for fault in self.faults if fault.recovery_s is None)

    @property
    def ok(self) -> bool:
        """Nothing lost, nothing applied twice, every other check passed too, no
        INTERNAL or UNKNOWN answer seen, and the server recovered from every fault."""
        return (self.violations == 0 and not self.failures and not self.unexpected_codes
                and self.unrecovered_faults == 0)

    def note(self, text: str) -> None:
        """Keep a few examples of discrepancies for the report."""
        if len(self.examples) < 20:
            self.examples.append(text)

    def format(self) -> str:
        """The human-readable report."""
        by_type = collections.Counter(fault.kind for fault in self.faults)
        lines = [
            "loyalty chaos report",
            f"  duration                 workload {self.workload_s:.0f}s (run with checks {self.duration_s:.0f}s), "
            f"{self.settings.shards} shards, "
            f"{self.settings.clients} clients"
            + (", UNSAFE: acknowledge before journal (negative control)"
               if self.settings.unsafe_acknowledge_before_journal else ""),
            f"  faults injected          {len(self.faults)}: "
            + ", ".join(f"{kind} {by_type[kind]}" for kind in FAULTS if by_type[kind]),
            f"  members                  {self.members}",
            f"  operations acknowledged  {self.acknowledged_ok + self.acknowledged_failed} "
            f"({self.acknowledged_ok} succeeded, {self.acknowledged_failed} failed with a stored error)",
            f"  balance reads checked    {self.reads}",
            f"  lost                     {self.lost}",
            f"  applied twice            {self.applied_twice}",
            f"  unknown outcomes         {self.unknown}: {self.unknown_applied} applied, "
            f"{self.unknown_not_applied} not applied, {self.unknown_unresolved} unresolved",
            f"  refused (not applied)    {self.refused} {dict(self.refused_codes) or ''}, "
            f"of which applied anyway: {self.refused_but_applied}",
            f"  changed outcomes         {self.changed_outcomes}",
            f"  phantom history entries  {self.phantom}",
            f"  negative available reads {self.negative_reads}",
            f"  conservation violations  {self.conservation_violations} (members and total)",
            f"  history sum mismatches   {self.history_sum_mismatches}",
            f"  journal replay (fresh process) vs live: {self.replay_mismatches} members differ",
        ]
        if self.totals:
            t = self.totals
            lines.append(
                f"  total identity           earned {t['lifetime_earned']} + adjusted_in {t['adjusted_in']}"
                f" + debt {t['debt']} = available {t['available']} + pending {t['pending']}"
                f" + reserved {t['reserved']} + redeemed {t['redeemed']} + expired {t['expired']}"
                f" + reversed {t['reversed']} + adjusted_out {t['adjusted_out']}"
            )
        if self.unexpected_codes:
            lines.append(f"  unexpected error codes   {dict(self.unexpected_codes)}")
        lines.append("  recovery per fault: injection -> first write accepted by every shard"
                     " (of which the fault was held)")
        for fault in self.faults:
            took = f"{fault.recovery_s:6.2f}s" if fault.recovery_s is not None else "  never"
            held = f"(held {fault.held_s:4.2f}s)" if fault.held_s >= 0.005 else " " * 12
            lines.append(f"    {fault.kind:<18} {took} {held}  {fault.detail}")
        recovered = [f.recovery_s for f in self.faults if f.recovery_s is not None]
        if recovered:
            lines.append(f"  recovery median {statistics.median(recovered):.2f}s, max {max(recovered):.2f}s")
        for failure in self.failures:
            lines.append(f"  FAILURE: {failure}")
        for example in self.examples:
            lines.append(f"  e.g. {example}")
        lines.append(f"  verdict                  {'OK' if self.ok else 'FAILED'}")
        return "\n".join(lines)


def _identity_holds(terms: dict[str, int]) -> bool:
    return terms["lifetime_earned"] + terms["adjusted_in"] + terms["debt"] == (
        terms["available"] + terms["pending"] + terms["reserved"] + terms["redeemed"]
        + terms["expired"] + terms["reversed"] + terms["adjusted_out"]
    )


def _parallel(function, items) -> list:
    with concurrent.futures.ThreadPoolExecutor(CHECKER_THREADS) as pool:
        return list(pool.map(function, items))


def check(run: ChaosRun, connection: Connection) -> ChaosReport:
    """Ask the healed server about everything the run saw; replay the journals in a
    fresh process; count every discrepancy."""
    history = run.history
    report = ChaosReport(run.settings, history.faults, failures=list(history.failures),
                         unexpected_codes=dict(history.unexpected_codes))
    stub = connection.stub
    members = sorted(set(history.members))
    report.members = len(members)

    def get_operation(op: OpRecord):
        request = pb.GetOperationRequest(member_id=op.member_id, request_id=op.request_id)
        try:
            return call_until_answered(lambda: stub.GetOperation(request, timeout=CALL_TIMEOUT_S))
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return None
            if error.code() in UNKNOWN_CODES:
                return _UNRESOLVED  # no answer even after RECOVERY_DEADLINE_S
            raise

    operations = _parallel(get_operation, history.ops)
    applied_ok: dict[tuple[str, str], OpRecord] = {}
    not_applied: set[tuple[str, str]] = set()
    for op, stored in zip(history.ops, operations, strict=True):
        key = (op.member_id, op.request_id)
        if stored is _UNRESOLVED:
            report.unknown_unresolved += 1
            report.note(f"unresolved: GetOperation of {op.kind} {op.request_id} never answered")
            continue
        stored_ok = stored is not None and stored.status.code == 0
        if op.result in ("ok", "failed"):
            if op.result == "ok":
                report.acknowledged_ok += 1
            else:
                report.acknowledged_failed += 1
            if stored is None:
                report.lost += 1
                label = op.request_id if op.request_id.startswith(op.member_id) else (
                    f"{op.member_id}/{op.request_id}")
                report.note(f"lost: {op.kind} {label} was acknowledged ({op.code}), "
                            "GetOperation says OPERATION_NOT_FOUND")
                continue
            if not _same_outcome(op, stored):
                report.changed_outcomes += 1
                report.note(f"changed: {op.kind} {op.request_id} answered {op.code}, stored "
                            f"status {stored.status.code}")
        elif op.result == "unknown":
            report.unknown += 1
            if stored is None:
                report.unknown_not_applied += 1
            else:
                report.unknown_applied += 1
        else:
            report.refused += 1
            report.refused_codes[op.code] = report.refused_codes.get(op.code, 0) + 1
            if stored is not None:
                report.refused_but_applied += 1
                report.note(f"refused but applied: {op.kind} {op.request_id} ({op.code})")
        if stored_ok:
            applied_ok[key] = op
        elif stored is None:
            not_applied.add(key)

    def history_of(member_id: str) -> list[pb.Transaction]:
        entries: list[pb.Transaction] = []
        token = ""
        for _page in range(100):
            request = pb.ListTransactionsRequest(member_id=member_id, page_size=500, page_token=token)
            try:
                page = call_until_answered(lambda: stub.ListTransactions(request, timeout=CALL_TIMEOUT_S))
            except grpc.RpcError as error:
                if error.code() == grpc.StatusCode.NOT_FOUND:  # the member itself was lost
                    return entries
                raise
            entries.extend(page.transactions)
            token = page.next_page_token
            if not token:
                break
        return entries

    def balance_of_member(member_id: str) -> pb.Balance | None:
        request = pb.GetBalanceRequest(member_id=member_id)
        try:
            return call_until_answered(lambda: stub.GetBalance(request, timeout=CALL_TIMEOUT_S))
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:  # the member itself was lost
                return None
            raise

    histories = dict(zip(members, _parallel(history_of, members), strict=True))
    live = {
        member_id: {name: getattr(balance, name) for name in BALANCE_FIELDS}
        for member_id, balance in zip(members, _parallel(balance_of_member, members), strict=True)
        if balance is not None
    }

    listed: collections.Counter[tuple[str, str]] = collections.Counter()
    for member_id, entries in histories.items():
        for entry in entries:
            if entry.request_id:
                listed[(member_id, entry.request_id)] += 1
        if member_id in live and len(entries) < 100:  # the whole history is kept: it must add up
            terms = live[member_id]
            if sum(entry.points for entry in entries) != (
                terms["available"] + terms["pending"] + terms["reserved"] - terms["debt"]
            ):
                report.history_sum_mismatches += 1
                report.note(f"history of {member_id} does not add up to its balance")
    for key, op in applied_ok.items():
        count = listed.get(key, 0)
        if count == 0 and op.result == "ok":
            # Known to GetOperation but missing from the history: still lost.
            report.lost += 1
            report.note(f"lost: {op.kind} {op.request_id} not in ListTransactions")
        elif count > 1:
            report.applied_twice += 1
            report.note(f"applied twice: {op.kind} {op.request_id} listed {count} times")
    for key, count in listed.items():
        if key not in applied_ok:
            report.phantom += 1
            report.note(f"phantom: {key[1]} of {key[0]} is listed but was not applied")

    report.reads = len(history.reads)
    for member_id, terms in history.reads:
        values = dict(zip(BALANCE_FIELDS, terms, strict=True))
        if values["available"] < 0:
            report.negative_reads += 1
            report.note(f"negative available {values['available']} read for {member_id}")
        if not _identity_holds(values):
            report.conservation_violations += 1
            report.note(f"conservation broken in a read of {member_id}: {values}")

    totals = dict.fromkeys(BALANCE_FIELDS, 0)
    for member_id, terms in live.items():
        if terms["available"] < 0:
            report.negative_reads += 1
        if not _identity_holds(terms):
            report.conservation_violations += 1
            report.note(f"conservation broken for {member_id}: {terms}")
        for name in BALANCE_FIELDS:
            totals[name] += terms[name]
    report.totals = totals
    if not _identity_holds(totals):
        report.conservation_violations += 1
        report.note(f"conservation broken in total: {totals}")

    replayed = replay_in_fresh_process(run.redis.url, run.key_prefix, run.settings.shards)
    for member_id in sorted(set(replayed) | set(live)):
        if replayed.get(member_id) != live.get(member_id):
            report.replay_mismatches += 1
            report.note(f"replay of {member_id}: {replayed.get(member_id)} != live {live.get(member_id)}")
    return report


_UNRESOLVED = object()
"""What the checker's GetOperation returns when the server never answered it."""


def _same_outcome(op: OpRecord, stored: pb.Operation) -> bool:
    """Whether GetOperation's stored outcome is the answer the client was given."""
    if op.result == "failed":
        given = op.response
        if given is None:
            return stored.status.code != 0
        return (stored.status.code, stored.status.message) == (given.code, given.message) and list(
            stored.status.details) == list(given.details)
    if stored.status.code != 0:
        return False
    if op.response is None:
        return True
    return getattr(stored, _RPCS[op.kind][1]) == op.response


# --------------------------------------------------------------------------- replay


def replay_balances(redis_url: str, key_prefix: str, shard_count: int,
                    program: Program = Program()) -> dict[str, dict[str, int]]:
    """Every member's balance rebuilt from the shards' snapshots and journals alone."""
    client = redis.Redis.from_url(redis_url)
    balances: dict[str, dict[str, int]] = {}
    try:
        for shard in range(shard_count):
            journal = ShardJournal(client, shard, key_prefix=key_prefix)
            core = ShardCore(CompiledProgram(program))
            snapshot = journal.load_snapshot()
            if snapshot is not None:
                core.load_snapshot(snapshot[1])
            for _seq, payload in journal.read_after(core.seq):
                core.replay(codec.decode_record(payload))
            now_ms = max(core.now_ms, time.time_ns() // 1_000_000)
            for member_id, member in core.ledger.members.items():
                view = balance_of(member, now_ms)
                balances[member_id] = {name: getattr(view, name) for name in BALANCE_FIELDS}
    finally:
        client.close()
    return balances


def replay_in_fresh_process(redis_url: str, key_prefix: str, shard_count: int) -> dict[str, dict[str, int]]:
    """:func:`replay_balances` in a new Python process, so nothing in this one (a
    cached state, an imported module's globals) can leak into the answer."""
    completed = subprocess.run(
        [sys.executable, "-m", "loyalty.server.chaos.run", "replay", "--redis-url", redis_url,
         "--key-prefix", key_prefix, "--shards", str(shard_count)],
        capture_output=True, text=True, timeout=RECOVERY_DEADLINE_S, check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"journal replay failed ({completed.returncode}):\n{completed.stderr[-2000:]}")
    return json.loads(completed.stdout)


# --------------------------------------------------------------------------- CLI


def run_standalone(settings: ChaosSettings) -> ChaosReport:
    """``loyalty chaos``: an embedded Redis in a temporary directory, a local Ray, the
    run, and everything stopped again."""
    import logging
    import tempfile

    import ray

    from loyalty.server.runtime.app import use_loopback_for_local_ray
    from loyalty.server.runtime.embedded_redis import EmbeddedRedis

    with tempfile.TemporaryDirectory(prefix="loyalty-chaos-") as scratch:
        server = EmbeddedRedis(pathlib.Path(scratch), appendfsync="always", supervised=True)
        server.start()
        try:
            use_loopback_for_local_ray()
            ray.init(include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
            try:
                return ChaosRun(server, settings).execute()
            finally:
                ray.shutdown()
        finally:
            server.stop()


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loyalty.server.chaos.run")
    commands = parser.add_subparsers(dest="command", required=True)
    replay = commands.add_parser("replay", help="print every member's balance rebuilt from the journals")
    replay.add_argument("--redis-url", required=True)
    replay.add_argument("--key-prefix", required=True)
    replay.add_argument("--shards", type=int, required=True)
    options = parser.parse_args(argv)
    balances = replay_balances(options.redis_url, options.key_prefix, options.shards)
    json.dump(balances, sys.stdout, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
