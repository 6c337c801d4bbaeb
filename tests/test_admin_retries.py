"""AdminService changes are safe to retry: every mutation sent again with the same
request_id answers its first outcome and changes nothing, the same id with another
request is REQUEST_ID_CONFLICT, and a change whose audit write failed is neither made
twice nor audited twice when retried. Over real gRPC against a real server."""

from __future__ import annotations

import json
import uuid

import grpc
import pytest
import redis
from google.protobuf import field_mask_pb2

from loyalty.clients import error_details
from loyalty.server.stores.admin_requests import ADMIN_REQUEST_RETENTION_S, request_key
from loyalty.server.stores.audit import audit_key
from loyalty.server.stores.keys import hash_secret, records_key
from loyalty.v1 import admin_pb2 as apb
from loyalty.v1 import admin_pb2_grpc
from loyalty.v1 import loyalty_pb2 as pb
from loyalty.v1 import loyalty_pb2_grpc


@pytest.fixture(scope="module")
def channel(secured_server):
    with grpc.insecure_channel(secured_server.target) as opened:
        yield opened


@pytest.fixture
def admin(channel):
    return admin_pb2_grpc.AdminServiceStub(channel)


@pytest.fixture
def md(secured_server):
    return secured_server.metadata(secured_server.secrets["admin"])


@pytest.fixture
def redis_db(secured_server):
    client = redis.Redis.from_url(secured_server.redis_url)
    yield client
    client.close()


def rid() -> str:
    return f"req-{uuid.uuid4().hex}"


def rule(rule_id: str, **fields) -> apb.Rule:
    message = apb.Rule(rule_id=rule_id, name="bonus", priority=5, enabled=True, effect=apb.RuleEffect(bonus_points=10))
    for name, value in fields.items():
        setattr(message, name, value)
    return message


def error_of(call, *args, **kwargs):
    with pytest.raises(grpc.RpcError) as caught:
        call(*args, **kwargs)
    details = error_details(caught.value)
    return details.code, details.reason


CONFLICT = (grpc.StatusCode.ALREADY_EXISTS, "REQUEST_ID_CONFLICT")
AUDIT_NOT_WRITTEN = (grpc.StatusCode.UNAVAILABLE, "CONTROL_STORE_UNAVAILABLE")
"""A change that stands but whose audit event could not be appended: the audit log
is the control store's, not a shard's."""


def version(admin, md) -> int:
    return admin.ListRules(apb.ListRulesRequest(page_size=1), metadata=md).version


def audit_events(admin, md, target: str) -> list[apb.AuditEvent]:
    events = admin.ListAuditEvents(apb.ListAuditEventsRequest(page_size=500), metadata=md).events
    return [event for event in events if event.target == target]


class AuditStreamBroken:
    """Makes the audit stream unwritable (a string where the stream should be: XADD
    fails with WRONGTYPE) until the block ends; the events it held come back."""

    def __init__(self, client: redis.Redis, key_prefix: str) -> None:
        self._client = client
        self._key = audit_key(key_prefix)
        self._aside = self._key + ":aside"
        self.broken = False

    def __enter__(self):
        if self._client.exists(self._key):
            self._client.rename(self._key, self._aside)
        self._client.set(self._key, "not a stream")
        self.broken = True
        return self

    def __exit__(self, *exc_info):
        """Repair (once; repairing again does nothing)."""
        if not self.broken:
            return
        self.broken = False
        self._client.delete(self._key)
        if self._client.exists(self._aside):
            self._client.rename(self._aside, self._key)


# ---------------------------------------------------------------------------- rules


def test_create_rule_retried_answers_the_first_rule_and_makes_one_version(admin, md):
    rule_id, request_id = f"r-{uuid.uuid4().hex[:10]}", rid()
    request = apb.CreateRuleRequest(rule=rule(rule_id), request_id=request_id)
    first = admin.CreateRule(request, metadata=md)
    after_first = version(admin, md)
    again = admin.CreateRule(request, metadata=md)  # without the id this is RULE_ALREADY_EXISTS
    assert again == first
    assert version(admin, md) == after_first
    assert len(audit_events(admin, md, f"rule/{rule_id}")) == 1
    other = apb.CreateRuleRequest(rule=rule(rule_id, priority=6), request_id=request_id)
    assert error_of(admin.CreateRule, other, metadata=md) == CONFLICT
    assert admin.GetRule(apb.GetRuleRequest(rule_id=rule_id), metadata=md).priority == 5


