"""Who may call what: API keys, roles, channel and store scopes, rate limits and
deadlines, applied to every call by one guard wrapped around every method handler.

Authentication is on as soon as the deployment has any API key (revoked ones count,
so revoking every key never reopens the server); with none, every caller is the
anonymous admin and the server only listens on loopback (see server/runtime/app.py).

Roles (``ROLE_METHODS`` is the table; the README shows it):

- ``pos``: a till. Enrol, earn, redeem, reserve, capture, release, reverse, balance,
  plus the reads a till needs to be safe and helpful: GetMember, GetOperation (a till
  whose call timed out must learn what happened before retrying), SimulateEarn and
  QuoteRedemption (show points before paying), and WatchMember (one member's events).
- ``ecommerce``: what pos may, plus ListTransactions and Batch.
- ``analytics``: reads only (GetMember, GetBalance, ListTransactions, GetOperation,
  SimulateEarn, QuoteRedemption), and StreamEvents (every member's events).
- ``admin``: everything, including Adjust, rules, keys, the audit log and both
  event streams.

``ecommerce`` and ``admin`` (the backends) also mint member tokens
(CreateMemberToken): a member token, sent as ``authorization: Bearer <token>`` like a
key, lets its holder call WatchMember for its own member and nothing else
(``MEMBER_TOKEN_METHODS``). It is a JWT (server/events/tokens.py checks it, handed to
the guard as a ``MemberTokenVerifier``); API keys never contain a dot, so the guard
tells the two apart by their shape, and only a bearer that is no key is tried as a
token.

Health checking and reflection are open to everyone (load balancers probe them).
Every other call runs as its ``Caller`` (server/security/caller.py), which the
AdminService hands to the admin use-cases so their audit events name it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol

import grpc
import redis.asyncio as aioredis
from google.protobuf.message import DecodeError

from loyalty.server import errors
from loyalty.server.errors import FieldViolation, LoyaltyServerError, PermissionDenied, Unauthenticated
from loyalty.server.limits import API_KEY_SECRET_LENGTH_MAX, MESSAGE_BYTES_MAX
from loyalty.server.security.caller import ANONYMOUS, Caller, acting_as
from loyalty.server.security.config import Limits, SecuritySettings, is_loopback, server_credentials
from loyalty.server.security.rate_limits import KeyRateLimiter
from loyalty.server.stores.audit import AuditLog
from loyalty.server.stores.keys import ApiKeyRecord, KeyMirror, KeyRecords
from loyalty.v1 import admin_pb2, events_pb2, loyalty_pb2

LOYALTY_SERVICE = loyalty_pb2.DESCRIPTOR.services_by_name["LoyaltyService"].full_name
ADMIN_SERVICE = admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name
EVENT_SERVICE = events_pb2.DESCRIPTOR.services_by_name["EventService"].full_name

# Services anyone may call: health checks (load balancers) and reflection (tools).
OPEN_SERVICES: tuple[str, ...] = (
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
)


def _loyalty(*names: str) -> frozenset[str]:
    return frozenset(f"/{LOYALTY_SERVICE}/{name}" for name in names)


def _events(*names: str) -> frozenset[str]:
    return frozenset(f"/{EVENT_SERVICE}/{name}" for name in names)


def _every_method(service: str, descriptor) -> frozenset[str]:
    return frozenset(
        f"/{service}/{method.name}"
        for method in descriptor.services_by_name[service.rpartition(".")[2]].methods
    )


_POS_METHODS = _loyalty(
    "EnrollMember", "Earn", "Redeem", "Reserve", "Capture", "Release", "Reverse",
    "GetBalance", "GetMember", "GetOperation", "SimulateEarn", "QuoteRedemption",
)  # fmt: skip

ROLE_METHODS: dict[str, frozenset[str]] = {
    "pos": _POS_METHODS | _events("WatchMember"),
    "ecommerce": _POS_METHODS | _loyalty("ListTransactions", "Batch") | _events("WatchMember", "CreateMemberToken"),
    "analytics": _loyalty(
        "GetMember", "GetBalance", "ListTransactions", "GetOperation", "SimulateEarn", "QuoteRedemption"
    )
    | _events("StreamEvents"),
    "admin": _every_method(LOYALTY_SERVICE, loyalty_pb2.DESCRIPTOR)
    | _every_method(ADMIN_SERVICE, admin_pb2.DESCRIPTOR)
    | _every_method(EVENT_SERVICE, events_pb2.DESCRIPTOR),
}
"""Full method names ("/loyalty.v1.LoyaltyService/Earn") each role may call. Methods
in no list (a future RPC) are admin-only until placed: the table fails closed."""

MEMBER_TOKEN_METHODS: frozenset[str] = _events("WatchMember")
"""What a member token may call, each for the token's own member only (the request's
``member_id``); anything else is PERMISSION_DENIED."""

MEMBER_TOKEN_ROLE = "member"
"""The role of a caller holding a member token (in no ROLE_METHODS list)."""


class MemberTokenVerifier(Protocol):
    """Checks member tokens (server/events/tokens.py's MemberTokens)."""

    token_length_max: int
    """Longer bearers are not member tokens."""

    def authorize(self, token: str, member_id: str | None) -> str:
        """The token's member id if the token is valid and, when ``member_id`` is
        given, for that member; raises Unauthenticated or PermissionDenied."""

# Batch item kind -> the RPC whose permission it needs (an ecommerce key must not
# slip an Adjust into a Batch).
BATCH_ITEM_METHODS: dict[str, str] = {
    "enroll_member": "EnrollMember",
    "earn": "Earn",
    "redeem": "Redeem",
    "reserve": "Reserve",
    "capture": "Capture",
    "release": "Release",
    "reverse": "Reverse",
    "adjust": "Adjust",
}

# Operations that move points out of accounts: they also take redemption tokens.
_REDEMPTION_KINDS = frozenset({"redeem", "reserve"})


def may_call(role: str, method: str) -> bool:
    """Whether a role may call a full method name."""
    return role == "admin" or method in ROLE_METHODS.get(role, ())


# ------------------------------------------------------------------------ errors

_UNAUTHENTICATED_MESSAGE = "a valid API key is required: send metadata 'authorization: Bearer <key>'"


def _permission_denied(message: str, **metadata: str) -> PermissionDenied:
    return PermissionDenied(message, metadata=metadata)


class _Malformed:
    """Stands for a request body that is not a valid message (answered with
    INVALID_ARGUMENT instead of gRPC's UNKNOWN)."""

    __slots__ = ("type_name",)

    def __init__(self, type_name: str) -> None:
        self.type_name = type_name


def _safe_deserializer(deserialize: Callable[[bytes], object], type_name: str) -> Callable[[bytes], object]:
    def safe(data: bytes):
        try:
            return deserialize(data)
        except (DecodeError, ValueError, TypeError):
            return _Malformed(type_name)

    return safe


def _bearer_secret(metadata, length_max: int = API_KEY_SECRET_LENGTH_MAX) -> str | None:
    for key, value in metadata or ():
        if key == "authorization":
            if isinstance(value, bytes):
                return None
            scheme, _, secret = value.partition(" ")
            secret = secret.strip()
            if scheme.lower() != "bearer" or not secret or len(secret) > length_max:
                return None
            return secret
    return None


def _is_member_token(secret: str) -> bool:
    """Whether a bearer has a JWT's shape (three dot-separated parts); an API key
    (``lk_`` and URL-safe base64) has no dot."""
    return secret.count(".") == 2


# ------------------------------------------------------------------------ request checks


def _in_scope(caller: Caller, field: str, purchase) -> None:
    """A scoped key's purchase must name one of its channels and stores (an empty
    channel or store is outside every non-empty list: omitting it is no way around)."""
    if caller.channels and purchase.channel not in caller.channels:
        raise _permission_denied(
            f"this API key may not record purchases in channel {purchase.channel!r}",
            field=f"{field}.channel",
        )
    if caller.store_ids and purchase.store_id not in caller.store_ids:
        raise _permission_denied(
            f"this API key may not record purchases in store {purchase.store_id!r}",
            field=f"{field}.store_id",
        )


def _check_batch(caller: Caller, request, limits: Limits) -> tuple[int, int]:
    """Item count, roles and scopes of a Batch; returns (request tokens, redemption
    tokens) it costs."""
    items = request.items
    if len(items) > limits.batch_operations_max:
        violation = FieldViolation("items", f"at most {limits.batch_operations_max} items per Batch")
        raise violation
    if caller is ANONYMOUS:
        return 0, 0
    redemptions = 0
    admin = caller.role == "admin"
    scoped = bool(caller.channels or caller.store_ids)
    for index, item in enumerate(items):
        kind = item.WhichOneof("operation")
        if kind is None:
            continue  # the service reports it as the item's INVALID_ARGUMENT
        if not admin and not may_call(caller.role, f"/{LOYALTY_SERVICE}/{BATCH_ITEM_METHODS[kind]}"):
            raise _permission_denied(
                f"role {caller.role} may not call {BATCH_ITEM_METHODS[kind]} (items[{index}])",
                field=f"items[{index}].{kind}",
            )
        if kind in _REDEMPTION_KINDS:
            redemptions += 1
        elif kind == "earn" and scoped:
            _in_scope(caller, f"items[{index}].earn.purchase", item.earn.purchase)
    return max(1, len(items)), redemptions


class AuthGuard:
    """Authenticates, authorizes, rate-limits and bounds every call: it wraps each
    method handler once, when its service is registered (see ``GuardedServer``).
    Wrapping the handlers costs less per call than a grpc.aio interceptor, which
    awaits an extra coroutine and builds a handler for every call."""

    def __init__(
        self,
        mirror: KeyMirror,
        limiter: KeyRateLimiter,
        limits: Limits,
        *,
        clock_s: Callable[[], float] = time.monotonic,
    ) -> None:
        self._mirror = mirror
        self._limiter = limiter
        self._limits = limits
        self._clock_s = clock_s
        self._member_tokens: MemberTokenVerifier | None = None
        self._bearer_length_max = API_KEY_SECRET_LENGTH_MAX

    def accept_member_tokens(self, verifier: MemberTokenVerifier) -> None:
        """Take member tokens from now on, checked by ``verifier`` (the gateway hands
        it over once it has read the deployment's token secret)."""
        self._member_tokens = verifier
        self._bearer_length_max = max(API_KEY_SECRET_LENGTH_MAX, verifier.token_length_max)

    def authorize(self, method: str, metadata, request=None) -> Caller:
        """The caller of ``method`` with this invocation metadata (and, for a member
        token, this request); raises Unauthenticated or PermissionDenied."""
        if not self._mirror.keys_exist:
            return ANONYMOUS
        secret = _bearer_secret(metadata, self._bearer_length_max)
        record = None
        if secret is not None and len(secret) <= API_KEY_SECRET_LENGTH_MAX:
            record = self._mirror.authenticate(secret)
        if record is None:
            if secret is not None and self._member_tokens is not None and _is_member_token(secret):
                return self._member_caller(method, secret, request)
            raise Unauthenticated(_UNAUTHENTICATED_MESSAGE)
        caller = Caller.of(record)
        if not may_call(caller.role, method):
            name = method.rpartition("/")[2]
            raise _permission_denied(f"role {caller.role} may not call {name}", method=name)
        return caller

    def _member_caller(self, method: str, token: str, request) -> Caller:
        """The caller holding a member token: valid, and for the request's member of
        one of MEMBER_TOKEN_METHODS."""
        if method not in MEMBER_TOKEN_METHODS:
            self._member_tokens.authorize(token, None)  # a bad token is UNAUTHENTICATED first
            name = method.rpartition("/")[2]
            raise _permission_denied(f"a member token may only call WatchMember, not {name}", method=name)
        member_id = self._member_tokens.authorize(token, getattr(request, "member_id", ""))
        return Caller(key_id=f"member:{member_id}", name="member token", role=MEMBER_TOKEN_ROLE)

    def wrap(self, method: str, handler: grpc.RpcMethodHandler | None) -> grpc.RpcMethodHandler | None:
        """The guarded version of one method's handler (open services unchanged)."""
        if handler is None or method.startswith(OPEN_SERVICES, 1):
            return handler
        if handler.request_streaming or handler.response_streaming:
            return self._wrap_streaming(method, handler)
        return grpc.unary_unary_rpc_method_handler(
            self._guard(handler.unary_unary, method),
            request_deserializer=_safe_deserializer(handler.request_deserializer, method)
            if handler.request_deserializer is not None
            else None,
            response_serializer=handler.response_serializer,
        )

    def _wrap_streaming(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """Streaming methods get authentication and roles only (a server stream's
        request is read first, so a member token is checked against its member_id)."""
        behavior = handler.stream_stream or handler.stream_unary or handler.unary_stream

        async def guarded_unary(request, context):
            try:
                caller = self.authorize(method, context.invocation_metadata())
            except LoyaltyServerError as refusal:
                await errors.abort(context, errors.status_of(refusal))
            with acting_as(caller):
                return await behavior(request, context)

        async def guarded_stream(request, context):
            try:
                request_message = None if handler.request_streaming else request
                caller = self.authorize(method, context.invocation_metadata(), request_message)
            except LoyaltyServerError as refusal:
                await errors.abort(context, errors.status_of(refusal))
            with acting_as(caller):
                async for response in behavior(request, context):
                    yield response

        kinds = {
            (True, True): grpc.stream_stream_rpc_method_handler,
            (True, False): grpc.stream_unary_rpc_method_handler,
            (False, True): grpc.unary_stream_rpc_method_handler,
        }
        make = kinds[(handler.request_streaming, handler.response_streaming)]
        return make(
            guarded_stream if handler.response_streaming else guarded_unary,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _costs(self, caller: Caller, name: str, request) -> tuple[int, int]:
        """Checks a call's content; returns its (request, redemption) token costs."""
        if name == "Batch":
            return _check_batch(caller, request, self._limits)
        if name in ("Earn", "SimulateEarn"):
            if caller.channels or caller.store_ids:
                _in_scope(caller, "purchase", request.purchase)
        elif name in ("Redeem", "Reserve"):
            return 1, 1
        elif name in ("ListTransactions", "ListApiKeys", "ListAuditEvents"):
            if request.page_size > self._limits.page_size_max:
                request.page_size = self._limits.page_size_max
        return 1, 0

    def _timeout_s(self, context) -> float | None:
        """How long the server lets the call run (None: the client's deadline)."""
        remaining_s = context.time_remaining()
        if remaining_s is None:
            return self._limits.deadline_default_s
        if remaining_s > self._limits.deadline_max_s:
            return self._limits.deadline_max_s
        return None

    def _guard(self, behavior, method: str):
        name = method.rpartition("/")[2]

        async def guarded(request, context):
            try:
                caller = self.authorize(method, context.invocation_metadata())
                if isinstance(request, _Malformed):
                    raise FieldViolation("request", f"is not a valid {name} request message")
                requests_cost, redemptions_cost = self._costs(caller, name, request)
                if caller is not ANONYMOUS:
                    self._limiter.check(
                        caller.key_id,
                        requests=requests_cost,
                        redemptions=redemptions_cost,
                        now_s=self._clock_s(),
                    )
            except LoyaltyServerError as refusal:  # refused, rate limited, malformed
                await errors.abort(context, errors.status_of(refusal))
            with acting_as(caller):
                timeout_s = self._timeout_s(context)
                if timeout_s is None:
                    return await behavior(request, context)
                try:
                    async with asyncio.timeout(timeout_s):
                        return await behavior(request, context)
                except TimeoutError:
                    await context.abort(
                        grpc.StatusCode.DEADLINE_EXCEEDED, f"the server's deadline of {timeout_s:g} s passed"
                    )

        return guarded


class _GuardedGenericHandler(grpc.GenericRpcHandler):
    """A generic handler whose answers are guarded (each method wrapped once)."""

    def __init__(self, inner: grpc.GenericRpcHandler, guard: AuthGuard) -> None:
        self._inner = inner
        self._guard = guard
        self._wrapped: dict[str, grpc.RpcMethodHandler | None] = {}

    def service(self, handler_call_details):
        method = handler_call_details.method
        try:
            return self._wrapped[method]
        except KeyError:
            pass
        wrapped = self._guard.wrap(method, self._inner.service(handler_call_details))
        if wrapped is not None and len(self._wrapped) < 10_000:  # methods are few; names come from callers
            self._wrapped[method] = wrapped
        return wrapped


class GuardedServer:
    """A grpc.aio server whose services are all guarded as they are registered: a
    service added to it later cannot forget authentication (the table fails
    closed: a method in no role's list is admin-only). Everything else is the
    server's own."""

    def __init__(self, server: grpc.aio.Server, guard: AuthGuard) -> None:
        self._server = server
        self._guard = guard

    def add_generic_rpc_handlers(self, generic_rpc_handlers) -> None:
        self._server.add_generic_rpc_handlers(
            tuple(_GuardedGenericHandler(handler, self._guard) for handler in generic_rpc_handlers)
        )

    def add_registered_method_handlers(self, service_name: str, method_handlers: dict) -> None:
        self._server.add_registered_method_handlers(
            service_name,
            {
                name: self._guard.wrap(f"/{service_name}/{name}", handler)
                for name, handler in method_handlers.items()
            },
        )

    def __getattr__(self, name: str):
        return getattr(self._server, name)


# ------------------------------------------------------------------------ assembly


class GatewaySecurity:
    """Everything security a gateway process runs: its copy of the keys, the key
    records and the audit log (which the assembly hands to the admin use-cases), the
    guard, server options and TLS."""

    def __init__(self, *, redis_url: str, key_prefix: str, settings: SecuritySettings) -> None:
        self.redis_url = redis_url
        self.key_prefix = key_prefix
        self.settings = settings
        limits = settings.limits
        self.limiter = KeyRateLimiter(limits)
        # Clients connect lazily, on the loop that first uses them. Commands time out
        # (a paused Redis must not hang admin calls for ever); the change follower
        # blocks on its subscription, so it has its own connection without a timeout.
        self._client = aioredis.Redis.from_url(redis_url, socket_timeout=5.0, socket_connect_timeout=5.0)
        self._follow_client = aioredis.Redis.from_url(
            redis_url, socket_connect_timeout=5.0, socket_keepalive=True
        )
        self.mirror = KeyMirror(self._follow_client, key_prefix=key_prefix, on_reload=self._keys_reloaded)
        """This process's copy of every key."""
        self.records = KeyRecords(self._client, key_prefix=key_prefix)
        """Key records in Redis (for changes)."""
        self.audit = AuditLog(self._client, key_prefix=key_prefix)
        """The audit log, for every admin use-case."""
        self.guard = AuthGuard(self.mirror, self.limiter, limits)
        """Wraps every method handler of the gateway's server."""
        self._started = False

    def _keys_reloaded(self, by_id: dict[str, ApiKeyRecord]) -> None:
        self.limiter.keep({key_id for key_id, record in by_id.items() if not record.revoked})

    async def start(self) -> None:
        """Load the keys and follow their changes (on the loop that will serve). Once:
        calling it again does nothing, so the server may start it before the gateway
        starts it again."""
        if self._started:
            return
        await self.mirror.start()
        self._started = True

    def make_server(self) -> GuardedServer:
        """The gateway's grpc.aio server: limits applied, every service registered
        on it guarded (health and reflection stay open)."""
        limits = self.settings.limits
        server = grpc.aio.server(
            maximum_concurrent_rpcs=limits.concurrent_rpcs_max,
            options=[
                ("grpc.max_receive_message_length", limits.message_bytes_max),
                ("grpc.max_send_message_length", max(limits.message_bytes_max, MESSAGE_BYTES_MAX)),
                ("grpc.so_reuseport", 1),
            ],
        )
        return GuardedServer(server, self.guard)

    def add_port(self, server: grpc.aio.Server | GuardedServer, address: str) -> int:
        """Listen on address, with TLS when configured; returns the port (0: failed)."""
        if self.settings.tls is None:
            return server.add_insecure_port(address)
        return server.add_secure_port(address, server_credentials(self.settings.tls))

    def describe(self, host: str = "127.0.0.1") -> str:
        """One line for the start-up message: authentication and transport."""
        if not self.mirror.keys_exist:
            where = (
                "listening on loopback only"
                if is_loopback(host)
                else f"--insecure: anyone reaching {host} is admin"
            )
            auth = f"authentication is off (no API keys): every caller is admin, {where}"
        else:
            auth = f"authentication on ({self.mirror.active_count} active API keys)"
        tls = self.settings.tls
        if tls is None:
            transport = "plaintext"
        elif tls.client_ca_file:
            transport = "TLS with client certificates (mTLS)"
        else:
            transport = "TLS"
        return f"{auth}; {transport}"

    async def stop(self) -> None:
        """Stop following key changes and close the Redis connections."""
        await self.mirror.stop()
        await self._client.aclose()
        await self._follow_client.aclose()
        self._started = False


def check_exposure(*, host: str, insecure: bool, keys_exist: bool) -> str | None:
    """Why the server must not listen on ``host`` (None: it may). Without API keys
    anyone who can reach the port is admin, so only loopback is allowed, unless the
    operator says --insecure (e.g. behind a proxy that authenticates)."""
    if keys_exist or insecure or is_loopback(host):
        return None
    return (
        f"refusing to listen on {host} without API keys: anyone reaching it could change "
        "balances. Add [[api_keys]] to the config file (see `loyalty keys generate`), or "
        "create a key with `loyalty keys create` while listening on 127.0.0.1, or pass "
        "--insecure if something in front of the server authenticates callers"
    )
