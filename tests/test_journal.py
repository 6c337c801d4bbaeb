"""Behaviour of the per-shard Redis journal, snapshots and epoch fencing."""

from __future__ import annotations

import random
import socket
import uuid
from collections.abc import Iterator

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.retry import Retry

from loyalty.actors.shard.journal import (
    FencedError,
    JournalCorrupt,
    JournalError,
    JournalUnavailable,
    ShardJournal,
)

SHARD_INDEX = 3


@pytest.fixture
def journal(redis_client: redis.Redis, key_prefix: str) -> ShardJournal:
    """A journal for shard 3 under the test's private key prefix."""
    return ShardJournal(redis_client, SHARD_INDEX, key_prefix=key_prefix)


def journal_key(key_prefix: str, shard_index: int = SHARD_INDEX) -> str:
    """The stream key the journal is documented to use."""
    return f"{{{key_prefix}:shard:{shard_index}}}:journal"


def snapshot_chunk_keys(client: redis.Redis, key_prefix: str) -> list[bytes]:
    """Every snapshot chunk key of shard 3, whichever snapshot it belongs to."""
    return sorted(client.scan_iter(match=f"{{{key_prefix}:shard:{SHARD_INDEX}}}:snapshot:*"))


def append_range(journal: ShardJournal, epoch: int, seqs: range) -> None:
    """Append one record per seq with payload ``record-<seq>``."""
    for seq in seqs:
        journal.append(epoch, seq, f"record-{seq}".encode())


def payload(seq: int) -> bytes:
    """The payload append_range writes for ``seq``."""
    return f"record-{seq}".encode()


# --- append and read -------------------------------------------------------


def test_append_then_read_after_returns_every_payload_in_order(journal):
    epoch = journal.claim_epoch()
    payloads = [b"first", b"", b"\x00\xff binary \n", b"last"]
    for seq, data in enumerate(payloads, start=1):
        journal.append(epoch, seq, data)

    assert list(journal.read_after(0)) == list(enumerate(payloads, start=1))


def test_read_after_skips_records_up_to_and_including_the_given_seq(journal):
    epoch = journal.claim_epoch()
    append_range(journal, epoch, range(1, 11))

    assert [seq for seq, _ in journal.read_after(7)] == [8, 9, 10]
    assert list(journal.read_after(10)) == []


def test_an_append_that_skips_a_seq_is_corrupt_and_writes_nothing(journal):
    # A shard whose memory ran ahead of a Redis that came back without its last
    # writes (appendfsync everysec) must not journal after the gap: replay would
    # refuse the journal. Refused, the shard recovers from what Redis has.
    epoch = journal.claim_epoch()
    journal.append(epoch, 1, payload(1))

    with pytest.raises(JournalCorrupt):
        journal.append(epoch, 3, payload(3))

    assert [seq for seq, _ in journal.read_after(0)] == [1]


@pytest.mark.parametrize("page_size", [1, 3, 10, 11])
def test_paging_neither_drops_nor_repeats_records(journal, page_size):
    epoch = journal.claim_epoch()
    append_range(journal, epoch, range(1, 11))

    records = list(journal.read_after(0, page_size=page_size))

    assert records == [(seq, payload(seq)) for seq in range(1, 11)]


def test_last_seq_tracks_the_highest_appended_seq(journal):
    assert journal.last_seq() == 0
    epoch = journal.claim_epoch()
    journal.append(epoch, 1, b"x")
    journal.append(epoch, 2, b"y")

    assert journal.last_seq() == 2


def test_shards_do_not_see_each_others_records(redis_client, key_prefix):
    first = ShardJournal(redis_client, 0, key_prefix=key_prefix)
    second = ShardJournal(redis_client, 1, key_prefix=key_prefix)
    first.append(first.claim_epoch(), 1, b"shard zero")
    second.append(second.claim_epoch(), 1, b"shard one")

    assert list(first.read_after(0)) == [(1, b"shard zero")]
    assert list(second.read_after(0)) == [(1, b"shard one")]


