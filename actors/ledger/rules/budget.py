"""Where a shard gets campaign budget from: the budget owner, behind a Protocol.

The owner (an atomic counter per budget, see actors/shard/rules_source.py) holds
every point not yet granted to a shard. A shard leases chunks, spends them locally
without asking again, and gives back what it does not need (actors/shard/budgets.py);
the core journals each lease and return, so a budget is never overspent however many
shards earn at once.
"""

from __future__ import annotations

from typing import Protocol


class BudgetSource(Protocol):
    """The budget owner as the core sees it (called during apply_batch)."""

    def lease(self, budget_key: str, points_needed: int) -> int:
        """Take at least ``points_needed`` points if the owner has them (it may grant
        more: a chunk), else whatever is left; 0 when nothing is left. The points are
        the shard's from then on. Should not raise: an owner that cannot be reached
        grants 0 (the earn is then cut by the budget and says so)."""
        ...

    def available(self, budget_key: str) -> int:
        """Points the owner still has, without taking any (for SimulateEarn)."""
        ...