def test_update_rule_retried_with_its_now_stale_etag_answers_the_first_update(admin, md):
    rule_id = f"r-{uuid.uuid4().hex[:10]}"
    created = admin.CreateRule(apb.CreateRuleRequest(rule=rule(rule_id)), metadata=md)
    request = apb.UpdateRuleRequest(
        rule=apb.Rule(rule_id=rule_id, etag=created.etag, priority=9),
        update_mask=field_mask_pb2.FieldMask(paths=["priority"]),
        request_id=rid(),
    )
    first = admin.UpdateRule(request, metadata=md)
    again = admin.UpdateRule(request, metadata=md)
    assert again == first and first.priority == 9
    assert admin.GetRule(apb.GetRuleRequest(rule_id=rule_id), metadata=md).etag == first.etag
    assert [event.action for event in audit_events(admin, md, f"rule/{rule_id}")] == ["UpdateRule", "CreateRule"]
    other = apb.UpdateRuleRequest()
    other.CopyFrom(request)
    other.rule.priority = 1
    assert error_of(admin.UpdateRule, other, metadata=md) == CONFLICT


def test_delete_rule_retried_answers_the_same_version_not_rule_not_found(admin, md):
    rule_id = f"r-{uuid.uuid4().hex[:10]}"
    admin.CreateRule(apb.CreateRuleRequest(rule=rule(rule_id)), metadata=md)
    request = apb.DeleteRuleRequest(rule_id=rule_id, request_id=rid())
    first = admin.DeleteRule(request, metadata=md)
    assert admin.DeleteRule(request, metadata=md) == first
    assert version(admin, md) == first.version
    assert [event.action for event in audit_events(admin, md, f"rule/{rule_id}")] == ["DeleteRule", "CreateRule"]
    other = apb.DeleteRuleRequest(rule_id=rule_id + "x", request_id=request.request_id)
    assert error_of(admin.DeleteRule, other, metadata=md) == CONFLICT


def test_replace_rules_retried_answers_the_first_set_even_against_its_expected_version(admin, md):
    live = version(admin, md)
    current = admin.ListRules(apb.ListRulesRequest(page_size=500), metadata=md).rules
    rules = [apb.Rule(rule_id=r.rule_id, name=r.name, priority=r.priority, enabled=r.enabled, effect=r.effect)
             for r in current] + [rule(f"r-{uuid.uuid4().hex[:10]}")]
    request = apb.ReplaceRulesRequest(rules=rules, expected_version=live, request_id=rid())
    audited = len(audit_events(admin, md, "rules"))
    first = admin.ReplaceRules(request, metadata=md)
    assert first.version == live + 1
    assert admin.ReplaceRules(request, metadata=md) == first  # not ETAG_MISMATCH
    assert version(admin, md) == live + 1
    assert len(audit_events(admin, md, "rules")) == audited + 1
    other = apb.ReplaceRulesRequest(rules=rules[:-1], expected_version=live, request_id=request.request_id)
    assert error_of(admin.ReplaceRules, other, metadata=md) == CONFLICT
    assert version(admin, md) == live + 1


def test_a_rule_change_whose_audit_write_failed_is_made_once_and_audited_once(admin, md, redis_db, secured_server):
    rule_id, request_id = f"r-{uuid.uuid4().hex[:10]}", rid()
    request = apb.CreateRuleRequest(rule=rule(rule_id), request_id=request_id)
    with AuditStreamBroken(redis_db, secured_server.key_prefix):
        assert error_of(admin.CreateRule, request, metadata=md) == AUDIT_NOT_WRITTEN
    applied = version(admin, md)
    assert admin.GetRule(apb.GetRuleRequest(rule_id=rule_id), metadata=md).version == applied
    retried = admin.CreateRule(request, metadata=md)
    assert retried.version == applied and version(admin, md) == applied
    assert admin.CreateRule(request, metadata=md) == retried
    assert [event.action for event in audit_events(admin, md, f"rule/{rule_id}")] == ["CreateRule"]


def test_validate_only_records_nothing_and_a_bad_request_id_names_the_field(admin, md):
    rule_id, request_id = f"r-{uuid.uuid4().hex[:10]}", rid()
    checked = apb.CreateRuleRequest(rule=rule(rule_id), request_id=request_id, validate_only=True)
    admin.CreateRule(checked, metadata=md)
    created = admin.CreateRule(apb.CreateRuleRequest(rule=rule(rule_id, priority=7), request_id=request_id), metadata=md)
    assert created.priority == 7  # the validate_only call did not take the id
    with pytest.raises(grpc.RpcError) as caught:
        admin.CreateRule(apb.CreateRuleRequest(rule=rule(rule_id + "y"), request_id="has space"), metadata=md)
    details = error_details(caught.value)
    assert details.reason == "INVALID_FIELD" and [f for f, _ in details.field_violations] == ["request_id"]


# ---------------------------------------------------------------------------- keys


