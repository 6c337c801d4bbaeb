"""Journal consumers: ordered reads across shards, checkpoints and restarts, exactly-once
commits with the consumer's own state, the snapshot trim guard and its bound, lagging
and resynchronisation, unregistering and lag figures."""

from __future__ import annotations

import threading
import time

import msgspec
import pytest
import redis
from redis.crc import key_slot

from loyalty.actors.consumers import (
    ConsumerConflict,
    ConsumerLagging,
    JournalConsumer,
    Resynced,
    ShardLag,
)
from loyalty.actors.consumers.progress import advanced_cursors, check_name, first_gap
from loyalty.actors.ledger import codec
from loyalty.actors.ledger.events import Earned, JournalRecord, Redeemed
from loyalty.actors.shard import journal as journal_module
from loyalty.actors.shard.journal import ShardJournal

SHARDS = 3

# How long a test waits for something another thread does before it fails.
WAIT_DEADLINE_S = 10.0


def earn_record(seq: int, points: int, *, shard: int = 0) -> JournalRecord:
    """A record of one batch holding an earn of ``points`` and a redeem of 1 point."""
    member_id = f"m-{shard}-{seq}"
    return JournalRecord(
        seq,
        1_700_000_000_000 + seq,
        (
            Earned(member_id, 1_700_000_000_000 + seq, f"earn-{shard}-{seq}", seq, points=points),
            Redeemed(member_id, 1_700_000_000_000 + seq, f"redeem-{shard}-{seq}", seq, points=1),
        ),
    )


def points_of(seq: int) -> int:
    """The points the test journals earn in record ``seq``."""
    return 10 * seq + 1


class Shards:
    """The test's shard journals, each with its epoch, appending real encoded records."""

    def __init__(self, client: redis.Redis, key_prefix: str, count: int = SHARDS) -> None:
        self.client = client
        self.journals = [ShardJournal(client, shard, key_prefix=key_prefix) for shard in range(count)]
        self.epochs = [journal.claim_epoch() for journal in self.journals]
        self.records: dict[int, list[JournalRecord]] = {shard: [] for shard in range(count)}

    def append(self, shard: int, records: int) -> None:
        journal = self.journals[shard]
        for _ in range(records):
            seq = journal.last_seq() + 1
            record = earn_record(seq, points_of(seq), shard=shard)
            journal.append(self.epochs[shard], seq, codec.encode_record(record))
            self.records[shard].append(record)

    def snapshot(self, shard: int, seq: int, chunks: list[bytes] | None = None) -> None:
        self.journals[shard].write_snapshot(self.epochs[shard], seq, chunks or [b"state"])

    def retained(self, shard: int) -> list[int]:
        """The seqs the shard's stream still holds."""
        entries = self.client.xrange(self.journals[shard].journal_key)
        return [int(entry_id.split(b"-")[0]) for entry_id, _ in entries]


@pytest.fixture
def shards(redis_client, key_prefix) -> Shards:
    return Shards(redis_client, key_prefix)


def consumer(redis_client, key_prefix, name: str = "webhooks", shard_count: int = SHARDS) -> JournalConsumer:
    return JournalConsumer(redis_client, name, shard_count, key_prefix=key_prefix)


def read_all(reader: JournalConsumer, **kwargs) -> list:
    """Everything the consumer can read now, page after page."""
    delivered = []
    while page := reader.read(**kwargs):
        delivered.extend(page)
    return delivered


# --------------------------------------------------------------------------- reading


def test_reads_every_shard_in_journal_order_with_decoded_records(shards, redis_client, key_prefix):
    shards.append(0, 4)
    shards.append(1, 2)
    shards.append(2, 5)
    shards.append(0, 3)

    delivered = read_all(consumer(redis_client, key_prefix))

    for shard in range(SHARDS):
        mine = [item for item in delivered if item.shard == shard]
        assert [item.seq for item in mine] == list(range(1, len(shards.records[shard]) + 1))
        assert [item.record for item in mine] == shards.records[shard]


