"""The live rule set in Redis: versions, per-rule records, campaign budgets.

Every key shares one hash tag, so the transactions and scripts below touch one hash
slot and also run on Redis Cluster:

* ``{<prefix>:rules}:version`` -- the live rule-set version (0: never set). Every
  change WATCHes it and bumps it by one inside MULTI, so concurrent admins on any
  number of gateway processes serialise: each change makes exactly one version and
  none is lost (a writer that raced retries on the new state).
* ``{<prefix>:rules}:records`` -- hash rule_id -> a RuleRecord (the rule with its
  etag, version, update time and budget account), msgpack.
* ``{<prefix>:rules}:set:<version>`` -- the whole RuleSet of that version, encoded
  once by the writer; shards fetch it when a batch asks for a newer version. The
  newest RULE_SET_VERSIONS_KEPT are kept (a shard never installs an older version
  than its own, and one that finds its version gone installs the live one).
* ``{<prefix>:rules}:budget:<account>`` -- hash ``remaining`` / ``total`` of one
  campaign budget: the points not yet granted to any shard. Shards lease chunks with
  a script (never more than remaining) and give back what they no longer need.
* channel ``{<prefix>:rules}:changes`` -- the new version, published by each change
  so other gateways pick it up at once (they also poll the version key, because a
  published message is lost while a subscriber reconnects).

Budgets: an account is created when a rule first gets a budget (named
``<rule_id>@<version>``, so a deleted and recreated rule starts afresh). The key the
shards hold is ``<account>#<generation>``; the generation changes whenever the
rule's total changes, which makes every shard give back its chunks of the old
generation (they no longer appear in the live set's budget_keys), while the points
flow back into the same account. A new total adjusts ``remaining`` by the
difference; remaining may go below zero when the total is lowered below what shards
already hold, and the chunks they give back pay that off first. So at every moment
``remaining + held by shards + spent == total`` (points lost in a crash between a
lease and its journal record count as spent: a budget is never overspent, at worst
underspent), and budget_remaining shows max(remaining, 0).

The gateway side (``RulesStore``, here) uses redis.asyncio; the shard side
(``ShardRulesSource`` in actors/shard/rules_source.py, with the key names both use) uses
the synchronous client because shards are sync actors.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable, Sequence

import msgspec
import redis
import redis.asyncio

from loyalty.actors.ledger.program import CompiledProgram
from loyalty.actors.ledger.rules import (
    Rule,
    RulesError,
    RuleSet,
    Violation,
    compile_rules,
    encode_rule_set,
    validate_rules,
)
from loyalty.actors.outage import OutageLog
from loyalty.actors.shard.rules_source import RulesKeys
from loyalty.server.errors import EtagMismatch, RuleAlreadyExists, RuleNotFound, RulesContended, RuleSetInvalid
from loyalty.server.page_tokens import decode_page_token, encode_page_token
from loyalty.server.stores.admin_requests import (
    ADMIN_REQUEST_RETENTION_S,
    RequestToRecord,
    decode_record,
    encode_record,
    replayable,
)

log = logging.getLogger(__name__)

__all__ = [
    "RULES_PAGE_SIZE_DEFAULT",
    "RULES_PAGE_SIZE_MAX",
    "RULES_POLL_INTERVAL_S",
    "RULES_WRITE_ATTEMPTS_MAX",
    "RULE_SET_VERSIONS_KEPT",
    "ChangeResult",
    "LiveRulesVersion",
    "RuleRecord",
    "RuleView",
    "RulesSnapshot",
    "RulesStore",
    "follow_versions",
]

# Old versions kept for shards still asked for them by a slower gateway. A shard
# whose version is gone installs the live one (versions only move forward), so this
# only has to cover versions made while one batch was in flight.
RULE_SET_VERSIONS_KEPT = 32

# Concurrent admins retry a change whose WATCH fired; each retry means another
# writer committed, so a handful suffices unless hundreds write at the same moment.
RULES_WRITE_ATTEMPTS_MAX = 16

# ListRules: as in admin.proto (0 means 50, at most 500).
RULES_PAGE_SIZE_DEFAULT = 50
RULES_PAGE_SIZE_MAX = 500

# How often a gateway reads the live version besides listening for published changes:
# a published message is lost while the subscriber reconnects, so this bounds how
# long a gateway can lag behind a change it missed.
RULES_POLL_INTERVAL_S = 1.0

class RuleRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A stored rule with what the store keeps beside it. Persisted: fields may only
    be added, with defaults."""

    rule: Rule
    etag: str
    version: int
    """The rule-set version that last changed this rule."""
    update_time_ms: int
    budget_account: str = ""
    """The budget account ("" when the rule never had a budget, or it was removed)."""
    budget_generation: int = 0
    """Changes whenever the total does; part of the key shards hold."""

    @property
    def budget_key(self) -> str:
        """The key shards lease under ("" without a budget)."""
        if not self.budget_account or self.rule.budget.total_points <= 0:
            return ""
        return f"{self.budget_account}#{self.budget_generation}"


