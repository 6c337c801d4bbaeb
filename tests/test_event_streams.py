"""loyalty.v1.EventService over real gRPC, real Ray shards and a real Redis: live
events with balances, filters, resuming without repeats or losses, slow streams
ended while others go on, and the answers to bad cursors and roles."""

from __future__ import annotations

import queue
import threading
import time
import uuid

import grpc
import pytest

from loyalty.actors.routing import shard_of
from loyalty.clients import error_details
from loyalty.server.events import tailer as tailing
from loyalty.server.events.cursors import decode_cursor
from loyalty.v1 import events_pb2 as epb
from loyalty.v1 import events_pb2_grpc
from loyalty.v1 import loyalty_pb2 as pb
from loyalty.v1 import loyalty_pb2_grpc

SHARDS = 2  # the conftest server's
DEADLINE_S = 30.0
"""How long a test waits for an event before it fails."""


class Reader:
    """Reads one stream in a thread; ``until`` waits (with a deadline) for an event."""

    def __init__(self, call) -> None:
        self.call = call
        call.initial_metadata()  # the server subscribed: every event from now reaches it
        self.events: list[epb.Event] = []
        self.error: grpc.RpcError | None = None
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
                self.error = item
                raise AssertionError(f"the stream ended: {item.code()} {item.details()}")
            self.events.append(item)
        return self.events

    def close(self) -> None:
        self.call.cancel()


@pytest.fixture
def events(loyalty_server):
    with grpc.insecure_channel(loyalty_server.target) as channel:
        yield events_pb2_grpc.EventServiceStub(channel)


@pytest.fixture
def open_stream(events):
    readers = []

    def start(method: str, request) -> Reader:
        reader = Reader(getattr(events, method)(request, timeout=120))
        readers.append(reader)
        return reader

    yield start
    for reader in readers:
        reader.close()


def purchase(amount_minor: int) -> pb.Purchase:
    return pb.Purchase(
        channel="pos", store_id="s1", currency="EUR",
        lines=[pb.PurchaseLine(sku="sku", category="food", quantity=1, amount_minor=amount_minor)],
    )  # fmt: skip


def enroll(stub, member: str) -> None:
    stub.EnrollMember(pb.EnrollMemberRequest(member_id=member, request_id="enroll"))


def earn(stub, member: str, request_id: str, amount_minor: int) -> pb.EarnResponse:
    return stub.Earn(pb.EarnRequest(member_id=member, request_id=request_id, purchase=purchase(amount_minor)))


def kind_of(event: epb.Event) -> str:
    return event.WhichOneof("kind")


def of(member: str, kind: str | None = None, request_id: str | None = None):
    def matches(event: epb.Event) -> bool:
        return (
            event.member_id == member
            and (kind is None or kind_of(event) == kind)
            and (request_id is None or event.request_id == request_id)
        )

    return matches


def same_shard_member(member: str) -> str:
    """Another member id on the same shard as ``member``."""
    while True:
        other = f"m-{uuid.uuid4().hex[:12]}"
        if shard_of(other, SHARDS) == shard_of(member, SHARDS):
            return other


def error_of(error: grpc.RpcError) -> tuple[grpc.StatusCode, str, list[str]]:
    details = error_details(error)
    return details.code, details.reason, [field for field, _ in details.field_violations]


# ----------------------------------------------------------------------------- live


def test_live_events_follow_earn_and_redeem_with_their_balances(stub, open_stream, member_id):
    reader = open_stream("StreamEvents", epb.StreamEventsRequest())
    enroll(stub, member_id)
    earned = earn(stub, member_id, "p1", 12_345)
    stub.Redeem(pb.RedeemRequest(member_id=member_id, request_id="r1", points=100))
    mine = [event for event in reader.until(of(member_id, "redeemed")) if event.member_id == member_id]
    assert [kind_of(event) for event in mine] == ["enrolled", "earned", "redeemed"]
    assert mine[1].earned.points == earned.points and mine[1].request_id == "p1"
    assert mine[1].balance.available == earned.balance.available == earned.points
    assert mine[2].redeemed.points == 100 and mine[2].request_id == "r1"
    balance = stub.GetBalance(pb.GetBalanceRequest(member_id=member_id))
    assert mine[2].balance.available == balance.available == earned.points - 100
    assert len({event.cursor for event in mine}) == 3


