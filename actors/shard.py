"""The shard actor: a thin Ray shell joining the pure ledger core to its Redis journal.

A batch is applied in memory, its journal record is appended to Redis (fenced by this
incarnation's epoch), and only then are its outcomes returned. If anything fails
after the core changed state, the in-memory state is dropped and rebuilt from the
snapshot and journal before the next batch, so memory never runs ahead of Redis.
"""

from __future__ import annotations

import collections
import gc
import logging
import os
import time

import msgspec
import redis

from loyalty.actors.journal import JournalError, ShardJournal
from loyalty.actors.ledger import codec
from loyalty.actors.ledger.core import ShardCore
from loyalty.actors.ledger.program import CompiledProgram, Program

log = logging.getLogger(__name__)

# Cyclic GC: collect young objects after this many allocations instead of 700. The
# shard allocates many short-lived acyclic objects per batch; frequent passes cost
# more than the few cycles they find.
GC_YOUNG_THRESHOLD = 50_000

# Redis calls give up after this long, so a stopped or unreachable Redis turns into
# UNAVAILABLE for callers instead of a hang. Generous for a fsync-always append of a
# 10,000-operation batch on a slow disk.
REDIS_SOCKET_TIMEOUT_S = 10.0

# Under the test-only unsafe_acknowledge_before_journal switch, how many acknowledged
# records a shard keeps only in memory: enough that a kill -9 under load always
# loses some acknowledged operations, which is what the switch exists to show.
UNSAFE_UNJOURNALED_RECORDS = 20


class ShardSettings(msgspec.Struct, frozen=True):
    """How a shard finds its journal and when it snapshots."""

    shard_index: int
    redis_url: str
    key_prefix: str = "loyalty"
    program: Program = Program()
    snapshot_every_events: int = 200_000
    """Snapshot after this many journaled events (bounds replay work on recovery to
    a few seconds). Events, not records: under unary load a record holds one or two
    operations, and snapshotting every few thousand operations would spend most of
    the shard's time re-encoding state that barely changed."""
    snapshot_every_s: float = 300.0
    """...or after this many seconds with at least one new record."""
    redis_socket_timeout_s: float = REDIS_SOCKET_TIMEOUT_S
    """How long one Redis call may take before the batch fails as UNAVAILABLE
    (fault-injection runs shorten it so a stopped Redis is noticed quickly)."""
    unsafe_acknowledge_before_journal: bool = False
    """TEST ONLY; breaks durability on purpose. The shard returns a batch's outcomes
    before its record is journaled and keeps the newest UNSAFE_UNJOURNALED_RECORDS
    records only in memory, so killing the shard loses acknowledged operations. The
    fault-injection suite's negative control uses it to prove that its checker can
    see loss. Never set it anywhere else."""


