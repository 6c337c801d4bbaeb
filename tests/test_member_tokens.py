"""Member tokens: minted by a backend key, they let their holder watch one member's
events and nothing else. Over real gRPC with authentication on (one key per role):
a token watches its member and sees an Earn's event; another member, another RPC,
a forged or an expired token are refused as documented; only backend roles mint;
ttl_seconds is checked. And, without Redis or a server, the checks themselves against
an injected clock."""

from __future__ import annotations

import asyncio
import queue
import threading
import time

import grpc
import jwt
import pytest
import redis.asyncio as aioredis

from loyalty.clients import error_details
from loyalty.server.events import tokens as member_tokens
from loyalty.server.events.tokens import (
    AUDIENCE,
    ExpiredMemberToken,
    InvalidMemberToken,
    MemberTokenNotAllowed,
    MemberTokens,
    secret_key,
)
from loyalty.v1 import events_pb2 as epb
from loyalty.v1 import events_pb2_grpc
from loyalty.v1 import loyalty_pb2 as pb
from loyalty.v1 import loyalty_pb2_grpc

DEADLINE_S = 30.0
"""How long a test waits for an event before it fails."""


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def error_of(error: grpc.RpcError):
    details = error_details(error)
    return details.code, details.reason, [field for field, _ in details.field_violations]


# ----------------------------------------------------------------------------- the checks, pure


class FakeRedis:
    """The two commands MemberTokens uses, in memory."""

    def __init__(self) -> None:
        self.values: dict[str, bytes] = {}

    async def set(self, key: str, value: bytes, nx: bool = False) -> bool:
        if nx and key in self.values:
            return False
        self.values[key] = value
        return True

    async def get(self, key: str) -> bytes | None:
        return self.values.get(key)


class Clock:
    def __init__(self, now_s: float) -> None:
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s


def started(client, clock) -> MemberTokens:
    tokens = MemberTokens(client, key_prefix="p", clock_s=clock)
    asyncio.run(tokens.start())
    return tokens


def test_a_token_names_its_member_until_it_expires():
    clock = Clock(1_700_000_000.5)
    tokens = started(FakeRedis(), clock)
    token, expires_s = asyncio.run(tokens.mint("alice", 900))
    assert expires_s == 1_700_000_900
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims == {"sub": "alice", "iat": 1_700_000_000, "exp": 1_700_000_900, "aud": AUDIENCE}
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    assert tokens.verify(token) == "alice"
    clock.now_s = 1_700_000_899.9
    assert tokens.authorize(token, "alice") == "alice"
    clock.now_s = 1_700_000_900
    with pytest.raises(ExpiredMemberToken) as expired:
        tokens.verify(token)
    assert "expired" in expired.value.message


def test_every_gateway_of_a_deployment_shares_one_secret():
    shared = FakeRedis()
    clock = Clock(1_700_000_000)
    first, second = started(shared, clock), started(shared, clock)
    token, _ = asyncio.run(first.mint("alice", 60))
    assert second.verify(token) == "alice"
    assert len(shared.values[secret_key("p")]) == member_tokens.SECRET_BYTES
    other_deployment = started(FakeRedis(), clock)
    with pytest.raises(InvalidMemberToken):
        other_deployment.verify(token)


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")  # HS512 with the HS256 secret
def test_forged_tampered_and_foreign_tokens_are_invalid():
    clock = Clock(1_700_000_000)
    client = FakeRedis()
    tokens = started(client, clock)
    token, _ = asyncio.run(tokens.mint("alice", 60))
    secret = client.values[secret_key("p")]
    claims = {"sub": "alice", "iat": 1_700_000_000, "exp": 1_700_000_060, "aud": AUDIENCE}
    header, payload, signature = token.split(".")
    mallory = jwt.encode({**claims, "sub": "mallory"}, "x" * 32, algorithm="HS256").split(".")[1]
    refused = {
        "another secret": jwt.encode(claims, b"y" * 32, algorithm="HS256"),
        "payload swapped": f"{header}.{mallory}.{signature}",
        "no signature": jwt.encode(claims, None, algorithm="none"),
        "another audience": jwt.encode({**claims, "aud": "something-else"}, secret, algorithm="HS256"),
        "no expiry": jwt.encode({k: v for k, v in claims.items() if k != "exp"}, secret, algorithm="HS256"),
        "another algorithm": jwt.encode(claims, secret, algorithm="HS512"),
        "not a JWT": "a.b.c",
        "too long": token + "A" * member_tokens.MEMBER_TOKEN_LENGTH_MAX,
    }
    for what, bad in refused.items():
        with pytest.raises(InvalidMemberToken) as invalid:
            tokens.verify(bad)
        assert not isinstance(invalid.value, ExpiredMemberToken), what
    assert tokens.verify(jwt.encode(claims, secret, algorithm="HS256")) == "alice"  # the control


