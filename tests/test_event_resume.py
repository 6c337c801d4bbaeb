"""Resuming event streams across failures, with real gRPC, real Ray shards and a real
Redis: a gateway stopped and started again, and a shard killed with SIGKILL while a
stream is open (Ray restarts it). Each time a reader that resumes from the last cursor
it received gets exactly the events after it: none repeated, none missing, in journal
order, with balances that match GetBalance. And a cursor the journal no longer holds
is refused as documented (FAILED_PRECONDITION, CURSOR_EXPIRED, naming the field)."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
import time
import uuid

import grpc
import pytest
import ray
import redis

from conftest import ServerThread, server_config
from loyalty.actors.routing import shard_of
from loyalty.actors.shard.journal import ShardJournal
from loyalty.clients import error_details
from loyalty.server.events.cursors import decode_cursor
from loyalty.v1 import events_pb2 as epb
from loyalty.v1 import events_pb2_grpc
from loyalty.v1 import loyalty_pb2 as pb
from loyalty.v1 import loyalty_pb2_grpc

SHARDS = 2  # server_config's default
DEADLINE_S = 60.0
"""How long a test waits for an event, or for a call to be answered through a
restart, before it fails."""
CALL_TIMEOUT_S = 10.0


class Reader:
    """Reads one stream in a thread; ``until`` waits (with a deadline) for events."""

    def __init__(self, call) -> None:
        self.call = call
        call.initial_metadata()  # subscribed: every event journaled from now reaches it
        self.events: list[epb.Event] = []
        self.ended: grpc.RpcError | None = None
        self._queue: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for event in self.call:
                self._queue.put(event)
        except grpc.RpcError as error:
            self._queue.put(error)

    def until(self, predicate) -> list[epb.Event]:
        """Every event read so far, once one satisfies ``predicate``."""
        deadline = time.monotonic() + DEADLINE_S
        while not any(predicate(event) for event in self.events):
            item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            if isinstance(item, grpc.RpcError):
                self.ended = item
                raise AssertionError(f"the stream ended: {item.code()} {item.details()}")
            self.events.append(item)
        return self.events

    def end(self) -> grpc.RpcError:
        """Wait for the stream to end; its error (the events before it are kept)."""
        deadline = time.monotonic() + DEADLINE_S
        while self.ended is None:
            item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            if isinstance(item, grpc.RpcError):
                self.ended = item
            else:
                self.events.append(item)
        return self.ended

    def close(self) -> None:
        self.call.cancel()


class Streams:
    """Opens streams on one target and closes them all at the end."""

    def __init__(self) -> None:
        self._channels: list[grpc.Channel] = []
        self._readers: list[Reader] = []

    def open(self, target: str, method: str, request) -> Reader:
        channel = grpc.insecure_channel(target)
        self._channels.append(channel)
        reader = Reader(getattr(events_pb2_grpc.EventServiceStub(channel), method)(request, timeout=300))
        self._readers.append(reader)
        return reader

    def close(self) -> None:
        for reader in self._readers:
            reader.close()
        for channel in self._channels:
            channel.close()


@pytest.fixture
def streams():
    opened = Streams()
    yield opened
    opened.close()


@pytest.fixture
def private_server(ray_session, redis_server, key_prefix):
    """A server of the test's own: its gateway is restarted and its shards killed."""
    running = ServerThread(server_config(redis_server.url, key_prefix)).start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def consumer_client(redis_server):
    client = redis.Redis.from_url(redis_server.url, socket_timeout=10.0)
    yield client
    client.close()


def purchase(amount_minor: int) -> pb.Purchase:
    return pb.Purchase(
        channel="pos", store_id="s1", currency="EUR",
        lines=[pb.PurchaseLine(sku="sku", category="food", quantity=1, amount_minor=amount_minor)],
    )  # fmt: skip


