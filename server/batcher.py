"""Group commit for one shard: whatever arrives while a shard call is in flight
goes into the next call.

There is at most one call in flight per shard, so a sync shard actor sees batches in
submission order and every batch pays one Ray round trip and one journal append,
however many callers it serves. Under light load a batch is a single operation and
goes out at once (no timer, no added latency); under heavy load batches grow up to
SHARD_CALL_OPERATIONS_MAX. The queue is bounded: past SHARD_QUEUE_OPERATIONS_MAX,
``submit`` raises GatewayError(OVERLOADED) at once.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable

from loyalty.actors.ledger import codec
from loyalty.actors.ledger.commands import Command
from loyalty.actors.ledger.status import Status
from loyalty.server.errors import GatewayError

ShardCall = Callable[[bytes], Awaitable[bytes]]
"""Sends one encoded batch to a shard and returns its encoded outcomes."""

ErrorClassifier = Callable[[BaseException], GatewayError | None]
"""Turns a failed shard call into the GatewayError its callers get (None: re-raise)."""


class ShardBatcher:
    """The queue in front of one shard."""

    def __init__(
        self,
        call: ShardCall,
        *,
        classify_error: ErrorClassifier,
        queue_operations_max: int,
        call_operations_max: int,
    ) -> None:
        self._call = call
        self._classify_error = classify_error
        self._queue_operations_max = queue_operations_max
        self._call_operations_max = call_operations_max
        self._queue: collections.deque[tuple[Command, asyncio.Future]] = collections.deque()
        self._in_flight: asyncio.Task | None = None
        self.calls_made = 0
        """Shard calls sent so far (for metrics and tests)."""

    @property
    def queued(self) -> int:
        """Operations waiting for the next call."""
        return len(self._queue)

    def has_room(self, operations: int) -> bool:
        """Whether ``operations`` more fit in the queue."""
        return len(self._queue) + operations <= self._queue_operations_max

    def submit(self, commands: list[Command]) -> list[asyncio.Future]:
        """Queue commands; each future resolves to its Outcome (or a GatewayError)."""
        if not self.has_room(len(commands)):
            raise GatewayError(
                Status.OVERLOADED,
                f"shard queue full ({self._queue_operations_max} operations); retry with backoff",
            )
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in commands]
        self._queue.extend(zip(commands, futures, strict=True))
        if self._in_flight is None:
            self._send_next()
        return futures

    def _send_next(self) -> None:
        count = min(len(self._queue), self._call_operations_max)
        batch = [self._queue.popleft() for _ in range(count)]
        self._in_flight = asyncio.create_task(self._run(batch))

    async def _run(self, batch: list[tuple[Command, asyncio.Future]]) -> None:
        try:
            payload = codec.encode_commands([command for command, _ in batch])
            self.calls_made += 1
            outcomes = codec.decode_outcomes(await self._call(payload))
            for (_, future), outcome in zip(batch, outcomes, strict=True):
                if not future.done():
                    future.set_result(outcome)
        except Exception as error:  # every caller of the batch learns the same failure
            failure = self._classify_error(error) or error
            for _, future in batch:
                if not future.done():
                    future.set_exception(failure)
        finally:
            self._in_flight = None
            if self._queue:
                self._send_next()

    async def drain(self) -> None:
        """Wait until nothing is queued or in flight."""
        while self._in_flight is not None:
            await asyncio.shield(self._in_flight)
