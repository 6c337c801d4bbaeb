"""AdminService rule RPCs over real gRPC: CRUD, etags, update masks, validate_only,
paging and the errors a rules UI has to handle."""

from __future__ import annotations

import uuid

import grpc
import pytest
from google.protobuf import field_mask_pb2

from loyalty.clients import error_details
from loyalty.v1 import admin_pb2 as apb
from loyalty.v1 import admin_pb2_grpc


@pytest.fixture
def admin(loyalty_server):
    with grpc.insecure_channel(loyalty_server.target) as channel:
        yield admin_pb2_grpc.AdminServiceStub(channel)


@pytest.fixture
def rule_id() -> str:
    return f"r-{uuid.uuid4().hex[:10]}"


def error_of(call: pytest.ExceptionInfo) -> tuple[grpc.StatusCode, str, list[str]]:
    details = error_details(call.value)
    return details.code, details.reason, [field for field, _ in details.field_violations]


def double_points(rule_id: str, **fields) -> apb.Rule:
    rule = apb.Rule(
        rule_id=rule_id,
        name="Double points at weekends",
        priority=10,
        enabled=True,
        schedule=apb.RuleSchedule(days_of_week=["sat", "sun"], time_zone="Europe/Paris"),
        conditions=apb.RuleConditions(channels=["pos"], member_attributes={"tier": "gold"}),
        effect=apb.RuleEffect(multiplier="2"),
        caps=apb.RuleCaps(per_member_day=500),
    )
    for name, value in fields.items():
        if isinstance(value, apb.RuleEffect | apb.RuleCaps | apb.RuleBudget | apb.RuleSchedule):
            getattr(rule, name).CopyFrom(value)
        else:
            setattr(rule, name, value)
    return rule


def live_version(admin) -> int:
    return admin.ListRules(apb.ListRulesRequest(page_size=1)).version


def test_created_rule_reads_back_with_etag_version_and_update_time(admin, rule_id):
    before = live_version(admin)
    created = admin.CreateRule(apb.CreateRuleRequest(rule=double_points(rule_id)))
    assert created.version == before + 1 == live_version(admin)
    assert created.etag and created.update_time.seconds > 0
    assert created.effect.multiplier == "2" and created.caps.per_member_day == 500
    assert list(created.schedule.days_of_week) == ["sat", "sun"]
    assert dict(created.conditions.member_attributes) == {"tier": "gold"}
    fetched = admin.GetRule(apb.GetRuleRequest(rule_id=rule_id))
    assert fetched == created
    listed = [rule for rule in _all_rules(admin) if rule.rule_id == rule_id]
    assert listed == [created]


def test_creating_an_existing_id_is_rule_already_exists_and_changes_nothing(admin, rule_id):
    admin.CreateRule(apb.CreateRuleRequest(rule=double_points(rule_id)))
    version = live_version(admin)
    with pytest.raises(grpc.RpcError) as call:
        admin.CreateRule(apb.CreateRuleRequest(rule=double_points(rule_id, priority=1)))
    assert error_of(call)[:2] == (grpc.StatusCode.ALREADY_EXISTS, "RULE_ALREADY_EXISTS")
    assert live_version(admin) == version
    assert admin.GetRule(apb.GetRuleRequest(rule_id=rule_id)).priority == 10


def test_update_with_mask_changes_only_the_named_fields_and_a_stale_etag_is_aborted(admin, rule_id):
    created = admin.CreateRule(apb.CreateRuleRequest(rule=double_points(rule_id)))
    change = apb.Rule(rule_id=rule_id, etag=created.etag, priority=99, effect=apb.RuleEffect(multiplier="3"))
    updated = admin.UpdateRule(apb.UpdateRuleRequest(
        rule=change, update_mask=field_mask_pb2.FieldMask(paths=["effect.multiplier"])))
    assert updated.effect.multiplier == "3"
    assert updated.priority == 10  # not in the mask
    assert updated.caps.per_member_day == 500 and updated.name == created.name
    assert updated.etag != created.etag and updated.version > created.version
    # The etag read before the update is stale now.
    with pytest.raises(grpc.RpcError) as call:
        admin.UpdateRule(apb.UpdateRuleRequest(
            rule=apb.Rule(rule_id=rule_id, etag=created.etag, enabled=False),
            update_mask=field_mask_pb2.FieldMask(paths=["enabled"])))
    assert error_of(call)[:2] == (grpc.StatusCode.ABORTED, "ETAG_MISMATCH")
    assert admin.GetRule(apb.GetRuleRequest(rule_id=rule_id)).enabled is True


