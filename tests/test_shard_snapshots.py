"""Snapshots are written in the background while the shard goes on serving, and hold
the state as of the batch after which they were started.

The shard here is a ShardActor object in this process (the class Ray runs) against
the test Redis; a snapshot writer is held back with an Event, so "while the snapshot
is being written" is a fact of the test, not a matter of timing. The schedule and the
writer (actors/shard/snapshots.py) are also tested alone, with a fake clock and a
fake journal: no Ray, no Redis.
"""

from __future__ import annotations

import threading

from loyalty.actors.ledger import CompiledProgram, Program, ShardCore, codec
from loyalty.actors.ledger.commands import Earn, EnrollMember, Line
from loyalty.actors.ledger.status import Status
from loyalty.actors.shard.actor import ShardActor, ShardSettings
from loyalty.actors.shard.journal import JournalError, JournalUnavailable
from loyalty.actors.shard import snapshots as snapshots_module
from loyalty.actors.shard.snapshots import Snapshots, SnapshotSchedule

MEMBERS = [f"m{i}" for i in range(30)]


def new_shard(redis_server, key_prefix: str, every: int = 1_000_000) -> ShardActor:
    return ShardActor(ShardSettings(
        shard_index=0, redis_url=redis_server.url, key_prefix=key_prefix, snapshot_every_events=every
    ))


def earn_round(shard: ShardActor, number: int) -> None:
    commands = [Earn(m, f"r{number}", "EUR", (Line("sku", "food", 1, 1_000 + number),)) for m in MEMBERS]
    outcomes = codec.decode_outcomes(shard.apply(codec.encode_commands(commands)))
    assert all(outcome.status == Status.OK for outcome in outcomes)


class HeldWriter:
    """Wraps the journal's write_snapshot: each call waits for ``release`` first and
    records the seq it wrote (or raises the next of ``failures``)."""

    def __init__(self, shard: ShardActor, failures=()) -> None:
        self.original = shard._journal.write_snapshot  # noqa: SLF001 (the seam under test)
        self.release = threading.Event()
        self.started = threading.Event()
        self.written: list[int] = []
        self.failures = list(failures)
        shard._journal.write_snapshot = self  # noqa: SLF001

    def __call__(self, epoch: int, seq: int, chunks) -> None:
        self.started.set()
        self.release.wait()
        if self.failures:
            raise self.failures.pop(0)
        self.original(epoch, seq, chunks)
        self.written.append(seq)


def test_a_background_snapshot_holds_the_state_it_started_with(redis_server, key_prefix):
    shard = new_shard(redis_server, key_prefix, every=len(MEMBERS) * 2)
    shard.apply(codec.encode_commands([EnrollMember(m, "enrol") for m in MEMBERS]))
    writer = HeldWriter(shard)
    earn_round(shard, 1)  # 60 events in all: a snapshot starts after this batch
    assert writer.started.wait(timeout=60)
    seq_at_start = shard._core.seq  # noqa: SLF001
    for number in range(2, 6):  # the shard keeps serving while the writer is held
        earn_round(shard, number)
    assert shard.describe()["snapshot_in_progress"]
    writer.release.set()
    shard.snapshot()  # finishes the background one, then writes the newest state
    assert writer.written == [seq_at_start, shard._core.seq]  # noqa: SLF001

    journal = shard._journal  # noqa: SLF001
    seq, chunks = journal.load_snapshot()
    assert seq == shard._core.seq  # noqa: SLF001
    recovered = new_shard(redis_server, key_prefix)
    assert recovered._core.state_bytes() == shard._core.state_bytes()  # noqa: SLF001


def test_a_failed_background_snapshot_is_tried_again_and_nothing_is_lost(redis_server, key_prefix):
    shard = new_shard(redis_server, key_prefix, every=45)  # each round journals 30 events
    shard.apply(codec.encode_commands([EnrollMember(m, "enrol") for m in MEMBERS]))
    writer = HeldWriter(shard, failures=[JournalUnavailable("redis went away")])
    writer.release.set()
    earn_round(shard, 1)  # a snapshot starts, and fails
    shard._snapshots.wait()  # noqa: SLF001
    assert writer.written == []
    earn_round(shard, 2)  # the failure made the next snapshot due at once
    shard._snapshots.wait()  # noqa: SLF001
    assert writer.written == [shard._core.seq]  # noqa: SLF001
    earn_round(shard, 3)  # journaled after the snapshot (no new one is due): replayed
    recovered = new_shard(redis_server, key_prefix)
    assert recovered._core.state_bytes() == shard._core.state_bytes()  # noqa: SLF001
    assert recovered._core.ledger.members.hot_count == 30  # noqa: SLF001 (replayed members are decoded)


