"""The loyalty.v1.AdminService servicer: the one gRPC part of administration.

Each RPC reads its request into typed values, calls a use-case (server/admin/rules.py,
server/admin/keys.py) as the caller the guard established, and maps the answer back
to protobuf; every server exception becomes its google.rpc.Status through
``errors.status_of``. Changes sent with a ``request_id`` carry a ``Retry`` (the
request's fingerprint and, for keys, how to serialize the answer a retry replays).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
from collections.abc import Sequence

import grpc
import redis.asyncio
from google.rpc import error_details_pb2

from loyalty.actors.ledger.program import CompiledProgram, Program
from loyalty.actors.ledger.rules import Rule, Violation
from loyalty.server import errors
from loyalty.server.admin.changes import Retry
from loyalty.server.admin.keys import KeyAdministration
from loyalty.server.admin.rules import RuleAdministration
from loyalty.server.admin.rules_proto import apply_update, rule_from_proto, rule_to_proto, rules_from_proto
from loyalty.server.errors import FieldViolation, LoyaltyServerError
from loyalty.server.security.caller import CONFIG_ACTOR, current_caller
from loyalty.server.stores.admin_requests import AdminRequestRecord, check_request_id, fingerprint
from loyalty.server.stores.audit import AuditLog
from loyalty.server.stores.keys import ApiKeyRecord, KeyChange
from loyalty.server.stores.rules import ChangeResult, LiveRulesVersion, RulesStore, follow_versions
from loyalty.v1 import admin_pb2 as pb
from loyalty.v1 import admin_pb2_grpc as pb_grpc

ROLE_NAMES: dict[int, str] = {
    pb.ROLE_POS: "pos",
    pb.ROLE_ECOMMERCE: "ecommerce",
    pb.ROLE_ANALYTICS: "analytics",
    pb.ROLE_ADMIN: "admin",
}
"""admin.proto Role -> role name."""
ROLE_VALUES: dict[str, int] = {name: value for value, name in ROLE_NAMES.items()}
"""Role name -> admin.proto Role."""

_RULE_INDEX = re.compile(r"^rules\[(\d+)\]")


def api_key_message(record: ApiKeyRecord) -> pb.ApiKey:
    """The public view of a key as admin.proto's ApiKey (never its secret or hash)."""
    message = pb.ApiKey(
        key_id=record.key_id,
        name=record.name,
        role=ROLE_VALUES.get(record.role, pb.ROLE_UNSPECIFIED),
        channels=record.channels,
        store_ids=record.store_ids,
    )
    message.create_time.FromMilliseconds(record.create_time_ms)
    if record.revoke_time_ms:
        message.revoke_time.FromMilliseconds(record.revoke_time_ms)
    if record.rotate_time_ms:
        message.rotate_time.FromMilliseconds(record.rotate_time_ms)
    return message


def _secret_response(record: ApiKeyRecord, secret: str) -> pb.CreateApiKeyResponse:
    return pb.CreateApiKeyResponse(key=api_key_message(record), secret=secret)


def _serialized_secret_response(record: ApiKeyRecord, secret: str) -> bytes:
    return _secret_response(record, secret).SerializeToString()


def _serialized_key(record: ApiKeyRecord, _secret: str) -> bytes:
    return api_key_message(record).SerializeToString()


def _retry(method: str, request, *, answer=None) -> Retry | None:
    """The Retry of a change sent with a request_id (None without one);
    FieldViolation for a malformed request_id."""
    problem = check_request_id(request.request_id)
    if problem is not None:
        raise FieldViolation("request_id", problem)
    if not request.request_id:
        return None
    return Retry(
        request_id=request.request_id,
        fingerprint=fingerprint(method, current_caller().key_id, request),
        answer=answer,
    )


def _answered(method):
    """Every server exception the RPC raises, answered with its status."""

    @functools.wraps(method)
    async def answering(self, request, context):
        try:
            return await method(self, request, context)
        except LoyaltyServerError as error:
            await errors.abort(context, errors.status_of(error))

    return answering


def _secret_answer(outcome: KeyChange | AdminRequestRecord) -> pb.CreateApiKeyResponse:
    if isinstance(outcome, AdminRequestRecord):
        return pb.CreateApiKeyResponse.FromString(outcome.response)
    return _secret_response(outcome.after, outcome.secret)


