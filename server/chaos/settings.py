"""What one chaos run is told: the workload, the faults, and how the shards run."""

from __future__ import annotations

import msgspec

from loyalty.server.chaos.faults import FAULTS


class ChaosSettings(msgspec.Struct, frozen=True, kw_only=True):
    """One run: the workload, the faults, and how the shards are configured."""

    shards: int = 2
    clients: int = 4
    faults: tuple[str, ...] = FAULTS
    """Fault types, injected in this order, round and round."""
    cycles: int = 1
    """Rounds through ``faults`` (ignored when duration_s is set)."""
    duration_s: float = 0.0
    """Inject faults until this much time has passed (0: run ``cycles`` rounds)."""
    warmup_s: float = 2.0
    """Workload without faults before the first one."""
    quiet_s: float = 2.0
    """Workload without faults after each recovery."""
    redis_down_s: float = 1.0
    """How long Redis stays dead before its restart."""
    redis_pause_s: float = 3.0
    """How long Redis stays stopped (longer than the shards' Redis timeout)."""
    redis_socket_timeout_s: float = 2.0
    """The shards' Redis timeout (shorter than production so a pause is noticed)."""
    snapshot_every_events: int = 500
    """Small, so runs cross snapshots and journal trims."""
    seed: int = 0
    key_prefix: str = ""
    """Redis key prefix and Ray namespace; empty: a fresh one."""
    unsafe_acknowledge_before_journal: bool = False
    """The negative control: shards acknowledge before journaling (test only)."""
