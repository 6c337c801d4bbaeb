"""What a chaos run did and what the checker found, and the verdict on it."""

from __future__ import annotations

import collections
import dataclasses
import statistics

from loyalty.server.chaos.faults import FAULTS, FaultRecord
from loyalty.server.chaos.settings import ChaosSettings


@dataclasses.dataclass
class ChaosReport:
    """What a run did and what the checker found. ``ok`` iff nothing was wrong."""

    settings: ChaosSettings
    faults: list[FaultRecord]
    members: int = 0
    acknowledged_ok: int = 0
    acknowledged_failed: int = 0
    reads: int = 0
    unknown: int = 0
    unknown_applied: int = 0
    unknown_not_applied: int = 0
    unknown_unresolved: int = 0
    refused: int = 0
    lost: int = 0
    """Acknowledged operations the server no longer knows (or no longer lists)."""
    applied_twice: int = 0
    """Request ids listed more than once in a member's history."""
    changed_outcomes: int = 0
    """Acknowledged operations whose stored outcome differs from the answer given."""
    refused_but_applied: int = 0
    phantom: int = 0
    """History entries no applied operation accounts for."""
    negative_reads: int = 0
    conservation_violations: int = 0
    history_sum_mismatches: int = 0
    replay_mismatches: int = 0
    """Members whose balance rebuilt from the journals differs from the live one."""
    totals: dict[str, int] = dataclasses.field(default_factory=dict)
    unexpected_codes: dict[str, int] = dataclasses.field(default_factory=dict)
    refused_codes: dict[str, int] = dataclasses.field(default_factory=dict)
    failures: list[str] = dataclasses.field(default_factory=list)
    examples: list[str] = dataclasses.field(default_factory=list)
    duration_s: float = 0.0
    """The whole run: start, workload with faults, check."""
    workload_s: float = 0.0
    """The workload with faults (until the clients stopped)."""

    @property
    def violations(self) -> int:
        """Every discrepancy found, summed (0 for a correct run)."""
        return (self.lost + self.applied_twice + self.changed_outcomes + self.refused_but_applied
                + self.phantom + self.negative_reads + self.conservation_violations
                + self.history_sum_mismatches + self.replay_mismatches + self.unknown_unresolved)

    @property
    def unrecovered_faults(self) -> int:
        """Faults after which the server never took writes again."""
        return sum(1 for fault in self.faults if fault.recovery_s is None)

    @property
    def ok(self) -> bool:
        """Nothing lost, nothing applied twice, every other check passed too, no
        INTERNAL or UNKNOWN answer seen, and the server recovered from every fault."""
        return (self.violations == 0 and not self.failures and not self.unexpected_codes
                and self.unrecovered_faults == 0)

    def note(self, text: str) -> None:
        """Keep a few examples of discrepancies for the report."""
        if len(self.examples) < 20:
            self.examples.append(text)

    def format(self) -> str:
        """The human-readable report."""
        by_type = collections.Counter(fault.kind for fault in self.faults)
        lines = [
            "loyalty chaos report",
            f"  duration                 workload {self.workload_s:.0f}s (run with checks {self.duration_s:.0f}s), "
            f"{self.settings.shards} shards, "
            f"{self.settings.clients} clients"
            + (", UNSAFE: acknowledge before journal (negative control)"
               if self.settings.unsafe_acknowledge_before_journal else ""),
            f"  faults injected          {len(self.faults)}: "
            + ", ".join(f"{kind} {by_type[kind]}" for kind in FAULTS if by_type[kind]),
            f"  members                  {self.members}",
            f"  operations acknowledged  {self.acknowledged_ok + self.acknowledged_failed} "
            f"({self.acknowledged_ok} succeeded, {self.acknowledged_failed} failed with a stored error)",
            f"  balance reads checked    {self.reads}",
            f"  lost                     {self.lost}",
            f"  applied twice            {self.applied_twice}",
            f"  unknown outcomes         {self.unknown}: {self.unknown_applied} applied, "
            f"{self.unknown_not_applied} not applied, {self.unknown_unresolved} unresolved",
            f"  refused (not applied)    {self.refused} {dict(self.refused_codes) or ''}, "
            f"of which applied anyway: {self.refused_but_applied}",
            f"  changed outcomes         {self.changed_outcomes}",
            f"  phantom history entries  {self.phantom}",
            f"  negative available reads {self.negative_reads}",
            f"  conservation violations  {self.conservation_violations} (members and total)",
            f"  history sum mismatches   {self.history_sum_mismatches}",
            f"  journal replay (fresh process) vs live: {self.replay_mismatches} members differ",
        ]
        if self.totals:
            t = self.totals
            lines.append(
                f"  total identity           earned {t['lifetime_earned']} + adjusted_in {t['adjusted_in']}"
                f" + debt {t['debt']} = available {t['available']} + pending {t['pending']}"
                f" + reserved {t['reserved']} + redeemed {t['redeemed']} + expired {t['expired']}"
                f" + reversed {t['reversed']} + adjusted_out {t['adjusted_out']}"
            )
        if self.unexpected_codes:
            lines.append(f"  unexpected error codes   {dict(self.unexpected_codes)}")
        lines.append("  recovery per fault: injection -> first write accepted by every shard"
                     " (of which the fault was held)")
        for fault in self.faults:
            took = f"{fault.recovery_s:6.2f}s" if fault.recovery_s is not None else "  never"
            held = f"(held {fault.held_s:4.2f}s)" if fault.held_s >= 0.005 else " " * 12
            lines.append(f"    {fault.kind:<18} {took} {held}  {fault.detail}")
        recovered = [f.recovery_s for f in self.faults if f.recovery_s is not None]
        if recovered:
            lines.append(f"  recovery median {statistics.median(recovered):.2f}s, max {max(recovered):.2f}s")
        for failure in self.failures:
            lines.append(f"  FAILURE: {failure}")
        for example in self.examples:
            lines.append(f"  e.g. {example}")
        lines.append(f"  verdict                  {'OK' if self.ok else 'FAILED'}")
        return "\n".join(lines)
