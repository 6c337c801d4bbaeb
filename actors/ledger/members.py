"""A shard's members, most of them kept encoded.

As Python objects a member (its lots, kept purchases, stored outcomes and history)
costs about five times its msgpack encoding, and most members of a large shard are
idle at any moment. So the store keeps members encoded: one ``bytes`` object each,
which the cyclic GC does not track and a snapshot writes as it is. A member is
decoded when the ledger touches it and stays decoded ("hot") until the end of the
batch; ``settle`` then encodes the longest-hot members beyond ``hot_limit`` again.

The ledger mutates hot members in place, so a member is encoded only between
batches (``settle``), never while a command holds a reference to it.

Cold members are also compressed, with zstd and a dictionary trained on this
shard's own members once ``compress_after`` of them are cold (a member's msgpack is
about 500 bytes, too small for a compressor without a dictionary: zstd gets 316
bytes alone, 175 with a 64 KB dictionary; stdlib zlib is four times slower and gets
284). The dictionary is kept for the shard's lifetime and travels in its snapshots.
Compressing costs about 3.5 us when a member goes cold and decompressing about 2 us
when it is touched again; members that stay hot pay nothing.

A cold entry is either a member's msgpack (an array, so its first byte is 0x9X or
0xDC) or ``b"Z" + dictionary id + zstd frame``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import msgspec
import zstandard

from loyalty.actors.ledger.state import Member

HOT_MEMBERS_DEFAULT = 10_000
"""Members kept decoded between batches: enough for every member of the largest
Batch (10,000 items) to stay decoded through it, and about 30 MB of objects."""

COMPRESS_AFTER_DEFAULT = 5_000
"""Train the compression dictionary once this many members are cold (0: never
compress). Below this a shard's encoded members take a few MB at most."""

DICTIONARY_SAMPLES = 2_000
"""Cold members the dictionary is trained on (about 0.1 s, once per shard)."""

DICTIONARY_BYTES = 64 * 1024
COMPRESSION_LEVEL = 1
_COMPRESSED = ord("Z")  # a msgpack positive fixint: never the first byte of a Member

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(Member).decode


