"""A control-store outage is CONTROL_STORE_UNAVAILABLE, never SHARD_UNAVAILABLE.

The AdminService of a gateway whose key store and rules store are a Redis that does
not answer (nothing listens on its port), over real gRPC: every key, audit and rule
RPC that needs the store answers UNAVAILABLE / CONTROL_STORE_UNAVAILABLE, which the
SDK reads as ControlStoreUnavailable, an Unavailable it retries."""

from __future__ import annotations

import asyncio

import grpc
import pytest
import redis.asyncio

from loyalty.actors.ledger.program import DEFAULT_PROGRAM, CompiledProgram
from loyalty.clients import ControlStoreUnavailable, Unavailable
from loyalty.clients.errors import error_from_rpc_error
from loyalty.server.admin.keys import KeyAdministration
from loyalty.server.admin.servicer import AdminServicer
from loyalty.server.admin.rules import RuleAdministration
from loyalty.server.runtime.embedded_redis import free_port
from loyalty.server.stores.audit import AuditLog
from loyalty.server.stores.keys import KeyRecords
from loyalty.server.stores.rules import LiveRulesVersion, RulesStore
from loyalty.v1 import admin_pb2 as apb
from loyalty.v1 import admin_pb2_grpc

RULE = apb.Rule(rule_id="double", name="Double points", priority=1, enabled=True, effect=apb.RuleEffect(multiplier="2"))

CALLS = [
    ("CreateApiKey", apb.CreateApiKeyRequest(name="till", role=apb.ROLE_POS)),
    ("CreateApiKey", apb.CreateApiKeyRequest(name="till", role=apb.ROLE_POS, request_id="outage-create")),
    ("ListApiKeys", apb.ListApiKeysRequest()),
    ("RotateApiKey", apb.RotateApiKeyRequest(key_id="key_0123456789abcdef")),
    ("RevokeApiKey", apb.RevokeApiKeyRequest(key_id="key_0123456789abcdef", request_id="outage-revoke")),
    ("ListAuditEvents", apb.ListAuditEventsRequest()),
    ("CreateRule", apb.CreateRuleRequest(rule=RULE)),
    ("CreateRule", apb.CreateRuleRequest(rule=RULE, request_id="outage-rule")),
    ("GetRule", apb.GetRuleRequest(rule_id="double")),
    ("ListRules", apb.ListRulesRequest()),
    ("DeleteRule", apb.DeleteRuleRequest(rule_id="double")),
    ("ReplaceRules", apb.ReplaceRulesRequest(rules=[RULE])),
]


async def _answers() -> list[grpc.aio.AioRpcError]:
    client = redis.asyncio.Redis.from_url(f"redis://127.0.0.1:{free_port()}", socket_connect_timeout=1.0)
    rules = RuleAdministration(
        RulesStore(client, program=CompiledProgram(DEFAULT_PROGRAM), key_prefix="outage"),
        live=LiveRulesVersion(),
        audit=AuditLog(client, key_prefix="outage"),
    )
    keys = KeyAdministration(KeyRecords(client, key_prefix="outage"), AuditLog(client, key_prefix="outage"))
    server = grpc.aio.server()
    admin_pb2_grpc.add_AdminServiceServicer_to_server(AdminServicer(rules, keys=keys), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    failures = []
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = admin_pb2_grpc.AdminServiceStub(channel)
            for method, request in CALLS:
                with pytest.raises(grpc.aio.AioRpcError) as failure:
                    await getattr(stub, method)(request, timeout=30)
                failures.append(failure.value)
    finally:
        await server.stop(None)
        await client.aclose()
    return failures


def test_every_admin_call_on_an_unreachable_control_store_is_control_store_unavailable():
    failures = asyncio.run(_answers())
    for (method, _), failure in zip(CALLS, failures, strict=True):
        error = error_from_rpc_error(failure, mutation=True)
        assert (error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE, "CONTROL_STORE_UNAVAILABLE"), method
        assert isinstance(error, ControlStoreUnavailable) and isinstance(error, Unavailable), method
        assert error.retryable, method
        store = "rules store" if "Rule" in method else "key store"
        assert store in error.message, (method, error.message)
