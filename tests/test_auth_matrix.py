"""The authorization matrix: every RPC of LoyaltyService, AdminService and EventService, called by
every role, without a key, with an unknown key and with a revoked key.

The expected table is written out here from the issue (not read from the server's
own table), so a change to who may call what fails this test until it is meant."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc

from loyalty.server.stores.keys import new_secret
from loyalty.v1 import admin_pb2 as apb
from loyalty.v1 import admin_pb2_grpc, events_pb2, loyalty_pb2

POS = {
    "EnrollMember", "Earn", "Redeem", "Reserve", "Capture", "Release", "Reverse", "GetBalance",
    # safe retries and showing points before paying:
    "GetMember", "GetOperation", "SimulateEarn", "QuoteRedemption",
}  # fmt: skip
ECOMMERCE = POS | {"ListTransactions", "Batch"}
ANALYTICS = {"GetMember", "GetBalance", "ListTransactions", "GetOperation", "SimulateEarn", "QuoteRedemption"}
LOYALTY_METHODS = ECOMMERCE | {"Adjust"}
ADMIN_METHODS = {
    "CreateRule", "UpdateRule", "DeleteRule", "GetRule", "ListRules", "ValidateRules", "ReplaceRules",
    "CreateApiKey", "ListApiKeys", "RotateApiKey", "RevokeApiKey", "ListAuditEvents",
}  # fmt: skip

# EventService: the whole feed for back-office readers, one member's for backends,
# and member tokens (one member's feed for that member's app) minted by backends.
WATCH = {"loyalty.v1.EventService/WatchMember"}
STREAM = {"loyalty.v1.EventService/StreamEvents"}
MINT = {"loyalty.v1.EventService/CreateMemberToken"}

ALLOWED = {
    "pos": {f"loyalty.v1.LoyaltyService/{name}" for name in POS} | WATCH,
    "ecommerce": {f"loyalty.v1.LoyaltyService/{name}" for name in ECOMMERCE} | WATCH | MINT,
    "analytics": {f"loyalty.v1.LoyaltyService/{name}" for name in ANALYTICS} | STREAM,
    "admin": {f"loyalty.v1.LoyaltyService/{name}" for name in LOYALTY_METHODS}
    | {f"loyalty.v1.AdminService/{name}" for name in ADMIN_METHODS}
    | WATCH
    | STREAM
    | MINT,
}

# Requests that change nothing whoever sends them (empty ones are refused as invalid,
# these would otherwise act).
HARMLESS = {
    "ReplaceRules": apb.ReplaceRulesRequest(validate_only=True),
    # streams: a malformed cursor ends an allowed call at once (INVALID_ARGUMENT)
    "StreamEvents": events_pb2.StreamEventsRequest(after_cursors=["not-a-cursor"]),
}


def _methods():
    for file, service in ((loyalty_pb2, "LoyaltyService"), (apb, "AdminService"), (events_pb2, "EventService")):
        descriptor = file.DESCRIPTOR.services_by_name[service]
        for method in descriptor.methods:
            yield f"{descriptor.full_name}/{method.name}", method


METHODS = dict(_methods())


def test_the_matrix_covers_every_rpc_of_every_service():
    assert set(METHODS) == ALLOWED["admin"]
    assert len(METHODS) == 30


@pytest.fixture(scope="module")
def callers(secured_server):
    """Metadata per caller: each role, and the three kinds of bad key."""
    channel = grpc.insecure_channel(secured_server.target)
    admin = admin_pb2_grpc.AdminServiceStub(channel)
    admin_md = secured_server.metadata(secured_server.secrets["admin"])
    doomed = admin.CreateApiKey(
        apb.CreateApiKeyRequest(name="doomed", role=apb.ROLE_ADMIN), metadata=admin_md
    )
    admin.RevokeApiKey(apb.RevokeApiKeyRequest(key_id=doomed.key.key_id), metadata=admin_md)
    result = {role: secured_server.metadata(secret) for role, secret in secured_server.secrets.items()}
    result |= {
        "no key": (),
        "unknown key": secured_server.metadata(new_secret()),
        "revoked key": secured_server.metadata(doomed.secret),
    }
    yield channel, result
    channel.close()


def _call(channel, full_name: str, metadata):
    method = METHODS[full_name]
    request_class = message_factory.GetMessageClass(method.input_type)
    request = HARMLESS.get(method.name, request_class())
    if method.server_streaming:  # WatchMember's empty request lacks member_id: refused
        call = channel.unary_stream(
            f"/{full_name}", request_serializer=request_class.SerializeToString, response_deserializer=None
        )
        try:
            list(call(request, metadata=metadata, timeout=30))
        except grpc.RpcError as error:
            return error.code()
        return grpc.StatusCode.OK
    call = channel.unary_unary(
        f"/{full_name}", request_serializer=request_class.SerializeToString, response_deserializer=None
    )
    try:
        call(request, metadata=metadata, timeout=30)
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


@pytest.mark.parametrize(
    "caller", ["pos", "ecommerce", "analytics", "admin", "no key", "unknown key", "revoked key"]
)
def test_every_rpc_answers_each_caller_as_the_role_table_says(callers, caller):
    channel, metadata = callers
    wrong = []
    for full_name in sorted(METHODS):
        code = _call(channel, full_name, metadata[caller])
        if caller not in ALLOWED:
            expected_ok = code == grpc.StatusCode.UNAUTHENTICATED
        elif full_name in ALLOWED[caller]:
            # Allowed: whatever the (empty) request earns, but never an auth refusal,
            # and the RPC exists.
            expected_ok = code not in (
                grpc.StatusCode.UNAUTHENTICATED,
                grpc.StatusCode.PERMISSION_DENIED,
                grpc.StatusCode.UNIMPLEMENTED,
            )
        else:
            expected_ok = code == grpc.StatusCode.PERMISSION_DENIED
        if not expected_ok:
            wrong.append((full_name, code.name))
    assert wrong == []


def test_health_checks_need_no_key(secured_server, callers):
    channel, _ = callers
    health = health_pb2_grpc.HealthStub(channel)
    assert health.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.SERVING
