"""A shard's campaign budget leases, kept in step with the live rule set.

While a batch runs, the core leases chunks of a campaign budget from its owner (the
rules store) and spends them locally. Chunks the installed rule set can no longer
spend (rule deleted, disabled, budget changed or ended) are given back before the
next batch that finds them due, and every chunk is given back on a graceful stop.
A return is journaled first (a BudgetReturned record) and the points go back to the
owner only after that: a crash in between loses them, so a budget is at worst
underspent, never overspent.

``budget_keys_to_keep`` is the policy alone (pure); ``BudgetLeases`` runs it for one
shard. Neither needs Ray or Redis: the owner and the journal writer are handed in.
"""

from __future__ import annotations

import logging
import math
import zoneinfo
from collections.abc import Callable
from typing import Protocol

from loyalty.actors.ledger.core import ShardCore
from loyalty.actors.ledger.events import JournalRecord
from loyalty.actors.ledger.rules import RuleSet
from loyalty.actors.shard.journal import JournalError

log = logging.getLogger(__name__)


class BudgetOwner(Protocol):
    """Where returned budget points go (ShardRulesSource)."""

    def give_back(self, points: dict[str, int]) -> None:
        """Credit each budget key's points back; raises JournalError when it cannot."""
        ...


def budget_keys_to_keep(rule_set: RuleSet | None, now_ms: int) -> tuple[set[str], float]:
    """The budget keys of ``rule_set``'s rules that can still spend at now_ms, and
    when to look again: the next end time of a budgeted rule (math.inf: never)."""
    keep: set[str] = set()
    due_ms = math.inf
    for rule in rule_set.rules if rule_set is not None else ():
        if not rule.enabled or rule.budget.total_points <= 0:
            continue
        end_time = rule.schedule.end_time
        if end_time is not None:
            if end_time.tzinfo is None:  # read in the rule's zone, as the core does
                end_time = end_time.replace(tzinfo=zoneinfo.ZoneInfo(rule.schedule.time_zone or "UTC"))
            end_ms = int(end_time.timestamp() * 1000)
            if end_ms <= now_ms:
                continue
            due_ms = min(due_ms, end_ms)
        keep.add(rule_set.budget_keys.get(rule.rule_id, rule.rule_id))
    return keep, due_ms


class BudgetLeases:
    """Gives back the budget chunks a shard holds once the live rules no longer need
    them. ``write`` journals a record (the shard's own, fenced, append)."""

    def __init__(self, owner: BudgetOwner, write: Callable[[JournalRecord], None], *, shard_index: int) -> None:
        self._owner = owner
        self._write = write
        self._shard_index = shard_index
        self.rule_set: RuleSet | None = None
        """The installed rule set (None: none yet, as after a restart)."""
        self.due_ms: float = 0
        """When the chunks held must next be checked against the rules (a budgeted
        rule's end time; 0: before the next batch)."""

    def installed(self, rule_set: RuleSet | None) -> None:
        """The shard installed ``rule_set`` (None: it recovered and has none yet);
        check the chunks held before the next batch."""
        self.rule_set, self.due_ms = rule_set, 0

    def before_batch(self, core: ShardCore, now_ms: int) -> dict[str, int]:
        """Give back, when due, the chunks the installed rules can no longer spend."""
        if now_ms < self.due_ms:
            return {}
        keep, self.due_ms = budget_keys_to_keep(self.rule_set, now_ms)
        return self.give_back(core, now_ms, keep=keep)

    def give_all_back(self, core: ShardCore, now_ms: int) -> dict[str, int]:
        """Give back every chunk (a graceful stop); the next batch that needs budget
        leases again."""
        returned = self.give_back(core, now_ms, keep=set())
        self.due_ms = 0
        return returned

    def give_back(self, core: ShardCore, now_ms: int, *, keep: set[str]) -> dict[str, int]:
        """Give back the chunks not in ``keep``: journal first, then return the points
        (a crash in between loses them; a budget is never overspent). Returns
        {budget key: points}; raises what journaling raises."""
        core.now_ms = max(core.now_ms, now_ms)
        record, returned = core.return_budgets(keep)
        if record is None:
            return {}
        self._write(record)
        try:
            self._owner.give_back(returned)
        except JournalError:
            log.exception("shard %d: budget points %s could not be given back; they are lost "
                          "(underspent)", self._shard_index, returned)
        return returned
