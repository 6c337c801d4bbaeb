"""The member store: members kept encoded between batches lose nothing, and a
snapshot taken from a frozen copy is the state at the moment it was taken."""

from __future__ import annotations

import pytest

from loyalty.actors.ledger import CompiledProgram, Program, ShardCore, codec
from loyalty.actors.ledger import commands as c
from loyalty.actors.ledger.members import MemberStore
from loyalty.actors.ledger.state import Lot, Member
from loyalty.actors.ledger.status import Status

T0 = 1_700_000_000_000


def member(member_id: str, points: int = 0) -> Member:
    return Member(member_id, T0, {}, lots=[Lot(1, points, 0, 0)] if points else [])


def test_a_cold_member_is_decoded_when_read_and_changes_to_it_are_kept():
    store = MemberStore(hot_limit=0)
    store["a"] = member("a", 10)
    assert store.settle() == 1 and store.hot_count == 0
    assert "a" in store and len(store) == 1
    loaded = store["a"]
    assert store.hot_count == 1
    loaded.lots[0].points = 25
    loaded.earned = 25
    store.settle()
    again = store.get("a")
    assert again is not loaded
    assert again.lots[0].points == 25 and again.earned == 25


def test_settle_keeps_the_most_recently_decoded_members_hot():
    store = MemberStore(hot_limit=2)
    for name in "abcd":
        store[name] = member(name)
    assert store.settle() == 2
    assert store.hot_count == 2
    assert sorted(store.keys()) == ["a", "b", "c", "d"]
    assert store.settle() == 0
    store.get("a")  # decoded again: now the newest hot member
    store.settle()
    assert store.hot_count == 2 and "a" in store._hot  # noqa: SLF001 (the point of the test)


def test_missing_members():
    store = MemberStore()
    assert store.get("nobody") is None
    assert "nobody" not in store
    with pytest.raises(KeyError):
        store["nobody"]
    with pytest.raises(ValueError):
        MemberStore(hot_limit=-1)


def test_reading_every_member_for_inspection_leaves_cold_ones_cold():
    store = MemberStore(hot_limit=0)
    for name in "abc":
        store[name] = member(name, 5)
    store.settle()
    assert {m.member_id for m in store.values()} == {"a", "b", "c"}
    assert store.hot_count == 0


def test_a_frozen_copy_does_not_see_later_changes():
    store = MemberStore(hot_limit=1)
    store["a"] = member("a", 10)
    store["b"] = member("b", 20)
    store.settle()
    frozen, dictionaries = store.frozen()
    store["a"].earned = 99
    store["b"].earned = 99
    store["c"] = member("c")
    restored = MemberStore()
    restored.load_encoded(frozen, dictionaries)
    assert sorted(restored.keys()) == ["a", "b"]
    assert restored["a"].earned == 0 and restored["b"].earned == 0


def test_loading_encoded_members_replaces_decoded_ones_with_the_same_id():
    store = MemberStore()
    store["a"] = member("a", 1)
    newer = MemberStore(hot_limit=0)
    newer["a"] = member("a", 7)
    store.load_encoded(*newer.frozen())
    assert len(store) == 1 and store["a"].lots[0].points == 7


def varied_member(index: int) -> Member:
    return Member(
        f"member-{index}", T0 + index, {"tier": "gold" if index % 3 else "silver"},
        lots=[Lot(lot, 10 * index + lot, T0 + lot, 0) for lot in range(1, 2 + index % 4)],
        earned=index * 37,
    )


def test_cold_members_are_compressed_once_enough_are_cold_and_read_back_unchanged():
    store = MemberStore(hot_limit=0, compress_after=50)
    for index in range(49):
        store[f"member-{index}"] = varied_member(index)
    store.settle()
    assert store.dictionaries == {}
    assert all(not encoded.startswith(b"Z") for _, encoded in store.frozen()[0].items())
    for index in range(49, 200):
        store[f"member-{index}"] = varied_member(index)
    store.settle()
    assert list(store.dictionaries) == [1]
    entries = dict(store.frozen()[0].items())
    assert all(encoded.startswith(b"Z\x01") for encoded in entries.values())
    raw = dict(store.raw_items())
    assert sum(map(len, entries.values())) < sum(map(len, raw.values()))
    for index in range(200):
        assert store[f"member-{index}"] == varied_member(index)
    # a store loading these entries needs the dictionary, and reads them the same
    other = MemberStore()
    other.load_encoded(*store.frozen())
    assert dict(other.raw_items()) == raw


def earns(count: int, round_number: int) -> list[c.Command]:
    return [
        c.Earn(f"m{i}", f"r{round_number}-{i}", "EUR", (c.Line(f"sku-{i % 3}", "food", 1 + i % 2, 1_000 + i),))
        for i in range(count)
    ]


@pytest.mark.parametrize(("hot_members", "compress_after"), [(0, 0), (3, 0), (0, 5), (3, 5), (10_000, 5)])
def test_a_shard_with_most_members_encoded_behaves_like_one_with_all_decoded(hot_members, compress_after, monkeypatch):
    monkeypatch.setattr(codec, "SNAPSHOT_MEMBERS_PER_CHUNK", 4)  # several member chunks
    program = CompiledProgram(Program())
    small = ShardCore(program, hot_members=hot_members, compress_after=compress_after)
    full = ShardCore(program, hot_members=10_000, compress_after=0)
    records = []
    for core in (small, full):
        core.apply_batch([c.EnrollMember(f"m{i}", f"enrol-{i}") for i in range(10)], T0)
    for round_number in range(3):
        batch = earns(10, round_number) + [c.Redeem("m1", f"spend-{round_number}", 1)]
        out_small, record = small.apply_batch(batch, T0 + 1_000 * (round_number + 1))
        out_full, _ = full.apply_batch(batch, T0 + 1_000 * (round_number + 1))
        assert out_small == out_full
        assert small.ledger.members.hot_count <= hot_members
        records.append(record)
    # a retried request is answered from the stored outcome, also from a cold member
    again, _ = small.apply_batch(earns(10, 0)[:1], T0 + 10_000)
    assert codec.decode_outcome(again[0]).status == Status.OK
    assert small.state_bytes() == full.state_bytes()

    frozen = small.snapshot_chunks()  # taken now, consumed after the next batch
    live = list(small.snapshot_chunks())
    small.apply_batch(earns(10, 9), T0 + 20_000)  # after the frozen copy was taken
    restored = ShardCore(program, hot_members=hot_members, compress_after=compress_after)
    restored.load_snapshot(list(frozen))
    reference = ShardCore(program)
    reference.load_snapshot(live)
    assert restored.state_bytes() == reference.state_bytes() != small.state_bytes()
    assert len(live) == 1 + 3  # header + 10 members in chunks of 4
    compressed = 0 < compress_after <= 10 - min(hot_members, 10)  # 10 members, some cold
    assert bool(small.ledger.members.dictionaries) == compressed


def test_loyalty_serve_refuses_a_negative_hot_members_count(capsys):
    from loyalty.server.cli import main as cli

    assert cli.main(["serve", "--port", "0", "--hot-members", "-1"]) == 2
    assert "--hot-members must be >= 0" in capsys.readouterr().err