def test_mask_on_a_nested_field_and_on_a_whole_message(admin, rule_id):
    created = admin.CreateRule(apb.CreateRuleRequest(rule=double_points(rule_id)))
    updated = admin.UpdateRule(apb.UpdateRuleRequest(
        rule=apb.Rule(rule_id=rule_id, etag=created.etag, caps=apb.RuleCaps(per_member_day=50, per_transaction=7),
                      effect=apb.RuleEffect(bonus_points=25)),
        update_mask=field_mask_pb2.FieldMask(paths=["caps.per_member_day", "effect"])))
    assert updated.caps.per_member_day == 50 and updated.caps.per_transaction == 0
    assert updated.effect.WhichOneof("kind") == "bonus_points" and updated.effect.bonus_points == 25


def test_empty_mask_replaces_every_field(admin, rule_id):
    created = admin.CreateRule(apb.CreateRuleRequest(rule=double_points(rule_id)))
    replacement = apb.Rule(rule_id=rule_id, etag=created.etag, enabled=True, effect=apb.RuleEffect(bonus_points=5))
    updated = admin.UpdateRule(apb.UpdateRuleRequest(rule=replacement))
    assert updated.name == "" and updated.priority == 0 and not updated.schedule.days_of_week
    assert updated.caps.per_member_day == 0 and updated.effect.bonus_points == 5


def test_update_mask_naming_an_output_field_or_unknown_path_is_invalid(admin, rule_id):
    created = admin.CreateRule(apb.CreateRuleRequest(rule=double_points(rule_id)))
    for path in ("etag", "budget_remaining", "rule_id", "effect.nonsense"):
        with pytest.raises(grpc.RpcError) as call:
            admin.UpdateRule(apb.UpdateRuleRequest(
                rule=apb.Rule(rule_id=rule_id, etag=created.etag),
                update_mask=field_mask_pb2.FieldMask(paths=[path])))
        assert error_of(call) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD", ["update_mask"])


def test_validate_only_changes_nothing(admin, rule_id):
    version = live_version(admin)
    preview = admin.CreateRule(apb.CreateRuleRequest(rule=double_points(rule_id), validate_only=True))
    assert preview.rule_id == rule_id and preview.effect.multiplier == "2"
    assert live_version(admin) == version
    with pytest.raises(grpc.RpcError) as call:
        admin.GetRule(apb.GetRuleRequest(rule_id=rule_id))
    assert error_of(call)[:2] == (grpc.StatusCode.NOT_FOUND, "RULE_NOT_FOUND")
    created = admin.CreateRule(apb.CreateRuleRequest(rule=double_points(rule_id)))
    version = live_version(admin)
    admin.UpdateRule(apb.UpdateRuleRequest(
        rule=apb.Rule(rule_id=rule_id, etag=created.etag, priority=1),
        update_mask=field_mask_pb2.FieldMask(paths=["priority"]), validate_only=True))
    admin.DeleteRule(apb.DeleteRuleRequest(rule_id=rule_id, validate_only=True))
    admin.ReplaceRules(apb.ReplaceRulesRequest(rules=[], validate_only=True))
    assert live_version(admin) == version
    assert admin.GetRule(apb.GetRuleRequest(rule_id=rule_id)) == created


def test_invalid_rule_is_invalid_argument_naming_the_field(admin, rule_id):
    version = live_version(admin)
    bad = double_points(rule_id, effect=apb.RuleEffect(multiplier="two"))
    with pytest.raises(grpc.RpcError) as call:
        admin.CreateRule(apb.CreateRuleRequest(rule=bad))
    code, reason, fields = error_of(call)
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD")
    assert fields == ["rule.effect.multiplier"]
    bad_zone = double_points(rule_id, schedule=apb.RuleSchedule(time_zone="Mars/Olympus"))
    with pytest.raises(grpc.RpcError) as call:
        admin.CreateRule(apb.CreateRuleRequest(rule=bad_zone, validate_only=True))
    assert error_of(call)[2] == ["rule.schedule.time_zone"]
    assert live_version(admin) == version


def test_update_to_an_invalid_rule_is_refused_and_keeps_the_old_one(admin, rule_id):
    created = admin.CreateRule(apb.CreateRuleRequest(rule=double_points(rule_id)))
    with pytest.raises(grpc.RpcError) as call:
        admin.UpdateRule(apb.UpdateRuleRequest(
            rule=apb.Rule(rule_id=rule_id, etag=created.etag, caps=apb.RuleCaps(per_member_day=-1)),
            update_mask=field_mask_pb2.FieldMask(paths=["caps"])))
    assert error_of(call) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD", ["rule.caps.per_member_day"])
    assert admin.GetRule(apb.GetRuleRequest(rule_id=rule_id)) == created


