"""An in-process loyalty server for the tests of applications that use the SDK.

``FakeLoyaltyServer`` serves the real gRPC servicer (the same request validation and
response mapping as the server) over the real pure ledger core, on 127.0.0.1, with no
Ray and no Redis. Its clock only moves when told to, so holds and points expire on
cue::

    with FakeLoyaltyServer() as fake, LoyaltyClient(fake.target) as client:
        client.enroll_member("alice")
        hold = client.reserve("alice", 10, ttl=timedelta(minutes=5))   # after an earn
        fake.advance(seconds=301)                                        # the hold expires

It can also fail calls on purpose (``fail_next``) and records every call it received
(``calls``) with its metadata, to test retries and credentials.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import threading
from collections.abc import Callable, Sequence

import grpc

from loyalty.actors.ledger import CompiledProgram, Program, ShardCore
from loyalty.actors.ledger.codec import decode_outcome
from loyalty.actors.ledger.commands import Command
from loyalty.actors.ledger.outcomes import Outcome
from loyalty.actors.ledger.rules import Rule, RuleSet, compile_rules
from loyalty.server.gateway.servicer import LoyaltyService
from loyalty.server.gateway.routing import ShardChunk
from loyalty.v1 import loyalty_pb2_grpc

# The fake's clock starts here unless told otherwise: a fixed instant makes test
# output (expiry dates, history times) the same on every run.
DEFAULT_START = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)

# Seconds start() waits for the server thread; binding a loopback port takes
# milliseconds, so this only trips when something is badly wrong.
START_TIMEOUT_SECONDS = 30.0

# Seconds stop() lets calls in flight finish.
STOP_GRACE_SECONDS = 1.0

_SERVICE_PREFIX = "/loyalty.v1.LoyaltyService/"


class FakeClock:
    """Milliseconds since the epoch that move only when ``advance`` is called."""

    def __init__(self, start: datetime.datetime = DEFAULT_START) -> None:
        """A clock showing ``start`` (timezone-aware)."""
        self._now_ms = int(start.timestamp() * 1000)
        self._lock = threading.Lock()

    def now_ms(self) -> int:
        """The current time, epoch milliseconds."""
        with self._lock:
            return self._now_ms

    def now(self) -> datetime.datetime:
        """The current time as an aware UTC datetime."""
        return datetime.datetime.fromtimestamp(self.now_ms() / 1000, tz=datetime.UTC)

    def advance(self, *, seconds: float = 0, days: float = 0) -> None:
        """Move the clock forward (never back: the ledger's clock never goes back)."""
        step = round((seconds + days * 86_400) * 1000)
        if step < 0:
            raise ValueError("the clock only moves forward")
        with self._lock:
            self._now_ms += step


class InMemoryBudgets:
    """Campaign budgets for the fake: one counter per budget, leased exactly as asked
    (the real server leases chunks from Redis; what an earn gets is the same)."""

    def __init__(self) -> None:
        self.remaining: dict[str, int] = {}
        """Points of each budget not yet granted, by budget key (the rule_id)."""

    def open(self, budget_key: str, total_points: int) -> None:
        """Start a budget of ``total_points`` (kept as it is if already open)."""
        self.remaining.setdefault(budget_key, total_points)

    def lease(self, budget_key: str, points_needed: int) -> int:
        """Grant up to ``points_needed`` of what is left."""
        granted = min(points_needed, self.remaining.get(budget_key, 0))
        if granted:
            self.remaining[budget_key] -= granted
        return granted

    def available(self, budget_key: str) -> int:
        """Points not yet granted."""
        return self.remaining.get(budget_key, 0)


class InProcessRouter:
    """The CommandRouter ``LoyaltyService`` needs (server/gateway/routing.py), over
    one in-process ShardCore.

    Each call applies its commands as one batch, exactly as a shard would, and
    decodes the outcomes the way the gateway does.
    """

    def __init__(self, core: ShardCore, clock: Callable[[], int]) -> None:
        """Apply commands to ``core`` at the times ``clock`` (epoch ms) gives."""
        self._core = core
        self._clock = clock
        self.budgets = InMemoryBudgets()
        """The campaign budget owner of this fake (one counter per budgeted rule)."""
        # The servicer runs on one event loop, but a test may inspect the core from
        # another thread; the lock keeps each batch whole.
        self._lock = threading.Lock()

    def apply(self, commands: Sequence[Command]) -> list[Outcome]:
        """Apply commands as one batch; their decoded outcomes, in order."""
        with self._lock:
            encoded, _record = self._core.apply_batch(list(commands), self._clock(), self.budgets)
        return [decode_outcome(outcome) for outcome in encoded]

    def install_rules(self, rules: Sequence[Rule]) -> int:
        """Make ``rules`` the live rule set (a new version, installed between batches)."""
        with self._lock:
            version = self._core.rules_version + 1
            compiled = compile_rules(RuleSet(version, tuple(rules)), self._core.ledger.program)
            for rule in rules:
                if rule.budget.total_points:
                    self.budgets.open(rule.rule_id, rule.budget.total_points)
            self._core.install_rules(compiled)
            return version

    async def execute(self, command: Command) -> Outcome:
        """Apply one command and return its outcome."""
        return self.apply([command])[0]

    def submit_chunks(self, commands: list[Command]) -> list[ShardChunk]:
        """Apply commands as one batch: one chunk, its future already holding the
        outcomes."""
        answers = asyncio.get_running_loop().create_future()
        answers.set_result(self.apply(commands))
        return [ShardChunk(list(range(len(commands))), answers)]


@dataclasses.dataclass(frozen=True)
class ReceivedCall:
    """One call the fake received."""

    method: str
    """The RPC name, e.g. "Earn"."""
    request: object
    """The request message."""
    metadata: tuple[tuple[str, str], ...]
    """The call's metadata (keys lower case), e.g. (("authorization", "Bearer ..."),)."""
    time_remaining: float | None = None
    """Seconds the call's deadline had left when it arrived; None without a deadline."""

    def header(self, key: str) -> str | None:
        """The first metadata value under ``key``, or None."""
        return next((value for name, value in self.metadata if name == key), None)


@dataclasses.dataclass
class _Failure:
    code: grpc.StatusCode
    method: str | None
    after_apply: bool
    remaining: int


class _FaultsAndRecording(grpc.aio.ServerInterceptor):
    """Records every LoyaltyService call and injects the failures asked for."""

    def __init__(self, fake: FakeLoyaltyServer) -> None:
        self._fake = fake

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        full_name = handler_call_details.method
        if handler is None or not full_name.startswith(_SERVICE_PREFIX) or handler.unary_unary is None:
            return handler
        method = full_name.removeprefix(_SERVICE_PREFIX)
        metadata = tuple((key.lower(), value) for key, value in (handler_call_details.invocation_metadata or ()))
        behaviour = handler.unary_unary
        fake = self._fake

        async def wrapped(request, context):
            fake._record(ReceivedCall(method, request, metadata, context.time_remaining()))
            failure = fake._take_failure(method)
            if failure is not None and not failure.after_apply:
                await context.abort(failure.code, f"injected {failure.code.name} before applying")
            response = await behaviour(request, context)
            if failure is not None:
                await context.abort(failure.code, f"injected {failure.code.name} after applying")
            return response

        return grpc.unary_unary_rpc_method_handler(
            wrapped,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


class FakeLoyaltyServer:
    """A loyalty server in this process: real servicer, real ledger core, fake clock.

    Use as a context manager (or ``start()`` / ``stop()``); connect clients to
    ``target``. State lives in memory and goes away with the server.
    """

    def __init__(self, *, program: Program | None = None, start: datetime.datetime = DEFAULT_START) -> None:
        """A server for ``program`` (default: the default program) whose clock starts
        at ``start``."""
        self.clock = FakeClock(start)
        """The ledger's clock; see ``advance``."""
        self.core = ShardCore(CompiledProgram(program or Program()))
        """The ledger core itself, for tests that want to look inside."""
        self.router = InProcessRouter(self.core, self.clock.now_ms)
        """The router the servicer sends commands to."""
        self.port = 0
        """The port it listens on, once started."""
        self._calls: list[ReceivedCall] = []
        self._failures: list[_Failure] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: grpc.aio.Server | None = None

    # ----------------------------------------------------------------- lifecycle

    @property
    def target(self) -> str:
        """host:port to connect a client to."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> FakeLoyaltyServer:
        """Start serving on a free loopback port (in a background thread)."""
        started = threading.Event()
        failure: list[BaseException] = []

        async def serve() -> None:
            server = grpc.aio.server(interceptors=[_FaultsAndRecording(self)])
            loyalty_pb2_grpc.add_LoyaltyServiceServicer_to_server(LoyaltyService(self.router, self.core.ledger.program), server)
            self.port = server.add_insecure_port("127.0.0.1:0")
            await server.start()
            self._server = server

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(serve())
            except BaseException as error:  # reported by start() in the caller's thread
                failure.append(error)
                started.set()
                loop.close()
                return
            started.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name="fake-loyalty-server", daemon=True)
        self._thread.start()
        if not started.wait(START_TIMEOUT_SECONDS):
            raise RuntimeError("the fake loyalty server did not start")
        if failure:
            raise failure[0]
        return self

    def stop(self) -> None:
        """Stop serving and end the background thread."""
        loop, server = self._loop, self._server
        if loop is None:
            return
        if server is not None:
            asyncio.run_coroutine_threadsafe(server.stop(STOP_GRACE_SECONDS), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join()
        self._loop, self._server, self._thread = None, None, None

    def __enter__(self) -> FakeLoyaltyServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ----------------------------------------------------------------- test controls

    def install_rules(self, rules: Sequence[Rule]) -> int:
        """Make ``rules`` (``loyalty.actors.ledger.rules.Rule``, or the result of
        ``load_rules_toml``) the live earning rules; returns the new rule-set version.
        Budgeted rules get an in-memory budget of their ``total_points``."""
        return self.router.install_rules(rules)

    def advance(self, *, seconds: float = 0, days: float = 0) -> None:
        """Move the ledger's clock forward: holds and points expire as they would."""
        self.clock.advance(seconds=seconds, days=days)

    def now(self) -> datetime.datetime:
        """The ledger's current time."""
        return self.clock.now()

    def fail_next(
        self,
        count: int = 1,
        *,
        code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE,
        method: str | None = None,
        after_apply: bool = False,
    ) -> None:
        """Fail the next ``count`` calls (of ``method`` only, e.g. "Earn", when given)
        with ``code``. ``after_apply=True`` applies the call first and then fails it,
        like a connection lost before the answer arrived."""
        with self._lock:
            self._failures.append(_Failure(code, method, after_apply, count))

    def _take_failure(self, method: str) -> _Failure | None:
        with self._lock:
            for failure in self._failures:
                if failure.method in (None, method) and failure.remaining > 0:
                    failure.remaining -= 1
                    return failure
            return None

    def _record(self, call: ReceivedCall) -> None:
        with self._lock:
            self._calls.append(call)

    @property
    def calls(self) -> list[ReceivedCall]:
        """Every call received so far, oldest first (a copy)."""
        with self._lock:
            return list(self._calls)

    def calls_to(self, method: str) -> list[ReceivedCall]:
        """The calls received of one RPC, e.g. ``calls_to("Earn")``."""
        return [call for call in self.calls if call.method == method]

    def clear_calls(self) -> None:
        """Forget the recorded calls and pending failures."""
        with self._lock:
            self._calls.clear()
            self._failures.clear()