class RuleView(msgspec.Struct, frozen=True, kw_only=True):
    """A rule as shown to admins."""

    rule: Rule
    etag: str
    version: int
    update_time_ms: int
    budget_remaining: int = 0


class RulesSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """The live set as read in one transaction, ordered by priority (highest first)
    then id."""

    version: int
    rules: tuple[RuleView, ...]


class ChangeResult(msgspec.Struct, frozen=True, kw_only=True):
    """What one change did (or, with validate_only, would do)."""

    version: int
    """The new version (the live one when nothing changed or validate_only)."""
    changed: bool
    view: RuleView | None = None
    """The created or updated rule as it is (or would be) stored."""
    before: dict | None = None
    after: dict | None = None
    """The rule (or, for ReplaceRules, {rule_id: rule}) before and after, as builtins."""
    views: tuple[RuleView, ...] = ()
    """ReplaceRules: the whole new set, ordered."""
    replayed: bool = False
    """True when this is the stored outcome of an earlier call with the same
    request_id (nothing changed now; budget_remaining is read afresh)."""
    audit: dict[str, str] | None = None
    """The audit event fields stored with the change's request_id (None without one)."""


class _StoredOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """What a rules change recorded under a request_id replays: the version it made
    and the records it answered with (budgets are live counters, read on replay)."""

    version: int
    records: tuple[RuleRecord, ...] = ()
    focus: str | None = None
    whole_set: bool = False


_record_encoder = msgspec.msgpack.Encoder()
_record_decoder = msgspec.msgpack.Decoder(RuleRecord)
_outcome_decoder = msgspec.msgpack.Decoder(_StoredOutcome)


def _ordering(rule: Rule) -> tuple[int, str]:
    return (-rule.priority, rule.rule_id)


def _etag(rule: Rule, version: int) -> str:
    digest = hashlib.blake2b(msgspec.msgpack.encode(rule), digest_size=6).hexdigest()
    return f"{version}-{digest}"


def rule_builtins(rule: Rule) -> dict:
    """A rule as plain JSON-able values (for the audit log)."""
    return msgspec.to_builtins(rule)


# --------------------------------------------------------------------------- gateway side


class _Plan(msgspec.Struct, frozen=True, kw_only=True):
    """A change worked out against one read of the store, ready to commit."""

    records: dict[str, RuleRecord]
    """The whole new set."""
    written: tuple[str, ...]
    deleted: tuple[str, ...]
    budget_creates: tuple[tuple[str, int], ...] = ()  # (account, total)
    budget_deltas: tuple[tuple[str, int], ...] = ()  # (account, total change)
    budget_totals: tuple[tuple[str, int], ...] = ()  # (account, new total)