def call_until_answered(method, request):
    """Send a call until it is answered, through a shard restart: UNAVAILABLE and
    DEADLINE_EXCEEDED leave the outcome unknown, and the same request_id makes every
    retry safe."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        try:
            return method(request, timeout=CALL_TIMEOUT_S)
        except grpc.RpcError as error:
            retryable = error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
            if not retryable or time.monotonic() > deadline:
                raise


class Till:
    """Earns for members on one server, remembering every acknowledged earn."""

    def __init__(self, target: str) -> None:
        self._channel = grpc.insecure_channel(target)
        self.stub = loyalty_pb2_grpc.LoyaltyServiceStub(self._channel)
        self.acknowledged: list[tuple[str, str, int]] = []
        """(member, request_id, points) of every earn answered OK, in order."""

    def enroll(self, member: str) -> None:
        call_until_answered(self.stub.EnrollMember, pb.EnrollMemberRequest(member_id=member, request_id="enroll"))

    def earn(self, member: str, request_id: str, amount_minor: int) -> pb.EarnResponse:
        request = pb.EarnRequest(member_id=member, request_id=request_id, purchase=purchase(amount_minor))
        response = call_until_answered(self.stub.Earn, request)
        self.acknowledged.append((member, request_id, response.points))
        return response

    def balance(self, member: str) -> pb.Balance:
        return call_until_answered(self.stub.GetBalance, pb.GetBalanceRequest(member_id=member))

    def close(self) -> None:
        self._channel.close()


def of(member: str, request_id: str | None = None):
    def matches(event: epb.Event) -> bool:
        return event.member_id == member and (request_id is None or event.request_id == request_id)

    return matches


def earned_ids(events: list[epb.Event], member: str) -> list[str]:
    return [event.request_id for event in events if event.member_id == member and event.WhichOneof("kind") == "earned"]


def last_cursors(events: list[epb.Event]) -> list[str]:
    """What a reader keeps to resume: the last cursor it received from each shard."""
    by_shard: dict[int, str] = {}
    for event in events:
        by_shard[decode_cursor(event.cursor).shard] = event.cursor
    return list(by_shard.values())


def assert_in_journal_order(events: list[epb.Event]) -> None:
    """Per shard, cursors strictly increase: in order, none repeated."""
    for shard in range(SHARDS):
        cursors = [event.cursor for event in events if decode_cursor(event.cursor).shard == shard]
        assert cursors == sorted(set(cursors)), f"shard {shard}: out of order or repeated"


def error_of(error: grpc.RpcError) -> tuple[grpc.StatusCode, str, list[str]]:
    details = error_details(error)
    return details.code, details.reason, [field for field, _ in details.field_violations]


def members_on_both_shards() -> tuple[str, str]:
    """Two fresh member ids, one on each shard."""
    found: dict[int, str] = {}
    while len(found) < SHARDS:
        member = f"m-{uuid.uuid4().hex[:12]}"
        found.setdefault(shard_of(member, SHARDS), member)
    return found[0], found[1]




class WorkerGateway:
    """An extra gateway process over the server's shards (as ``--gateways`` starts
    them), on a port of its own, so a test can stop or kill it alone."""

    def __init__(self, running: ServerThread) -> None:
        self.process = subprocess.Popen(running.server.worker_command(port=0), stdout=subprocess.PIPE, text=True)
        line = self.process.stdout.readline()  # bounded: the worker exits on any start failure
        assert "ready on" in line, f"the gateway process did not start: {line!r}"
        self.target = f"127.0.0.1:{int(line.rsplit(':', 1)[1])}"

    def stop(self, signum: int) -> None:
        self.process.send_signal(signum)
        self.process.wait(timeout=DEADLINE_S)
        self.process.stdout.close()


@pytest.fixture
def worker_gateways(private_server):
    started: list[WorkerGateway] = []

    def start() -> WorkerGateway:
        started.append(WorkerGateway(private_server))
        return started[-1]

    yield start
    for worker in started:
        if worker.process.poll() is None:
            worker.stop(signal.SIGKILL)


# ----------------------------------------------------------------------------- gateway restart


def open_both(streams: Streams, target: str, member: str, watch_cursor: str = "", cursors=()) -> tuple[Reader, Reader]:
    """A WatchMember of ``member`` and a StreamEvents of everything, from those cursors."""
    watch = streams.open(target, "WatchMember", epb.WatchMemberRequest(member_id=member, after_cursor=watch_cursor))
    every = streams.open(target, "StreamEvents", epb.StreamEventsRequest(after_cursors=list(cursors)))
    return watch, every


def earn_on_both(till: Till, members: tuple[str, str], request_id: str, amount_minor: int) -> None:
    for member in members:
        till.earn(member, request_id, amount_minor)


def check_resumed(
    till: Till, members: tuple[str, str], before: list[epb.Event], watch: Reader, every: Reader, expected: list[str]
) -> None:
    """The resumed streams got exactly ``expected`` earns, in order, with balances."""
    watched = watch.until(of(members[0], expected[-1]))
    streamed = every.until(of(members[0], expected[-1])) and every.until(of(members[1], expected[-1]))
    assert [event.request_id for event in watched] == expected
    for member in members:
        assert earned_ids(streamed, member) == expected
        assert [event for event in streamed if event.member_id == member][-1].balance == till.balance(member)
    assert watched[-1].balance == till.balance(members[0])
    assert not {event.cursor for event in before} & {event.cursor for event in streamed}
    assert_in_journal_order(before + streamed)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["stopped", "killed"])
def test_streams_resumed_on_a_new_gateway_get_exactly_the_events_after_their_cursors(
    private_server, worker_gateways, streams, signum
):
    members = members_on_both_shards()
    till = Till(private_server.target)  # earns through the main gateway throughout
    for member in members:
        till.enroll(member)
    gateway = worker_gateways()
    watch, every = open_both(streams, gateway.target, members[0])
    for index in range(3):
        earn_on_both(till, members, f"before-{index}", 1_000 * (index + 1))
    watched = watch.until(of(members[0], "before-2"))
    before = every.until(of(members[0], "before-2")) and every.until(of(members[1], "before-2"))

    gateway.stop(signum)
    ended = {error_of(reader.end())[:2] for reader in (watch, every)}
    if signum == signal.SIGTERM:  # as documented: shutting down ends streams with OVERLOADED
        assert ended == {(grpc.StatusCode.RESOURCE_EXHAUSTED, "OVERLOADED")}
    else:
        assert ended == {(grpc.StatusCode.UNAVAILABLE, "")}
    for index in range(3):  # while no stream is open
        earn_on_both(till, members, f"between-{index}", 2_000 + index)

    again = worker_gateways()
    watch, every = open_both(streams, again.target, members[0], watched[-1].cursor, last_cursors(before))
    earn_on_both(till, members, "after", 4_000)  # live, after resuming
    check_resumed(till, members, before, watch, every, [f"between-{index}" for index in range(3)] + ["after"])
    till.close()


def test_after_the_whole_server_restarted_a_resume_gets_exactly_the_rest_or_is_told_the_cursor_expired(
    ray_session, redis_server, key_prefix, streams
):
    """A server stopped gracefully (as ``loyalty serve`` on SIGTERM) snapshots every
    shard, and a snapshot trims the journal up to it unless a registered journal
    consumer has not acknowledged the records yet: whether the records before the
    restart are still there depends on such consumers. Either way nothing is lost or
    repeated silently: the resumed streams get exactly the rest, or CURSOR_EXPIRED
    naming the field."""
    config = server_config(redis_server.url, key_prefix)
    members = members_on_both_shards()
    first = ServerThread(config).start()
    try:
        till = Till(first.target)
        for member in members:
            till.enroll(member)
        watch, every = open_both(streams, first.target, members[0])
        earn_on_both(till, members, "before", 1_000)
        watched = watch.until(of(members[0], "before"))
        before = every.until(of(members[0], "before")) and every.until(of(members[1], "before"))
        till.close()
    finally:
        first.stop()

    second = ServerThread(config).start()
    try:
        till = Till(second.target)
        earn_on_both(till, members, "between", 2_000)  # before any stream is open again
        watch, every = open_both(streams, second.target, members[0], watched[-1].cursor, last_cursors(before))
        earn_on_both(till, members, "after", 3_000)
        expected = ["between", "after"]
        for reader, followed in ((watch, members[:1]), (every, members)):
            try:
                for member in followed:
                    reader.until(of(member, "after"))
            except AssertionError:
                if reader.ended is None:
                    raise
                code, reason, fields = error_of(reader.ended)
                assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "CURSOR_EXPIRED")
                assert fields in (["after_cursor"], ["after_cursors[0]"], ["after_cursors[1]"])
            for member in followed:  # what did arrive is exactly the start of the rest
                received = earned_ids(reader.events, member)
                assert received == expected[: len(received)]
                assert reader.ended is not None or received == expected
        assert_in_journal_order(before + every.events)
        till.close()
    finally:
        second.stop()


# ----------------------------------------------------------------------------- shard kill -9


class EarnLoad(threading.Thread):
    """Earns for one member, one call at a time with its own request_id, retried
    through failures until answered; ``acknowledged`` in the order they were answered."""

    def __init__(self, till: Till, member: str) -> None:
        super().__init__(daemon=True)
        self.till = till
        self.member = member
        self.acknowledged: list[str] = []
        self.failure: BaseException | None = None
        self.stopping = threading.Event()
        self._progress = threading.Condition()

    def run(self) -> None:
        index = 0
        try:
            while not self.stopping.is_set():
                request_id = f"load-{index:04d}"
                self.till.earn(self.member, request_id, 1_000)
                index += 1
                with self._progress:
                    self.acknowledged.append(request_id)
                    self._progress.notify_all()
        except BaseException as error:  # reported by the test
            self.failure = error
            with self._progress:
                self._progress.notify_all()

    def wait_for_acks(self, count: int) -> None:
        """Block until ``count`` more earns were acknowledged."""
        with self._progress:
            target = len(self.acknowledged) + count
            done = self._progress.wait_for(
                lambda: len(self.acknowledged) >= target or self.failure is not None, timeout=DEADLINE_S
            )
        assert self.failure is None, self.failure
        assert done, f"only {len(self.acknowledged)} earns were acknowledged, waiting for {target}"

    def finish(self) -> list[str]:
        self.stopping.set()
        self.join(DEADLINE_S)
        assert self.failure is None, self.failure
        return list(self.acknowledged)


def test_a_shard_killed_while_a_member_is_watched_shows_each_acknowledged_earn_once_in_order(
    private_server, streams
):
    member = f"m-{uuid.uuid4().hex[:12]}"
    till = Till(private_server.target)
    till.enroll(member)
    watch = streams.open(private_server.target, "WatchMember", epb.WatchMemberRequest(member_id=member))
    every = streams.open(private_server.target, "StreamEvents", epb.StreamEventsRequest())
    load = EarnLoad(till, member)
    load.start()
    load.wait_for_acks(10)
    before_kill = watch.until(of(member, load.acknowledged[-1]))[-1].cursor
    acknowledged_before_kill = list(load.acknowledged)
    victim = private_server.server.actors[shard_of(member, SHARDS)]
    old_pid = ray.get(victim.pid.remote())
    os.kill(old_pid, signal.SIGKILL)  # Ray restarts it; the gateway sends the batch again
    load.wait_for_acks(20)
    acknowledged = load.finish()
    assert ray.get(victim.pid.remote()) != old_pid, "the shard came back as a new process"

    for reader in (watch, every):
        received = [e for e in reader.until(of(member, acknowledged[-1])) if e.member_id == member]
        assert earned_ids(received, member) == acknowledged  # each once, in the order answered
        assert received[-1].balance == till.balance(member)
        assert [e.cursor for e in received] == sorted({e.cursor for e in received})
    resumed = streams.open(
        private_server.target, "WatchMember", epb.WatchMemberRequest(member_id=member, after_cursor=before_kill)
    )
    rest = acknowledged[acknowledged.index(acknowledged_before_kill[-1]) + 1 :]
    assert earned_ids(resumed.until(of(member, acknowledged[-1])), member) == rest
    till.close()


# ----------------------------------------------------------------------------- trimmed journals


def snapshot(running: ServerThread, shard: int) -> int:
    """Snapshot one shard now; its seq. The snapshot trims the journal up to it, less
    what a registered journal consumer has not acknowledged."""
    return ray.get(running.server.actors[shard].snapshot.remote())


def trimming_snapshot(running: ServerThread, client, key_prefix: str, shard: int) -> int:
    """Snapshot one shard once every journal consumer registered there (the server's
    own, such as its webhook dispatcher) acknowledged the journal's head, so the
    snapshot trims the journal right up to it; its seq."""
    journal = ShardJournal(client, shard, key_prefix=key_prefix)
    head = journal.last_seq()
    deadline = time.monotonic() + DEADLINE_S
    while any(int(acked) < head for acked in client.hvals(journal.consumers_key)):
        assert time.monotonic() < deadline, f"the consumers of shard {shard} did not reach seq {head}"
        threading.Event().wait(0.02)  # consumers report after each commit
    return snapshot(running, shard)


def test_stream_events_from_a_trimmed_cursor_is_cursor_expired_naming_that_cursor(
    private_server, streams, consumer_client, key_prefix
):
    members = members_on_both_shards()
    till = Till(private_server.target)
    for member in members:
        till.enroll(member)
    every = streams.open(private_server.target, "StreamEvents", epb.StreamEventsRequest())
    earn_on_both(till, members, "p1", 1_000)
    cursors = last_cursors(every.until(of(members[0], "p1")) and every.until(of(members[1], "p1")))
    cursors.sort(key=lambda cursor: decode_cursor(cursor).shard)
    assert trimming_snapshot(private_server, consumer_client, key_prefix, 1) > 0  # shard 0 keeps its records
    till.earn(members[1], "p2", 1_000)

    refused = streams.open(private_server.target, "StreamEvents", epb.StreamEventsRequest(after_cursors=cursors))
    error = refused.end()
    assert error_of(error) == (grpc.StatusCode.FAILED_PRECONDITION, "CURSOR_EXPIRED", ["after_cursors[1]"])
    assert refused.events == []
    # Starting again from now, as the answer says, works.
    again = streams.open(private_server.target, "StreamEvents", epb.StreamEventsRequest())
    till.earn(members[1], "p3", 1_000)
    assert earned_ids(again.until(of(members[1], "p3")), members[1]) == ["p3"]
    till.close()


class LifetimeEarned:
    """A journal consumer with state of its own: the points one member earned, counted
    from the journal's Earned events and committed with the cursors."""

    def __init__(self, client, key_prefix: str, member: str) -> None:
        from loyalty.actors.consumers import JournalConsumer

        self.consumer = JournalConsumer(client, "lifetime-earned", SHARDS, key_prefix=key_prefix)
        self.member = member
        self.client = client
        self.total_key = self.consumer.key("earned")

    def catch_up(self) -> None:
        """Read and commit everything journaled so far."""
        from loyalty.actors.ledger.events import Earned

        while page := self.consumer.read():
            earned = sum(
                event.points
                for item in page
                for event in item.record.events
                if isinstance(event, Earned) and event.member_id == self.member
            )
            self.consumer.commit(extra=lambda pipeline: pipeline.incrby(self.total_key, earned))

    def rebuild(self, pipeline, seq: int, chunks: list[bytes]) -> None:
        """The count as of a shard snapshot: the member's lifetime points in it."""
        from loyalty.actors.ledger import CompiledProgram, Program, ShardCore

        core = ShardCore(CompiledProgram(Program()))
        core.load_snapshot(chunks)
        member = core.ledger.members.get(self.member)
        pipeline.set(self.total_key, 0 if member is None else member.earned)

    def total(self) -> int:
        return int(self.client.get(self.total_key) or 0)


