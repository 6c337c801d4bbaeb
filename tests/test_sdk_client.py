"""SDK behaviour that needs a controllable server: retries with the same request_id,
unknown outcomes and resolve, credentials, TLS, deadlines, batch splitting, request
ids, and the fake's clock. Uses the in-process fake (and, for TLS, a small grpc.aio
server over the same servicer)."""

from __future__ import annotations

import asyncio
import datetime
import random
import uuid

import grpc
import pytest

from loyalty.actors.ledger import CompiledProgram, Program, ShardCore
from loyalty.clients import (
    BATCH_ITEMS_MAX,
    NO_RETRIES,
    AsyncLoyaltyClient,
    ClientConfig,
    DeadlineExceeded,
    EnrollMemberItem,
    InsufficientPoints,
    Line,
    LoyaltyClient,
    LoyaltyError,
    Overloaded,
    PermissionDenied,
    RedeemItem,
    ReservationExpired,
    RetryPolicy,
    TlsConfig,
    TransactionKind,
    Unauthenticated,
    Unavailable,
    UnexpectedError,
    new_request_id,
)
from loyalty.clients.errors import ERRORS_BY_REASON, LoyaltyError as BaseError
from loyalty.clients.ids import REQUEST_ID_LENGTH, request_id_time_ms
from loyalty.clients.testing import FakeLoyaltyServer, InProcessRouter
from loyalty.server.gateway.servicer import LoyaltyService
from loyalty.v1 import loyalty_pb2, loyalty_pb2_grpc

ZERO_DELAYS = RetryPolicy(max_attempts=5, initial_backoff=0.0, max_backoff=0.0)


def no_sleep(_seconds: float) -> None:
    """Retries in tests do not wait."""


async def no_wait(_seconds: float) -> None:
    """Retries in async tests do not wait."""


@pytest.fixture(scope="module")
def fake():
    with FakeLoyaltyServer() as server:
        yield server


@pytest.fixture
def client(fake):
    fake.clear_calls()
    with LoyaltyClient(ClientConfig(target=fake.target, retry=ZERO_DELAYS), sleep=no_sleep) as sdk:
        yield sdk
    fake.clear_calls()


@pytest.fixture
def member(fake, client) -> str:
    """A member with 100 points; the calls that made it are not recorded."""
    member_id = f"sdk-{uuid.uuid4().hex[:12]}"
    client.enroll_member(member_id)
    client.earn(member_id, lines=[Line("shoes", 1, 10000)], currency="EUR", request_id="seed")
    fake.clear_calls()
    return member_id


def earn_count(client: LoyaltyClient, member_id: str) -> int:
    return sum(t.kind is TransactionKind.EARN for t in client.iter_transactions(member_id))


# ----------------------------------------------------------------------------- retries


@pytest.mark.parametrize("after_apply", [False, True], ids=["lost-request", "lost-response"])
def test_unavailable_is_retried_with_the_same_request_id_and_applied_once(fake, client, member, after_apply):
    fake.fail_next(2, method="Earn", after_apply=after_apply)
    earned = client.earn(member, lines=[Line("bag", 1, 2000)], currency="EUR")
    attempts = fake.calls_to("Earn")
    assert len(attempts) == 3
    request_ids = {call.request.request_id for call in attempts}
    assert len(request_ids) == 1 and len(request_ids.pop()) == REQUEST_ID_LENGTH
    assert earned.points == 20 and client.get_balance(member).available == 120
    assert earn_count(client, member) == 2  # the seed and this one: applied once


def test_reads_are_retried_too(fake, client, member):
    fake.fail_next(3, method="GetBalance", code=grpc.StatusCode.DEADLINE_EXCEEDED)
    assert client.get_balance(member).available == 100
    assert len(fake.calls_to("GetBalance")) == 4


def test_resource_exhausted_is_retried_and_reported_as_not_applied(fake, client, member):
    fake.fail_next(10, method="Redeem", code=grpc.StatusCode.RESOURCE_EXHAUSTED)
    with pytest.raises(Overloaded) as raised:
        client.redeem(member, 5)
    assert len(fake.calls_to("Redeem")) == ZERO_DELAYS.max_attempts
    assert raised.value.retryable and not raised.value.outcome_unknown