@pytest.mark.parametrize("count", [1, 2, 7])
def test_paged_reads_neither_drop_nor_repeat_records(shards, redis_client, key_prefix, count):
    for shard in range(SHARDS):
        shards.append(shard, 5 + shard)

    delivered = read_all(consumer(redis_client, key_prefix), count=count)

    assert sorted((item.shard, item.seq) for item in delivered) == [
        (shard, seq) for shard in range(SHARDS) for seq in range(1, 6 + shard)
    ]
    assert len(delivered) == len(set((item.shard, item.seq) for item in delivered))


def test_a_read_with_nothing_new_returns_nothing(shards, redis_client, key_prefix):
    reader = consumer(redis_client, key_prefix)
    shards.append(1, 2)
    read_all(reader)

    assert reader.read() == []
    assert reader.read(block_s=0.05) == []
    assert reader.delivered == {0: 0, 1: 2, 2: 0}


def _blocked_in_xread(client: redis.Redis) -> bool:
    return any(entry.get("cmd") == "xread" and "b" in entry.get("flags", "") for entry in client.client_list())


def test_a_blocking_read_wakes_for_a_record_appended_while_it_waits(shards, redis_client, key_prefix, redis_server):
    # The reader has a connection of its own, so the appender can see it blocked.
    reader_client = redis.Redis.from_url(redis_server.url)
    reader = JournalConsumer(reader_client, "webhooks", SHARDS, key_prefix=key_prefix)
    shards.append(0, 1)
    read_all(reader)

    def append_once_the_reader_blocks() -> None:
        deadline = time.monotonic() + WAIT_DEADLINE_S
        while not _blocked_in_xread(redis_client) and time.monotonic() < deadline:
            pass
        shards.append(2, 1)

    appender = threading.Thread(target=append_once_the_reader_blocks)
    appender.start()
    try:
        delivered = reader.read(block_s=WAIT_DEADLINE_S * 2)
    finally:
        appender.join()
        reader_client.close()

    assert [(item.shard, item.seq) for item in delivered] == [(2, 1)]
    assert delivered[0].record == shards.records[2][0]


# --------------------------------------------------------------------------- checkpoints


def test_a_restarted_consumer_resumes_from_its_checkpoint_and_loses_nothing(shards, redis_client, key_prefix):
    for shard in range(SHARDS):
        shards.append(shard, 4)
    first = consumer(redis_client, key_prefix)
    seen = {(item.shard, item.seq) for item in first.read(count=2)}
    first.commit()
    first.read(count=1)  # read, never committed: the crash comes here

    restarted = consumer(redis_client, key_prefix)
    assert restarted.delivered == {0: 2, 1: 2, 2: 2}
    shards.append(1, 2)
    again = read_all(restarted)

    assert [(item.shard, item.seq) for item in again if item.shard == 1] == [(1, seq) for seq in range(3, 7)]
    assert seen | {(item.shard, item.seq) for item in again} == {
        (shard, seq) for shard in range(SHARDS) for seq in range(1, len(shards.records[shard]) + 1)
    }


def test_commit_takes_chosen_cursors_between_committed_and_delivered(shards, redis_client, key_prefix):
    shards.append(0, 5)
    reader = consumer(redis_client, key_prefix)
    read_all(reader)

    reader.commit({0: 3})
    with pytest.raises(ValueError):
        reader.commit({0: 2})  # behind the checkpoint
    with pytest.raises(ValueError):
        reader.commit({0: 6})  # never delivered

    assert consumer(redis_client, key_prefix).delivered == {0: 3, 1: 0, 2: 0}


def test_consumers_keep_separate_checkpoints(shards, redis_client, key_prefix):
    shards.append(0, 3)
    webhooks = consumer(redis_client, key_prefix, "webhooks")
    read_all(webhooks)
    webhooks.commit()

    assert [item.seq for item in read_all(consumer(redis_client, key_prefix, "fraud"))] == [1, 2, 3]


# --------------------------------------------------------------------------- exactly once


