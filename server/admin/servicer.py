"""The loyalty.v1.AdminService servicer: rules here, keys and audit delegated.

Rule changes go through the RulesStore (one new rule-set version per change, made
atomically in Redis); the gateway that made a change adopts its version at once, so
the caller's next earn through it sees the new rules; other gateways learn it from
the store's change feed. Every successful change is recorded in the audit log.
API keys and the audit log itself are served by auth's KeyAdmin.

Changes sent with a ``request_id`` are safe to retry: the store records the outcome
in the same transaction as the change, a retry answers it again, and the audit event
is appended once (see server/stores/admin_requests.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Sequence

import grpc
import redis
import redis.asyncio
from google.rpc import error_details_pb2
from grpc_status import rpc_status as grpc_rpc_status

from loyalty.actors.ledger.program import CompiledProgram, Program
from loyalty.actors.ledger.rules import Rule, Violation
from loyalty.actors.ledger.status import Status
from loyalty.server import errors
from loyalty.server.stores.admin_requests import (
    RULES_AREA,
    RequestIdConflict,
    RequestToRecord,
    check_request_id,
    fingerprint,
    request_key,
)
from loyalty.server.errors import FieldViolation
from loyalty.server.admin.rules_proto import apply_update, rule_from_proto, rule_to_proto, rules_from_proto
from loyalty.server.stores.rules import (
    ChangeResult,
    LiveRulesVersion,
    RuleChangeRefused,
    RulesStore,
    follow_versions,
    page,
)
from loyalty.v1 import admin_pb2 as pb
from loyalty.v1 import admin_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

_RULE_INDEX = re.compile(r"^rules\[(\d+)\]")


async def _abort(context: grpc.aio.ServicerContext, status) -> None:
    converted = grpc_rpc_status.to_status(status)
    await context.abort(converted.code, converted.details, converted.trailing_metadata)


def _violations(violations: list[Violation]) -> list[FieldViolation]:
    return [FieldViolation(violation.path, violation.description) for violation in violations]


class AdminServicer(pb_grpc.AdminServiceServicer):
    """Every AdminService RPC. Rule RPCs read and change the RulesStore; key and audit
    RPCs are KeyAdmin's."""

    def __init__(self, store: RulesStore, *, live: LiveRulesVersion, keys=None, audit=None) -> None:
        """``live`` is this gateway's rules version (advanced by its own changes);
        ``keys`` a KeyAdmin; ``audit`` anything with
        ``async record(*, action, target, before, after)``."""
        self._store = store
        self._live = live
        self._keys = keys
        self._audit = audit

    # ------------------------------------------------------------------ plumbing

    async def _run(self, context, change):
        """Await a store call, turning refusals and Redis failures into errors."""
        try:
            return await change
        except FieldViolation as violation:
            await _abort(context, errors.invalid_argument(violation))
        except RequestIdConflict as conflict:
            await _abort(context, errors.rpc_status(Status.REQUEST_ID_CONFLICT, str(conflict)))
        except RuleChangeRefused as refused:
            await _abort(
                context,
                errors.rpc_status(refused.status, refused.message, violations=_violations(refused.violations)),
            )
        except redis.exceptions.RedisError as error:
            await _abort(
                context,
                errors.rpc_status(Status.SHARD_UNAVAILABLE, f"rules store unavailable: {type(error).__name__}"),
            )

    async def _request(self, context, method: str, target: str, request) -> RequestToRecord | None:
        """How to record this change under its request_id (None without one, or for
        validate_only); INVALID_ARGUMENT for a malformed request_id."""
        problem = check_request_id(request.request_id)
        if problem is not None:
            await _abort(context, errors.invalid_argument(FieldViolation("request_id", problem)))
        if not request.request_id or request.validate_only:
            return None
        from loyalty.server.security.guard import current_caller

        caller = current_caller()
        audit = self._audit

        def audit_fields(before, after) -> dict[str, str]:
            if audit is None or not hasattr(audit, "event_fields"):
                return {}
            return audit.event_fields(action=method, target=target, before=before, after=after, actor=caller)

        return RequestToRecord(
            key=request_key(self._store.key_prefix, RULES_AREA, request.request_id),
            method=method,
            fingerprint=fingerprint(method, caller.key_id, request),
            audit_fields=audit_fields,
        )

    async def _committed(self, action: str, target: str, result: ChangeResult, context=None, request_id: str = "") -> None:
        """After a change (or the replay of one): adopt its version here, and audit
        it. A change made under a request_id has its audit event stored with it: it is
        appended once, and if that fails the call answers UNAVAILABLE so the client
        retries with the same request_id (which replays the change and appends the
        event then). Without a request_id a failed audit write is only logged."""
        if not result.changed:
            return
        self._live.advance(result.version)
        if self._audit is None:
            return
        if result.audit:
            try:
                await self._audit.record_once(RULES_AREA, request_id, result.audit)
            except Exception as error:
                log.exception("audit: could not record %s of %s (version %d, request_id %s)",
                              action, target, result.version, request_id)
                message = (
                    f"the change was applied (rules version {result.version}) but its audit event could not be "
                    f"written ({type(error).__name__}); retry with the same request_id"
                )
                await _abort(context, errors.rpc_status(Status.SHARD_UNAVAILABLE, message))
            return
        try:
            await self._audit.record(action=action, target=target, before=result.before, after=result.after)
        except Exception:  # the change is committed; a lost audit entry must be visible
            log.exception("audit: could not record %s of %s (version %d)", action, target, result.version)

    async def _convert(self, context, convert, *args):
        """``convert(*args)``, or INVALID_ARGUMENT naming the bad field."""
        try:
            return convert(*args)
        except FieldViolation as violation:
            await _abort(context, errors.invalid_argument(violation))

    # ------------------------------------------------------------------ rules

    async def CreateRule(self, request: pb.CreateRuleRequest, context) -> pb.Rule:
        rule = await self._convert(context, rule_from_proto, request.rule)
        target = f"rule/{rule.rule_id}"
        recorded = await self._request(context, "CreateRule", target, request)
        result = await self._run(
            context, self._store.create(rule, validate_only=request.validate_only, request=recorded)
        )
        if not request.validate_only:
            await self._committed("CreateRule", target, result, context, request.request_id)
        return rule_to_proto(result.view.rule, result.view)

    async def UpdateRule(self, request: pb.UpdateRuleRequest, context) -> pb.Rule:
        rule_id, etag = request.rule.rule_id, request.rule.etag
        if not rule_id:
            await _abort(context, errors.invalid_argument(FieldViolation("rule.rule_id", "is required")))
        if not etag:
            await _abort(
                context,
                errors.invalid_argument(FieldViolation("rule.etag", "is required: send the etag of the rule you read")),
            )

        def build(current):
            return apply_update(current, request.rule, request.update_mask)

        target = f"rule/{rule_id}"
        recorded = await self._request(context, "UpdateRule", target, request)
        result = await self._run(
            context,
            self._store.update(rule_id, build, etag=etag, validate_only=request.validate_only, request=recorded),
        )
        if not request.validate_only:
            await self._committed("UpdateRule", target, result, context, request.request_id)
        return rule_to_proto(result.view.rule, result.view)

    async def DeleteRule(self, request: pb.DeleteRuleRequest, context) -> pb.DeleteRuleResponse:
        if not request.rule_id:
            await _abort(context, errors.invalid_argument(FieldViolation("rule_id", "is required")))
        target = f"rule/{request.rule_id}"
        recorded = await self._request(context, "DeleteRule", target, request)
        result = await self._run(
            context,
            self._store.delete(
                request.rule_id, etag=request.etag, validate_only=request.validate_only, request=recorded
            ),
        )
        if not request.validate_only:
            await self._committed("DeleteRule", target, result, context, request.request_id)
        return pb.DeleteRuleResponse(version=result.version)

    async def GetRule(self, request: pb.GetRuleRequest, context) -> pb.Rule:
        if not request.rule_id:
            await _abort(context, errors.invalid_argument(FieldViolation("rule_id", "is required")))
        view = await self._run(context, self._store.get(request.rule_id))
        if view is None:
            await _abort(context, errors.rpc_status(Status.RULE_NOT_FOUND, f"rule {request.rule_id!r} not found"))
        return rule_to_proto(view.rule, view)

    async def ListRules(self, request: pb.ListRulesRequest, context) -> pb.ListRulesResponse:
        if request.page_size < 0:
            await _abort(context, errors.invalid_argument(FieldViolation("page_size", "must not be negative")))
        snapshot = await self._run(context, self._store.snapshot())
        try:
            shown, token = page(snapshot, page_size=request.page_size, page_token=request.page_token)
        except ValueError as error:
            await _abort(context, errors.invalid_argument(FieldViolation("page_token", str(error))))
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
        for violation in self._store.validate(converted):
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

    async def ReplaceRules(self, request: pb.ReplaceRulesRequest, context) -> pb.ListRulesResponse:
        rules = await self._convert(context, rules_from_proto, request.rules)
        recorded = await self._request(context, "ReplaceRules", "rules", request)
        result = await self._run(
            context,
            self._store.replace(
                rules,
                expected_version=request.expected_version,
                validate_only=request.validate_only,
                request=recorded,
            ),
        )
        if not request.validate_only:
            await self._committed("ReplaceRules", "rules", result, context, request.request_id)
        return pb.ListRulesResponse(
            rules=[rule_to_proto(view.rule, view) for view in result.views], version=result.version
        )

    # ------------------------------------------------------------------ keys and audit

    async def _keys_call(self, name: str, request, context):
        if self._keys is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "API keys are not enabled on this server")
        return await getattr(self._keys, name)(request, context)

    async def CreateApiKey(self, request, context):
        return await self._keys_call("CreateApiKey", request, context)

    async def ListApiKeys(self, request, context):
        return await self._keys_call("ListApiKeys", request, context)

    async def RotateApiKey(self, request, context):
        return await self._keys_call("RotateApiKey", request, context)

    async def RevokeApiKey(self, request, context):
        return await self._keys_call("RevokeApiKey", request, context)

    async def ListAuditEvents(self, request, context):
        return await self._keys_call("ListAuditEvents", request, context)


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

    async def apply_config(self, rules: Sequence[Rule], *, audit=None) -> ChangeResult:
        """Make the rules of a config file the live set (a new version only if they
        differ from it), audited as a ReplaceRules of the current caller (run it as
        the config actor). Raises RuleChangeRefused."""
        result = await self.store.replace(rules)
        self.live.advance(result.version)
        if result.changed and audit is not None:
            await audit.record(action="ReplaceRules", target="rules", before=result.before, after=result.after)
        return result

    def servicer(self, *, keys=None, audit=None) -> AdminServicer:
        """The AdminService servicer of this gateway."""
        return AdminServicer(self.store, live=self.live, keys=keys, audit=audit)

    async def stop(self) -> None:
        """Stop following changes and disconnect."""
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower
            self._follower = None
        await self._client.aclose()