class RulesStore:
    """The gateway's access to the rules in Redis: reads and versioned changes."""

    def __init__(
        self,
        client: redis.asyncio.Redis,
        *,
        program: CompiledProgram,
        key_prefix: str = "loyalty",
        clock_ms: Callable[[], int] | None = None,
    ) -> None:
        """Use ``client`` (bytes responses) for the deployment ``key_prefix``;
        ``program`` is what every rule set is validated and compiled against."""
        self._client = client
        self._program = program
        self._keys = RulesKeys(key_prefix)
        self.key_prefix = key_prefix
        """The deployment's key prefix."""
        self._clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)

    @property
    def channel(self) -> str:
        """The pub/sub channel each change publishes its version on."""
        return self._keys.channel

    @property
    def version_key(self) -> str:
        """The key holding the live version."""
        return self._keys.version

    # ------------------------------------------------------------------ reads

    async def live_version(self) -> int:
        """The live rule-set version (0: no rules were ever set)."""
        return int(await self._client.get(self._keys.version) or 0)

    async def _read(self, client) -> tuple[int, dict[str, RuleRecord]]:
        version, raw = await client.get(self._keys.version), await client.hgetall(self._keys.records)
        records = {key.decode(): _record_decoder.decode(value) for key, value in raw.items()}
        return int(version or 0), records

    async def snapshot(self) -> RulesSnapshot:
        """The live set with its version, read atomically."""
        async with self._client.pipeline(transaction=True) as pipeline:
            pipeline.get(self._keys.version)
            pipeline.hgetall(self._keys.records)
            version, raw = await pipeline.execute()
        records = [_record_decoder.decode(value) for value in raw.values()]
        records.sort(key=lambda record: _ordering(record.rule))
        views = await self._views(records)
        return RulesSnapshot(version=int(version or 0), rules=tuple(views))

    async def get(self, rule_id: str) -> RuleView | None:
        """One rule, or None."""
        raw = await self._client.hget(self._keys.records, rule_id)
        if raw is None:
            return None
        return (await self._views([_record_decoder.decode(raw)]))[0]

    async def _views(self, records: Sequence[RuleRecord]) -> list[RuleView]:
        accounts = [record.budget_account if record.budget_key else "" for record in records]
        remaining: dict[str, int] = {}
        wanted = sorted({account for account in accounts if account})
        if wanted:
            async with self._client.pipeline(transaction=False) as pipeline:
                for account in wanted:
                    pipeline.hget(self._keys.budget(account), "remaining")
                values = await pipeline.execute()
            remaining = {account: max(0, int(value or 0)) for account, value in zip(wanted, values, strict=True)}
        return [_view(record, remaining.get(account, 0)) for record, account in zip(records, accounts, strict=True)]

    def validate(self, rules: Sequence[Rule]) -> list[Violation]:
        """Problems of a whole rule set (paths "rules[i]..."), without storing it."""
        return list(validate_rules(rules, self._program))

    # ------------------------------------------------------------------ changes

    async def create(
        self, rule: Rule, *, validate_only: bool = False, request: RequestToRecord | None = None
    ) -> ChangeResult:
        """Add a rule. RULE_ALREADY_EXISTS if the id is taken; INVALID_FIELD with
        violations ("rule.<field>") when the set would be invalid. With ``request``
        the change is recorded under its request_id in the same transaction, and a
        request_id already recorded is replayed instead (RequestIdConflict when it was
        another request); so for every change below."""

        def plan(version: int, records: dict[str, RuleRecord]) -> tuple[_Plan, dict | None]:
            if rule.rule_id in records:
                raise RuleAlreadyExists(f"rule {rule.rule_id!r} already exists")
            new_version = version + 1
            record = self._new_record(rule, new_version)
            updated = dict(records)
            updated[rule.rule_id] = record
            creates = ((record.budget_account, rule.budget.total_points),) if record.budget_account else ()
            return _Plan(records=updated, written=(rule.rule_id,), deleted=(), budget_creates=creates), None

        return await self._change(plan, validate_only=validate_only, focus=rule.rule_id, request=request)

    async def update(
        self,
        rule_id: str,
        build: Callable[[Rule], Rule],
        *,
        etag: str = "",
        validate_only: bool = False,
        request: RequestToRecord | None = None,
    ) -> ChangeResult:
        """Replace a rule by ``build(current)``. RULE_NOT_FOUND; ETAG_MISMATCH when
        ``etag`` is given and is not the current one. A build giving the same rule
        changes nothing (no new version)."""

        def plan(version: int, records: dict[str, RuleRecord]) -> tuple[_Plan | None, dict | None]:
            current = self._existing(records, rule_id, etag)
            rule = build(current.rule)
            if rule.rule_id != rule_id:
                raise RuleSetInvalid(
                    "rule.rule_id cannot change", [Violation("rule.rule_id", "cannot change; delete and create instead")]
                )
            if rule == current.rule:
                return None, None
            record, creates, deltas, totals = self._changed_record(current, rule, version + 1)
            updated = dict(records)
            updated[rule_id] = record
            return _Plan(
                records=updated, written=(rule_id,), deleted=(),
                budget_creates=creates, budget_deltas=deltas, budget_totals=totals,
            ), rule_builtins(current.rule)

        return await self._change(plan, validate_only=validate_only, focus=rule_id, request=request)

    async def delete(
        self, rule_id: str, *, etag: str = "", validate_only: bool = False, request: RequestToRecord | None = None
    ) -> ChangeResult:
        """Remove a rule (its budget account stays, to receive the chunks shards give
        back). RULE_NOT_FOUND; ETAG_MISMATCH when ``etag`` is given and stale."""

        def plan(version: int, records: dict[str, RuleRecord]) -> tuple[_Plan, dict | None]:
            current = self._existing(records, rule_id, etag)
            updated = dict(records)
            del updated[rule_id]
            return _Plan(records=updated, written=(), deleted=(rule_id,)), rule_builtins(current.rule)

        return await self._change(plan, validate_only=validate_only, focus=None, request=request)

    async def replace(
        self,
        rules: Sequence[Rule],
        *,
        expected_version: int = 0,
        validate_only: bool = False,
        request: RequestToRecord | None = None,
    ) -> ChangeResult:
        """Make ``rules`` the whole live set in one version. Rules equal to the
        stored ones keep their etag, version and budget; a set equal to the live one
        changes nothing. ETAG_MISMATCH when ``expected_version`` is non-zero and not
        the live version."""
        violations = self.validate(rules)
        if violations:
            raise RuleSetInvalid(_summary(violations), violations)

        def plan(version: int, records: dict[str, RuleRecord]) -> tuple[_Plan | None, dict | None]:
            if expected_version and expected_version != version:
                raise EtagMismatch(f"the live rule-set version is {version}, not {expected_version}")
            new_version = version + 1
            updated: dict[str, RuleRecord] = {}
            creates, deltas, totals, written = [], [], [], []
            for rule in rules:
                current = records.get(rule.rule_id)
                if current is not None and current.rule == rule:
                    updated[rule.rule_id] = current
                    continue
                written.append(rule.rule_id)
                if current is None:
                    record = self._new_record(rule, new_version)
                    if record.budget_account:
                        creates.append((record.budget_account, rule.budget.total_points))
                else:
                    record, created, delta, total = self._changed_record(current, rule, new_version)
                    creates += created
                    deltas += delta
                    totals += total
                updated[rule.rule_id] = record
            deleted = tuple(rule_id for rule_id in records if rule_id not in updated)
            if not written and not deleted:
                return None, None
            before = {rule_id: rule_builtins(record.rule) for rule_id, record in sorted(records.items())}
            return _Plan(
                records=updated, written=tuple(written), deleted=deleted,
                budget_creates=tuple(creates), budget_deltas=tuple(deltas), budget_totals=tuple(totals),
            ), before

        return await self._change(plan, validate_only=validate_only, focus=None, whole_set=True, request=request)

    def _existing(self, records: dict[str, RuleRecord], rule_id: str, etag: str) -> RuleRecord:
        current = records.get(rule_id)
        if current is None:
            raise RuleNotFound(f"rule {rule_id!r} not found")
        if etag and etag != current.etag:
            raise EtagMismatch(
                f"rule {rule_id!r} changed since it was read (etag {current.etag}); read it again",
            )
        return current

    def _new_record(self, rule: Rule, version: int) -> RuleRecord:
        budgeted = rule.budget.total_points > 0
        return RuleRecord(
            rule=rule,
            etag=_etag(rule, version),
            version=version,
            update_time_ms=self._clock_ms(),
            budget_account=f"{rule.rule_id}@{version}" if budgeted else "",
            budget_generation=version if budgeted else 0,
        )

    def _changed_record(self, current: RuleRecord, rule: Rule, version: int):
        """The record of a changed rule and the budget changes it needs."""
        old_total, new_total = current.rule.budget.total_points, rule.budget.total_points
        account, generation = current.budget_account, current.budget_generation
        creates, deltas, totals = [], [], []
        if new_total > 0 and (not account or old_total <= 0):
            # A budget added (or added back after being removed): a fresh account.
            account, generation = f"{rule.rule_id}@{version}", version
            creates.append((account, new_total))
        elif new_total > 0 and new_total != old_total:
            # Same account, new generation: shards give back their chunks of the old one.
            generation = version
            deltas.append((account, new_total - old_total))
            totals.append((account, new_total))
        elif new_total <= 0:
            account, generation = "", 0
        record = RuleRecord(
            rule=rule,
            etag=_etag(rule, version),
            version=version,
            update_time_ms=self._clock_ms(),
            budget_account=account,
            budget_generation=generation,
        )
        return record, creates, deltas, totals

    async def _change(
        self,
        plan,
        *,
        validate_only: bool,
        focus: str | None,
        whole_set: bool = False,
        request: RequestToRecord | None = None,
    ) -> ChangeResult:
        """Read, plan, check and commit under WATCH of the version key (and of the
        request_id's record, when there is one); retry when another writer committed
        in between."""
        if validate_only:
            request = None
        for _ in range(RULES_WRITE_ATTEMPTS_MAX):
            async with self._client.pipeline(transaction=True) as pipeline:
                if request is None:
                    await pipeline.watch(self._keys.version)
                else:
                    await pipeline.watch(self._keys.version, request.key)
                    stored = await pipeline.get(request.key)
                    if stored is not None:
                        await pipeline.unwatch()
                        return await self._replay(replayable(decode_record(stored), request.method, request.fingerprint))
                version, records = await self._read(pipeline)
                planned, before = plan(version, records)
                if planned is None:
                    await pipeline.unwatch()
                    return await self._unchanged(version, records, focus, whole_set)
                new_version = version + 1
                ordered = sorted(planned.records.values(), key=lambda record: _ordering(record.rule))
                rule_set = self._checked_rule_set(new_version, ordered, focus)
                result = self._result(new_version, planned, ordered, before, focus, whole_set)
                if validate_only:
                    await pipeline.unwatch()
                    return msgspec.structs.replace(result, version=version, changed=False)
                pipeline.multi()
                self._write(pipeline, new_version, planned, rule_set)
                if request is not None:
                    record = request.record(self._stored(new_version, planned, ordered, focus, whole_set), result.before, result.after)
                    pipeline.set(request.key, encode_record(record), ex=ADMIN_REQUEST_RETENTION_S)
                    result = msgspec.structs.replace(result, audit=record.audit)
                try:
                    await pipeline.execute()
                except redis.exceptions.WatchError:
                    continue
            return await self._with_budgets(result)
        raise RulesContended(f"rules changed by others {RULES_WRITE_ATTEMPTS_MAX} times in a row; retry")

    @staticmethod
    def _stored(version: int, planned: _Plan, ordered, focus: str | None, whole_set: bool) -> bytes:
        if whole_set:
            records = tuple(ordered)
        elif focus is not None:
            records = (planned.records[focus],)
        else:
            records = ()
        return msgspec.msgpack.encode(_StoredOutcome(version=version, records=records, focus=focus, whole_set=whole_set))

    async def _replay(self, record) -> ChangeResult:
        """The outcome a request_id recorded, as first answered (budgets read now)."""
        stored = _outcome_decoder.decode(record.response)
        views = tuple(await self._views(stored.records)) if stored.records else ()
        if stored.whole_set:
            return ChangeResult(version=stored.version, changed=True, views=views, replayed=True, audit=record.audit)
        view = views[0] if stored.focus is not None and views else None
        return ChangeResult(version=stored.version, changed=True, view=view, replayed=True, audit=record.audit)

    def _checked_rule_set(self, version: int, ordered: list[RuleRecord], focus: str | None) -> RuleSet:
        rules = [record.rule for record in ordered]
        violations = self.validate(rules)
        rule_set = RuleSet(
            version=version,
            rules=tuple(rules),
            budget_keys={record.rule.rule_id: record.budget_key for record in ordered if record.budget_key},
        )
        if not violations:
            try:
                compile_rules(rule_set, self._program)
            except RulesError as error:
                violations = list(error.violations) or [Violation("rules", str(error))]
        if violations:
            if focus is not None:
                index = next(i for i, record in enumerate(ordered) if record.rule.rule_id == focus)
                violations = [_refocus(violation, index) for violation in violations]
            raise RuleSetInvalid(_summary(violations), violations)
        return rule_set

    def _write(self, pipeline, version: int, planned: _Plan, rule_set: RuleSet) -> None:
        keys = self._keys
        pipeline.set(keys.version, version)
        for rule_id in planned.written:
            pipeline.hset(keys.records, rule_id, _record_encoder.encode(planned.records[rule_id]))
        if planned.deleted:
            pipeline.hdel(keys.records, *planned.deleted)
        pipeline.set(keys.rule_set(version), encode_rule_set(rule_set))
        if version > RULE_SET_VERSIONS_KEPT:
            pipeline.unlink(keys.rule_set(version - RULE_SET_VERSIONS_KEPT))
        for account, total in planned.budget_creates:
            pipeline.hset(keys.budget(account), mapping={"remaining": total, "total": total})
        for account, delta in planned.budget_deltas:
            pipeline.hincrby(keys.budget(account), "remaining", delta)
        for account, total in planned.budget_totals:
            pipeline.hset(keys.budget(account), "total", total)
        pipeline.publish(keys.channel, version)

    def _result(self, version, planned: _Plan, ordered, before, focus, whole_set) -> ChangeResult:
        if whole_set:
            after = {record.rule.rule_id: rule_builtins(record.rule) for record in sorted(ordered, key=lambda r: r.rule.rule_id)}
            return ChangeResult(
                version=version, changed=True, before=before, after=after,
                views=tuple(_view(record, 0) for record in ordered),
            )
        if focus is None:
            return ChangeResult(version=version, changed=True, before=before, after=None)
        record = planned.records[focus]
        return ChangeResult(
            version=version, changed=True, view=_view(record, 0),
            before=before, after=rule_builtins(record.rule),
        )

    async def _with_budgets(self, result: ChangeResult) -> ChangeResult:
        """Fill budget_remaining of the views in a result."""
        if result.view is not None:
            (view,) = await self._views_of([result.view])
            return msgspec.structs.replace(result, view=view)
        if result.views:
            return msgspec.structs.replace(result, views=tuple(await self._views_of(result.views)))
        return result

    async def _views_of(self, views: Sequence[RuleView]) -> list[RuleView]:
        raw = await self._client.hmget(self._keys.records, [view.rule.rule_id for view in views])
        records = [_record_decoder.decode(value) for value in raw if value is not None]
        if len(records) != len(views):  # changed again meanwhile: show what was committed
            return list(views)
        return await self._views(records)

    async def _unchanged(self, version, records, focus, whole_set) -> ChangeResult:
        ordered = sorted(records.values(), key=lambda record: _ordering(record.rule))
        if whole_set:
            return ChangeResult(version=version, changed=False, views=tuple(await self._views(ordered)))
        (view,) = await self._views([records[focus]])
        return ChangeResult(version=version, changed=False, view=view)


