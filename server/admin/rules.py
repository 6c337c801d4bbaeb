"""Rule administration: create, update, delete, replace, read and list the live
earning rules. The use-cases behind AdminService's rule RPCs and the rules of the
config file at start: typed values in, the server's exceptions out, no gRPC.

Every change goes through the RulesStore (one new rule-set version per change, made
atomically in Redis) under the change-then-audit policy of server/admin/changes.py.
The gateway that made a change adopts its version at once, so the caller's next earn
through it sees the new rules; other gateways learn it from the store's change feed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from loyalty.actors.ledger.rules import Rule, Violation
from loyalty.server.admin.changes import ChangePolicy, Retry, now_ms, store_calls
from loyalty.server.errors import FieldViolation, RuleNotFound
from loyalty.server.stores.admin_requests import RULES_AREA, RequestToRecord
from loyalty.server.stores.audit import Actor, AuditLog
from loyalty.server.stores.rules import ChangeResult, LiveRulesVersion, RulesSnapshot, RulesStore, RuleView, page

_STORE = "rules store"
_WHOLE_SET = "rules"
"""The audit target of a ReplaceRules."""


def _rule_target(rule_id: str) -> str:
    return f"rule/{rule_id}"


class RuleAdministration:
    """The rule use-cases of one gateway over its RulesStore."""

    def __init__(self, store: RulesStore, *, live: LiveRulesVersion, audit: AuditLog | None = None) -> None:
        """``live`` is this gateway's rules version (advanced by its own changes);
        ``audit`` None: changes are not audited."""
        self._store = store
        self._live = live
        self._changes = ChangePolicy(audit, area=RULES_AREA, key_prefix=store.key_prefix)

    # ------------------------------------------------------------------ changes

    async def create(
        self, rule: Rule, *, actor: Actor, validate_only: bool = False, retry: Retry | None = None
    ) -> ChangeResult:
        """Add a rule (RuleAlreadyExists, RuleSetInvalid)."""
        target = _rule_target(rule.rule_id)
        return await self._change(
            "CreateRule", target, actor, retry, validate_only,
            lambda request: self._store.create(rule, validate_only=validate_only, request=request),
        )

    async def update(
        self,
        rule_id: str,
        build: Callable[[Rule], Rule],
        *,
        etag: str,
        actor: Actor,
        validate_only: bool = False,
        retry: Retry | None = None,
    ) -> ChangeResult:
        """Replace a rule by ``build(current)``; ``etag`` is the one the caller read
        (RuleNotFound, EtagMismatch, RuleSetInvalid, or FieldViolation from build)."""
        if not rule_id:
            raise FieldViolation("rule.rule_id", "is required")
        if not etag:
            raise FieldViolation("rule.etag", "is required: send the etag of the rule you read")
        return await self._change(
            "UpdateRule", _rule_target(rule_id), actor, retry, validate_only,
            lambda request: self._store.update(
                rule_id, build, etag=etag, validate_only=validate_only, request=request
            ),
        )

    async def delete(
        self, rule_id: str, *, etag: str = "", actor: Actor, validate_only: bool = False, retry: Retry | None = None
    ) -> ChangeResult:
        """Remove a rule (RuleNotFound; EtagMismatch when ``etag`` is given and stale)."""
        if not rule_id:
            raise FieldViolation("rule_id", "is required")
        return await self._change(
            "DeleteRule", _rule_target(rule_id), actor, retry, validate_only,
            lambda request: self._store.delete(rule_id, etag=etag, validate_only=validate_only, request=request),
        )

    async def replace(
        self,
        rules: Sequence[Rule],
        *,
        expected_version: int = 0,
        actor: Actor,
        validate_only: bool = False,
        retry: Retry | None = None,
    ) -> ChangeResult:
        """Make ``rules`` the whole live set in one version (none when it already is);
        EtagMismatch when ``expected_version`` is non-zero and not the live one."""
        return await self._change(
            "ReplaceRules", _WHOLE_SET, actor, retry, validate_only,
            lambda request: self._store.replace(
                rules, expected_version=expected_version, validate_only=validate_only, request=request
            ),
        )

    # ------------------------------------------------------------------ reads

    async def get(self, rule_id: str) -> RuleView:
        """One rule (RuleNotFound)."""
        if not rule_id:
            raise FieldViolation("rule_id", "is required")
        async with store_calls(_STORE):
            view = await self._store.get(rule_id)
        if view is None:
            raise RuleNotFound(f"rule {rule_id!r} not found")
        return view

    async def rules(self, *, page_size: int = 0, page_token: str = "") -> tuple[RulesSnapshot, list[RuleView], str]:
        """The live set read at once, one page of it, and the token of the next page
        ("" at the end)."""
        if page_size < 0:
            raise FieldViolation("page_size", "must not be negative")
        async with store_calls(_STORE):
            snapshot = await self._store.snapshot()
        shown, token = page(snapshot, page_size=page_size, page_token=page_token)
        return snapshot, shown, token

    def validate(self, rules: Sequence[Rule]) -> list[Violation]:
        """Problems of a whole rule set (paths "rules[i]..."), without storing it."""
        return self._store.validate(rules)

    # ------------------------------------------------------------------ the policy

    async def _change(self, action: str, target: str, actor: Actor, retry: Retry | None, validate_only: bool, make):
        """``make(request)`` (a store change, recorded under ``retry``'s request_id
        when there is one), then adopt its version here and audit it."""
        request = None if retry is None or validate_only else self._request(action, target, actor, retry)
        async with store_calls(_STORE):
            result = await make(request)
            if validate_only or not result.changed:
                return result
            self._live.advance(result.version)
            await self._changes.committed(
                action=action,
                target=target,
                before=result.before,
                after=result.after,
                actor=actor,
                retry=None if request is None else retry,
                stored_fields=result.audit,
                applied=f"the change was applied (rules version {result.version})",
            )
        return result

    def _request(self, action: str, target: str, actor: Actor, retry: Retry) -> RequestToRecord:
        def audit_fields(before, after) -> dict[str, str]:
            return self._changes.event_fields(action=action, target=target, before=before, after=after, actor=actor)

        return RequestToRecord(
            key=self._changes.request_key(retry),
            method=action,
            fingerprint=retry.fingerprint,
            audit_fields=audit_fields,
            time_ms=now_ms(),
        )