class AdminServicer(pb_grpc.AdminServiceServicer):
    """Every AdminService RPC over the rule and key use-cases."""

    def __init__(self, rules: RuleAdministration, *, keys: KeyAdministration | None = None) -> None:
        """``keys`` None: a server without API keys answers their RPCs UNIMPLEMENTED."""
        self._rules = rules
        self._keys = keys

    # ------------------------------------------------------------------ rules

    @_answered
    async def CreateRule(self, request: pb.CreateRuleRequest, context) -> pb.Rule:
        rule = rule_from_proto(request.rule)
        result = await self._rules.create(
            rule,
            actor=current_caller(),
            validate_only=request.validate_only,
            retry=_retry("CreateRule", request),
        )
        return rule_to_proto(result.view.rule, result.view)

    @_answered
    async def UpdateRule(self, request: pb.UpdateRuleRequest, context) -> pb.Rule:
        def build(current: Rule) -> Rule:
            return apply_update(current, request.rule, request.update_mask)

        result = await self._rules.update(
            request.rule.rule_id,
            build,
            etag=request.rule.etag,
            actor=current_caller(),
            validate_only=request.validate_only,
            retry=_retry("UpdateRule", request),
        )
        return rule_to_proto(result.view.rule, result.view)

    @_answered
    async def DeleteRule(self, request: pb.DeleteRuleRequest, context) -> pb.DeleteRuleResponse:
        result = await self._rules.delete(
            request.rule_id,
            etag=request.etag,
            actor=current_caller(),
            validate_only=request.validate_only,
            retry=_retry("DeleteRule", request),
        )
        return pb.DeleteRuleResponse(version=result.version)

    @_answered
    async def GetRule(self, request: pb.GetRuleRequest, context) -> pb.Rule:
        view = await self._rules.get(request.rule_id)
        return rule_to_proto(view.rule, view)

    @_answered
    async def ListRules(self, request: pb.ListRulesRequest, context) -> pb.ListRulesResponse:
        snapshot, shown, token = await self._rules.rules(page_size=request.page_size, page_token=request.page_token)
        return pb.ListRulesResponse(
            rules=[rule_to_proto(view.rule, view) for view in shown],
            version=snapshot.version,
            next_page_token=token,
        )

    async def ValidateRules(self, request: pb.ValidateRulesRequest, context) -> pb.ValidateRulesResponse:
        problems: list[Violation] = []
        converted, positions = [], []
        for index, message in enumerate(request.rules):
            try:
                converted.append(rule_from_proto(message, prefix=f"rules[{index}]"))
                positions.append(index)
            except FieldViolation as violation:
                problems.append(Violation(violation.field, violation.description))
        for violation in self._rules.validate(converted):
            # Paths index the converted rules; name the rule as the request did.
            path = _RULE_INDEX.sub(lambda match: f"rules[{positions[int(match[1])]}]", violation.path)
            problems.append(Violation(path, violation.description))
        return pb.ValidateRulesResponse(
            valid=not problems,
            violations=[
                error_details_pb2.BadRequest.FieldViolation(field=violation.path, description=violation.description)
                for violation in problems
            ],
        )

    @_answered
    async def ReplaceRules(self, request: pb.ReplaceRulesRequest, context) -> pb.ListRulesResponse:
        rules = rules_from_proto(request.rules)
        result = await self._rules.replace(
            rules,
            expected_version=request.expected_version,
            actor=current_caller(),
            validate_only=request.validate_only,
            retry=_retry("ReplaceRules", request),
        )
        return pb.ListRulesResponse(
            rules=[rule_to_proto(view.rule, view) for view in result.views], version=result.version
        )

    # ------------------------------------------------------------------ keys and audit

    async def _key_administration(self, context) -> KeyAdministration:
        if self._keys is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "API keys are not enabled on this server")
        return self._keys

    @_answered
    async def CreateApiKey(self, request: pb.CreateApiKeyRequest, context) -> pb.CreateApiKeyResponse:
        """A new key; its secret is in this response and nowhere else."""
        keys = await self._key_administration(context)
        role = ROLE_NAMES.get(request.role, "")
        outcome = await keys.create(
            name=request.name,
            role=role,
            channels=list(request.channels),
            store_ids=list(request.store_ids),
            actor=current_caller(),
            retry=_retry("CreateApiKey", request, answer=_serialized_secret_response),
        )
        return _secret_answer(outcome)

    @_answered
    async def ListApiKeys(self, request: pb.ListApiKeysRequest, context) -> pb.ListApiKeysResponse:
        """Keys by id (revoked ones only when asked), never their secrets."""
        keys = await self._key_administration(context)
        records, token = await keys.keys(
            page_size=request.page_size, page_token=request.page_token, include_revoked=request.include_revoked
        )
        return pb.ListApiKeysResponse(keys=[api_key_message(record) for record in records], next_page_token=token)

    @_answered
    async def RotateApiKey(self, request: pb.RotateApiKeyRequest, context) -> pb.CreateApiKeyResponse:
        """A new secret; the old one stops working on every gateway at once."""
        keys = await self._key_administration(context)
        outcome = await keys.rotate(
            request.key_id,
            actor=current_caller(),
            retry=_retry("RotateApiKey", request, answer=_serialized_secret_response),
        )
        return _secret_answer(outcome)

    @_answered
    async def RevokeApiKey(self, request: pb.RevokeApiKeyRequest, context) -> pb.ApiKey:
        """Revoke; the key stops working on every gateway at once."""
        keys = await self._key_administration(context)
        outcome = await keys.revoke(
            request.key_id, actor=current_caller(), retry=_retry("RevokeApiKey", request, answer=_serialized_key)
        )
        if isinstance(outcome, AdminRequestRecord):
            return pb.ApiKey.FromString(outcome.response)
        return api_key_message(outcome.after)

    @_answered
    async def ListAuditEvents(self, request: pb.ListAuditEventsRequest, context) -> pb.ListAuditEventsResponse:
        """Admin actions, newest first."""
        keys = await self._key_administration(context)
        events, token = await keys.audit_events(page_size=request.page_size, page_token=request.page_token)
        response = pb.ListAuditEventsResponse(next_page_token=token)
        for event in events:
            message = response.events.add(
                event_id=event.event_id,
                actor_key_id=event.actor_key_id,
                actor_name=event.actor_name,
                action=event.action,
                target=event.target,
                before_json=event.before_json,
                after_json=event.after_json,
            )
            message.time.FromMilliseconds(event.time_ms)
        return response


