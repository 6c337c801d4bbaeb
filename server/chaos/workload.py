"""The chaos workload: clients running a mixed stream of operations (earn, redeem,
reserve, capture, release, reverse, adjust, balance reads) with unique request_ids on
members of their own, and the history of everything they saw.

The history is what the checker later holds the healed server to: every mutation
with what its client learned about it, and every balance the server showed.
"""

from __future__ import annotations

import collections
import dataclasses
import random
import threading
import time
from collections.abc import Callable

import grpc
from grpc_status import rpc_status

from loyalty.actors.routing import shard_of
from loyalty.v1 import loyalty_pb2 as pb
from loyalty.v1 import loyalty_pb2_grpc

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
# checker's reads) and on every wait for a fault to heal: a server that has not
# recovered by then fails the run.
RECOVERY_DEADLINE_S = 120.0

# Pause between attempts of those loops.
RETRY_INTERVAL_S = 0.1

RPCS = {
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
"""Every mutation kind, with its LoyaltyService method and the field of
GetOperation's answer that holds its stored response."""

_MIX = (
    ("earn", 30), ("redeem", 12), ("reserve", 12), ("capture", 8), ("release", 6),
    ("reverse", 8), ("adjust", 8), ("read", 10),
)


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


class History:
    """Everything the clients and the fault runner observed, thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.ops: list[OpRecord] = []
        self.reads: list[tuple[str, tuple[int, ...]]] = []
        """(member_id, Balance terms in BALANCE_FIELDS order) of every balance seen."""
        self.members: list[str] = []
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


# --------------------------------------------------------------------------- connections


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


# --------------------------------------------------------------------------- the workload


class Workload:
    """The clients of one run, their history, and the switch that pauses them.

    Pausing lets a fault act on a quiet server (no operation in flight) and resuming
    lets the clients go on; stopping ends the clients for the checker.
    """

    def __init__(self, *, run_id: str, shards: int, clients: int, seed: int, endpoint: Endpoint) -> None:
        self.run_id = run_id
        """Prefix of every member id the run enrolls."""
        self.shards = shards
        self.seed = seed
        self.endpoint = endpoint
        self.history = History()
        self.stopping = threading.Event()
        """Set when the run ends; every deliberate wait of the run is cut short by it."""
        self._running = threading.Event()
        self._in_flight = 0
        self._in_flight_changed = threading.Condition()
        self._probe_count = 0
        self._clients = [_WorkloadClient(number, self) for number in range(clients)]

    def start(self) -> None:
        """Start every client."""
        self.resume()
        for client in self._clients:
            client.start()

    def stop(self) -> None:
        """Tell every client to stop (a paused one too); see :meth:`join`."""
        self.stopping.set()
        self.resume()

    def join(self) -> None:
        """Wait (bounded) for the stopped clients; one that does not stop fails the run."""
        for client in self._clients:
            client.join(RECOVERY_DEADLINE_S)
            if client.is_alive():
                self.history.failures.append(f"{client.name} did not stop")

    def begin_operation(self) -> bool:
        """Called by a client before an operation: False (after a short bounded
        wait) while the workload is paused, else the operation counts as in flight."""
        with self._in_flight_changed:
            if not self._in_flight_changed.wait_for(self._running.is_set, timeout=0.5):
                return False
            self._in_flight += 1
            return True

    def end_operation(self) -> None:
        """Called by a client after an operation begun with begin_operation."""
        with self._in_flight_changed:
            self._in_flight -= 1
            self._in_flight_changed.notify_all()

    def resume(self) -> None:
        """Let clients start operations again."""
        with self._in_flight_changed:
            self._running.set()
            self._in_flight_changed.notify_all()

    def pause(self) -> None:
        """Stop clients from starting operations and wait for those in flight."""
        with self._in_flight_changed:
            self._running.clear()
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

    def member_on_shard(self, stem: str, shard: int) -> str:
        """A member id starting with ``stem`` that routes to ``shard``."""
        for attempt in range(100_000):
            member_id = f"{stem}-{attempt}"
            if shard_of(member_id, self.shards) == shard:
                return member_id
        raise RuntimeError(f"no member id routes to shard {shard}")

    def probe(self, connection: Connection) -> float:
        """Wait (bounded) until every shard accepts a write again: enroll a fresh
        member on each. Returns when the last shard answered (monotonic time)."""
        self._probe_count += 1
        done_at = time.monotonic()
        for shard in range(self.shards):
            member_id = self.member_on_shard(f"{self.run_id}-probe{self._probe_count}", shard)
            self.history.add_member(member_id)
            self.enroll(connection, member_id, client=-1)
            done_at = time.monotonic()
        return done_at


@dataclasses.dataclass
class _MemberState:
    """What one client knows about one of its members (from acknowledged answers)."""

    member_id: str
    ops: int = 0
    available: int = 0
    reservations: list[str] = dataclasses.field(default_factory=list)
    earns: list[tuple[str, dict[str, int]]] = dataclasses.field(default_factory=list)


class _WorkloadClient(threading.Thread):
    """One client: a stream of random operations on a few members of its own."""

    def __init__(self, number: int, workload: Workload) -> None:
        super().__init__(name=f"chaos-client-{number}", daemon=True)
        self._number = number
        self._workload = workload
        self._history = workload.history
        self._random = random.Random(workload.seed * 1_000 + number)
        self._members: list[_MemberState] = []
        self._member_count = 0

    def run(self) -> None:
        """Run operations until the workload stops (pausing while it is paused)."""
        connection = Connection(self._workload.endpoint)
        try:
            while not self._workload.stopping.is_set():
                if not self._workload.begin_operation():
                    continue
                try:
                    self._step(connection)
                finally:
                    self._workload.end_operation()
        except BaseException as error:  # reported in the run's failures
            self._history.failures.append(f"client {self._number}: {error!r}")
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
        member_id = f"{self._workload.run_id}-c{self._number}-m{self._member_count}"
        self._member_count += 1
        self._history.add_member(member_id)
        self._workload.enroll(connection, member_id, client=self._number)
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
        self._history.add_read(state.member_id, balance)
        state.available = balance.available

    def _mutate(self, connection: Connection, state: _MemberState, kind: str, request) -> None:
        method = getattr(connection.stub, RPCS[kind][0])
        record = OpRecord(self._number, state.member_id, request.request_id, kind, "unknown")
        try:
            response = method(request, timeout=CALL_TIMEOUT_S)
        except grpc.RpcError as error:
            code = error.code()
            record.code = code.name
            if code in UNKNOWN_CODES:
                self._history.add_op(record)
                self._after_failure(connection, error)
                return
            if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                record.result = "refused"  # refused before it reached the member
            elif code == grpc.StatusCode.INVALID_ARGUMENT:
                raise AssertionError(f"the workload sent an invalid {kind}: {error.details()}") from error
            else:
                record.result = "failed"
                record.response = rpc_status.from_call(error)
            self._history.add_op(record)
            return
        record.result, record.response, record.code = "ok", response, "OK"
        self._history.add_op(record)
        if response.HasField("balance"):
            self._history.add_read(state.member_id, response.balance)
            state.available = response.balance.available
        if kind == "reserve":
            state.reservations.append(response.reservation_id)
        elif kind == "earn":
            state.earns.append((request.request_id, {line.sku: line.quantity for line in request.purchase.lines}))

    def _after_failure(self, connection: Connection, error: grpc.RpcError) -> None:
        if error.code() in UNEXPECTED_CODES:
            self._history.add_unexpected(error.code())
        self._workload.stopping.wait(UNKNOWN_BACKOFF_S)
        connection.refresh()
