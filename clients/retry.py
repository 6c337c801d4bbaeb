"""When and how long to wait before sending a failed call again."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable

import grpc

# The codes that mean "try again later": the server refused before doing anything
# (RESOURCE_EXHAUSTED) or the outcome is unknown (UNAVAILABLE, DEADLINE_EXCEEDED).
# Retrying a mutation is safe because it keeps its request_id, which the server
# applies at most once.
RETRYABLE_CODES = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED}
)


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, bounded in attempts and in total time.

    Attempt ``n`` (1-based) that fails with a retryable code is followed by a wait
    drawn uniformly from ``[0, min(max_backoff, initial_backoff * multiplier**(n-1))]``
    ("full jitter": many clients hit by the same outage spread out instead of
    retrying in lockstep). The defaults ride out a shard restart (a few seconds)
    without keeping a till waiting for more than half a minute.
    """

    max_attempts: int = 5
    """Attempts in all, the first included; 1 disables retries."""
    initial_backoff: float = 0.1
    """Seconds: the cap of the first wait."""
    max_backoff: float = 5.0
    """Seconds: no single wait is longer."""
    multiplier: float = 2.0
    """Each wait's cap is this much the previous one's."""
    total_timeout: float = 30.0
    """Seconds from the first attempt after which no new attempt starts; the deadline
    of every retry is also cut to what is left of it."""
    retryable_codes: frozenset[grpc.StatusCode] = RETRYABLE_CODES
    """The gRPC codes that are retried."""

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.initial_backoff < 0 or self.max_backoff < 0 or self.multiplier < 1 or self.total_timeout <= 0:
            raise ValueError("backoffs must be >= 0, multiplier >= 1 and total_timeout > 0")

    def backoff_cap(self, attempt: int) -> float:
        """The longest wait after failed attempt ``attempt`` (1-based)."""
        return min(self.max_backoff, self.initial_backoff * self.multiplier ** (attempt - 1))

    def next_delay(
        self,
        code: grpc.StatusCode,
        attempt: int,
        remaining: float,
        *,
        uniform: Callable[[float, float], float] = random.uniform,
    ) -> float | None:
        """Seconds to wait before the next attempt, or None to give up: the code is not
        retryable, the attempts are used up, or the wait would outlast ``remaining``
        seconds of the total budget."""
        if code not in self.retryable_codes or attempt >= self.max_attempts:
            return None
        delay = uniform(0.0, self.backoff_cap(attempt))
        if delay >= remaining:
            return None
        return delay


NO_RETRIES = RetryPolicy(max_attempts=1)
"""A policy that never retries."""
