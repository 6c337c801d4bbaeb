"""The shard actor: a thin Ray shell joining the pure ledger core to its Redis journal.

Ray creates, places and restarts it; the gateway's batches reach it over its data
channel (actors/shard/channel_server.py), a TCP connection that costs a fraction of a Ray call.

A batch is applied in memory, its journal record is appended to Redis (fenced by this
incarnation's epoch), and only then are its outcomes returned. If anything fails
after the core changed state, the in-memory state is dropped and rebuilt from the
snapshot and journal before the next batch, so memory never runs ahead of Redis.

Rules: each batch names the rule-set version its gateway holds. A shard installs that
version before the batch when it is newer than its own (fetched from the rules store
and compiled once), so versions only move forward and a whole batch is evaluated with
one version. After a restart a shard has no rules until its first batch names them:
recovery replays journaled effects, never rules. Campaign budgets are leased from the
rules store while a batch runs and given back when the rules no longer need them
(actors/shard/budgets.py); snapshots are taken on a schedule and written in the
background (actors/shard/snapshots.py). This shell only wires them to the core, the
journal, the lock and Ray.
"""

from __future__ import annotations

import collections
import ctypes
import logging
import os
import threading
import time

import msgspec
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from loyalty.actors.gc_tuning import collect_young_less_often, freeze_long_lived
from loyalty.actors.ledger import codec
from loyalty.actors.ledger.core import ShardCore
from loyalty.actors.ledger.events import JournalRecord
from loyalty.actors.ledger.members import HOT_MEMBERS_DEFAULT
from loyalty.actors.ledger.program import CompiledProgram, Program
from loyalty.actors.ledger.rules import compile_rules
from loyalty.actors.shard.budgets import BudgetLeases
from loyalty.actors.shard.channel_server import ChannelServer
from loyalty.actors.shard.journal import JournalUnavailable, ShardJournal
from loyalty.actors.shard.rules_source import ShardRulesSource
from loyalty.actors.shard.snapshots import Snapshots, SnapshotSchedule

log = logging.getLogger(__name__)

# Redis calls give up after this long, so a stopped or unreachable Redis turns into
# UNAVAILABLE for callers instead of a hang. Generous for a fsync-always append of a
# 10,000-operation batch on a slow disk.
REDIS_SOCKET_TIMEOUT_S = 10.0

# A health probe's Redis PING gives up after this long: a stopped Redis must turn
# into "cannot journal" well within the gateway's probe timeout.
HEALTH_PING_TIMEOUT_S = 1.0

# Under the test-only unsafe_acknowledge_before_journal switch, how many acknowledged
# records a shard keeps only in memory: enough that a kill -9 under load always
# loses some acknowledged operations, which is what the switch exists to show.
UNSAFE_UNJOURNALED_RECORDS = 20