def test_unknown_outcome_after_the_last_retry_is_resolved(fake, client, member):
    fake.fail_next(100, method="Redeem", after_apply=True)
    with pytest.raises(Unavailable) as raised:
        client.redeem(member, 30)
    error = raised.value
    assert error.outcome_unknown and error.retryable and error.code == grpc.StatusCode.UNAVAILABLE
    assert {call.request.request_id for call in fake.calls_to("Redeem")} == {error.request_id}
    fake.clear_calls()
    operation = client.resolve(member, error.request_id)
    assert operation.succeeded and operation.result.points == 30
    assert client.get_balance(member).available == 70  # five attempts, one redemption


def test_unknown_outcome_of_a_call_that_never_arrived_resolves_to_none(fake, client, member):
    fake.fail_next(100, method="Redeem", code=grpc.StatusCode.DEADLINE_EXCEEDED)
    with pytest.raises(DeadlineExceeded) as raised:
        client.redeem(member, 30)
    fake.clear_calls()
    assert raised.value.outcome_unknown
    assert client.resolve(member, raised.value.request_id) is None
    # Not applied, so resending it with the same request_id is safe.
    assert client.redeem(member, 30, request_id=raised.value.request_id).balance.available == 70


@pytest.mark.parametrize(
    ("code", "error_class"),
    [
        (grpc.StatusCode.UNAUTHENTICATED, Unauthenticated),
        (grpc.StatusCode.PERMISSION_DENIED, PermissionDenied),
        (grpc.StatusCode.INTERNAL, UnexpectedError),
    ],
)
def test_other_codes_are_not_retried(fake, client, member, code, error_class):
    fake.fail_next(1, method="Redeem", code=code)
    with pytest.raises(error_class) as raised:
        client.redeem(member, 1, request_id="r-x")
    assert len(fake.calls_to("Redeem")) == 1
    assert not raised.value.retryable and not raised.value.outcome_unknown
    assert raised.value.request_id == "r-x"


def test_no_retries_policy_makes_one_attempt(fake, member):
    fake.clear_calls()
    fake.fail_next(1, method="GetBalance")
    with LoyaltyClient(ClientConfig(target=fake.target, retry=NO_RETRIES)) as sdk:
        with pytest.raises(Unavailable) as raised:
            sdk.get_balance(member)
    assert len(fake.calls_to("GetBalance")) == 1 and not raised.value.outcome_unknown  # a read


def test_a_batch_is_retried_whole_with_the_same_item_request_ids(fake, client, member):
    fake.fail_next(1, method="Batch", after_apply=True)
    results = client.batch([RedeemItem(member, 10), RedeemItem(member, 10, request_id="mine")])
    first, second = fake.calls_to("Batch")
    ids = [item.redeem.request_id for item in first.request.items]
    assert ids == [item.redeem.request_id for item in second.request.items] == [r.request_id for r in results]
    assert ids[1] == "mine"
    assert client.get_balance(member).available == 80  # each item applied once


def test_async_client_retries_with_the_same_request_id(fake, member):
    fake.clear_calls()
    fake.fail_next(2, method="Redeem", after_apply=True)

    async def scenario():
        async with AsyncLoyaltyClient(ClientConfig(target=fake.target, retry=ZERO_DELAYS), sleep=no_wait) as sdk:
            return await sdk.redeem(member, 7), await sdk.get_balance(member)

    redeemed, balance = asyncio.run(scenario())
    assert redeemed.points == 7 and balance.available == 93
    assert len({call.request.request_id for call in fake.calls_to("Redeem")}) == 1
    assert len(fake.calls_to("Redeem")) == 3


def test_async_unknown_outcome_carries_the_request_id(fake, member):
    fake.clear_calls()
    fake.fail_next(100, method="Adjust", after_apply=True)

    async def scenario():
        async with AsyncLoyaltyClient(ClientConfig(target=fake.target, retry=ZERO_DELAYS), sleep=no_wait) as sdk:
            with pytest.raises(Unavailable) as raised:
                await sdk.adjust(member, 5, reason="goodwill")
            fake.clear_calls()
            return raised.value, await sdk.resolve(member, raised.value.request_id)

    error, operation = asyncio.run(scenario())
    assert error.outcome_unknown and operation.succeeded and operation.result.balance.available == 105


def test_the_client_waits_with_full_jitter_between_attempts(fake, member):
    fake.clear_calls()
    fake.fail_next(3, method="GetBalance")
    waits: list[float] = []
    policy = RetryPolicy(max_attempts=4, initial_backoff=0.5, max_backoff=1.5, multiplier=2.0)
    with LoyaltyClient(ClientConfig(target=fake.target, retry=policy), sleep=waits.append) as sdk:
        sdk.get_balance(member)
    assert len(waits) == 3
    assert all(0 <= wait <= cap for wait, cap in zip(waits, [0.5, 1.0, 1.5], strict=True))