class PointsCounter:
    """A consumer with its own state: the total points earned, in its own Redis key."""

    def __init__(self, client: redis.Redis, key_prefix: str) -> None:
        self.client = client
        self.consumer = consumer(client, key_prefix, "points")
        self.total_key = self.consumer.key("earned")

    def step(self, *, crash: str | None = None, count: int = 3) -> int:
        """Read a page and commit its points with the cursors; ``crash`` stops it
        ``"before-commit"`` or ``"inside-commit"`` (after the state write was queued)."""
        page = self.consumer.read(count=count)
        earned = sum(event.points for item in page for event in item.record.events if isinstance(event, Earned))
        if crash == "before-commit":
            raise RuntimeError("killed between applying and checkpointing")

        def apply(pipeline) -> None:
            pipeline.incrby(self.total_key, earned)
            if crash == "inside-commit":
                raise RuntimeError("killed while committing")

        self.consumer.commit(extra=apply)
        return len(page)

    def total(self) -> int:
        return int(self.client.get(self.total_key) or 0)


def expected_points(shards: Shards) -> int:
    return sum(points_of(record.seq) for records in shards.records.values() for record in records)


@pytest.mark.parametrize("crash", ["before-commit", "inside-commit"])
def test_a_consumer_killed_between_applying_and_checkpointing_counts_every_event_once(
    shards, redis_client, key_prefix, crash
):
    for shard in range(SHARDS):
        shards.append(shard, 5)
    counter = PointsCounter(redis_client, key_prefix)
    counter.step()
    with pytest.raises(RuntimeError):
        counter.step(crash=crash)

    restarted = PointsCounter(redis_client, key_prefix)
    while restarted.step():
        pass

    assert restarted.total() == expected_points(shards)


def test_a_second_instance_from_the_same_checkpoint_cannot_commit_again(shards, redis_client, key_prefix):
    shards.append(0, 4)
    first = PointsCounter(redis_client, key_prefix)
    zombie = PointsCounter(redis_client, key_prefix)
    first.step(count=10)

    with pytest.raises(ConsumerConflict):
        zombie.step(count=10)

    assert first.total() == expected_points(shards)
    assert consumer(redis_client, key_prefix, "points").delivered[0] == 4


def test_the_checkpoint_and_the_own_state_share_one_slot(redis_client, key_prefix):
    reader = consumer(redis_client, key_prefix)

    assert key_slot(reader.cursors_key.encode()) == key_slot(reader.key("earned").encode())
    assert "{" not in reader.key("earned").rpartition("}")[2]
    with pytest.raises(ValueError):
        reader.key("x{y}")


# --------------------------------------------------------------------------- trim guard


def test_a_snapshot_keeps_the_records_a_registered_consumer_has_not_acknowledged(shards, redis_client, key_prefix):
    shards.append(0, 10)
    shards.append(1, 10)
    reader = consumer(redis_client, key_prefix)
    reader.register()
    reader.read(count=3)
    reader.commit()

    shards.snapshot(0, 8)

    assert shards.retained(0) == list(range(4, 11))
    assert [item.seq for item in read_all(reader) if item.shard == 0] == list(range(4, 11))
    # After the consumer acknowledged everything, the next snapshot trims as before.
    reader.commit()
    shards.snapshot(0, 9)
    assert shards.retained(0) == [10]


def test_without_registered_consumers_a_snapshot_trims_up_to_its_seq(shards, redis_client, key_prefix):
    shards.append(0, 10)
    reader = consumer(redis_client, key_prefix)
    reader.read(count=3)
    reader.commit()  # committed, but never registered: no hold on trimming

    shards.snapshot(0, 8)

    assert shards.retained(0) == [9, 10]


def test_the_trim_guard_keeps_at_most_the_bound_before_the_snapshot(shards, redis_client, key_prefix, monkeypatch):
    monkeypatch.setattr(journal_module, "CONSUMER_RETAINED_RECORDS_MAX", 2)
    shards.append(0, 10)
    reader = consumer(redis_client, key_prefix)
    reader.register()
    reader.read(count=3)
    reader.commit()

    shards.snapshot(0, 8)

    assert shards.retained(0) == list(range(7, 11))


