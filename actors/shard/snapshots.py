"""A shard's snapshots: when to take one, and writing it while the shard serves.

A snapshot bounds recovery: a restarted shard loads the newest one and replays only
the journal after it. Taking one costs the shard a few milliseconds between batches
(``ShardCore.snapshot_chunks`` freezes the state: a copy of the member index and
encoding the decoded members); writing it to Redis takes far longer and happens on a
background thread while the shard goes on serving. One snapshot is written at a
time; a failed one makes the next one due at once (the journal still holds
everything, so a failure loses nothing but recovery time).

``SnapshotSchedule`` is the policy alone (given a clock); ``Snapshots`` runs it
against a journal. Neither needs Ray; only ``Snapshots`` needs a journal (Redis).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Protocol

from loyalty.actors.ledger.core import ShardCore
from loyalty.actors.shard.journal import JournalError, JournalUnavailable

log = logging.getLogger(__name__)


class SnapshotSchedule:
    """When a shard snapshots: once ``every_events`` events were journaled since the
    last snapshot, or ``every_s`` seconds after it with at least one new record.

    Events, not records: under unary load a record holds one or two operations, and
    snapshotting every few thousand operations would spend most of the shard's time
    re-encoding state that barely changed."""

    def __init__(self, every_events: int, every_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.every_events = every_events
        self.every_s = every_s
        self._clock = clock
        self.events_since = 0
        """Events journaled since the last snapshot was taken (or replayed on recovery)."""
        self._taken_s = clock()

    def journaled(self, events: int) -> None:
        """A record of ``events`` events was journaled."""
        self.events_since += events

    def recovered(self, replayed: int) -> None:
        """The shard recovered, replaying ``replayed`` events after its snapshot."""
        self.events_since = replayed

    @property
    def changed(self) -> bool:
        """Whether anything was journaled since the last snapshot."""
        return self.events_since > 0

    def due(self) -> bool:
        """Whether to take a snapshot now (asked after a batch journaled a record)."""
        return self.events_since >= self.every_events or self._clock() - self._taken_s >= self.every_s

    def taken(self) -> None:
        """A snapshot of the state as of now was taken: start counting again."""
        self.events_since = 0
        self._taken_s = self._clock()

    def failed(self) -> None:
        """The last snapshot was not written: make the next one due at once."""
        self.events_since += self.every_events


class SnapshotJournal(Protocol):
    """The part of ShardJournal snapshots are written with."""

    def write_snapshot(self, epoch: int, seq: int, chunks: Iterable[bytes]) -> None: ...


class Snapshots:
    """Takes a shard's snapshots on its schedule and writes them, one at a time: in
    the background after a batch, or inline when asked for one. Call with the shard's
    lock held (the writer thread touches only the frozen chunks and the journal)."""

    def __init__(self, journal: SnapshotJournal, schedule: SnapshotSchedule, *, shard_index: int) -> None:
        self._journal = journal
        self.schedule = schedule
        self._shard_index = shard_index
        self._thread: threading.Thread | None = None
        """The background writer of the snapshot being written, if any."""
        self._failed = False
        """Set by a writer that failed: the next batch starts another snapshot."""

    @property
    def in_progress(self) -> bool:
        """Whether a background writer is still writing."""
        return self._thread is not None and self._thread.is_alive()

    def after_batch(self, core: ShardCore, epoch: int) -> None:
        """After a batch was journaled: start a background snapshot if one is due and
        none is being written (the events keep counting meanwhile)."""
        if self._thread is not None:
            if self._thread.is_alive():
                return
            self.wait()
        if self.schedule.due():
            seq, chunks = self._take(core)
            self._thread = threading.Thread(
                target=self._write,
                args=(epoch, seq, chunks),
                name=f"shard-{self._shard_index}-snapshot",
                daemon=True,
            )
            self._thread.start()

    def write_now(self, core: ShardCore | None, epoch: int) -> int:
        """Write a snapshot now, if anything changed since the last, and wait for it;
        returns its seq (the core's seq when nothing changed; 0 when it failed: the
        failure is logged, not raised). A background snapshot is finished first."""
        self.wait()
        if core is None or not self.schedule.changed:
            return core.seq if core else 0
        seq, chunks = self._take(core)
        if not self._write(epoch, seq, chunks):
            self._retry_failed()
            return 0
        return seq

    def wait(self) -> None:
        """Wait for the background writer, if any; after a failure the next snapshot
        is due at once."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
            self._retry_failed()

    def _take(self, core: ShardCore):
        """Freeze the state for a snapshot and restart the schedule. Called between
        batches, after the last batch was journaled, so the snapshot never holds
        anything the journal does not."""
        chunks = core.snapshot_chunks()
        self.schedule.taken()
        return core.seq, chunks

    def _write(self, epoch: int, seq: int, chunks) -> bool:
        """Write frozen snapshot chunks (on the writer thread, or inline). A failure
        is logged, not raised: the journal still holds everything."""
        try:
            self._journal.write_snapshot(epoch, seq, chunks)
            return True
        except JournalUnavailable as error:  # Redis away: expected, one line, no traceback
            log.warning("shard %d: snapshot at seq %d not written (%s); will retry", self._shard_index, seq, error)
            self._failed = True
            return False
        except JournalError:
            log.exception("shard %d: snapshot at seq %d failed; will retry", self._shard_index, seq)
            self._failed = True
            return False

    def _retry_failed(self) -> None:
        if self._failed:
            self._failed = False
            self.schedule.failed()