def test_all_keys_of_a_shard_share_one_cluster_slot(journal, redis_client, key_prefix):
    epoch = journal.claim_epoch()
    append_range(journal, epoch, range(1, 4))
    journal.write_snapshot(epoch, 3, [b"a", b"b"])

    keys = list(redis_client.scan_iter(match=f"{{{key_prefix}:shard:{SHARD_INDEX}}}*"))

    assert len(keys) >= 5  # epoch, journal, pointer and two chunks
    assert len({key_slot(key) for key in keys}) == 1


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    payloads=st.lists(st.binary(max_size=64), max_size=30),
    start_seq=st.integers(min_value=0, max_value=31),
)
def test_read_after_returns_exactly_the_later_records(redis_client, payloads, start_seq):
    # Hypothesis reuses function-scoped fixtures across examples, so each
    # example isolates itself with its own prefix.
    journal = ShardJournal(redis_client, 0, key_prefix=f"prop-{uuid.uuid4().hex}")
    epoch = journal.claim_epoch()
    records = dict(enumerate(payloads, start=1))
    for seq in sorted(records):
        journal.append(epoch, seq, records[seq])

    expected = [(seq, records[seq]) for seq in sorted(records) if seq > start_seq]
    assert list(journal.read_after(start_seq, page_size=4)) == expected


# --- sequence invariants ---------------------------------------------------


@pytest.mark.parametrize("bad_seq", [5, 4, 1])
def test_non_increasing_seq_is_corrupt_and_writes_nothing(journal, bad_seq):
    epoch = journal.claim_epoch()
    append_range(journal, epoch, range(1, 6))

    with pytest.raises(JournalCorrupt):
        journal.append(epoch, bad_seq, b"overwrite attempt")

    assert list(journal.read_after(0)) == [(seq, payload(seq)) for seq in range(1, 6)]
    assert journal.last_seq() == 5


def test_seq_zero_is_never_a_valid_record(journal):
    epoch = journal.claim_epoch()

    with pytest.raises(JournalCorrupt):
        journal.append(epoch, 0, b"x")

    assert list(journal.read_after(0)) == []


def test_seq_covered_by_a_snapshot_cannot_be_appended(journal):
    epoch = journal.claim_epoch()
    append_range(journal, epoch, range(1, 6))
    journal.write_snapshot(epoch, 5, [b"state"])

    with pytest.raises(JournalCorrupt):
        journal.append(epoch, 5, b"again")
    journal.append(epoch, 6, b"next")

    assert list(journal.read_after(5)) == [(6, b"next")]


def test_malformed_journal_entries_are_reported_as_corrupt(journal, redis_client, key_prefix):
    epoch = journal.claim_epoch()
    journal.append(epoch, 1, b"fine")
    # An entry the journal never writes itself (non-zero id suffix).
    redis_client.xadd(journal_key(key_prefix), {b"d": b"odd"}, id="1-1")

    with pytest.raises(JournalCorrupt):
        list(journal.read_after(0))


def test_entry_without_payload_field_is_corrupt(journal, redis_client, key_prefix):
    redis_client.xadd(journal_key(key_prefix), {b"other": b"x"}, id="1-0")

    with pytest.raises(JournalCorrupt):
        list(journal.read_after(0))


# --- epoch fencing ---------------------------------------------------------


def test_each_claim_returns_a_higher_epoch(journal):
    epochs = [journal.claim_epoch() for _ in range(3)]

    assert epochs == sorted(set(epochs))


def test_second_claim_fences_the_first_writer(journal, redis_client, key_prefix):
    old_epoch = journal.claim_epoch()
    journal.append(old_epoch, 1, b"before takeover")
    successor = ShardJournal(redis_client, SHARD_INDEX, key_prefix=key_prefix)
    new_epoch = successor.claim_epoch()

    with pytest.raises(FencedError):
        journal.append(old_epoch, 2, b"zombie write")
    successor.append(new_epoch, 2, b"after takeover")

    assert list(journal.read_after(0)) == [(1, b"before takeover"), (2, b"after takeover")]


def test_append_before_any_claim_is_fenced(journal):
    with pytest.raises(FencedError):
        journal.append(1, 1, b"x")

    assert list(journal.read_after(0)) == []


def test_journal_errors_share_one_base_class():
    for error_class in (FencedError, JournalUnavailable, JournalCorrupt):
        assert issubclass(error_class, JournalError)


# --- snapshots -------------------------------------------------------------


def test_load_snapshot_without_any_snapshot_is_none(journal):
    assert journal.load_snapshot() is None