def test_create_api_key_retried_answers_the_same_key_and_secret(admin, md, channel, secured_server):
    name = f"till-{uuid.uuid4().hex[:8]}"
    request = apb.CreateApiKeyRequest(name=name, role=apb.ROLE_POS, request_id=rid())
    first = admin.CreateApiKey(request, metadata=md)
    again = admin.CreateApiKey(request, metadata=md)
    assert again == first and again.secret.startswith("lk_")
    keys = admin.ListApiKeys(apb.ListApiKeysRequest(page_size=500), metadata=md).keys
    assert [key.key_id for key in keys if key.name == name] == [first.key.key_id]
    assert len(audit_events(admin, md, f"key/{first.key.key_id}")) == 1
    till = loyalty_pb2_grpc.LoyaltyServiceStub(channel)
    member_id = f"m-{uuid.uuid4().hex[:10]}"
    till.EnrollMember(pb.EnrollMemberRequest(member_id=member_id, request_id="e"),
                      metadata=secured_server.metadata(again.secret))
    other = apb.CreateApiKeyRequest(name=name, role=apb.ROLE_ADMIN, request_id=request.request_id)
    assert error_of(admin.CreateApiKey, other, metadata=md) == CONFLICT


def test_rotate_api_key_retried_answers_the_same_secret_and_rotates_once(admin, md, redis_db, secured_server):
    key_id = admin.CreateApiKey(apb.CreateApiKeyRequest(name="shop", role=apb.ROLE_ECOMMERCE), metadata=md).key.key_id
    request = apb.RotateApiKeyRequest(key_id=key_id, request_id=rid())
    first = admin.RotateApiKey(request, metadata=md)
    again = admin.RotateApiKey(request, metadata=md)
    assert again == first
    stored = json.loads(redis_db.hget(records_key(secured_server.key_prefix), key_id))
    assert stored["secret_sha256"] == hash_secret(first.secret)
    assert [event.action for event in audit_events(admin, md, f"key/{key_id}")] == ["RotateApiKey", "CreateApiKey"]
    # The record that replays the secret expires with the retention window.
    ttl = redis_db.ttl(request_key(secured_server.key_prefix, "keys", request.request_id))
    assert 0 < ttl <= ADMIN_REQUEST_RETENTION_S
    other = apb.RotateApiKeyRequest(key_id=secured_server.key_ids["pos"], request_id=request.request_id)
    assert error_of(admin.RotateApiKey, other, metadata=md) == CONFLICT


def test_rotate_api_key_after_its_audit_write_failed_rotates_once_and_audits_once(
    admin, md, channel, redis_db, secured_server
):
    """The issue: RotateApiKey answered UNAVAILABLE because the audit write failed, and
    its retry rotated the key a second time."""
    key_id = admin.CreateApiKey(apb.CreateApiKeyRequest(name="shop", role=apb.ROLE_ECOMMERCE), metadata=md).key.key_id
    request = apb.RotateApiKeyRequest(key_id=key_id, request_id=rid())
    with AuditStreamBroken(redis_db, secured_server.key_prefix):
        assert error_of(admin.RotateApiKey, request, metadata=md) == AUDIT_NOT_WRITTEN
    rotated_once = json.loads(redis_db.hget(records_key(secured_server.key_prefix), key_id))
    assert rotated_once["rotate_time_ms"] > 0  # the first attempt did rotate
    retried = admin.RotateApiKey(request, metadata=md)
    assert json.loads(redis_db.hget(records_key(secured_server.key_prefix), key_id)) == rotated_once
    assert rotated_once["secret_sha256"] == hash_secret(retried.secret)
    assert admin.RotateApiKey(request, metadata=md) == retried
    assert [event.action for event in audit_events(admin, md, f"key/{key_id}")] == ["RotateApiKey", "CreateApiKey"]
    till = loyalty_pb2_grpc.LoyaltyServiceStub(channel)
    till.EnrollMember(pb.EnrollMemberRequest(member_id=f"m-{uuid.uuid4().hex[:10]}", request_id="e"),
                      metadata=secured_server.metadata(retried.secret))


def test_revoke_api_key_retried_answers_the_same_key_and_is_audited_once(admin, md):
    key_id = admin.CreateApiKey(apb.CreateApiKeyRequest(name="gone", role=apb.ROLE_POS), metadata=md).key.key_id
    request = apb.RevokeApiKeyRequest(key_id=key_id, request_id=rid())
    first = admin.RevokeApiKey(request, metadata=md)
    assert admin.RevokeApiKey(request, metadata=md) == first
    # Revoking is idempotent even without a request_id: same answer, nothing recorded.
    assert admin.RevokeApiKey(apb.RevokeApiKeyRequest(key_id=key_id), metadata=md) == first
    assert [event.action for event in audit_events(admin, md, f"key/{key_id}")] == ["RevokeApiKey", "CreateApiKey"]
    other = apb.RevokeApiKeyRequest(key_id="key_0000000000000000", request_id=request.request_id)
    assert error_of(admin.RevokeApiKey, other, metadata=md) == CONFLICT