def _view(record: RuleRecord, budget_remaining: int) -> RuleView:
    return RuleView(
        rule=record.rule,
        etag=record.etag,
        version=record.version,
        update_time_ms=record.update_time_ms,
        budget_remaining=budget_remaining,
    )


def _refocus(violation: Violation, index: int) -> Violation:
    """"rules[<index>].x" -> "rule.x" for single-rule changes."""
    prefix = f"rules[{index}]"
    if violation.path == prefix or violation.path.startswith(prefix + "."):
        return Violation("rule" + violation.path[len(prefix):], violation.description)
    return violation


def _summary(violations: Sequence[Violation]) -> str:
    first = violations[0]
    more = f" (and {len(violations) - 1} more)" if len(violations) > 1 else ""
    return f"{first.path}: {first.description}{more}"


def page(snapshot: RulesSnapshot, *, page_size: int, page_token: str) -> tuple[list[RuleView], str]:
    """One page of a snapshot and the token of the next ("" at the end). Tokens name
    the last rule shown, so pages stay consistent while rules are added or removed;
    FieldViolation on ``page_token`` for one this server did not issue."""
    size = RULES_PAGE_SIZE_DEFAULT if page_size <= 0 else min(page_size, RULES_PAGE_SIZE_MAX)
    rules = list(snapshot.rules)
    start = 0
    if page_token:
        after = decode_page_token(page_token, tuple[int, str])
        start = next((i for i, view in enumerate(rules) if _ordering(view.rule) > after), len(rules))
    shown = rules[start : start + size]
    more = start + size < len(rules)
    token = encode_page_token(_ordering(shown[-1].rule)) if more and shown else ""
    return shown, token