# ---------------------------------------------------------------------- without Ray or Redis




class Clock:
    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


def test_a_snapshot_is_due_after_enough_events_or_enough_time():
    clock = Clock()
    schedule = SnapshotSchedule(every_events=100, every_s=60.0, clock=clock)
    assert not schedule.changed and not schedule.due()
    schedule.journaled(99)
    assert schedule.changed and not schedule.due()
    schedule.journaled(1)
    assert schedule.due()
    schedule.taken()
    assert not schedule.changed and not schedule.due()
    schedule.journaled(1)
    clock.now_s += 60.0
    assert schedule.due()  # time, with something new to snapshot


def test_a_failed_snapshot_makes_the_next_one_due_at_once_and_recovery_counts_replayed_events():
    schedule = SnapshotSchedule(every_events=100, every_s=60.0, clock=Clock())
    schedule.taken()
    schedule.failed()
    assert schedule.due()
    schedule.recovered(replayed=250)
    assert schedule.events_since == 250 and schedule.due()


class FakeJournal:
    """write_snapshot waits for ``release`` (when given) and may fail."""

    def __init__(self, release: threading.Event | None = None, failures=()) -> None:
        self.release = release
        self.failures = list(failures)
        self.written: list[tuple[int, int, int]] = []  # (epoch, seq, chunks)

    def write_snapshot(self, epoch: int, seq: int, chunks) -> None:
        if self.release is not None:
            assert self.release.wait(timeout=60)
        if self.failures:
            raise self.failures.pop(0)
        self.written.append((epoch, seq, len(list(chunks))))


def core_with(members: int) -> ShardCore:
    core = ShardCore(CompiledProgram(Program()))
    core.apply_batch([EnrollMember(f"m{i}", "enrol") for i in range(members)], 1_000)
    return core


def test_one_background_snapshot_at_a_time_and_a_snapshot_on_demand_after_it():
    release = threading.Event()
    journal = FakeJournal(release)
    snapshots = Snapshots(journal, SnapshotSchedule(every_events=1, every_s=1e9, clock=Clock()), shard_index=0)
    core = core_with(3)
    snapshots.schedule.journaled(3)
    snapshots.after_batch(core, epoch=7)  # due: a writer starts, and is held
    assert snapshots.in_progress
    core.apply_batch([EnrollMember("late", "enrol")], 2_000)
    snapshots.schedule.journaled(1)
    snapshots.after_batch(core, epoch=7)  # due again, but one is being written
    assert snapshots.schedule.events_since == 1
    release.set()
    assert snapshots.write_now(core, epoch=7) == 2  # finishes the first, then writes the newest
    assert journal.written == [(7, 1, 2), (7, 2, 2)] and not snapshots.in_progress
    assert snapshots.write_now(core, epoch=7) == 2 and len(journal.written) == 2  # nothing new: nothing written


def test_a_failed_write_is_logged_and_retried_at_the_next_batch(log_lines):
    journal = FakeJournal(failures=[JournalUnavailable("redis away"), JournalError("corrupt")])
    snapshots = Snapshots(journal, SnapshotSchedule(every_events=10, every_s=1e9, clock=Clock()), shard_index=3)
    core = core_with(2)
    snapshots.schedule.journaled(2)
    with log_lines(snapshots_module.log) as lines:
        assert snapshots.write_now(core, epoch=1) == 0  # failed: logged, not raised
        assert "shard 3: snapshot at seq 1 not written" in lines.text
        assert snapshots.schedule.due()
        snapshots.after_batch(core, epoch=1)  # fails again, in the background
        snapshots.wait()
    assert "shard 3: snapshot at seq 1 failed" in lines.text and snapshots.schedule.due()
    snapshots.after_batch(core, epoch=1)
    snapshots.wait()
    assert journal.written == [(1, 1, 2)]
    assert snapshots.write_now(None, epoch=1) == 0  # a shard that has not recovered yet