def test_a_request_id_of_another_caller_is_a_conflict_not_their_secret(admin, md, secured_server):
    key_id = admin.CreateApiKey(apb.CreateApiKeyRequest(name="ops2", role=apb.ROLE_ADMIN), metadata=md)
    other_admin = secured_server.metadata(key_id.secret)
    request = apb.CreateApiKeyRequest(name="shared", role=apb.ROLE_POS, request_id=rid())
    admin.CreateApiKey(request, metadata=md)
    assert error_of(admin.CreateApiKey, request, metadata=other_admin) == CONFLICT


# ---------------------------------------------------------------------------- CLIs


def cli_run(capsys, *argv: str) -> tuple[int, str, str]:
    from loyalty.server.cli import main as cli

    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_keys_cli_retries_a_rotation_whose_audit_failed_with_the_same_request_id(
    admin, md, redis_db, secured_server, capsys, monkeypatch
):
    from loyalty.server.cli import connection as admin_connection

    key_id = admin.CreateApiKey(apb.CreateApiKeyRequest(name="pos-9", role=apb.ROLE_POS), metadata=md).key.key_id
    broken = AuditStreamBroken(redis_db, secured_server.key_prefix)
    waits: list[float] = []

    def repair_then_retry(seconds: float) -> None:  # the CLI's wait before its retry
        waits.append(seconds)
        broken.__exit__(None, None, None)

    monkeypatch.setattr(admin_connection, "_sleep", repair_then_retry)
    target = ["--target", secured_server.target, "--api-key", secured_server.secrets["admin"]]
    broken.__enter__()
    try:
        code, out, err = cli_run(capsys, "keys", "rotate", key_id, "--json", *target)
    finally:
        broken.__exit__(None, None, None)
    assert code == 0, err
    assert len(waits) == 1  # one failed attempt, one retry
    secret = json.loads(out)["secret"]
    stored = json.loads(redis_db.hget(records_key(secured_server.key_prefix), key_id))
    assert stored["secret_sha256"] == hash_secret(secret)  # the key has the secret printed: rotated once
    assert [event.action for event in audit_events(admin, md, f"key/{key_id}")] == ["RotateApiKey", "CreateApiKey"]


def test_a_keys_command_repeated_by_hand_with_its_request_id_answers_the_first_secret(
    admin, md, secured_server, capsys
):
    key_id = admin.CreateApiKey(apb.CreateApiKeyRequest(name="pos-10", role=apb.ROLE_POS), metadata=md).key.key_id
    target = ["--target", secured_server.target, "--api-key", secured_server.secrets["admin"]]
    request_id = rid()
    first = cli_run(capsys, "keys", "rotate", key_id, "--json", "--request-id", request_id, *target)
    again = cli_run(capsys, "keys", "rotate", key_id, "--json", "--request-id", request_id, *target)
    assert first[0] == again[0] == 0 and json.loads(first[1])["secret"] == json.loads(again[1])["secret"]
    fresh = cli_run(capsys, "keys", "rotate", key_id, "--json", *target)  # a new invocation: a new id
    assert json.loads(fresh[1])["secret"] != json.loads(first[1])["secret"]
    code, _, err = cli_run(capsys, "keys", "revoke", key_id, "--request-id", "x", "--redis-url", secured_server.redis_url)
    assert code == 2 and "--request-id needs a server" in err


def test_rules_apply_retried_after_a_failed_audit_makes_one_version(
    admin, md, redis_db, secured_server, capsys, monkeypatch, tmp_path
):
    from loyalty.server.cli import connection as admin_connection

    rule_id = f"r-{uuid.uuid4().hex[:10]}"
    path = tmp_path / "rules.toml"
    path.write_text(f'[[rules]]\nrule_id = "{rule_id}"\neffect.bonus_points = 5\n')
    broken = AuditStreamBroken(redis_db, secured_server.key_prefix)
    monkeypatch.setattr(admin_connection, "_sleep", lambda seconds: broken.__exit__(None, None, None))
    before = version(admin, md)
    broken.__enter__()
    try:
        code, out, err = cli_run(capsys, "rules", "apply", str(path), "--target", secured_server.target,
                                 "--api-key", secured_server.secrets["admin"])
    finally:
        broken.__exit__(None, None, None)
    assert code == 0, err
    assert version(admin, md) == before + 1
    assert out.startswith(f"rules version {before + 1}: applied 1 rules")
    events = [event for event in audit_events(admin, md, "rules") if rule_id in event.after_json]
    assert len(events) == 1 and events[0].action == "ReplaceRules"  # audited once