class MemberStore:
    """Members by id, as a dict-like object: ``get``, ``[]``, ``[] =``, ``in``,
    ``len`` and iteration. Reading a cold member decodes it and makes it hot."""

    def __init__(self, hot_limit: int = HOT_MEMBERS_DEFAULT, compress_after: int = COMPRESS_AFTER_DEFAULT) -> None:
        if hot_limit < 0 or compress_after < 0:
            raise ValueError("hot_limit and compress_after must be >= 0")
        self.hot_limit = hot_limit
        self.compress_after = compress_after
        self._hot: dict[str, Member] = {}  # insertion order: oldest decoded first
        self._cold: dict[str, bytes] = {}
        self._dictionaries: dict[int, bytes] = {}
        self._decompressors: dict[int, zstandard.ZstdDecompressor] = {}
        self._compressor: zstandard.ZstdCompressor | None = None
        self._prefix = b""  # b"Z" + the id of the dictionary new entries are compressed with

    # ------------------------------------------------------------------ dict-like

    def get(self, member_id: str, default: Member | None = None) -> Member | None:
        """The member (decoded, now hot), or ``default`` when there is none."""
        member = self._hot.get(member_id)
        if member is not None:
            return member
        encoded = self._cold.pop(member_id, None)
        if encoded is None:
            return default
        member = self._hot[member_id] = _decode(self._raw(encoded))
        return member

    def __getitem__(self, member_id: str) -> Member:
        member = self._hot.get(member_id)  # the usual case (every event of a live batch)
        if member is None:
            member = self.get(member_id)
            if member is None:
                raise KeyError(member_id)
        return member

    def __setitem__(self, member_id: str, member: Member) -> None:
        self._cold.pop(member_id, None)
        self._hot[member_id] = member

    def __contains__(self, member_id: object) -> bool:
        return member_id in self._hot or member_id in self._cold

    def __len__(self) -> int:
        return len(self._hot) + len(self._cold)

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def keys(self) -> list[str]:
        """Every member id (hot ones first)."""
        return [*self._hot, *self._cold]

    def values(self) -> Iterator[Member]:
        """Every member, decoded (for tests and diagnostics: cold members are decoded
        one by one and left cold; mutating one of those changes nothing)."""
        for _member_id, member in self.items():
            yield member

    def items(self) -> Iterator[tuple[str, Member]]:
        """(member id, member) for every member; see ``values``."""
        yield from list(self._hot.items())
        for member_id, encoded in list(self._cold.items()):
            yield member_id, _decode(self._raw(encoded))

    # ------------------------------------------------------------------ encoded form

    @property
    def hot_count(self) -> int:
        """How many members are decoded right now."""
        return len(self._hot)

    def settle(self) -> int:
        """Encode the longest-hot members beyond ``hot_limit``; returns how many. Call
        between batches only (the ledger holds references to hot members during one)."""
        excess = len(self._hot) - self.hot_limit
        if excess <= 0:
            return 0
        hot, cold, pack = self._hot, self._cold, self._pack
        for member_id in list(itertools.islice(hot, excess)):
            cold[member_id] = pack(hot.pop(member_id))
        if self._compressor is None and 0 < self.compress_after <= len(cold):
            self._train()
        return excess

    def raw_items(self) -> Iterator[tuple[str, bytes]]:
        """(member id, msgpack of the member) for every member, uncompressed: equal
        states give equal pairs whatever was hot, cold or compressed (for tests)."""
        for member_id, member in list(self._hot.items()):
            yield member_id, _encode(member)
        for member_id, encoded in list(self._cold.items()):
            yield member_id, self._raw(encoded)

    def frozen(self) -> tuple[dict[str, bytes], dict[int, bytes]]:
        """Every member's cold entry and the compression dictionaries, as new dicts
        that later batches do not change: cold entries are immutable bytes, so this
        costs one dict copy plus encoding the hot members (a consistent view for a
        snapshot written in the background)."""
        frozen = dict(self._cold)
        pack = self._pack
        for member_id, member in self._hot.items():
            frozen[member_id] = pack(member)
        return frozen, dict(self._dictionaries)

    @property
    def dictionaries(self) -> dict[int, bytes]:
        """The compression dictionaries by id (a snapshot needs them to be read)."""
        return dict(self._dictionaries)

    def load_encoded(self, members: dict[str, bytes], dictionaries: dict[int, bytes] | None = None) -> None:
        """Add cold entries (a snapshot's) and the dictionaries they were compressed
        with, replacing any member with the same id."""
        for dictionary_id, dictionary in (dictionaries or {}).items():
            self._add_dictionary(dictionary_id, dictionary)
        for member_id in members.keys() & self._hot.keys():
            del self._hot[member_id]
        self._cold.update(members)
        if self._compressor is None and 0 < self.compress_after <= len(self._cold):
            self._train()

    # ------------------------------------------------------------------ compression

    def _pack(self, member: Member) -> bytes:
        compressor = self._compressor
        if compressor is None:
            return _encode(member)
        return self._prefix + compressor.compress(_encode(member))

    def _raw(self, encoded: bytes) -> bytes:
        if encoded[0] != _COMPRESSED:
            return encoded
        return self._decompressors[encoded[1]].decompress(encoded[2:])

    def _add_dictionary(self, dictionary_id: int, dictionary: bytes) -> None:
        """Use this dictionary for reading, and from now on for compressing (the
        newest id wins)."""
        if not 0 < dictionary_id < 256:
            raise ValueError(f"dictionary id {dictionary_id} is out of range")
        data = zstandard.ZstdCompressionDict(dictionary)
        self._dictionaries[dictionary_id] = dictionary
        self._decompressors[dictionary_id] = zstandard.ZstdDecompressor(dict_data=data)
        if dictionary_id == max(self._dictionaries):
            self._compressor = zstandard.ZstdCompressor(
                level=COMPRESSION_LEVEL, dict_data=data, write_checksum=False, write_dict_id=False
            )
            self._prefix = bytes((_COMPRESSED, dictionary_id))

    def _train(self) -> None:
        """Train a dictionary on cold members and compress every cold member with it.
        Runs once per shard (at ``compress_after`` cold members, about 0.1 s); if the
        members are too alike or too few to train on, again at twice as many."""
        samples = [self._raw(encoded) for encoded in list(self._cold.values())[:DICTIONARY_SAMPLES]]
        try:
            trained = zstandard.train_dictionary(DICTIONARY_BYTES, samples)
        except zstandard.ZstdError:
            self.compress_after = 2 * max(self.compress_after, len(self._cold))
            return
        self._add_dictionary(max(self._dictionaries, default=0) + 1, trained.as_bytes())
        cold, prefix, compress, raw = self._cold, self._prefix, self._compressor.compress, self._raw
        for member_id, encoded in cold.items():
            cold[member_id] = prefix + compress(raw(encoded))