# --------------------------------------------------------------------------- live version


class LiveRulesVersion:
    """The rule-set version a gateway sends with each shard call. Only moves forward."""

    def __init__(self, version: int = 0) -> None:
        self.version = version
        """The newest version this gateway knows of."""

    def advance(self, version: int) -> None:
        """Adopt ``version`` if it is newer."""
        self.version = max(self.version, version)


async def follow_versions(
    client: redis.asyncio.Redis,
    live: LiveRulesVersion,
    *,
    key_prefix: str = "loyalty",
    poll_interval_s: float = RULES_POLL_INTERVAL_S,
) -> None:
    """Keep ``live`` at the newest version until cancelled: listen for published
    changes and read the version key at least every ``poll_interval_s`` (a message
    published while the subscription was down is not delivered later)."""
    keys = RulesKeys(key_prefix)
    outage = OutageLog(log, "rules version feed", action="serving the last known version; reconnecting")
    while True:
        pubsub = client.pubsub()
        try:
            await pubsub.subscribe(keys.channel)
            while True:
                live.advance(int(await client.get(keys.version) or 0))
                outage.recovered()
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=poll_interval_s)
                if message is not None:
                    live.advance(int(message["data"]))
        except asyncio.CancelledError:
            raise
        except (redis.exceptions.RedisError, OSError, ValueError) as error:
            outage.failed(f"{type(error).__name__}: {error}")
            await asyncio.sleep(poll_interval_s)  # Redis down: do not spin
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()