def test_a_registered_consumer_holds_records_a_snapshot_would_trim_so_streams_still_resume(
    private_server, streams, consumer_client, key_prefix
):
    member = f"m-{uuid.uuid4().hex[:12]}"
    shard = shard_of(member, SHARDS)
    counter = LifetimeEarned(consumer_client, key_prefix, member)
    counter.consumer.register(start_at_head=True)
    till = Till(private_server.target)
    till.enroll(member)
    watch = streams.open(private_server.target, "WatchMember", epb.WatchMemberRequest(member_id=member))
    till.earn(member, "p1", 1_000)
    cursor = watch.until(of(member, "p1"))[-1].cursor
    till.earn(member, "p2", 2_000)
    assert snapshot(private_server, shard) > decode_cursor(cursor).seq
    till.earn(member, "p3", 3_000)

    resumed = streams.open(
        private_server.target, "WatchMember", epb.WatchMemberRequest(member_id=member, after_cursor=cursor)
    )
    assert earned_ids(resumed.until(of(member, "p3")), member) == ["p2", "p3"]

    # Once the consumer acknowledged them, the next snapshot trims them: the cursor expires.
    till.earn(member, "p4", 1_000)
    counter.catch_up()
    assert counter.total() == till.balance(member).lifetime_earned
    trimming_snapshot(private_server, consumer_client, key_prefix, shard)
    expired = streams.open(
        private_server.target, "WatchMember", epb.WatchMemberRequest(member_id=member, after_cursor=cursor)
    )
    assert error_of(expired.end()) == (grpc.StatusCode.FAILED_PRECONDITION, "CURSOR_EXPIRED", ["after_cursor"])
    till.close()