def test_delete_makes_a_version_without_the_rule(admin, rule_id):
    created = admin.CreateRule(apb.CreateRuleRequest(rule=double_points(rule_id)))
    with pytest.raises(grpc.RpcError) as call:
        admin.DeleteRule(apb.DeleteRuleRequest(rule_id=rule_id, etag="stale"))
    assert error_of(call)[:2] == (grpc.StatusCode.ABORTED, "ETAG_MISMATCH")
    deleted = admin.DeleteRule(apb.DeleteRuleRequest(rule_id=rule_id, etag=created.etag))
    assert deleted.version == live_version(admin) > created.version
    assert rule_id not in {rule.rule_id for rule in _all_rules(admin)}
    with pytest.raises(grpc.RpcError) as call:
        admin.DeleteRule(apb.DeleteRuleRequest(rule_id=rule_id))
    assert error_of(call)[:2] == (grpc.StatusCode.NOT_FOUND, "RULE_NOT_FOUND")
    with pytest.raises(grpc.RpcError) as call:
        admin.UpdateRule(apb.UpdateRuleRequest(rule=apb.Rule(rule_id=rule_id, etag=created.etag)))
    assert error_of(call)[:2] == (grpc.StatusCode.NOT_FOUND, "RULE_NOT_FOUND")


def test_validate_rules_lists_every_problem_with_its_path(admin, rule_id):
    response = admin.ValidateRules(apb.ValidateRulesRequest(rules=[
        double_points(rule_id),
        double_points("Bad Id!", effect=apb.RuleEffect(multiplier="x")),
        double_points(rule_id),
    ]))
    assert not response.valid
    fields = {violation.field for violation in response.violations}
    assert {"rules[1].rule_id", "rules[1].effect.multiplier", "rules[2].rule_id"} <= fields
    assert not any(field.startswith("rules[0]") for field in fields)
    assert admin.ValidateRules(apb.ValidateRulesRequest(rules=[double_points(rule_id)])).valid


def test_replace_rules_checks_the_expected_version(admin, rule_id):
    version = live_version(admin)
    with pytest.raises(grpc.RpcError) as call:
        admin.ReplaceRules(apb.ReplaceRulesRequest(rules=[], expected_version=version + 5))
    assert error_of(call)[:2] == (grpc.StatusCode.ABORTED, "ETAG_MISMATCH")
    with pytest.raises(grpc.RpcError) as call:
        admin.ReplaceRules(apb.ReplaceRulesRequest(rules=[double_points(rule_id), double_points(rule_id)]))
    assert error_of(call)[:2] == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD")
    assert live_version(admin) == version


def test_list_rules_pages_by_priority_then_id(admin):
    tag = uuid.uuid4().hex[:6]
    wanted = [(5, f"p-{tag}-b"), (5, f"p-{tag}-a"), (9, f"p-{tag}-c"), (-1, f"p-{tag}-d"), (5, f"p-{tag}-e")]
    for priority, rule_id in wanted:
        admin.CreateRule(apb.CreateRuleRequest(rule=double_points(rule_id, priority=priority)))
    pages, token = [], ""
    while True:
        response = admin.ListRules(apb.ListRulesRequest(page_size=2, page_token=token))
        assert len(response.rules) <= 2
        pages.append(response)
        token = response.next_page_token
        if not token:
            break
    shown = [(rule.priority, rule.rule_id) for page in pages for rule in page.rules]
    assert shown == sorted(shown, key=lambda item: (-item[0], item[1]))
    assert [rule_id for _, rule_id in shown if tag in rule_id] == [
        f"p-{tag}-c", f"p-{tag}-a", f"p-{tag}-b", f"p-{tag}-e", f"p-{tag}-d"]
    with pytest.raises(grpc.RpcError) as call:
        admin.ListRules(apb.ListRulesRequest(page_token="not-a-token"))
    assert error_of(call) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD", ["page_token"])


def test_budget_remaining_is_shown_and_follows_a_new_total(admin, rule_id):
    created = admin.CreateRule(apb.CreateRuleRequest(
        rule=double_points(rule_id, budget=apb.RuleBudget(total_points=10_000))))
    assert created.budget_remaining == 10_000
    updated = admin.UpdateRule(apb.UpdateRuleRequest(
        rule=apb.Rule(rule_id=rule_id, etag=created.etag, budget=apb.RuleBudget(total_points=4_000)),
        update_mask=field_mask_pb2.FieldMask(paths=["budget.total_points"])))
    assert updated.budget_remaining == 4_000


def _all_rules(admin) -> list[apb.Rule]:
    rules, token = [], ""
    while True:
        response = admin.ListRules(apb.ListRulesRequest(page_size=500, page_token=token))
        rules.extend(response.rules)
        token = response.next_page_token
        if not token:
            return rules