def test_snapshot_keeps_only_the_journal_tail(journal, redis_client, key_prefix):
    epoch = journal.claim_epoch()
    append_range(journal, epoch, range(1, 11))
    chunks = [b"state part one", b"state part two", b""]

    journal.write_snapshot(epoch, 6, chunks)

    assert journal.load_snapshot() == (6, chunks)
    assert redis_client.xlen(journal_key(key_prefix)) == 4
    assert list(journal.read_after(6)) == [(seq, payload(seq)) for seq in range(7, 11)]
    assert journal.last_seq() == 10


def test_last_seq_falls_back_to_the_snapshot_when_the_journal_is_trimmed(journal):
    epoch = journal.claim_epoch()
    append_range(journal, epoch, range(1, 8))
    journal.write_snapshot(epoch, 7, [b"all state"])

    assert journal.last_seq() == 7
    assert journal.describe()["journal_length"] == 0


def test_reading_from_before_the_snapshot_refuses_to_skip_records(journal):
    epoch = journal.claim_epoch()
    append_range(journal, epoch, range(1, 11))
    journal.write_snapshot(epoch, 6, [b"state"])

    with pytest.raises(JournalCorrupt):
        list(journal.read_after(2))


def test_new_snapshot_replaces_and_deletes_the_previous_one(journal, redis_client, key_prefix):
    epoch = journal.claim_epoch()
    append_range(journal, epoch, range(1, 11))
    journal.write_snapshot(epoch, 4, [b"old-1", b"old-2", b"old-3"])

    journal.write_snapshot(epoch, 8, [b"new-1", b"new-2"])

    assert journal.load_snapshot() == (8, [b"new-1", b"new-2"])
    assert len(snapshot_chunk_keys(redis_client, key_prefix)) == 2


def test_published_chunks_do_not_expire(journal, redis_client, key_prefix):
    epoch = journal.claim_epoch()
    journal.append(epoch, 1, b"x")
    journal.write_snapshot(epoch, 1, [b"a", b"b"])

    ttls = [redis_client.ttl(key) for key in snapshot_chunk_keys(redis_client, key_prefix)]

    assert ttls == [-1, -1]


def test_empty_snapshot_round_trips(journal):
    epoch = journal.claim_epoch()

    journal.write_snapshot(epoch, 0, [])

    assert journal.load_snapshot() == (0, [])


def test_large_multi_chunk_snapshot_round_trips(journal):
    epoch = journal.claim_epoch()
    append_range(journal, epoch, range(1, 3))
    generator = random.Random(20240601)
    chunks = [generator.randbytes(100 * 1024) for _ in range(50)]

    journal.write_snapshot(epoch, 2, iter(chunks))

    assert journal.load_snapshot() == (2, chunks)


def test_fenced_writer_snapshot_does_not_replace_the_pointer(
    journal, redis_client, key_prefix
):
    old_epoch = journal.claim_epoch()
    append_range(journal, old_epoch, range(1, 6))
    journal.write_snapshot(old_epoch, 3, [b"current"])
    successor = ShardJournal(redis_client, SHARD_INDEX, key_prefix=key_prefix)
    successor.claim_epoch()

    with pytest.raises(FencedError):
        journal.write_snapshot(old_epoch, 5, [b"stale-1", b"stale-2"])

    assert journal.load_snapshot() == (3, [b"current"])
    assert len(snapshot_chunk_keys(redis_client, key_prefix)) == 1
    assert [seq for seq, _ in journal.read_after(3)] == [4, 5]


def test_writer_fenced_while_uploading_leaves_no_chunks(journal, redis_client, key_prefix):
    old_epoch = journal.claim_epoch()
    append_range(journal, old_epoch, range(1, 6))
    successor = ShardJournal(redis_client, SHARD_INDEX, key_prefix=key_prefix)

    def chunks_with_takeover_midway() -> Iterator[bytes]:
        yield from (b"part-%d" % index for index in range(40))
        # A new incarnation claims the shard after the upload passed the
        # early epoch check but before the pointer flip.
        successor.claim_epoch()

    with pytest.raises(FencedError):
        journal.write_snapshot(old_epoch, 5, chunks_with_takeover_midway())

    assert journal.load_snapshot() is None
    assert snapshot_chunk_keys(redis_client, key_prefix) == []
    assert journal.describe()["journal_length"] == 5