class ShardActor:
    """One shard. Plain class: ``make_shard_actor`` turns it into a Ray actor."""

    def __init__(self, settings: ShardSettings) -> None:
        gc.set_threshold(GC_YOUNG_THRESHOLD, 50, 100)
        self._settings = settings
        self._program = CompiledProgram(settings.program)
        self._client = redis.Redis.from_url(
            settings.redis_url,
            socket_timeout=settings.redis_socket_timeout_s,
            socket_connect_timeout=settings.redis_socket_timeout_s,
        )
        self._journal = ShardJournal(
            self._client, settings.shard_index, key_prefix=settings.key_prefix
        )
        self._core: ShardCore | None = None
        self._unjournaled: collections.deque = collections.deque()  # unsafe switch only
        self._epoch = 0
        self._events_since_snapshot = 0
        self._last_snapshot_s = time.monotonic()
        self._recover()

    def _recover(self) -> None:
        """Claim a new epoch (fencing out any older incarnation), load the newest
        snapshot and replay the journal after it."""
        started_s = time.monotonic()
        self._core = None
        self._unjournaled.clear()
        epoch = self._journal.claim_epoch()
        core = ShardCore(self._program)
        snapshot = self._journal.load_snapshot()
        if snapshot is not None:
            core.load_snapshot(snapshot[1])
        replayed = 0
        for _seq, payload in self._journal.read_after(core.seq):
            record = codec.decode_record(payload)
            core.replay(record)
            replayed += len(record.events)
        self._core, self._epoch = core, epoch
        # Millions of long-lived state objects would make every cyclic GC pass walk
        # them all (the benchmark saw 0.6 s pauses); freeze what recovery built.
        gc.collect()
        gc.freeze()
        self._events_since_snapshot = replayed
        log.info(
            "shard %d recovered: epoch %d, seq %d, %d members, %d events replayed in %.2fs",
            self._settings.shard_index,
            epoch,
            core.seq,
            len(core.ledger.members),
            replayed,
            time.monotonic() - started_s,
        )

    def apply(self, payload: bytes) -> bytes:
        """Apply one msgspec-encoded batch of commands; return the encoded outcomes.
        Raises JournalError (and others) when the batch may not be durable."""
        if self._core is None:
            self._recover()
        core = self._core
        commands = codec.decode_commands(payload)
        try:
            outcomes, record = core.apply_batch(commands, time.time_ns() // 1_000_000)
            if record is not None:
                if self._settings.unsafe_acknowledge_before_journal:
                    self._append_late(record)
                else:
                    self._journal.append(self._epoch, record.seq, codec.encode_record(record))
        except BaseException:
            self._core = None  # memory may be ahead of the journal: rebuild before reuse
            self._unjournaled.clear()
            raise
        if record is not None:
            self._events_since_snapshot += len(record.events)
            self._maybe_snapshot()
        return codec.encode_outcomes(outcomes)

    def _append_late(self, record) -> None:
        """The unsafe switch's journaling: hold the record back and append only the
        ones that have fallen UNSAFE_UNJOURNALED_RECORDS behind, in order (so the
        journal stays gap-free and replayable, just short of what was acknowledged)."""
        self._unjournaled.append(record)
        while len(self._unjournaled) > UNSAFE_UNJOURNALED_RECORDS:
            late = self._unjournaled.popleft()
            self._journal.append(self._epoch, late.seq, codec.encode_record(late))

    def _maybe_snapshot(self) -> None:
        due = self._events_since_snapshot >= self._settings.snapshot_every_events or (
            time.monotonic() - self._last_snapshot_s >= self._settings.snapshot_every_s
        )
        if due:
            self.snapshot()

    def snapshot(self) -> int:
        """Write a snapshot now (if anything changed since the last); return its seq.
        A failed snapshot is logged, not raised: the journal still holds everything."""
        core = self._core
        if core is None or self._events_since_snapshot == 0:
            return core.seq if core else 0
        try:
            self._journal.write_snapshot(self._epoch, core.seq, core.snapshot_chunks())
        except JournalError:
            log.exception("shard %d: snapshot failed; will retry", self._settings.shard_index)
            return 0
        self._events_since_snapshot = 0
        self._last_snapshot_s = time.monotonic()
        return core.seq

    def describe(self) -> dict:
        """Diagnostics: epoch, seq, member count, journal position."""
        core = self._core
        return {
            "shard_index": self._settings.shard_index,
            "epoch": self._epoch,
            "seq": core.seq if core else None,
            "members": len(core.ledger.members) if core else None,
            "journal": self._journal.describe(),
        }

    def pid(self) -> int:
        """The actor's process id (for fault-injection tests)."""
        return os.getpid()


def make_shard_actor(settings: ShardSettings, *, name: str, namespace: str | None = None):
    """Create the named Ray actor for one shard.

    A sync actor with one caller applies batches in submission order. Ray restarts a
    dead shard (max_restarts=-1); its constructor recovers from Redis. A batch that
    was in flight when the process died is retried on the new incarnation: every
    mutation in it carries a request_id, so a retry never applies anything twice.
    """
    import ray

    remote_class = ray.remote(ShardActor)
    return remote_class.options(
        name=name,
        namespace=namespace,
        max_restarts=-1,
        max_task_retries=3,
        num_cpus=0,
    ).remote(settings)