# ----------------------------------------------------------------------------- retry policy


def test_retry_policy_backoff_caps_and_limits():
    policy = RetryPolicy(max_attempts=4, initial_backoff=0.1, max_backoff=0.3, multiplier=2.0, total_timeout=10.0)
    assert [policy.backoff_cap(n) for n in (1, 2, 3, 4)] == [0.1, 0.2, 0.3, 0.3]
    highest = lambda low, high: high  # noqa: E731 - the largest draw full jitter allows
    assert policy.next_delay(grpc.StatusCode.UNAVAILABLE, 2, 10.0, uniform=highest) == 0.2
    assert policy.next_delay(grpc.StatusCode.UNAVAILABLE, 4, 10.0, uniform=highest) is None  # attempts used up
    assert policy.next_delay(grpc.StatusCode.UNAVAILABLE, 1, 0.05, uniform=highest) is None  # out of time
    assert policy.next_delay(grpc.StatusCode.NOT_FOUND, 1, 10.0) is None  # not retryable
    draws = [policy.next_delay(grpc.StatusCode.RESOURCE_EXHAUSTED, 3, 10.0, uniform=random.Random(7).uniform) for _ in range(50)]
    assert all(0 <= draw <= 0.3 for draw in draws)
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(dataclasses_frozen_error()):
        policy.max_attempts = 9  # type: ignore[misc]


def dataclasses_frozen_error():
    import dataclasses

    return dataclasses.FrozenInstanceError


# ----------------------------------------------------------------------------- deadlines


def test_default_and_per_call_deadlines_reach_the_server(fake, member):
    with LoyaltyClient(ClientConfig(target=fake.target, timeout=600.0)) as sdk:
        sdk.get_balance(member)
        sdk.redeem(member, 1, timeout=30.0)
    default_call, per_call = fake.calls
    # gRPC rounds deadlines up a little on the wire; the bounds only tell them apart.
    assert 100.0 < default_call.time_remaining <= 601.0
    assert 0.0 < per_call.time_remaining <= 31.0


def test_an_expired_deadline_is_deadline_exceeded_with_an_unknown_outcome(fake, member):
    fake.fail_next(1, method="Redeem", code=grpc.StatusCode.DEADLINE_EXCEEDED)
    with LoyaltyClient(ClientConfig(target=fake.target, retry=NO_RETRIES)) as sdk:
        with pytest.raises(DeadlineExceeded) as raised:
            sdk.redeem(member, 1)
    assert raised.value.outcome_unknown and raised.value.retryable


# ----------------------------------------------------------------------------- credentials


def test_the_api_key_is_sent_on_every_call(fake, member):
    fake.clear_calls()
    config = ClientConfig(target=fake.target, api_key="secret-key")
    with LoyaltyClient(config) as sdk:
        sdk.get_balance(member)
        sdk.redeem(member, 1)
        sdk.batch([RedeemItem(member, 1)])

    async def scenario():
        async with AsyncLoyaltyClient(config) as sdk:
            await sdk.get_member(member)

    asyncio.run(scenario())
    calls = fake.calls
    assert [call.method for call in calls] == ["GetBalance", "Redeem", "Batch", "GetMember"]
    assert all(call.header("authorization") == "Bearer secret-key" for call in calls)


def test_without_an_api_key_no_authorization_is_sent(fake, client, member):
    client.get_balance(member)
    assert fake.calls and all(call.header("authorization") is None for call in fake.calls)


def test_config_from_env(tmp_path):
    root = tmp_path / "root.pem"
    root.write_bytes(b"ROOT")
    config = ClientConfig.from_env(
        {"LOYALTY_TARGET": "loyalty.example:443", "LOYALTY_API_KEY": "k", "LOYALTY_TLS_ROOT_CERTIFICATES": str(root)},
        timeout=3.0,
    )
    assert (config.target, config.api_key, config.timeout) == ("loyalty.example:443", "k", 3.0)
    assert config.tls == TlsConfig(root_certificates=b"ROOT")
    assert config.call_metadata() == (("authorization", "Bearer k"),)
    assert ClientConfig.from_env({}) == ClientConfig()
    assert ClientConfig.from_env({"LOYALTY_TLS": "1"}).tls == TlsConfig()
    with pytest.raises(ValueError):
        TlsConfig(certificate_chain=b"cert")  # mutual TLS needs the key too


