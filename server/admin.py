"""The loyalty.v1.AdminService servicer: rules here, keys and audit delegated.

Rule changes go through the RulesStore (one new rule-set version per change, made
atomically in Redis); the gateway that made a change adopts its version at once, so
the caller's next earn through it sees the new rules; other gateways learn it from
the store's change feed. Every successful change is recorded in the audit log.
API keys and the audit log itself are served by auth's KeyAdmin.
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
from loyalty.server.errors import FieldViolation
from loyalty.server.rule_convert import apply_update, rule_from_proto, rule_to_proto, rules_from_proto
from loyalty.server.rules_store import (
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

    async def _committed(self, action: str, target: str, result: ChangeResult) -> None:
        """After a change: adopt its version here, and audit it."""
        if not result.changed:
            return
        self._live.advance(result.version)
        if self._audit is None:
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
        result = await self._run(context, self._store.create(rule, validate_only=request.validate_only))
        if not request.validate_only:
            await self._committed("CreateRule", f"rule/{rule.rule_id}", result)
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

        result = await self._run(
            context, self._store.update(rule_id, build, etag=etag, validate_only=request.validate_only)
        )
        if not request.validate_only:
            await self._committed("UpdateRule", f"rule/{rule_id}", result)
        return rule_to_proto(result.view.rule, result.view)

    async def DeleteRule(self, request: pb.DeleteRuleRequest, context) -> pb.DeleteRuleResponse:
        if not request.rule_id:
            await _abort(context, errors.invalid_argument(FieldViolation("rule_id", "is required")))
        result = await self._run(
            context,
            self._store.delete(request.rule_id, etag=request.etag, validate_only=request.validate_only),
        )
        if not request.validate_only:
            await self._committed("DeleteRule", f"rule/{request.rule_id}", result)
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
        result = await self._run(
            context,
            self._store.replace(
                rules, expected_version=request.expected_version, validate_only=request.validate_only
            ),
        )
        if not request.validate_only:
            await self._committed("ReplaceRules", "rules", result)
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