def test_a_token_for_another_member_is_not_allowed():
    tokens = started(FakeRedis(), Clock(1_700_000_000))
    token, _ = asyncio.run(tokens.mint("alice", 60))
    with pytest.raises(MemberTokenNotAllowed):
        tokens.authorize(token, "bob")


def test_the_longest_member_id_fits_the_length_limit():
    tokens = started(FakeRedis(), Clock(1_700_000_000))
    token, _ = asyncio.run(tokens.mint("\u00e9" * 128, member_tokens.MEMBER_TOKEN_TTL_S_MAX))
    assert len(token) < member_tokens.MEMBER_TOKEN_LENGTH_MAX
    assert tokens.verify(token) == "\u00e9" * 128


# ----------------------------------------------------------------------------- over gRPC


@pytest.fixture(scope="module")
def stubs(secured_server):
    with grpc.insecure_channel(secured_server.target) as channel:
        yield (
            events_pb2_grpc.EventServiceStub(channel),
            loyalty_pb2_grpc.LoyaltyServiceStub(channel),
            secured_server,
        )


def key(server, role: str):
    return server.metadata(server.secrets[role])


def mint(stubs, member_id: str, role: str = "ecommerce", ttl_seconds: int = 0) -> epb.CreateMemberTokenResponse:
    events, _, server = stubs
    request = epb.CreateMemberTokenRequest(member_id=member_id, ttl_seconds=ttl_seconds)
    return events.CreateMemberToken(request, metadata=key(server, role), timeout=DEADLINE_S)