def make_certificates():
    """A self-signed CA, a server certificate for "localhost" and a client certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def pem_key(key):
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())

    def issue(name, key, issuer_name, issuer_key, *, ca=False, dns=None):
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(issuer_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if dns:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(dns)]), critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test-ca")])
    ca = issue("test-ca", ca_key, ca_name, ca_key, ca=True)
    server_key, client_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    server = issue("localhost", server_key, ca_name, ca_key, dns="localhost")
    client = issue("client", client_key, ca_name, ca_key)
    pem = lambda certificate: certificate.public_bytes(serialization.Encoding.PEM)  # noqa: E731
    return pem(ca), (pem(server), pem_key(server_key)), (pem(client), pem_key(client_key))


def test_tls_and_mutual_tls_channels_work_end_to_end():
    ca, (server_chain, server_key), (client_chain, client_key) = make_certificates()
    member_id = f"sdk-{uuid.uuid4().hex[:12]}"

    async def scenario():
        core = ShardCore(CompiledProgram(Program()))
        server = grpc.aio.server()
        loyalty_pb2_grpc.add_LoyaltyServiceServicer_to_server(
            LoyaltyService(InProcessRouter(core, lambda: 1_767_225_600_000)), server
        )
        credentials = grpc.ssl_server_credentials([(server_key, server_chain)], root_certificates=ca, require_client_auth=True)
        port = server.add_secure_port("127.0.0.1:0", credentials)
        await server.start()
        try:
            mutual = TlsConfig(ca, client_chain, client_key, server_name_override="localhost")
            async with AsyncLoyaltyClient(ClientConfig(target=f"127.0.0.1:{port}", tls=mutual)) as sdk:
                member = await sdk.enroll_member(member_id)
            # Without a client certificate the server refuses the handshake.
            one_way = TlsConfig(ca, server_name_override="localhost")
            config = ClientConfig(target=f"127.0.0.1:{port}", tls=one_way, retry=NO_RETRIES, timeout=5.0)
            async with AsyncLoyaltyClient(config) as sdk:
                with pytest.raises(LoyaltyError) as refused:
                    await sdk.get_member(member_id)
            return member, refused.value
        finally:
            await server.stop(None)

    member, refused = asyncio.run(scenario())
    assert member.member_id == member_id
    assert refused.code == grpc.StatusCode.UNAVAILABLE


def test_a_blocking_tls_client_can_be_constructed_from_files(tmp_path):
    ca, (server_chain, _), (client_chain, client_key) = make_certificates()
    for name, data in {"ca.pem": ca, "client.pem": client_chain, "client.key": client_key}.items():
        (tmp_path / name).write_bytes(data)
    tls = TlsConfig.from_files(tmp_path / "ca.pem", tmp_path / "client.pem", tmp_path / "client.key")
    assert tls.root_certificates == ca and tls.private_key == client_key
    with LoyaltyClient(ClientConfig(target="127.0.0.1:1", tls=tls)) as sdk:
        assert sdk.config.tls is tls


# ----------------------------------------------------------------------------- batches


def test_batch_operations_splits_at_the_server_limit(fake, client):
    prefix = f"bulk-{uuid.uuid4().hex[:8]}"
    items = [EnrollMemberItem(f"{prefix}-{index}") for index in range(BATCH_ITEMS_MAX + 1)]
    results = client.batch_operations(items)
    assert [len(call.request.items) for call in fake.calls_to("Batch")] == [BATCH_ITEMS_MAX, 1]
    assert len(results) == BATCH_ITEMS_MAX + 1
    assert [r.member_id for r in results[-2:]] == [f"{prefix}-{BATCH_ITEMS_MAX - 1}", f"{prefix}-{BATCH_ITEMS_MAX}"]
    with pytest.raises(ValueError):
        client.batch(items)
    with pytest.raises(ValueError):
        client.batch_operations(items, items_per_call=BATCH_ITEMS_MAX + 1)


def test_a_batch_call_that_fails_whole_gives_each_item_its_error(fake, member):
    fake.clear_calls()
    fake.fail_next(1, method="Batch")
    items = [RedeemItem(member, 1), RedeemItem(member, 1), RedeemItem(member, 10_000), RedeemItem(member, 1)]
    with LoyaltyClient(ClientConfig(target=fake.target, retry=NO_RETRIES)) as sdk:
        results = sdk.batch_operations(items, items_per_call=2)
    assert [type(r).__name__ for r in results] == ["Unavailable", "Unavailable", "InsufficientPoints", "RedeemResult"]
    first_call_ids = [item.redeem.request_id for item in fake.calls_to("Batch")[0].request.items]
    assert [results[0].request_id, results[1].request_id] == first_call_ids
    assert all(r.outcome_unknown for r in results[:2])


def test_empty_batch_operations_makes_no_call(fake, client):
    assert client.batch_operations([]) == []
    assert fake.calls_to("Batch") == []


# ----------------------------------------------------------------------------- errors


def test_every_reason_has_its_class_and_the_tree_has_one_root():
    reasons = {value.name for value in loyalty_pb2.ErrorReason.DESCRIPTOR.values} - {"ERROR_REASON_UNSPECIFIED"}
    assert set(ERRORS_BY_REASON) == reasons
    assert all(issubclass(error_class, BaseError) for error_class in ERRORS_BY_REASON.values())
    assert {cls.__name__ for cls in (Overloaded, Unavailable, DeadlineExceeded) if cls.retryable} == {
        "Overloaded",
        "Unavailable",
        "DeadlineExceeded",
    }
    assert not InsufficientPoints.retryable and not ReservationExpired.retryable


def test_errors_survive_pickling(fake, client, member):
    import pickle

    with pytest.raises(InsufficientPoints) as raised:
        client.redeem(member, 10_000, request_id="too-much")
    copy = pickle.loads(pickle.dumps(raised.value))
    assert type(copy) is InsufficientPoints and copy.details == raised.value.details
    assert (copy.request_id, copy.outcome_unknown, copy.reason) == ("too-much", False, "INSUFFICIENT_POINTS")


# ----------------------------------------------------------------------------- request ids


def test_request_ids_are_128_bit_time_sortable_and_unique():
    earlier = [new_request_id(now_ms=1_767_225_600_000 + step) for step in range(0, 5000, 7)]
    assert earlier == sorted(earlier)
    assert all(len(rid) == REQUEST_ID_LENGTH and rid.isalnum() for rid in earlier)
    assert request_id_time_ms(earlier[1]) == 1_767_225_600_007
    many = {new_request_id() for _ in range(10_000)}
    assert len(many) == 10_000
    assert max(request_id_time_ms(rid) for rid in many) < 1 << 48
    with pytest.raises(ValueError):
        new_request_id(now_ms=1 << 48)


# ----------------------------------------------------------------------------- the fake's clock


def test_the_fake_clock_expires_holds_and_points():
    with FakeLoyaltyServer() as fake, LoyaltyClient(fake.target) as sdk:
        sdk.enroll_member("alice")
        earned = sdk.earn("alice", lines=[Line("shoes", 1, 5000)], currency="EUR")
        assert earned.available_at == fake.now()
        hold = sdk.reserve("alice", 20, ttl=datetime.timedelta(minutes=5))
        assert hold.expires_at == fake.now() + datetime.timedelta(minutes=5)
        fake.advance(seconds=301)
        with pytest.raises(ReservationExpired):
            sdk.capture("alice", hold.reservation_id)
        assert sdk.get_balance("alice").available == 50
        fake.advance(days=366)
        balance = sdk.get_balance("alice")
        assert (balance.available, balance.expired) == (0, 50)
        kinds = [t.kind for t in sdk.iter_transactions("alice")]
        assert TransactionKind.EXPIRE in kinds and TransactionKind.RESERVATION_EXPIRED in kinds
        with pytest.raises(ValueError):
            fake.advance(seconds=-1)


def test_the_fake_takes_a_program_and_a_start_time():
    start = datetime.datetime(2030, 6, 1, tzinfo=datetime.UTC)
    with FakeLoyaltyServer(program=Program(return_window_days=30), start=start) as fake, LoyaltyClient(fake.target) as sdk:
        sdk.enroll_member("bob")
        earned = sdk.earn("bob", lines=[Line("tv", 1, 49900)], currency="EUR")
        assert earned.pending and earned.available_at == start + datetime.timedelta(days=30)
        assert sdk.get_balance("bob").pending == 499
        fake.advance(days=31)
        assert sdk.get_balance("bob").available == 499
