"""Nothing acknowledged is ever lost: a mixed workload under rotating faults (shard
kill -9, Redis kill -9 and restart from its AOF, Redis SIGSTOP/SIGCONT, gateway
restart, a stale shard incarnation, and Redis kill -9 with nobody but the server's
own supervisor to restart it), then a checker that asks the server about every
operation and replays every journal in a fresh process. The negative control breaks
durability on purpose and requires the same checker to report the loss.

Set LOYALTY_CHAOS_MINUTES to also run the long version from pytest (``loyalty chaos
--minutes N`` runs it from the command line).
"""

from __future__ import annotations

import os

import pytest

from loyalty.server.chaos import FAULTS, ChaosRun, ChaosSettings
from loyalty.server.runtime.embedded_redis import EmbeddedRedis


@pytest.fixture
def own_redis(tmp_path):
    """A Redis of the test's own, so the faults can kill, stop and restart it
    (supervised, as ``loyalty serve`` runs it, for the redis_crash fault)."""
    server = EmbeddedRedis(tmp_path / "redis", appendfsync="always", supervised=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def run_chaos(redis_server: EmbeddedRedis, **settings):
    report = ChaosRun(redis_server, ChaosSettings(**settings)).execute()
    print(report.format())
    return report


def test_every_fault_once_loses_nothing_and_applies_nothing_twice(ray_session, own_redis):
    report = run_chaos(own_redis, faults=FAULTS, cycles=1, seed=1)

    assert report.failures == []
    # Calls caught by a fault fail as UNAVAILABLE or time out; never INTERNAL or UNKNOWN.
    assert report.unexpected_codes == {}
    assert sorted(fault.kind for fault in report.faults) == sorted(FAULTS)
    assert all(fault.recovery_s is not None for fault in report.faults), report.format()
    assert report.acknowledged_ok > 0 and report.reads > 0
    assert report.lost == 0
    assert report.applied_twice == 0
    assert report.unknown_unresolved == 0
    assert report.changed_outcomes == 0
    assert report.refused_but_applied == 0
    assert report.phantom == 0
    assert report.negative_reads == 0
    assert report.conservation_violations == 0
    assert report.history_sum_mismatches == 0
    assert report.replay_mismatches == 0
    assert report.ok


def test_negative_control_acknowledging_before_journaling_is_reported_as_loss(ray_session, own_redis):
    # Same workload and checker; the shards acknowledge before journaling (test-only
    # switch) and are killed. A checker that passed this would prove nothing.
    report = run_chaos(
        own_redis, faults=("shard_kill",), cycles=2, seed=2,
        unsafe_acknowledge_before_journal=True,
    )

    assert report.lost > 0, report.format()
    assert not report.ok


@pytest.mark.skipif(not os.environ.get("LOYALTY_CHAOS_MINUTES"), reason="set LOYALTY_CHAOS_MINUTES for the long run")
def test_long_run(ray_session, own_redis):
    minutes = float(os.environ["LOYALTY_CHAOS_MINUTES"])
    report = run_chaos(own_redis, duration_s=minutes * 60, quiet_s=5.0)

    assert report.lost == 0 and report.applied_twice == 0
    assert report.ok, report.format()
