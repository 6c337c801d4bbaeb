"""The shard's side of the rules store: rule-set blobs and campaign budget chunks.

The store itself (key layout, versions, how budgets are accounted) is written by
the gateways and described in server/stores/rules.py; this module holds what a shard
needs to read it, and the key names both sides use, so the shard actor depends on
nothing in the gateway.
"""

from __future__ import annotations

import contextlib
import logging

import redis

from loyalty.actors.shard.journal import JournalUnavailable
from loyalty.actors.outage import OutageLog
from loyalty.actors.ledger.rules import RuleSet, decode_rule_set

log = logging.getLogger(__name__)

# A shard leases at most this many points of a budget at once: one Redis round trip
# per chunk keeps budgets off the per-earn path, and a chunk this size is what a shard
# can strand in the worst case (a crash between lease and journal).
BUDGET_CHUNK_POINTS_MAX = 10_000

# ...and at most total / this, so that a small budget is spread over several shards
# rather than all leased by the first shard that earns (a shard needing more for one
# earn still gets what that earn needs).
BUDGET_CHUNK_DIVISOR = 16

RULES_TAG = "{{{prefix}:rules}}"

# KEYS: the budget account. ARGV: points needed, chunk maximum, chunk divisor.
# Takes min(remaining, max(needed, chunk)): never more than the account holds, so
# the total can never be overspent however many shards lease at once.
LEASE_SCRIPT = """
local remaining = tonumber(redis.call('HGET', KEYS[1], 'remaining') or '0')
if remaining <= 0 then
  return 0
end
local total = tonumber(redis.call('HGET', KEYS[1], 'total') or '0')
local chunk = math.min(tonumber(ARGV[2]), math.max(1, math.floor(total / tonumber(ARGV[3]))))
local take = math.min(remaining, math.max(tonumber(ARGV[1]), chunk))
redis.call('HINCRBY', KEYS[1], 'remaining', -take)
return take
"""


class RulesKeys:
    """The key names of one deployment's rules."""

    def __init__(self, key_prefix: str) -> None:
        if not key_prefix or any(character in key_prefix for character in "{}"):
            raise ValueError(f"key_prefix must be non-empty without braces, got {key_prefix!r}")
        tag = RULES_TAG.format(prefix=key_prefix)
        self.version = f"{tag}:version"
        self.records = f"{tag}:records"
        self.channel = f"{tag}:changes"
        self._set = f"{tag}:set:"
        self._budget = f"{tag}:budget:"

    def rule_set(self, version: int) -> str:
        return f"{self._set}{version}"

    def budget(self, account: str) -> str:
        return f"{self._budget}{account}"


class RulesUnavailable(JournalUnavailable):
    """Redis could not be reached, or holds no rule set for a requested version: the
    batch is refused as UNAVAILABLE and may be retried."""


def account_of(budget_key: str) -> str:
    """The account a shard-held budget key draws on."""
    return budget_key.rpartition("#")[0] or budget_key


class ShardRulesSource:
    """What a shard reads from the rules store: rule-set blobs and budget chunks.

    It is the shard's BudgetSource: ``lease`` and ``available`` are called by the core
    while it applies a batch; ``give_back`` by the shard once a BudgetReturned record
    is journaled.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        key_prefix: str = "loyalty",
        chunk_points_max: int = BUDGET_CHUNK_POINTS_MAX,
    ) -> None:
        """Use ``client`` (bytes responses) for the deployment ``key_prefix``."""
        self._client = client
        self._keys = RulesKeys(key_prefix)
        self._chunk_points_max = chunk_points_max
        self._lease_script = client.register_script(LEASE_SCRIPT)
        self._outage = OutageLog(
            log, "campaign budgets in Redis", action="budgeted earns are cut (granted nothing) until it answers"
        )

    def rule_set(self, version: int) -> RuleSet:
        """The rule set of ``version``, or the live one if that version is no longer
        kept (newer, so still allowed). Raises RulesUnavailable."""
        with rules_unavailable(f"read rule set {version}"):
            blob = self._client.get(self._keys.rule_set(version))
            if blob is None:
                live = int(self._client.get(self._keys.version) or 0)
                if live >= version:
                    blob = self._client.get(self._keys.rule_set(live))
        if blob is None:
            raise RulesUnavailable(f"rule set {version} is not in Redis")
        return decode_rule_set(blob)

    def lease(self, budget_key: str, points_needed: int) -> int:
        """Take up to a chunk (at least ``points_needed`` if there is that much) from
        the budget; returns the points granted (0 when Redis cannot be reached)."""
        if points_needed <= 0:
            return 0
        key = self._keys.budget(account_of(budget_key))
        try:
            granted = int(
                self._lease_script(keys=[key], args=[points_needed, self._chunk_points_max, BUDGET_CHUNK_DIVISOR])
            )
        except redis.exceptions.RedisError as error:
            # The core's contract: an unreachable owner grants nothing and the earn is
            # cut by the budget (and says so). If the script ran but its reply was
            # lost, those points are stranded: underspent, never overspent.
            self._outage.failed(f"{type(error).__name__}: {error}")
            return 0
        self._outage.recovered()
        return granted

    def available(self, budget_key: str) -> int:
        """Points the budget still has, without taking them (0 if Redis cannot say)."""
        try:
            value = self._client.hget(self._keys.budget(account_of(budget_key)), "remaining")
        except redis.exceptions.RedisError as error:
            self._outage.failed(f"{type(error).__name__}: {error}")
            return 0
        self._outage.recovered()
        return max(0, int(value or 0))

    def give_back(self, points: dict[str, int]) -> None:
        """Return points to their budgets (after the BudgetReturned record is journaled)."""
        if not points:
            return
        with rules_unavailable("give back budgets"):
            pipeline = self._client.pipeline(transaction=False)
            for budget_key, amount in points.items():
                if amount > 0:
                    pipeline.hincrby(self._keys.budget(account_of(budget_key)), "remaining", amount)
            pipeline.execute()

    def budget_account(self, account: str) -> tuple[int, int]:
        """(remaining, total) of a budget account (remaining may be negative while
        shards hold more than a lowered total)."""
        with rules_unavailable(f"read budget account {account}"):
            remaining, total = self._client.hmget(self._keys.budget(account), ["remaining", "total"])
        return int(remaining or 0), int(total or 0)


@contextlib.contextmanager
def rules_unavailable(action: str):
    """Turn a Redis error inside the block into RulesUnavailable naming ``action``."""
    try:
        yield
    except redis.exceptions.RedisError as error:
        raise RulesUnavailable(f"{action}: {type(error).__name__}: {error}") from error
