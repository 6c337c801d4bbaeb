"""Event cursors: the opaque string that names one public event's place in the
journals, so a reader can resume right after it.

A cursor is the format version ``1`` then, in fixed-width lowercase hex, the shard
index (4 digits), the journal seq of the record (16 digits) and the event's index
in the record's events (6 digits): 27 characters. The index counts every event of the
record, skipped ones included, so a cursor keeps naming the same event if a later
version exposes more kinds. Fixed width makes
the cursors of one shard sort, as strings, in journal order. Clients must treat them
as opaque; anything else than a cursor of this form is a FieldViolation naming the
request field it came in.
"""

from __future__ import annotations

import re

import msgspec

from loyalty.server.errors import FieldViolation

CURSOR_VERSION = "1"
SHARD_DIGITS = 4
SEQ_DIGITS = 16
INDEX_DIGITS = 6
SHARD_MAX = 16**SHARD_DIGITS - 1
"""The highest shard index a cursor can name."""
SEQ_MAX = 16**SEQ_DIGITS - 1
"""The highest journal seq a cursor can name (seqs are 64-bit)."""
INDEX_MAX = 16**INDEX_DIGITS - 1
"""The highest event index within one record (a record holds one batch's events,
at most a few per command of a 10,000-command batch)."""
CURSOR_LENGTH = len(CURSOR_VERSION) + SHARD_DIGITS + SEQ_DIGITS + INDEX_DIGITS

AFTER_CURSOR_FIELD = "after_cursor"
"""The request field readers will resume from (the default field named by errors)."""

_FORM = re.compile(f"{CURSOR_VERSION}[0-9a-f]{{{CURSOR_LENGTH - 1}}}")
_NOT_ISSUED = "is not an event cursor this server issued"


class Cursor(msgspec.Struct, frozen=True, order=True):
    """One event's place: shard, journal seq of its record, index in the record's
    events. Orders as the events of one shard do."""

    shard: int
    seq: int
    index: int


def encode_cursor(cursor: Cursor) -> str:
    """The cursor string of an event (ValueError if a part is out of range: a bug)."""
    if not (0 <= cursor.shard <= SHARD_MAX and 0 <= cursor.seq <= SEQ_MAX and 0 <= cursor.index <= INDEX_MAX):
        raise ValueError(f"cursor out of range: {cursor}")
    return f"{CURSOR_VERSION}{cursor.shard:0{SHARD_DIGITS}x}{cursor.seq:0{SEQ_DIGITS}x}{cursor.index:0{INDEX_DIGITS}x}"


def decode_cursor(text: str, field: str = AFTER_CURSOR_FIELD) -> Cursor:
    """The place a cursor string names; FieldViolation on ``field`` when it is not a
    cursor of this form (wrong length, version, or characters other than 0-9a-f)."""
    if not isinstance(text, str) or _FORM.fullmatch(text) is None:
        raise FieldViolation(field, _NOT_ISSUED)
    shard_end = 1 + SHARD_DIGITS
    seq_end = shard_end + SEQ_DIGITS
    return Cursor(int(text[1:shard_end], 16), int(text[shard_end:seq_end], 16), int(text[seq_end:], 16))
