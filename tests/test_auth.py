"""API keys, roles, scopes, key administration, the audit log and secure defaults,
over real gRPC against a real server (Ray shards, Redis)."""

from __future__ import annotations

import json
import logging
import math
import subprocess
import time
import types
import uuid

import grpc
import pytest

from loyalty.clients import error_details
from loyalty.server.cli import main as cli
from loyalty.server.errors import RateLimited
from loyalty.server.security.caller import ANONYMOUS, Caller, acting_as, current_caller
from loyalty.server.security.guard import AuthGuard, check_exposure
from loyalty.server.stores.keys import hash_secret, new_secret
from loyalty.server.security.rate_limits import KeyRateLimiter, TokenBucket
from loyalty.server.security.config import (
    ApiKeySeed,
    Limits,
    SecurityConfigError,
    SecuritySettings,
    load_security_config,
)
from loyalty.v1 import admin_pb2 as apb
from loyalty.v1 import admin_pb2_grpc, loyalty_pb2_grpc
from loyalty.v1 import loyalty_pb2 as pb


def _purchase(store_id: str = "berlin-1", channel: str = "pos", amount_minor: int = 1000) -> pb.Purchase:
    return pb.Purchase(
        channel=channel,
        store_id=store_id,
        currency="EUR",
        lines=[pb.PurchaseLine(sku="shoes", quantity=1, amount_minor=amount_minor)],
    )


def _failure(call, *args, **kwargs):
    with pytest.raises(grpc.RpcError) as caught:
        call(*args, **kwargs)
    return caught.value


# --------------------------------------------------------------------------- units