class GatewayRules:
    """One gateway process's rules side: the store, the live version its shard calls
    carry, and the task that keeps that version current."""

    def __init__(self, *, redis_url: str, key_prefix: str, program: Program) -> None:
        """Rules of deployment ``key_prefix`` in the Redis at ``redis_url``, validated
        against ``program``."""
        self._client = redis.asyncio.Redis.from_url(redis_url)
        self._key_prefix = key_prefix
        self.live = LiveRulesVersion()
        """The version this gateway sends with each shard call."""
        self.store = RulesStore(self._client, program=CompiledProgram(program), key_prefix=key_prefix)
        self._follower: asyncio.Task | None = None

    async def start(self) -> None:
        """Read the live version, then follow changes made by any gateway."""
        self.live.advance(await self.store.live_version())
        self._follower = asyncio.create_task(
            follow_versions(self._client, self.live, key_prefix=self._key_prefix), name="rules-version-follower"
        )

    def administration(self, *, audit: AuditLog | None = None) -> RuleAdministration:
        """The rule use-cases of this gateway (audited in ``audit`` when given)."""
        return RuleAdministration(self.store, live=self.live, audit=audit)

    async def apply_config(self, rules: Sequence[Rule], *, audit: AuditLog | None = None) -> ChangeResult:
        """Make the rules of a config file the live set (a new version only if they
        differ from it), audited as a ReplaceRules of CONFIG_ACTOR. Raises
        RuleChangeRefused."""
        result = await self.administration(audit=audit).replace(rules, actor=CONFIG_ACTOR)
        self.live.advance(result.version)
        return result

    def servicer(self, *, keys: KeyAdministration | None = None, audit: AuditLog | None = None) -> AdminServicer:
        """The AdminService servicer of this gateway."""
        return AdminServicer(self.administration(audit=audit), keys=keys)

    async def stop(self) -> None:
        """Stop following changes and disconnect."""
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower
            self._follower = None
        await self._client.aclose()
