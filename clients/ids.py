"""Request ids: 128-bit, sortable by creation time, made with the standard library."""

from __future__ import annotations

import secrets
import time

# Crockford's base32 alphabet: no I, L, O or U, so ids survive being read aloud or
# retyped from a receipt without ambiguity.
CROCKFORD_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

# 48 bits of milliseconds last until the year 10889; 80 random bits make a collision
# between two ids created in the same millisecond practically impossible.
TIMESTAMP_BITS = 48
RANDOM_BITS = 80

# 128 bits in 5-bit base32 digits, rounded up.
REQUEST_ID_LENGTH = 26


def new_request_id(*, now_ms: int | None = None) -> str:
    """A new 26-character request id (ULID layout: 48-bit millisecond timestamp, then
    80 random bits, Crockford base32).

    Ids made later sort after ids made earlier (to the millisecond), which keeps
    server-side logs and GetOperation lookups easy to correlate. ``now_ms`` fixes the
    timestamp part (for tests); the random part is always fresh.
    """
    milliseconds = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    if not 0 <= milliseconds < 1 << TIMESTAMP_BITS:
        raise ValueError(f"timestamp {milliseconds} ms does not fit in {TIMESTAMP_BITS} bits")
    value = (milliseconds << RANDOM_BITS) | secrets.randbits(RANDOM_BITS)
    digits = []
    for _ in range(REQUEST_ID_LENGTH):
        digits.append(CROCKFORD_ALPHABET[value & 0x1F])
        value >>= 5
    return "".join(reversed(digits))


def request_id_time_ms(request_id: str) -> int:
    """The creation time (epoch milliseconds) encoded in an id from ``new_request_id``."""
    if len(request_id) != REQUEST_ID_LENGTH:
        raise ValueError(f"not a {REQUEST_ID_LENGTH}-character request id: {request_id!r}")
    value = 0
    for character in request_id.upper():
        digit = CROCKFORD_ALPHABET.find(character)
        if digit < 0:
            raise ValueError(f"not a Crockford base32 request id: {request_id!r}")
        value = (value << 5) | digit
    return value >> RANDOM_BITS