def test_a_consumer_whose_records_were_trimmed_is_told_it_lags_and_resyncs_from_the_shards_snapshot(
    private_server, consumer_client, key_prefix
):
    from loyalty.actors.consumers import ConsumerLagging

    member = f"m-{uuid.uuid4().hex[:12]}"
    shard = shard_of(member, SHARDS)
    counter = LifetimeEarned(consumer_client, key_prefix, member)
    counter.consumer.register(start_at_head=True)
    till = Till(private_server.target)
    till.enroll(member)
    till.earn(member, "p1", 1_000)
    counter.catch_up()
    assert counter.total() == till.balance(member).lifetime_earned
    cursor = counter.consumer.committed[shard]
    # Unregistered, the consumer holds nothing back (as one past CONSUMER_RETAINED_RECORDS_MAX
    # finds itself): the snapshot trims records it has not read.
    counter.consumer.unregister()
    till.earn(member, "p2", 2_000)
    till.earn(member, "p3", 3_000)
    snapshot_seq = trimming_snapshot(private_server, consumer_client, key_prefix, shard)
    assert snapshot_seq > cursor
    behind = {lag.shard: lag for lag in counter.consumer.lag()}[shard]
    assert (behind.acked_seq, behind.lag_records) == (cursor, behind.head_seq - cursor)

    with pytest.raises(ConsumerLagging) as lagging:
        counter.catch_up()
    assert (lagging.value.shard, lagging.value.cursor) == (shard, cursor)
    assert lagging.value.first_retained_seq > cursor + 1
    assert counter.consumer.delivered[shard] == cursor  # nothing of that read was delivered

    resynced = counter.consumer.resync(shard, rebuild=counter.rebuild)
    assert (resynced.from_cursor, resynced.to_seq) == (cursor, snapshot_seq)
    assert resynced.skipped_records == snapshot_seq - cursor
    assert counter.total() == till.balance(member).lifetime_earned  # rebuilt from the snapshot
    till.earn(member, "p4", 4_000)
    counter.catch_up()
    assert counter.total() == till.balance(member).lifetime_earned  # and counting on after it
    till.close()
