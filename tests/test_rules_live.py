"""Rules changed live: every earn records the version it was evaluated with, versions
reach every gateway, rules survive a restart, and admin changes are audited."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import grpc
import pytest
import redis.asyncio

from conftest import ServerThread, server_config
from loyalty.server.admin.servicer import GatewayRules
from loyalty.server.runtime.app import LoyaltyServer
from loyalty.server.runtime.gateway_process import Gateway
from loyalty.server.gateway.router import router_for
from loyalty.v1 import admin_pb2 as apb
from loyalty.v1 import admin_pb2_grpc, loyalty_pb2_grpc
from loyalty.v1 import loyalty_pb2 as pb

# Bound on polling for something another thread or process does; generous for a
# loaded 2-core machine, never reached when things work.
POLL_DEADLINE_S = 60.0

# A 10.00 EUR purchase earns 10 points at the default rate.
BASE_POINTS = 10


def purchase() -> pb.Purchase:
    return pb.Purchase(channel="pos", store_id="store-1", currency="EUR",
                       lines=[pb.PurchaseLine(sku="sku-1", category="food", quantity=1, amount_minor=1000)])


def multiplier_rule(multiplier: str, rule_id: str = "multiplier") -> apb.Rule:
    return apb.Rule(rule_id=rule_id, enabled=True, priority=1, effect=apb.RuleEffect(multiplier=multiplier))


def poll(condition, what: str):
    deadline = time.monotonic() + POLL_DEADLINE_S
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
    raise AssertionError(f"timed out waiting for {what}")


class ExtraGateway:
    """A second gateway in this process, on its own event loop, in front of a server's
    shards, with its own rules follower (what a `--gateways N` worker runs)."""

    def __init__(self, server: LoyaltyServer, *, audit: bool = False) -> None:
        self._server = server
        self._audit = audit
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.rules: GatewayRules | None = None
        self.audit_log = None
        self.port = 0

    def _call(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(POLL_DEADLINE_S)

    def start(self) -> ExtraGateway:
        self._thread.start()
        self.port = self._call(self._start())
        return self

    async def _start(self) -> int:
        from loyalty.server.stores.audit import AuditLog

        config = self._server.config
        self.rules = GatewayRules(redis_url=self._server.redis_url, key_prefix=config.key_prefix, program=config.program)
        await self.rules.start()
        if self._audit:
            self._audit_client = redis.asyncio.Redis.from_url(self._server.redis_url)
            self.audit_log = AuditLog(self._audit_client, key_prefix=config.key_prefix)
        self._gateway = Gateway(
            router_for(self._server.actors, self.rules.live), host="127.0.0.1", port=0,
            program=config.program, admin=self.rules.servicer(audit=self.audit_log),
        )
        return await self._gateway.start()

    def audit_events(self):
        return self._call(self.audit_log.events(limit=100))[0]

    def stop(self) -> None:
        async def stop():
            await self._gateway.stop(1)
            await self.rules.stop()
            if self._audit:
                await self._audit_client.aclose()

        self._call(stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(POLL_DEADLINE_S)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest.fixture
def stubs(loyalty_server):
    with grpc.insecure_channel(loyalty_server.target) as channel:
        yield loyalty_pb2_grpc.LoyaltyServiceStub(channel), admin_pb2_grpc.AdminServiceStub(channel)


def enroll(stub, count: int) -> list[str]:
    members = [f"m-{uuid.uuid4().hex[:12]}" for _ in range(count)]
    for member in members:
        stub.EnrollMember(pb.EnrollMemberRequest(member_id=member, request_id="enroll"))
    return members


def test_every_earn_under_changing_rules_gets_exactly_its_versions_points(stubs, loyalty_server):
    stub, admin = stubs
    members = enroll(stub, 8)
    # version -> points a 10.00 EUR purchase earns under it
    expected: dict[int, int] = {}
    version = admin.ReplaceRules(apb.ReplaceRulesRequest(rules=[multiplier_rule("2")])).version
    expected[version] = 2 * BASE_POINTS
    earned: list[tuple[str, str, int, int]] = []  # member, request id, points, version
    stop = threading.Event()
    failures: list[BaseException] = []

    def earn_loop(worker: int) -> None:
        try:
            with grpc.insecure_channel(loyalty_server.target) as channel:
                client = loyalty_pb2_grpc.LoyaltyServiceStub(channel)
                count = 0
                while not stop.is_set():
                    member = members[(worker + count) % len(members)]
                    request_id = f"w{worker}-{count}"
                    response = client.Earn(pb.EarnRequest(member_id=member, request_id=request_id, purchase=purchase()))
                    earned.append((member, request_id, response.points, response.rules_version))
                    count += 1
        except BaseException as error:  # reported by the main thread
            failures.append(error)

    workers = [threading.Thread(target=earn_loop, args=(index,)) for index in range(4)]
    for worker in workers:
        worker.start()
    try:
        for flip, rules in enumerate(
            [[multiplier_rule("3")], [], [multiplier_rule("2")], [multiplier_rule("3"), multiplier_rule("2", "second")], []]
        ):
            version = admin.ReplaceRules(apb.ReplaceRulesRequest(rules=rules)).version
            expected[version] = BASE_POINTS * (1 + sum(int(rule.effect.multiplier) - 1 for rule in rules))
            seen_before = len(earned)
            # Let earns run under this version (and, racing the flip, the previous one).
            poll(lambda seen=seen_before: failures or len(earned) >= seen + 40, f"earns under flip {flip}")
    finally:
        stop.set()
        for worker in workers:
            worker.join(POLL_DEADLINE_S)
    assert not failures, failures
    versions_seen = {version for *_, version in earned}
    assert versions_seen <= set(expected), f"earns with versions nobody made: {versions_seen - set(expected)}"
    assert len(versions_seen) >= 4  # the flips really happened under load
    wrong = [(points, version) for _, _, points, version in earned if points != expected[version]]
    assert not wrong, f"{len(wrong)} of {len(earned)} earns got other points than their version gives: {wrong[:5]}"
    for member, request_id, points, version in earned[:: max(1, len(earned) // 50)]:
        operation = stub.GetOperation(pb.GetOperationRequest(member_id=member, request_id=request_id))
        assert (operation.earn.points, operation.earn.rules_version) == (points, version)


def test_a_second_gateway_learns_a_new_version_without_being_told(stubs, loyalty_server):
    stub, admin = stubs
    (member,) = enroll(stub, 1)
    extra = ExtraGateway(loyalty_server.server).start()
    try:
        with grpc.insecure_channel(extra.target) as channel:
            other = loyalty_pb2_grpc.LoyaltyServiceStub(channel)
            for multiplier in ("5", "4"):
                version = admin.ReplaceRules(apb.ReplaceRulesRequest(rules=[multiplier_rule(multiplier)])).version
                poll(lambda wanted=version: extra.rules.live.version >= wanted, "the second gateway to learn the version")
                response = other.Earn(pb.EarnRequest(
                    member_id=member, request_id=f"via-other-{multiplier}", purchase=purchase()))
                assert (response.rules_version, response.points) == (version, int(multiplier) * BASE_POINTS)
            # ...and changes made through the second gateway reach the first.
            other_admin = admin_pb2_grpc.AdminServiceStub(channel)
            version = other_admin.ReplaceRules(apb.ReplaceRulesRequest(rules=[])).version
            poll(lambda: loyalty_server.server.rules.live.version >= version, "the first gateway to learn it")
            response = stub.Earn(pb.EarnRequest(member_id=member, request_id="via-first", purchase=purchase()))
            assert (response.rules_version, response.points) == (version, BASE_POINTS)
    finally:
        extra.stop()


def test_concurrent_admins_on_two_gateways_lose_no_change(stubs, loyalty_server):
    _, admin = stubs
    extra = ExtraGateway(loyalty_server.server).start()
    tag = uuid.uuid4().hex[:6]
    try:
        with grpc.insecure_channel(extra.target) as channel:
            admins = [admin, admin_pb2_grpc.AdminServiceStub(channel)]
            start = admin.ListRules(apb.ListRulesRequest()).version
            versions: list[int] = []

            def create(index: int) -> None:
                rule = apb.Rule(rule_id=f"c-{tag}-{index}", enabled=True, effect=apb.RuleEffect(bonus_points=1))
                versions.append(admins[index % 2].CreateRule(apb.CreateRuleRequest(rule=rule)).version)

            threads = [threading.Thread(target=create, args=(index,)) for index in range(12)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(POLL_DEADLINE_S)
    finally:
        extra.stop()
    listed = admin.ListRules(apb.ListRulesRequest(page_size=500))
    assert {rule.rule_id for rule in listed.rules if tag in rule.rule_id} == {f"c-{tag}-{i}" for i in range(12)}
    assert sorted(versions) == list(range(start + 1, start + 13))  # one version each, none shared
    assert listed.version == start + 12


def test_admin_changes_are_audited_with_before_and_after(loyalty_server):
    import json

    extra = ExtraGateway(loyalty_server.server, audit=True).start()
    rule_id = f"a-{uuid.uuid4().hex[:8]}"
    try:
        with grpc.insecure_channel(extra.target) as channel:
            admin = admin_pb2_grpc.AdminServiceStub(channel)
            created = admin.CreateRule(apb.CreateRuleRequest(rule=multiplier_rule("2", rule_id)))
            admin.CreateRule(apb.CreateRuleRequest(rule=multiplier_rule("2", rule_id + "x"), validate_only=True))
            from google.protobuf import field_mask_pb2

            admin.UpdateRule(apb.UpdateRuleRequest(
                rule=apb.Rule(rule_id=rule_id, etag=created.etag, effect=apb.RuleEffect(multiplier="3")),
                update_mask=field_mask_pb2.FieldMask(paths=["effect.multiplier"])))
            admin.DeleteRule(apb.DeleteRuleRequest(rule_id=rule_id))
            events = [event for event in extra.audit_events() if event.target == f"rule/{rule_id}"]
    finally:
        extra.stop()
    assert [event.action for event in events] == ["DeleteRule", "UpdateRule", "CreateRule"]  # newest first
    deleted, updated, created_event = events
    assert created_event.before_json == "" and json.loads(created_event.after_json)["effect"]["multiplier"] == "2"
    assert json.loads(updated.before_json)["effect"]["multiplier"] == "2"
    assert json.loads(updated.after_json)["effect"]["multiplier"] == "3"
    assert json.loads(deleted.before_json)["rule_id"] == rule_id and deleted.after_json == ""
    assert all(event.actor_key_id for event in events)


def test_rules_survive_a_server_restart(ray_session, redis_server, key_prefix):
    first = ServerThread(server_config(redis_server.url, key_prefix)).start()
    try:
        with grpc.insecure_channel(first.target) as channel:
            admin = admin_pb2_grpc.AdminServiceStub(channel)
            replaced = admin.ReplaceRules(apb.ReplaceRulesRequest(rules=[multiplier_rule("3")]))
    finally:
        first.stop()
    second = ServerThread(server_config(redis_server.url, key_prefix)).start()
    try:
        with grpc.insecure_channel(second.target) as channel:
            admin = admin_pb2_grpc.AdminServiceStub(channel)
            listed = admin.ListRules(apb.ListRulesRequest())
            assert listed.version == replaced.version
            assert list(listed.rules) == list(replaced.rules)  # same etags, versions, times
            stub = loyalty_pb2_grpc.LoyaltyServiceStub(channel)
            (member,) = enroll(stub, 1)
            response = stub.Earn(pb.EarnRequest(member_id=member, request_id="after-restart", purchase=purchase()))
            assert (response.rules_version, response.points) == (replaced.version, 3 * BASE_POINTS)
    finally:
        second.stop()


def test_a_budgeted_campaign_stops_when_its_points_run_out(stubs):
    stub, admin = stubs
    members = enroll(stub, 6)
    rule_id = f"b-{uuid.uuid4().hex[:8]}"
    campaign = apb.Rule(rule_id=rule_id, enabled=True, effect=apb.RuleEffect(points_per_unit="1"),
                        budget=apb.RuleBudget(total_points=55))
    admin.ReplaceRules(apb.ReplaceRulesRequest(rules=[campaign]))
    from_campaign, cut = 0, 0
    for index in range(24):  # each earn wants 10 campaign points: 240 in all
        response = stub.Earn(pb.EarnRequest(member_id=members[index % 6], request_id=f"b{index}", purchase=purchase()))
        from_campaign += sum(award.points for award in response.awards if award.rule_id == rule_id)
        cut += sum(limit.points_cut for limit in response.limits if (limit.rule_id, limit.limit) == (rule_id, "budget"))
        assert response.points == BASE_POINTS + sum(a.points for a in response.awards if a.rule_id == rule_id)
    assert 0 < from_campaign <= 55
    assert cut > 0 and from_campaign + cut == 240
    assert admin.GetRule(apb.GetRuleRequest(rule_id=rule_id)).budget_remaining <= 55 - from_campaign
