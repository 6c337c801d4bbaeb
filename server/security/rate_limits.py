"""Per-key token buckets: how many calls, and how many redemptions, a key may make.

Buckets live in each gateway process (no Redis round trip per call), so with N
gateway processes a key may reach N times its rate; the limits bound what one stolen
key can do, they are not billing. The clock is an argument, so tests drive it.
"""

from __future__ import annotations

import math

from loyalty.server.errors import RateLimited
from loyalty.server.security.config import Limits


class TokenBucket:
    """``burst`` tokens at most, refilled at ``rate_per_s``; a call takes ``cost``."""

    __slots__ = ("rate_per_s", "burst", "_tokens", "_updated_s")

    def __init__(self, rate_per_s: float, burst: int, now_s: float) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._tokens = float(burst)
        self._updated_s = now_s

    def take(self, cost: int, now_s: float) -> float:
        """Take ``cost`` tokens and return 0.0, or take nothing and return the seconds
        until they would be there (math.inf when cost exceeds the burst: never)."""
        elapsed_s = max(0.0, now_s - self._updated_s)  # a clock step back refills nothing
        self._tokens = min(float(self.burst), self._tokens + elapsed_s * self.rate_per_s)
        self._updated_s = now_s
        if cost <= self._tokens:
            self._tokens -= cost
            return 0.0
        if cost > self.burst:
            return math.inf
        return (cost - self._tokens) / self.rate_per_s

    def give_back(self, cost: int) -> None:
        """Return tokens taken for work that was not done."""
        self._tokens = min(float(self.burst), self._tokens + cost)


class KeyRateLimiter:
    """Two buckets per key: every call, and Redeem/Reserve operations."""

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        # key_id -> (requests bucket, redemptions bucket). Bounded by the number of
        # keys (API_KEYS_MAX): only authenticated keys get buckets.
        self._buckets: dict[str, tuple[TokenBucket, TokenBucket]] = {}

    def check(self, key_id: str, *, requests: int, redemptions: int, now_s: float) -> None:
        """Take the tokens for one call, or raise RateLimited (taking nothing from
        the redemptions bucket when the requests bucket refuses, and vice versa)."""
        buckets = self._buckets.get(key_id)
        if buckets is None:
            limits = self._limits
            buckets = (
                TokenBucket(limits.key_requests_per_s, limits.key_requests_burst, now_s),
                TokenBucket(limits.key_redemptions_per_s, limits.key_redemptions_burst, now_s),
            )
            self._buckets[key_id] = buckets
        request_bucket, redemption_bucket = buckets
        if redemptions:
            wait_s = redemption_bucket.take(redemptions, now_s)
            if wait_s:
                raise RateLimited("redemptions", wait_s, redemption_bucket.burst)
        wait_s = request_bucket.take(requests, now_s)
        if wait_s:
            if redemptions:  # give the redemption tokens back: nothing was done
                redemption_bucket.give_back(redemptions)
            raise RateLimited("requests", wait_s, request_bucket.burst)

    def keep(self, key_ids: set[str]) -> None:
        """Drop the buckets of keys not in ``key_ids`` (revoked or gone), so memory
        follows the live keys. A rotated key keeps its buckets: same key, new secret."""
        for key_id in [key_id for key_id in self._buckets if key_id not in key_ids]:
            del self._buckets[key_id]
