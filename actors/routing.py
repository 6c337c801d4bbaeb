"""Members hash to a fixed number of slots; slots map to shards.

The slot count never changes (it is part of the data layout), so shards can later be
added or moved by reassigning slots rather than rehashing members.
"""

import zlib

# 4096 slots: enough to spread over hundreds of shards evenly, small enough that a
# slot table costs nothing. Changing it would move members between journals.
SLOT_COUNT = 4096


def slot_of(member_id: str) -> int:
    """The slot a member lives in (stable across processes and versions)."""
    return zlib.crc32(member_id.encode()) % SLOT_COUNT


def shard_of(member_id: str, shard_count: int) -> int:
    """The shard that owns a member, with slots dealt to shards round-robin."""
    return slot_of(member_id) % shard_count