def test_the_flip_script_uses_the_lowest_acknowledged_seq_and_counts_garbage_as_zero(
    shards, redis_client, key_prefix
):
    shards.append(0, 10)
    consumers_key = shards.journals[0].consumers_key
    redis_client.hset(consumers_key, mapping={"fast": 9, "slow": 5})
    shards.snapshot(0, 8)
    assert shards.retained(0) == list(range(6, 11))

    redis_client.hdel(consumers_key, "fast", "slow")
    redis_client.hset(consumers_key, "broken", "not-a-seq")
    shards.snapshot(0, 9)
    assert shards.retained(0) == list(range(6, 11))  # trim to 0: nothing more goes


def test_shard_recovery_reads_after_its_snapshot_despite_retained_records(shards, redis_client, key_prefix):
    shards.append(0, 10)
    consumer(redis_client, key_prefix).register()

    shards.snapshot(0, 6)

    journal = shards.journals[0]
    assert journal.load_snapshot()[0] == 6
    assert [seq for seq, _ in journal.read_after(6)] == [7, 8, 9, 10]
    assert journal.last_seq() == 10


def test_the_consumers_hash_shares_the_shards_slot(shards, redis_client, key_prefix):
    journal = shards.journals[2]

    assert journal.consumers_key == f"{{{key_prefix}:shard:2}}:consumers"
    assert key_slot(journal.consumers_key.encode()) == key_slot(journal.journal_key.encode())


# --------------------------------------------------------------------------- lagging


def test_a_consumer_behind_the_retained_records_is_told_it_lags(shards, redis_client, key_prefix, monkeypatch):
    monkeypatch.setattr(journal_module, "CONSUMER_RETAINED_RECORDS_MAX", 2)
    shards.append(0, 10)
    shards.append(1, 3)
    reader = consumer(redis_client, key_prefix)
    reader.register()
    reader.read(count=3)
    reader.commit()
    shards.snapshot(0, 8)

    with pytest.raises(ConsumerLagging) as lagging:
        reader.read()

    assert (lagging.value.shard, lagging.value.cursor, lagging.value.first_retained_seq) == (0, 3, 7)
    assert reader.delivered == {0: 3, 1: 3, 2: 0}  # nothing of that read was delivered


def test_a_consumer_is_told_it_lags_when_the_whole_journal_was_trimmed(shards, redis_client, key_prefix):
    shards.append(1, 5)
    shards.snapshot(1, 5)

    with pytest.raises(ConsumerLagging) as lagging:
        consumer(redis_client, key_prefix).read()

    assert (lagging.value.shard, lagging.value.cursor, lagging.value.first_retained_seq) == (1, 0, 6)


def test_a_lagging_consumer_rebuilds_from_the_snapshot_and_continues_after_it(
    shards, redis_client, key_prefix, monkeypatch
):
    monkeypatch.setattr(journal_module, "CONSUMER_RETAINED_RECORDS_MAX", 2)
    shards.append(0, 10)
    counter = PointsCounter(redis_client, key_prefix)
    counter.consumer.register()
    counter.step(count=3)
    # The snapshot's state, as the counter rebuilds it: points earned up to its seq.
    shards.snapshot(0, 8, [msgspec.msgpack.encode(sum(points_of(seq) for seq in range(1, 9)))])
    with pytest.raises(ConsumerLagging):
        counter.step()

    def rebuild(pipeline, seq: int, chunks: list[bytes]) -> None:
        pipeline.set(counter.total_key, msgspec.msgpack.decode(chunks[0]))

    resynced = counter.consumer.resync(0, rebuild=rebuild)
    shards.append(0, 2)
    while counter.step():
        pass

    assert resynced == Resynced(0, 3, 8)
    assert resynced.skipped_records == 5
    assert counter.total() == expected_points(shards)
    assert consumer(redis_client, key_prefix, "points").delivered[0] == 12
    assert redis_client.hget(shards.journals[0].consumers_key, "points") == b"12"