def test_kinds_filter_keeps_only_those_kinds(stub, open_stream, member_id):
    reader = open_stream("StreamEvents", epb.StreamEventsRequest(kinds=[epb.EVENT_KIND_REDEEMED]))
    enroll(stub, member_id)
    earn(stub, member_id, "p1", 10_000)
    stub.Redeem(pb.RedeemRequest(member_id=member_id, request_id="r1", points=10))
    stub.Redeem(pb.RedeemRequest(member_id=member_id, request_id="r2", points=20))
    received = reader.until(of(member_id, request_id="r2"))
    assert {kind_of(event) for event in received} == {"redeemed"}
    assert [event.redeemed.points for event in received if event.member_id == member_id] == [10, 20]


def test_watch_member_sees_only_that_member(stub, open_stream, member_id):
    neighbour = same_shard_member(member_id)
    reader = open_stream("WatchMember", epb.WatchMemberRequest(member_id=member_id))
    enroll(stub, neighbour)
    earn(stub, neighbour, "p1", 5_000)
    enroll(stub, member_id)
    earn(stub, member_id, "p1", 7_000)
    received = reader.until(of(member_id, "earned"))
    assert [(event.member_id, kind_of(event)) for event in received] == [
        (member_id, "enrolled"),
        (member_id, "earned"),
    ]


# ----------------------------------------------------------------------------- resume


def last_cursors(received: list[epb.Event]) -> list[str]:
    """The client's side of resuming: the last cursor seen on each shard."""
    by_shard = {}
    for event in received:
        by_shard[decode_cursor(event.cursor).shard] = event.cursor
    return list(by_shard.values())


def test_resume_after_the_last_cursor_repeats_nothing_and_loses_nothing(stub, open_stream, member_id):
    enroll(stub, member_id)
    first = open_stream("StreamEvents", epb.StreamEventsRequest())
    earn(stub, member_id, "p1", 1_000)
    seen = list(first.until(of(member_id, request_id="p1")))
    first.close()
    earn(stub, member_id, "p2", 2_000)  # while disconnected
    earn(stub, member_id, "p3", 3_000)
    second = open_stream("StreamEvents", epb.StreamEventsRequest(after_cursors=last_cursors(seen)))
    earn(stub, member_id, "p4", 4_000)  # after reconnecting: live
    resumed = second.until(of(member_id, request_id="p4"))
    assert [event.request_id for event in resumed if event.member_id == member_id] == ["p2", "p3", "p4"]
    assert not {event.cursor for event in seen} & {event.cursor for event in resumed}
    cursors = [event.cursor for event in resumed if decode_cursor(event.cursor).shard == shard_of(member_id, SHARDS)]
    assert cursors == sorted(set(cursors))  # in journal order, each once


def test_watch_member_resumes_after_its_cursor(stub, open_stream, member_id):
    enroll(stub, member_id)
    first = open_stream("WatchMember", epb.WatchMemberRequest(member_id=member_id))
    earn(stub, member_id, "p1", 1_000)
    cursor = first.until(of(member_id, request_id="p1"))[-1].cursor
    first.close()
    earn(stub, member_id, "p2", 2_000)
    second = open_stream("WatchMember", epb.WatchMemberRequest(member_id=member_id, after_cursor=cursor))
    earn(stub, member_id, "p3", 3_000)
    assert [event.request_id for event in second.until(of(member_id, request_id="p3"))] == ["p2", "p3"]


# ----------------------------------------------------------------------------- slow streams