def _return_free_memory() -> None:
    """Give the C allocator's free memory back to the system (glibc only; elsewhere
    nothing). Recovery reads the snapshot in megabyte chunks, and glibc may keep such
    freed chunks in its heap instead of returning them."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _node_address() -> str:
    """The address Ray registered this node under (loopback outside Ray)."""
    try:
        import ray

        if ray.is_initialized():
            return ray.util.get_node_ip_address()
    except ImportError:
        pass
    return "127.0.0.1"


class ShardSettings(msgspec.Struct, frozen=True):
    """How a shard finds its journal and when it snapshots."""

    shard_index: int
    redis_url: str
    key_prefix: str = "loyalty"
    program: Program = Program()
    snapshot_every_events: int = 200_000
    """Snapshot after this many journaled events (bounds replay work on recovery to
    a few seconds; events, not records: see snapshots.SnapshotSchedule)..."""
    snapshot_every_s: float = 300.0
    """...or after this many seconds with at least one new record."""
    hot_members: int = HOT_MEMBERS_DEFAULT
    """Members kept decoded between batches (see actors/ledger/members.py)."""
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
        collect_young_less_often()  # before recovery builds the state (see gc_tuning)
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
        self._rules_source = ShardRulesSource(self._client, key_prefix=settings.key_prefix)
        self._budgets = BudgetLeases(self._rules_source, self._write, shard_index=settings.shard_index)
        self._snapshots = Snapshots(
            self._journal,
            SnapshotSchedule(settings.snapshot_every_events, settings.snapshot_every_s),
            shard_index=settings.shard_index,
        )
        self._core: ShardCore | None = None
        self._unjournaled: collections.deque = collections.deque()  # unsafe switch only
        self._epoch = 0
        self._lock = threading.Lock()
        """Held by every method that touches the core: Ray runs them on the actor's
        main thread, the data channel on one thread per connection."""
        self._channel: ChannelServer | None = None
        # Health pings fail fast (no retries): a probe must answer within the
        # gateway's probe timeout even when Redis is stopped.
        self._health_client = redis.Redis.from_url(
            settings.redis_url,
            socket_timeout=HEALTH_PING_TIMEOUT_S,
            socket_connect_timeout=HEALTH_PING_TIMEOUT_S,
            retry=Retry(NoBackoff(), 0),
        )
        try:
            self._recover()
        except JournalUnavailable as error:
            # Redis is down while Ray (re)starts this shard. Dying here would make
            # Ray give up on the actor for good; instead start empty-handed and
            # recover on the next batch or health probe, once Redis answers.
            log.warning("shard %d: cannot recover yet (%s); will retry when Redis answers",
                        settings.shard_index, error)

    def _recover(self) -> None:
        """Claim a new epoch (fencing out any older incarnation), load the newest
        snapshot and replay the journal after it."""
        started_s = time.monotonic()
        self._core = None
        self._unjournaled.clear()
        self._budgets.installed(None)
        epoch = self._journal.claim_epoch()
        core = ShardCore(self._program, hot_members=self._settings.hot_members)
        snapshot = self._journal.load_snapshot()
        if snapshot is not None:
            core.load_snapshot(snapshot[1])
        snapshot = None  # its chunks (hundreds of MB for a large shard) are not needed now
        replayed = 0
        for _seq, payload in self._journal.read_after(core.seq):
            record = codec.decode_record(payload)
            core.replay(record)
            replayed += len(record.events)
        self._core, self._epoch = core, epoch
        # Millions of long-lived state objects would make every cyclic GC pass walk
        # them all (the benchmark saw 0.6 s pauses); freeze what recovery built.
        freeze_long_lived()
        _return_free_memory()
        self._snapshots.schedule.recovered(replayed)
        log.info(
            "shard %d recovered: epoch %d, seq %d, %d members, %d events replayed in %.2fs",
            self._settings.shard_index,
            epoch,
            core.seq,
            len(core.ledger.members),
            replayed,
            time.monotonic() - started_s,
        )

    def health(self) -> tuple[bool, str]:
        """(True, "") when this shard can journal: its state is recovered and Redis
        answers a PING; else (False, why). A shard that still has to recover tries
        now, so an idle server heals without waiting for traffic."""
        if self._core is None:
            with self._lock:
                if self._core is None:
                    try:
                        self._recover()
                    except JournalUnavailable as error:
                        return False, f"recovering: {error}"
            return True, ""
        try:
            self._health_client.ping()
        except redis.exceptions.RedisError as error:
            return False, f"Redis does not answer: {type(error).__name__}: {error}"
        return True, ""

    def channel_address(self) -> tuple[str, int, bytes]:
        """(host, port, token) of this incarnation's data channel (actors/shard/channel_server.py),
        started on first use: the gateway sends its batches there instead of through
        Ray calls. The host is the address Ray knows this node by (127.0.0.1 on a
        single-machine Ray)."""
        with self._lock:
            if self._channel is None:
                self._channel = ChannelServer(
                    _node_address(), self.apply, name=f"shard-{self._settings.shard_index}"
                )
            return (*self._channel.address, self._channel.token)

    def apply(self, payload: bytes, rules_version: int = 0) -> bytes:
        """Apply one msgspec-encoded batch of commands with at least rule-set version
        ``rules_version`` (0: whatever is installed); return the encoded outcomes.
        Raises JournalError (and others) when the batch may not be durable."""
        with self._lock:
            return self._apply(payload, rules_version)

    def _apply(self, payload: bytes, rules_version: int) -> bytes:
        if self._core is None:
            self._recover()
        core = self._core
        commands = codec.decode_commands(payload)
        now_ms = time.time_ns() // 1_000_000
        if rules_version > core.rules_version:
            # Fetches and compiles before touching the core: a failure leaves it intact.
            self._install_rules(core, rules_version)
        try:
            self._budgets.before_batch(core, now_ms)
            outcomes, record = core.apply_batch(commands, now_ms, budget=self._rules_source)
            if record is not None:
                self._write(record)
        except BaseException:
            self._core = None  # memory may be ahead of the journal: rebuild before reuse
            self._unjournaled.clear()
            raise
        if record is not None:
            self._snapshots.after_batch(core, self._epoch)
        return codec.encode_outcomes(outcomes)

    def _write(self, record: JournalRecord) -> None:
        """Journal one record (fenced by this incarnation's epoch) and count its events
        towards the next snapshot."""
        if self._settings.unsafe_acknowledge_before_journal:
            self._append_late(record)
        else:
            self._journal.append(self._epoch, record.seq, codec.encode_record(record))
        self._snapshots.schedule.journaled(len(record.events))

    def _install_rules(self, core: ShardCore, version: int) -> None:
        """Fetch, compile and install the rule set of ``version`` (or the live one, if
        that version is no longer kept)."""
        rule_set = self._rules_source.rule_set(version)
        if rule_set.version <= core.rules_version:
            return
        core.install_rules(compile_rules(rule_set, self._program))
        self._budgets.installed(rule_set)
        log.info("shard %d: rules version %d installed", self._settings.shard_index, rule_set.version)

    def return_all_budgets(self) -> dict[str, int]:
        """Give back every budget chunk this shard holds (on a graceful stop); returns
        {budget key: points}. The next batch that needs budget leases again."""
        with self._lock:
            core = self._core
            if core is None:
                return {}
            try:
                return self._budgets.give_all_back(core, time.time_ns() // 1_000_000)
            except BaseException:
                self._core = None
                self._unjournaled.clear()
                raise

    def _append_late(self, record) -> None:
        """The unsafe switch's journaling: hold the record back and append only the
        ones that have fallen UNSAFE_UNJOURNALED_RECORDS behind, in order (so the
        journal stays gap-free and replayable, just short of what was acknowledged)."""
        self._unjournaled.append(record)
        while len(self._unjournaled) > UNSAFE_UNJOURNALED_RECORDS:
            late = self._unjournaled.popleft()
            self._journal.append(self._epoch, late.seq, codec.encode_record(late))

    def snapshot(self) -> int:
        """Write a snapshot now (if anything changed since the last) and wait for it;
        return its seq (0 if it failed: the failure is logged, not raised). A snapshot
        the shard was writing in the background is finished first."""
        with self._lock:
            return self._snapshots.write_now(self._core, self._epoch)

    def describe(self) -> dict:
        """Diagnostics: epoch, seq, member count, rules version, budgets held,
        journal position."""
        with self._lock:
            return self._describe()

    def _describe(self) -> dict:
        core = self._core
        return {
            "shard_index": self._settings.shard_index,
            "epoch": self._epoch,
            "seq": core.seq if core else None,
            "members": len(core.ledger.members) if core else None,
            "decoded_members": core.ledger.members.hot_count if core else None,
            "snapshot_in_progress": self._snapshots.in_progress,
            "rules_version": core.rules_version if core else None,
            "budgets": core.budget_balances() if core else None,
            "journal": self._journal.describe(),
        }

    def pid(self) -> int:
        """The actor's process id (for fault-injection tests)."""
        return os.getpid()


def make_shard_actor(settings: ShardSettings, *, name: str, namespace: str | None = None):
    """Create the named Ray actor for one shard.

    Batches arrive over the actor's data channel (``channel_address``; one connection
    per gateway, answered in order) or as Ray calls; one lock applies them one at a
    time. Ray restarts a dead shard (max_restarts=-1); its constructor recovers from
    Redis. A batch that was in flight when the process died is sent again to the new
    incarnation (by the gateway over a new channel, or by Ray for a Ray call): every
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
