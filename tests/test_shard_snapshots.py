"""Snapshots are written in the background while the shard goes on serving, and hold
the state as of the batch after which they were started.

The shard here is a ShardActor object in this process (the class Ray runs) against
the test Redis; a snapshot writer is held back with an Event, so "while the snapshot
is being written" is a fact of the test, not a matter of timing.
"""

from __future__ import annotations

import threading

from loyalty.actors.shard.journal import JournalUnavailable
from loyalty.actors.ledger import codec
from loyalty.actors.ledger.commands import Earn, EnrollMember, Line
from loyalty.actors.ledger.status import Status
from loyalty.actors.shard.actor import ShardActor, ShardSettings

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
    shard._snapshot_thread.join()  # noqa: SLF001
    assert writer.written == []
    earn_round(shard, 2)  # the failure made the next snapshot due at once
    shard._snapshot_thread.join()  # noqa: SLF001
    assert writer.written == [shard._core.seq]  # noqa: SLF001
    earn_round(shard, 3)  # journaled after the snapshot (no new one is due): replayed
    recovered = new_shard(redis_server, key_prefix)
    assert recovered._core.state_bytes() == shard._core.state_bytes()  # noqa: SLF001
    assert recovered._core.ledger.members.hot_count == 30  # noqa: SLF001 (replayed members are decoded)