def test_a_stream_that_does_not_read_is_ended_while_another_keeps_receiving(
    stub, events, open_stream, member_id, monkeypatch
):
    monkeypatch.setattr(tailing, "SUBSCRIBER_QUEUE_EVENTS_MAX", 5)
    slow = events.StreamEvents(epb.StreamEventsRequest(), timeout=DEADLINE_S)
    slow.initial_metadata()  # subscribed; never read until the end
    fast = open_stream("WatchMember", epb.WatchMemberRequest(member_id=member_id))
    others = [f"{member_id}-{index}" for index in range(40)]
    enrolls = [pb.BatchItem(enroll_member=pb.EnrollMemberRequest(member_id=m, request_id="e")) for m in others]
    stub.Batch(pb.BatchRequest(items=enrolls))  # one record per shard of about 20 events: more than 5
    enroll(stub, member_id)
    earn(stub, member_id, "p1", 1_000)
    assert [kind_of(event) for event in fast.until(of(member_id, "earned"))] == ["enrolled", "earned"]
    with pytest.raises(grpc.RpcError) as ended:
        for _ in slow:
            pass
    code, reason, _ = error_of(ended.value)
    assert (code, reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "OVERLOADED")
    assert "resume" in ended.value.details()
    earn(stub, member_id, "p2", 1_000)  # the other stream is still open
    fast.until(of(member_id, request_id="p2"))


# ----------------------------------------------------------------------------- refusals


def test_malformed_cursors_are_invalid_arguments_naming_the_field(events, member_id):
    cases = [
        ("StreamEvents", epb.StreamEventsRequest(after_cursors=["not-a-cursor"]), "after_cursors[0]"),
        ("WatchMember", epb.WatchMemberRequest(member_id=member_id, after_cursor="1zz"), "after_cursor"),
        ("WatchMember", epb.WatchMemberRequest(member_id="has space"), "member_id"),
        ("StreamEvents", epb.StreamEventsRequest(kinds=[epb.EVENT_KIND_UNSPECIFIED]), "kinds[0]"),
    ]
    valid = "1" + "0" * 4 + "0" * 15 + "1" + "0" * 6  # shard 0, seq 1, index 0
    cases.append(("StreamEvents", epb.StreamEventsRequest(after_cursors=[valid, valid]), "after_cursors[1]"))
    for method, request, field in cases:
        with pytest.raises(grpc.RpcError) as refused:
            next(iter(getattr(events, method)(request, timeout=DEADLINE_S)))
        assert error_of(refused.value) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD", [field]), method


def test_a_cursor_the_journal_no_longer_holds_is_failed_precondition(
    stub, events, open_stream, loyalty_server, member_id
):
    reader = open_stream("WatchMember", epb.WatchMemberRequest(member_id=member_id))
    enroll(stub, member_id)
    cursor = reader.until(of(member_id, "enrolled"))[-1].cursor
    shard = decode_cursor(cursor).shard
    import ray

    ray.get(loyalty_server.server.actors[shard].snapshot.remote())  # trims the journal
    call = events.WatchMember(epb.WatchMemberRequest(member_id=member_id, after_cursor=cursor), timeout=DEADLINE_S)
    with pytest.raises(grpc.RpcError) as refused:
        next(iter(call))
    assert error_of(refused.value) == (grpc.StatusCode.FAILED_PRECONDITION, "CURSOR_EXPIRED", ["after_cursor"])


@pytest.fixture(scope="module")
def secured_events(secured_server):
    with grpc.insecure_channel(secured_server.target) as channel:
        yield events_pb2_grpc.EventServiceStub(channel), loyalty_pb2_grpc.LoyaltyServiceStub(channel), secured_server


@pytest.mark.parametrize(
    ("role", "method", "allowed"),
    [
        ("analytics", "StreamEvents", True),
        ("pos", "StreamEvents", False),
        ("ecommerce", "StreamEvents", False),
        ("ecommerce", "WatchMember", True),
        ("pos", "WatchMember", True),
        ("analytics", "WatchMember", False),
    ],
)
def test_roles(secured_events, role, method, allowed, member_id):
    events, _, server = secured_events
    request = epb.StreamEventsRequest() if method == "StreamEvents" else epb.WatchMemberRequest(member_id=member_id)
    call = getattr(events, method)(request, metadata=server.metadata(server.secrets[role]), timeout=DEADLINE_S)
    if allowed:
        call.initial_metadata()  # subscribed (a refused call ends with its status instead)
        call.cancel()
        assert call.code() == grpc.StatusCode.CANCELLED  # it was open until cancelled
    else:
        with pytest.raises(grpc.RpcError) as refused:
            next(iter(call))
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