def test_older_snapshot_does_not_replace_a_newer_one(journal, redis_client, key_prefix):
    epoch = journal.claim_epoch()
    append_range(journal, epoch, range(1, 11))
    journal.write_snapshot(epoch, 8, [b"newer"])

    journal.write_snapshot(epoch, 5, [b"older-1", b"older-2"])

    assert journal.load_snapshot() == (8, [b"newer"])
    assert len(snapshot_chunk_keys(redis_client, key_prefix)) == 1
    assert [seq for seq, _ in journal.read_after(8)] == [9, 10]


def test_snapshot_beyond_the_journal_is_rejected(journal, redis_client, key_prefix):
    epoch = journal.claim_epoch()
    append_range(journal, epoch, range(1, 4))

    with pytest.raises(JournalCorrupt):
        journal.write_snapshot(epoch, 7, [b"state nobody journaled"])

    assert journal.load_snapshot() is None
    assert snapshot_chunk_keys(redis_client, key_prefix) == []
    assert journal.describe()["journal_length"] == 3


def test_failing_chunk_source_leaves_nothing_behind(journal, redis_client, key_prefix):
    epoch = journal.claim_epoch()
    append_range(journal, epoch, range(1, 4))

    def broken_chunks() -> Iterator[bytes]:
        yield from (b"chunk" for _ in range(20))
        raise RuntimeError("serialiser failed")

    with pytest.raises(RuntimeError, match="serialiser failed"):
        journal.write_snapshot(epoch, 3, broken_chunks())

    assert journal.load_snapshot() is None
    assert snapshot_chunk_keys(redis_client, key_prefix) == []


def test_describe_reports_epoch_seqs_and_length(journal):
    epoch = journal.claim_epoch()
    append_range(journal, epoch, range(1, 6))
    journal.write_snapshot(epoch, 2, [b"a", b"b"])

    description = journal.describe()

    assert description["epoch"] == epoch
    assert description["last_seq"] == 5
    assert description["snapshot_seq"] == 2
    assert description["journal_length"] == 3


def test_decoding_clients_are_rejected(redis_server, key_prefix):
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        with pytest.raises(ValueError):
            ShardJournal(client, 0, key_prefix=key_prefix)
    finally:
        client.close()


# --- Redis unreachable -----------------------------------------------------

# Socket timeouts for clients pointed at dead endpoints: short so failing
# tests stay quick, and retries are disabled so one attempt decides.
UNREACHABLE_SOCKET_TIMEOUT_S = 0.2


def client_for(port: int) -> redis.Redis:
    """A client to ``port`` on localhost that fails fast and never retries."""
    return redis.Redis(
        host="127.0.0.1",
        port=port,
        socket_timeout=UNREACHABLE_SOCKET_TIMEOUT_S,
        socket_connect_timeout=UNREACHABLE_SOCKET_TIMEOUT_S,
        retry=Retry(NoBackoff(), 0),
    )


def closed_port() -> int:
    """A port on localhost with nothing listening on it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


OPERATIONS = {
    "claim_epoch": lambda journal: journal.claim_epoch(),
    "append": lambda journal: journal.append(1, 1, b"x"),
    "last_seq": lambda journal: journal.last_seq(),
    "read_after": lambda journal: list(journal.read_after(0)),
    "write_snapshot": lambda journal: journal.write_snapshot(1, 1, [b"x"]),
    "load_snapshot": lambda journal: journal.load_snapshot(),
    "describe": lambda journal: journal.describe(),
}


@pytest.mark.parametrize("operation", OPERATIONS.values(), ids=OPERATIONS.keys())
def test_refused_connection_is_unavailable(operation):
    journal = ShardJournal(client_for(closed_port()), 0)

    with pytest.raises(JournalUnavailable) as raised:
        operation(journal)

    assert isinstance(raised.value.__cause__, redis.exceptions.ConnectionError)


def test_silent_server_is_unavailable_after_timeout():
    # Accepts connections (the kernel completes the handshake) but never replies.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        journal = ShardJournal(client_for(silent.getsockname()[1]), 0)

        with pytest.raises(JournalUnavailable) as raised:
            journal.append(1, 1, b"x")

    assert isinstance(
        raised.value.__cause__,
        (redis.exceptions.TimeoutError, redis.exceptions.ConnectionError),
    )