def first_refusal(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as refused:
        next(iter(call))
    return refused.value


def purchase(amount_minor: int) -> pb.Purchase:
    return pb.Purchase(
        channel="pos", store_id="s1", currency="EUR",
        lines=[pb.PurchaseLine(sku="sku", category="food", quantity=1, amount_minor=amount_minor)],
    )  # fmt: skip


def test_a_token_watches_its_member_and_sees_an_earn(stubs, member_id):
    events, loyalty, server = stubs
    minted = mint(stubs, member_id)
    call = events.WatchMember(
        epb.WatchMemberRequest(member_id=member_id), metadata=bearer(minted.token), timeout=DEADLINE_S
    )
    call.initial_metadata()  # subscribed: every event from now on reaches the stream
    received: queue.Queue = queue.Queue()

    def read() -> None:
        try:
            for event in call:
                received.put(event)
        except grpc.RpcError as ended:  # cancelled at the end, or a failure the test reports
            received.put(ended)

    threading.Thread(target=read, daemon=True).start()
    try:
        pos = key(server, "pos")
        loyalty.EnrollMember(pb.EnrollMemberRequest(member_id=member_id, request_id="e"), metadata=pos)
        earned = loyalty.Earn(
            pb.EarnRequest(member_id=member_id, request_id="p1", purchase=purchase(12_345)), metadata=pos
        )
        kinds = []
        while "earned" not in kinds:
            event = received.get(timeout=DEADLINE_S)
            assert not isinstance(event, grpc.RpcError), event
            assert event.member_id == member_id
            kinds.append(event.WhichOneof("kind"))
        assert kinds == ["enrolled", "earned"]
        assert event.earned.points == earned.points and event.balance.available == earned.balance.available
    finally:
        call.cancel()


def test_expires_at_is_the_tokens_expiry_and_ttl_zero_is_the_default(stubs, member_id):
    before_s = int(time.time())
    minted = mint(stubs, member_id)
    claims = jwt.decode(minted.token, options={"verify_signature": False})
    assert claims["exp"] == minted.expires_at.seconds
    assert claims["exp"] - claims["iat"] == member_tokens.MEMBER_TOKEN_TTL_S_DEFAULT
    assert before_s <= claims["iat"] <= int(time.time())
    short = jwt.decode(mint(stubs, member_id, ttl_seconds=5).token, options={"verify_signature": False})
    assert short["exp"] - short["iat"] == 5


def test_a_token_for_another_member_is_permission_denied(stubs, member_id):
    events, _, _ = stubs
    token = mint(stubs, member_id).token
    call = events.WatchMember(
        epb.WatchMemberRequest(member_id=f"{member_id}-other"), metadata=bearer(token), timeout=DEADLINE_S
    )
    code, reason, _ = error_of(first_refusal(call))
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")


def test_forged_and_expired_tokens_are_unauthenticated(stubs, member_id, redis_client):
    events, _, server = stubs
    secret = redis_client.get(secret_key(server.key_prefix))
    assert secret is not None and len(secret) == member_tokens.SECRET_BYTES
    now_s = int(time.time())
    claims = {"sub": member_id, "iat": now_s - 120, "exp": now_s - 60, "aud": AUDIENCE}
    expired = jwt.encode(claims, secret, algorithm="HS256")
    forged = jwt.encode({**claims, "exp": now_s + 600}, b"not the deployment's secret 32 b", algorithm="HS256")
    valid = jwt.encode({**claims, "exp": now_s + 600}, secret, algorithm="HS256")  # the control
    for token, words in ((expired, "expired"), (forged, "not valid")):
        call = events.WatchMember(
            epb.WatchMemberRequest(member_id=member_id), metadata=bearer(token), timeout=DEADLINE_S
        )
        refusal = first_refusal(call)
        assert error_of(refusal)[:2] == (grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED")
        assert words in refusal.details()
    call = events.WatchMember(epb.WatchMemberRequest(member_id=member_id), metadata=bearer(valid), timeout=DEADLINE_S)
    call.initial_metadata()
    call.cancel()
    assert call.code() == grpc.StatusCode.CANCELLED  # it was open until cancelled


@pytest.mark.parametrize(("role", "allowed"), [("ecommerce", True), ("admin", True), ("pos", False), ("analytics", False)])
def test_only_backend_roles_mint(stubs, member_id, role, allowed):
    if allowed:
        assert mint(stubs, member_id, role).token.count(".") == 2
    else:
        with pytest.raises(grpc.RpcError) as refused:
            mint(stubs, member_id, role)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_ttl_seconds_and_member_id_are_checked_naming_the_field(stubs, member_id):
    for ttl_seconds in (-1, member_tokens.MEMBER_TOKEN_TTL_S_MAX + 1):
        with pytest.raises(grpc.RpcError) as refused:
            mint(stubs, member_id, ttl_seconds=ttl_seconds)
        assert error_of(refused.value) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD", ["ttl_seconds"])
    with pytest.raises(grpc.RpcError) as refused:
        mint(stubs, "has space")
    assert error_of(refused.value) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD", ["member_id"])
    longest = mint(stubs, member_id, ttl_seconds=member_tokens.MEMBER_TOKEN_TTL_S_MAX)
    assert longest.token


def test_a_token_cannot_call_anything_else(stubs, member_id):
    events, loyalty, server = stubs
    pos = key(server, "pos")
    loyalty.EnrollMember(pb.EnrollMemberRequest(member_id=member_id, request_id="e"), metadata=pos)
    token = mint(stubs, member_id).token
    earn = pb.EarnRequest(member_id=member_id, request_id="p1", purchase=purchase(1_000))
    with pytest.raises(grpc.RpcError) as refused:
        loyalty.Earn(earn, metadata=bearer(token), timeout=DEADLINE_S)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as refused:
        loyalty.GetBalance(pb.GetBalanceRequest(member_id=member_id), metadata=bearer(token), timeout=DEADLINE_S)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as refused:
        events.CreateMemberToken(epb.CreateMemberTokenRequest(member_id=member_id), metadata=bearer(token))
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    stream = events.StreamEvents(epb.StreamEventsRequest(), metadata=bearer(token), timeout=DEADLINE_S)
    assert first_refusal(stream).code() == grpc.StatusCode.PERMISSION_DENIED
    # A forged token is refused as unauthenticated wherever it is sent.
    forged = jwt.encode({"sub": member_id, "iat": 1, "exp": 2**40, "aud": AUDIENCE}, b"z" * 32, algorithm="HS256")
    with pytest.raises(grpc.RpcError) as refused:
        loyalty.Earn(earn, metadata=bearer(forged), timeout=DEADLINE_S)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    balance = loyalty.GetBalance(pb.GetBalanceRequest(member_id=member_id), metadata=pos)
    assert balance.available == 0  # nothing was earned


def test_a_second_reader_of_the_same_redis_checks_the_servers_tokens(stubs, member_id, redis_server):
    token = mint(stubs, member_id).token

    async def check() -> str:
        client = aioredis.Redis.from_url(redis_server.url)
        try:
            other_gateway = MemberTokens(client, key_prefix=stubs[2].key_prefix)
            await other_gateway.start()  # finds the secret the server made: SET NX keeps it
            return other_gateway.verify(token)
        finally:
            await client.aclose()

    assert asyncio.run(check()) == member_id
