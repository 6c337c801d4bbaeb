"""A shard's in-memory state: members, their lots, holds, purchases and outcomes.

These are mutable msgspec Structs (array_like, gc=False for memory and speed; they
hold no reference cycles) so a snapshot is one msgspec encode. Only the evolve
functions of ``loyalty.actors.ledger.ops`` mutate them, each applying one event.
"""

from __future__ import annotations

import enum

import msgspec

from loyalty.actors.ledger.outcomes import TransactionView


class TransactionKind(enum.IntEnum):
    """Kinds of history entries; the numbers equal loyalty.v1.TransactionKind."""

    ENROLL = 1
    EARN = 2
    REDEEM = 3
    RESERVE = 4
    CAPTURE = 5
    RELEASE = 6
    REVERSE = 7
    ADJUST = 8
    EXPIRE = 9
    RESERVATION_EXPIRED = 10


class MemberStatus(enum.IntEnum):
    """Numbers equal loyalty.v1.MemberStatus."""

    ACTIVE = 1


class Lot(msgspec.Struct, array_like=True, gc=False):
    """Points earned together, expiring together. ``points`` excludes what is reserved."""

    lot_id: int
    points: int
    expires_at_ms: int  # 0: never
    pending_until_ms: int  # spendable from this time on


class Hold(msgspec.Struct, array_like=True, gc=False):
    """Points a reservation took from one lot, with that lot's expiry, so releasing
    puts them back exactly where they came from."""

    lot_id: int
    points: int
    expires_at_ms: int


class Reservation(msgspec.Struct, array_like=True, gc=False):
    """An open hold on points."""

    reservation_id: str
    points: int
    expires_at_ms: int
    holds: list[Hold]


class EarnLine(msgspec.Struct, array_like=True, gc=False):
    """What one purchase line earned and how much of it came back."""

    sku: str
    quantity: int
    points: int
    returned_quantity: int = 0
    returned_points: int = 0


class EarnRecord(msgspec.Struct, array_like=True, gc=False):
    """A purchase kept for returns until its points would have expired."""

    lot_id: int
    kept_until_ms: int  # 0: forever
    lines: bytes
    """msgpack of list[EarnLine]. Kept encoded because most purchases are never
    returned: as objects, kept purchases were a third of a member's memory."""


class StoredOutcome(msgspec.Struct, array_like=True, gc=False):
    """A request's outcome kept for replays: fingerprint of the payload, when, and the
    encoded Outcome (bytes: compact, and returned to callers without re-encoding)."""

    fingerprint: int
    at_ms: int
    outcome: bytes


class Member(msgspec.Struct, array_like=True, gc=False):
    """Everything the ledger knows about one member."""

    member_id: str
    enrolled_at_ms: int
    attributes: dict[str, str]
    status: int = MemberStatus.ACTIVE
    lots: list[Lot] = []  # sorted by (expires_at_ms or +inf), then lot_id
    reservations: dict[str, Reservation] = {}
    closed_reservations: dict[str, int] = {}  # id -> closed at, kept for retention
    earned: int = 0
    adjusted_in: int = 0
    redeemed: int = 0
    expired: int = 0
    reversed: int = 0
    adjusted_out: int = 0
    debt: int = 0
    reserved: int = 0
    next_lot_id: int = 1
    next_reservation_number: int = 1
    next_transaction_seq: int = 1
    earns: dict[str, EarnRecord] = {}
    outcomes: dict[str, StoredOutcome] = {}
    transactions: list[TransactionView] = []  # oldest first, bounded
    held: int = 0
    """Sum of lots[].points, kept as the lots change (balance views are O(1))."""
    pending_until_max_ms: int = 0
    """Latest pending_until_ms of any lot ever added: at or before now, nothing is pending."""
    counters: dict[str, tuple[int, int]] | None = None
    """Cap counters of rules this member earned from: "rule_id/d|w|m|l" -> (period key,
    points granted in that period). None (8 bytes) for members without capped earns."""