def test_a_stateless_consumer_skips_to_the_snapshot_with_the_gap_reported(shards, redis_client, key_prefix):
    shards.append(0, 6)
    reader = consumer(redis_client, key_prefix)
    read_all(reader)  # delivered up to 6, never committed: the state is as of 0
    shards.snapshot(0, 4)

    resynced = reader.resync(0)

    assert resynced.skipped_records == 4
    assert [item.seq for item in read_all(reader)] == [5, 6]
    assert reader.committed == {0: 4, 1: 0, 2: 0}
    assert consumer(redis_client, key_prefix).delivered[0] == 4


# --------------------------------------------------------------------------- registration and lag


def test_unregistering_releases_trimming_on_every_shard(shards, redis_client, key_prefix):
    for shard in range(SHARDS):
        shards.append(shard, 6)
    reader = consumer(redis_client, key_prefix)
    reader.register()
    shards.snapshot(0, 3)
    assert shards.retained(0) == list(range(1, 7))

    reader.unregister()
    read_all(reader)
    reader.commit()  # a report after unregistering does not register it again
    for shard in range(SHARDS):
        shards.snapshot(shard, 5)

    assert all(shards.retained(shard) == [6] for shard in range(SHARDS))
    assert all(not redis_client.hexists(journal.consumers_key, "webhooks") for journal in shards.journals)


def test_registering_at_the_head_starts_after_the_newest_records(shards, redis_client, key_prefix):
    shards.append(0, 4)
    shards.append(2, 1)
    reader = consumer(redis_client, key_prefix)
    reader.register(start_at_head=True)
    shards.append(0, 1)

    assert [(item.shard, item.seq) for item in read_all(reader)] == [(0, 5)]
    assert redis_client.hget(shards.journals[0].consumers_key, "webhooks") == b"4"


def test_lag_reports_head_acknowledged_and_reported_seqs_per_shard(shards, redis_client, key_prefix):
    shards.append(0, 7)
    shards.append(1, 2)
    reader = consumer(redis_client, key_prefix)
    reader.register()
    reader.read(count=3)
    reader.commit()
    reader.read(count=10)  # delivered, not committed: still lag
    shards.snapshot(2, 0)

    lags = reader.lag()

    assert lags == (ShardLag(0, 7, 3, 3), ShardLag(1, 2, 2, 2), ShardLag(2, 0, 0, 0))
    assert [lag.lag_records for lag in lags] == [4, 0, 0]
    reader.unregister()
    assert [lag.reported_seq for lag in reader.lag()] == [None, None, None]


# --------------------------------------------------------------------------- the pure part


def test_first_gap_wants_the_records_right_after_the_cursor():
    assert first_gap(0, 3, [4, 5, 6], 0) is None
    assert first_gap(0, 3, [], 3) is None
    assert first_gap(0, 3, [5, 6], 0).first_retained_seq == 5
    assert first_gap(0, 3, [4, 6], 0).first_retained_seq == 6
    assert first_gap(1, 3, [], 9).first_retained_seq == 10


def test_advanced_cursors_stay_between_committed_and_delivered():
    assert advanced_cursors({0: 1, 1: 2}, {0: 5, 1: 2}, None) == {0: 5, 1: 2}
    assert advanced_cursors({0: 1, 1: 2}, {0: 5, 1: 2}, {0: 3}) == {0: 3, 1: 2}
    for bad in ({0: 0}, {0: 6}, {2: 1}):
        with pytest.raises(ValueError):
            advanced_cursors({0: 1, 1: 2}, {0: 5, 1: 2}, bad)


@pytest.mark.parametrize("name", ["", "a{b}", "with space", "x" * 65, "colon:s"])
def test_bad_consumer_names_are_refused(name):
    with pytest.raises(ValueError):
        check_name(name)