def test_a_token_bucket_allows_its_burst_then_its_rate_and_says_how_long_to_wait():
    bucket = TokenBucket(rate_per_s=2.0, burst=3, now_s=100.0)
    assert [bucket.take(1, 100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(1, 100.0) == pytest.approx(0.5)  # one token every half second
    assert bucket.take(1, 100.5) == 0.0
    assert bucket.take(1, 1_000.0) == 0.0  # a long pause refills to the burst, no more
    assert [bucket.take(1, 1_000.0) for _ in range(3)] == [0.0, 0.0, pytest.approx(0.5)]
    assert math.isinf(bucket.take(4, 2_000.0))  # more than the burst never fits


def test_a_refused_call_costs_no_redemption_tokens():
    limiter = KeyRateLimiter(Limits(key_requests_burst=1, key_requests_per_s=1.0, key_redemptions_burst=5))
    limiter.check("key_a", requests=1, redemptions=1, now_s=0.0)
    for _ in range(10):  # the requests bucket refuses; the redemption bucket keeps its tokens
        with pytest.raises(RateLimited) as refused:
            limiter.check("key_a", requests=1, redemptions=1, now_s=0.0)
        assert refused.value.bucket == "requests"
    for second in range(1, 5):
        limiter.check("key_a", requests=1, redemptions=1, now_s=float(second))
    limiter.check("key_b", requests=1, redemptions=1, now_s=0.0)  # buckets are per key


def test_the_config_file_seeds_keys_by_hash_and_overrides_limits_within_bounds():
    digest = hash_secret("s3cret")
    parsed = load_security_config(
        f"""
        [program]
        points_per_unit = 1
        [[api_keys]]
        name = "till-1"
        role = "pos"
        secret_sha256 = "{digest}"
        store_ids = ["berlin-1"]
        [limits]
        key_redemptions_per_s = 5.0
        page_size_max = 100
        """.encode()
    )
    (seed,) = parsed.api_keys
    assert (seed.role, seed.store_ids, seed.secret_sha256) == ("pos", ("berlin-1",), digest)
    assert seed.resolved_key_id().startswith("key_")
    assert parsed.limits.key_redemptions_per_s == 5.0 and parsed.limits.page_size_max == 100
    bad_files = {
        b'[[api_keys]]\nname = "a"\nrole = "root"\nsecret_sha256 = "' + digest.encode() + b'"': "api_keys[0]",
        b'[[api_keys]]\nname = "a"\nrole = "pos"\nsecret_sha256 = "s3cret"': "api_keys[0].secret_sha256",
        b"[limits]\npage_size_max = 100000": "limits.page_size_max",
        b"[limits]\nbatch_operations_max = 0": "limits.batch_operations_max",
        b"[limits]\nno_such_limit = 1": "limits",
        b"[limits]\ndeadline_default_s = 100.0\ndeadline_max_s = 10.0": "deadline_default_s",
    }
    for text, where in bad_files.items():
        with pytest.raises(SecurityConfigError, match=where.replace("[", r"\[").replace("]", r"\]")):
            load_security_config(text)


def test_a_non_loopback_address_needs_keys_or_insecure():
    assert check_exposure(host="127.0.0.1", insecure=False, keys_exist=False) is None
    assert check_exposure(host="localhost", insecure=False, keys_exist=False) is None
    assert check_exposure(host="::1", insecure=False, keys_exist=False) is None
    assert "without API keys" in check_exposure(host="0.0.0.0", insecure=False, keys_exist=False)
    assert check_exposure(host="0.0.0.0", insecure=True, keys_exist=False) is None
    assert check_exposure(host="0.0.0.0", insecure=False, keys_exist=True) is None


def test_loyalty_serve_refuses_a_public_address_without_keys_with_exit_code_2(redis_server, capsys):
    # The check runs before anything listens, so nothing is ever bound to 0.0.0.0.
    code = None
    try:
        code = cli.main(
            ["serve", "--host", "0.0.0.0", "--port", "0", "--redis-url", redis_server.url, "--shards", "1"]
        )
    except SystemExit as exit_:
        code = exit_.code
    assert code == 2
    assert "refusing to listen on 0.0.0.0 without API keys" in capsys.readouterr().err


def test_calls_without_a_deadline_get_the_default_and_long_deadlines_are_cut():
    guard = AuthGuard(None, None, Limits(deadline_default_s=7.0, deadline_max_s=20.0))

    def context(remaining_s):
        return types.SimpleNamespace(time_remaining=lambda: remaining_s)

    assert guard._timeout_s(context(None)) == 7.0
    assert guard._timeout_s(context(3600.0)) == 20.0
    assert guard._timeout_s(context(5.0)) is None  # the client's own deadline governs


def test_outside_a_call_the_caller_is_anonymous_unless_set():
    assert current_caller() is ANONYMOUS
    someone = Caller("key_x", "x", "admin")
    with acting_as(someone):
        assert current_caller() is someone
    assert current_caller() is ANONYMOUS


def test_a_server_without_keys_says_authentication_is_off(loyalty_server, stub, member_id):
    assert "authentication is off" in loyalty_server.server.security.describe()
    stub.EnrollMember(pb.EnrollMemberRequest(member_id=member_id, request_id="e"))  # no key needed


# --------------------------------------------------------------------------- keys over gRPC


@pytest.fixture
def channel(secured_server):
    with grpc.insecure_channel(secured_server.target) as opened:
        yield opened


@pytest.fixture
def stubs(channel):
    return loyalty_pb2_grpc.LoyaltyServiceStub(channel), admin_pb2_grpc.AdminServiceStub(channel)


def test_no_key_unknown_key_malformed_and_revoked_keys_all_get_one_unauthenticated(secured_server, stubs):
    stub, admin = stubs
    admin_md = secured_server.metadata(secured_server.secrets["admin"])
    created = admin.CreateApiKey(
        apb.CreateApiKeyRequest(name="soon-gone", role=apb.ROLE_POS), metadata=admin_md
    )
    admin.RevokeApiKey(apb.RevokeApiKeyRequest(key_id=created.key.key_id), metadata=admin_md)
    attempts = {
        "none": (),
        "unknown": secured_server.metadata(new_secret()),
        "revoked": secured_server.metadata(created.secret),
        "not bearer": (("authorization", f"Basic {secured_server.secrets['admin']}"),),
        "empty": (("authorization", "Bearer "),),
    }
    answers = set()
    for name, metadata in attempts.items():
        error = _failure(stub.GetBalance, pb.GetBalanceRequest(member_id="m"), metadata=metadata)
        details = error_details(error)
        assert (error.code(), details.reason) == (grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED"), name
        answers.add((details.message, tuple(sorted(details.metadata.items()))))
        assert created.secret not in details.message
    assert len(answers) == 1  # nothing tells a revoked key from an unknown one


def test_a_role_calling_outside_its_table_gets_permission_denied(secured_server, stubs, member_id):
    stub, admin = stubs
    pos = secured_server.metadata(secured_server.secrets["pos"])
    analytics = secured_server.metadata(secured_server.secrets["analytics"])
    stub.EnrollMember(pb.EnrollMemberRequest(member_id=member_id, request_id="e"), metadata=pos)
    stub.Earn(pb.EarnRequest(member_id=member_id, request_id="p1", purchase=_purchase()), metadata=pos)
    error = _failure(
        stub.Adjust,
        pb.AdjustRequest(member_id=member_id, request_id="a", points=1000, reason="gift"),
        metadata=pos,
    )
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_details(error).metadata["method"] == "Adjust"
    assert (
        _failure(admin.ListApiKeys, apb.ListApiKeysRequest(), metadata=pos).code()
        == grpc.StatusCode.PERMISSION_DENIED
    )
    error = _failure(
        stub.Redeem, pb.RedeemRequest(member_id=member_id, request_id="r", points=1), metadata=analytics
    )
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert stub.GetBalance(pb.GetBalanceRequest(member_id=member_id), metadata=analytics).available == 10


def test_an_ecommerce_key_cannot_slip_an_adjust_into_a_batch(secured_server, stubs, member_id):
    stub, _ = stubs
    ecommerce = secured_server.metadata(secured_server.secrets["ecommerce"])
    stub.EnrollMember(pb.EnrollMemberRequest(member_id=member_id, request_id="e"), metadata=ecommerce)
    batch = pb.BatchRequest(
        items=[
            pb.BatchItem(earn=pb.EarnRequest(member_id=member_id, request_id="p", purchase=_purchase())),
            pb.BatchItem(
                adjust=pb.AdjustRequest(member_id=member_id, request_id="a", points=10**6, reason="x")
            ),
        ]
    )
    error = _failure(stub.Batch, batch, metadata=ecommerce)
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_details(error).metadata["field"] == "items[1].adjust"
    assert stub.GetBalance(pb.GetBalanceRequest(member_id=member_id), metadata=ecommerce).available == 0
    admin = secured_server.metadata(secured_server.secrets["admin"])
    results = stub.Batch(batch, metadata=admin).results  # the same Batch is fine for an admin
    assert [result.status.code for result in results] == [0, 0]


def test_a_store_scoped_key_records_purchases_only_in_its_stores(secured_server, stubs, member_id):
    stub, admin = stubs
    admin_md = secured_server.metadata(secured_server.secrets["admin"])
    created = admin.CreateApiKey(
        apb.CreateApiKeyRequest(
            name="till-berlin", role=apb.ROLE_POS, channels=["pos"], store_ids=["berlin-1"]
        ),
        metadata=admin_md,
    )
    assert list(created.key.store_ids) == ["berlin-1"]
    till = secured_server.metadata(created.secret)
    stub.EnrollMember(pb.EnrollMemberRequest(member_id=member_id, request_id="e"), metadata=till)
    stub.Earn(
        pb.EarnRequest(member_id=member_id, request_id="ok", purchase=_purchase("berlin-1")), metadata=till
    )
    refused = {
        "other store": _purchase("paris-1"),
        "no store": _purchase(""),
        "other channel": _purchase("berlin-1", channel="web"),
    }
    for name, purchase in refused.items():
        error = _failure(
            stub.Earn,
            pb.EarnRequest(member_id=member_id, request_id=name.replace(" ", "-"), purchase=purchase),
            metadata=till,
        )
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED, name
        error = _failure(
            stub.SimulateEarn, pb.EarnRequest(member_id=member_id, purchase=purchase), metadata=till
        )
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED, name
    # Member-level operations name no store: a scoped till may redeem (rate-limited).
    assert (
        stub.Redeem(
            pb.RedeemRequest(member_id=member_id, request_id="r", points=3), metadata=till
        ).balance.available
        == 7
    )
    assert stub.GetBalance(pb.GetBalanceRequest(member_id=member_id), metadata=till).available == 7


def test_rotation_and_revocation_take_effect_at_once_and_are_audited_without_secrets(
    secured_server, stubs, member_id, caplog
):
    caplog.set_level(logging.DEBUG)
    stub, admin = stubs
    admin_md = secured_server.metadata(secured_server.secrets["admin"])
    created = admin.CreateApiKey(
        apb.CreateApiKeyRequest(name="web-shop", role=apb.ROLE_ECOMMERCE), metadata=admin_md
    )
    key_id, first = created.key.key_id, created.secret
    assert first.startswith("lk_") and created.key.role == apb.ROLE_ECOMMERCE
    stub.EnrollMember(
        pb.EnrollMemberRequest(member_id=member_id, request_id="e"), metadata=secured_server.metadata(first)
    )

    rotated = admin.RotateApiKey(apb.RotateApiKeyRequest(key_id=key_id), metadata=admin_md)
    second = rotated.secret
    assert second != first and rotated.key.key_id == key_id and rotated.key.HasField("rotate_time")
    error = _failure(
        stub.GetMember, pb.GetMemberRequest(member_id=member_id), metadata=secured_server.metadata(first)
    )
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert stub.GetMember(
        pb.GetMemberRequest(member_id=member_id), metadata=secured_server.metadata(second)
    ).member_id

    revoked = admin.RevokeApiKey(apb.RevokeApiKeyRequest(key_id=key_id), metadata=admin_md)
    assert revoked.HasField("revoke_time")
    error = _failure(
        stub.GetMember, pb.GetMemberRequest(member_id=member_id), metadata=secured_server.metadata(second)
    )
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    error = _failure(admin.RotateApiKey, apb.RotateApiKeyRequest(key_id=key_id), metadata=admin_md)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT  # a revoked key stays revoked
    error = _failure(
        admin.RevokeApiKey, apb.RevokeApiKeyRequest(key_id="key_0000000000000000"), metadata=admin_md
    )
    assert error_details(error).reason == "API_KEY_NOT_FOUND"

    active = admin.ListApiKeys(apb.ListApiKeysRequest(), metadata=admin_md).keys
    everything = admin.ListApiKeys(apb.ListApiKeysRequest(include_revoked=True), metadata=admin_md).keys
    assert key_id not in {key.key_id for key in active}
    assert key_id in {key.key_id for key in everything}

    events = admin.ListAuditEvents(apb.ListAuditEventsRequest(page_size=500), metadata=admin_md).events
    mine = [event for event in events if event.target == f"key/{key_id}"]
    assert [event.action for event in mine] == [
        "RevokeApiKey",
        "RotateApiKey",
        "CreateApiKey",
    ]  # newest first
    assert {event.actor_key_id for event in mine} == {secured_server.key_ids["admin"]}
    assert (
        json.loads(mine[0].after_json)["revoke_time_ms"] > 0
        and json.loads(mine[0].before_json)["revoke_time_ms"] == 0
    )
    assert mine[2].before_json == ""
    texts = [str(everything), str(events), caplog.text]
    for secret in (first, second, secured_server.secrets["admin"]):
        for text in texts:
            assert secret not in text
            assert hash_secret(secret) not in text


def test_audit_events_page_newest_first(secured_server, stubs):
    _, admin = stubs
    admin_md = secured_server.metadata(secured_server.secrets["admin"])
    for index in range(3):
        admin.CreateApiKey(
            apb.CreateApiKeyRequest(name=f"paged-{index}", role=apb.ROLE_ANALYTICS), metadata=admin_md
        )
    seen, token = [], ""
    while True:
        page = admin.ListAuditEvents(
            apb.ListAuditEventsRequest(page_size=2, page_token=token), metadata=admin_md
        )
        assert len(page.events) <= 2
        seen.extend(page.events)
        token = page.next_page_token
        if not token:
            break
    ids = [event.event_id for event in seen]
    assert len(ids) == len(set(ids)) >= 3 + 4  # and the four keys seeded from config
    times = [(int(i.split("-")[0]), int(i.split("-")[1])) for i in ids]
    assert times == sorted(times, reverse=True)
    assert [json.loads(event.after_json)["name"] for event in seen[:3]] == ["paged-2", "paged-1", "paged-0"]
    error = _failure(
        admin.ListAuditEvents, apb.ListAuditEventsRequest(page_token="bm9wZQ=="), metadata=admin_md
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_bad_key_requests_name_the_field(secured_server, stubs):
    _, admin = stubs
    admin_md = secured_server.metadata(secured_server.secrets["admin"])
    cases = {
        "role": apb.CreateApiKeyRequest(name="x"),
        "name": apb.CreateApiKeyRequest(role=apb.ROLE_POS),
        "store_ids[0]": apb.CreateApiKeyRequest(name="x", role=apb.ROLE_POS, store_ids=["bad\nstore"]),
    }
    for field, request in cases.items():
        error = _failure(admin.CreateApiKey, request, metadata=admin_md)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_details(error).field_violations[0][0] == field
    error = _failure(admin.RevokeApiKey, apb.RevokeApiKeyRequest(key_id="not a key"), metadata=admin_md)
    assert error_details(error).field_violations[0][0] == "key_id"


def test_a_revocation_reaches_another_gateway_process_on_the_same_redis(secured_server, stubs, member_id):
    """Two gateway processes share one Redis: a key revoked through one stops working
    on the other (pub/sub invalidation), which also enforces roles itself."""
    stub, admin = stubs
    admin_md = secured_server.metadata(secured_server.secrets["admin"])
    created = admin.CreateApiKey(
        apb.CreateApiKeyRequest(name="roaming", role=apb.ROLE_POS), metadata=admin_md
    )
    server = secured_server.thread.server
    worker = subprocess.Popen(
        server.worker_command(port=0, security=SecuritySettings()),
        stdout=subprocess.PIPE, text=True,
    )
    try:
        line = worker.stdout.readline()
        assert "ready on" in line, line
        port = int(line.rsplit(":", 1)[1])
        with grpc.insecure_channel(f"127.0.0.1:{port}") as other_channel:
            other = loyalty_pb2_grpc.LoyaltyServiceStub(other_channel)
            roaming = secured_server.metadata(created.secret)
            other.EnrollMember(pb.EnrollMemberRequest(member_id=member_id, request_id="e"), metadata=roaming)
            error = _failure(
                other.Adjust,
                pb.AdjustRequest(member_id=member_id, request_id="a", points=5, reason="x"),
                metadata=roaming,
            )
            assert error.code() == grpc.StatusCode.PERMISSION_DENIED
            assert error_details(
                _failure(other.GetBalance, pb.GetBalanceRequest(member_id=member_id))
            ).reason == ("UNAUTHENTICATED")
            admin.RevokeApiKey(apb.RevokeApiKeyRequest(key_id=created.key.key_id), metadata=admin_md)
            deadline = time.monotonic() + 10  # pub/sub delivery: milliseconds; bounded poll
            while True:
                try:
                    other.GetBalance(pb.GetBalanceRequest(member_id=member_id), metadata=roaming)
                except grpc.RpcError as error:
                    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
                    break
                assert time.monotonic() < deadline, "the other gateway still accepts a revoked key"
    finally:
        worker.terminate()
        worker.wait(timeout=60)


def test_seeding_again_keeps_a_revoked_config_key_revoked(secured_server, stubs):
    import asyncio

    import redis.asyncio as aioredis

    from loyalty.server.stores.keys import KeyRecords

    _, admin = stubs
    admin_md = secured_server.metadata(secured_server.secrets["admin"])
    seed = ApiKeySeed(name=f"cfg-{uuid.uuid4().hex[:6]}", role="pos", secret_sha256=hash_secret(new_secret()))

    async def seed_twice():
        client = aioredis.Redis.from_url(secured_server.redis_url)
        records = KeyRecords(client, key_prefix=secured_server.key_prefix)
        try:
            first = await records.seed([seed], now_ms=1)
            await records.revoke(seed.resolved_key_id(), now_ms=2)
            second = await records.seed([seed], now_ms=3)  # a restart with the same file
            return first, second, await records.get(seed.resolved_key_id())
        finally:
            await client.aclose()

    first, second, stored = asyncio.run(seed_twice())
    assert len(first) == 1 and second == [] and stored.revoked
    listed = admin.ListApiKeys(apb.ListApiKeysRequest(), metadata=admin_md).keys
    assert seed.resolved_key_id() not in {key.key_id for key in listed}


def test_page_tokens_longer_than_any_issued_are_refused_before_decoding(secured_server, stubs):
    stub, admin = stubs
    admin_md = secured_server.metadata(secured_server.secrets["admin"])
    huge = "A" * 100_000
    for call, request in [
        (stub.ListTransactions, pb.ListTransactionsRequest(member_id="m", page_token=huge)),
        (admin.ListApiKeys, apb.ListApiKeysRequest(page_token=huge)),
        (admin.ListAuditEvents, apb.ListAuditEventsRequest(page_token=huge)),
    ]:
        error = _failure(call, request, metadata=admin_md)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_details(error).field_violations[0][0] == "page_token"
