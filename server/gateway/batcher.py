"""Group commit for one shard: whatever arrives while a shard call is in flight
goes into the next call.

There is at most one call in flight per shard, so the shard sees batches in
submission order and every batch pays one round trip on the shard's data channel and
one journal append, however many callers it serves. Under light load a batch is a
single operation and goes out at once (no timer, no added latency); under heavy load
batches grow up to SHARD_CALL_OPERATIONS_MAX. The queue is bounded: past SHARD_QUEUE_OPERATIONS_MAX,
submitting raises GatewayError(OVERLOADED) at once.

The queue holds groups of commands submitted together (one unary call's command, or
the commands of one Batch for this shard), each answered through one future: a group
costs one future however many commands it has. A group larger than what is left of a
call's room is split over consecutive calls, so calls still carry up to
SHARD_CALL_OPERATIONS_MAX operations in submission order.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable

import msgspec
from loyalty.actors.ledger import codec
from loyalty.actors.ledger.commands import Command
from loyalty.actors.ledger.outcomes import BalanceView, Outcome
from loyalty.actors.ledger.status import Status
from loyalty.server.errors import GatewayError

ShardCall = Callable[[bytes], Awaitable[bytes]]
"""Sends one encoded batch to a shard and returns its encoded outcomes."""

ErrorClassifier = Callable[[BaseException], GatewayError | None]
"""Turns a failed shard call into the GatewayError its callers get (None: re-raise)."""

Answer = Outcome | BaseException
"""What one queued command gets: its Outcome, or the failure of the shard call that
carried it (a GatewayError, or the unclassified error itself)."""


class _GatewayBalance(BalanceView, frozen=True, gc=False):
    """A BalanceView that the cyclic GC does not track."""


class _GatewayOutcome(Outcome, frozen=True, gc=False):
    """An Outcome as the gateway decodes it: the same fields and wire layout, but not
    tracked by the cyclic GC (decoded outcomes hold no cycles), which also makes
    decoding cheaper. A gateway holds thousands of outcomes while it builds a
    Batch's response."""

    balance: _GatewayBalance | None = None


_outcomes_decoder = msgspec.msgpack.Decoder(list[_GatewayOutcome])


def decode_outcomes(payload: bytes) -> list[Outcome]:
    """A shard's answer to one call, decoded the gateway's way: its outcomes, in order."""
    return _outcomes_decoder.decode(payload)


class _Group:
    """Commands queued together and answered through one future."""

    __slots__ = ("answers", "commands", "future", "sent", "unanswered")

    def __init__(self, commands: list[Command], future: asyncio.Future) -> None:
        self.commands = commands
        self.answers: list[Answer | None] = [None] * len(commands)
        self.future = future
        self.sent = 0
        """Commands already taken into a shard call."""
        self.unanswered = len(commands)

    def answer(self, start: int, answers: list[Answer]) -> None:
        """Record the answers of commands[start:start + len(answers)]; resolve the
        future once every command has one."""
        self.answers[start : start + len(answers)] = answers
        self.unanswered -= len(answers)
        if not self.unanswered and not self.future.done():
            self.future.set_result(self.answers)


class _Piece(msgspec.Struct, array_like=True, gc=False):
    """One part of a shard call: the commands ``group.commands[start:end]``."""

    group: _Group
    start: int
    end: int


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
        self._queue: collections.deque[_Group] = collections.deque()
        self._queued = 0
        self._in_flight: asyncio.Task | None = None
        self.calls_made = 0
        """Shard calls sent so far (for metrics and tests)."""

    @property
    def queued(self) -> int:
        """Operations waiting for the next call."""
        return self._queued

    def has_room(self, operations: int) -> bool:
        """Whether ``operations`` more fit in the queue."""
        return self._queued + operations <= self._queue_operations_max

    def submit_group(self, commands: list[Command]) -> asyncio.Future:
        """Queue commands; one future resolves to their answers, in order: each
        command's Outcome, or the failure (GatewayError or unclassified error) of the
        shard call that carried it. Raises GatewayError(OVERLOADED) when the queue
        has no room for all of them (then none is queued)."""
        if not self.has_room(len(commands)):
            raise GatewayError(
                Status.OVERLOADED,
                f"shard queue full ({self._queue_operations_max} operations); retry with backoff",
            )
        future = asyncio.get_running_loop().create_future()
        if not commands:
            future.set_result([])
            return future
        self._queue.append(_Group(commands, future))
        self._queued += len(commands)
        if self._in_flight is None:
            self._send_next()
        return future

    def _send_next(self) -> None:
        pieces: list[_Piece] = []
        room = self._call_operations_max
        while self._queue and room:
            group = self._queue[0]
            start = group.sent
            end = min(len(group.commands), start + room)
            pieces.append(_Piece(group, start, end))
            group.sent = end
            room -= end - start
            if end == len(group.commands):
                self._queue.popleft()
        self._queued -= self._call_operations_max - room
        self._in_flight = asyncio.create_task(self._run(pieces))

    async def _run(self, pieces: list[_Piece]) -> None:
        try:
            first = pieces[0]
            if len(pieces) == 1 and first.start == 0 and first.end == len(first.group.commands):
                commands = first.group.commands  # the call carries one whole group: no copy
            else:
                commands = [command for piece in pieces for command in piece.group.commands[piece.start : piece.end]]
            payload = codec.encode_commands(commands)
            self.calls_made += 1
            outcomes = decode_outcomes(await self._call(payload))
            if len(outcomes) != len(commands):
                raise ValueError(f"a shard answered {len(outcomes)} outcomes to {len(commands)} commands")
        except Exception as error:  # every caller of the batch learns the same failure
            failure = self._classify_error(error) or error
            for piece in pieces:
                piece.group.answer(piece.start, [failure] * (piece.end - piece.start))
        else:
            offset = 0
            for piece in pieces:
                count = piece.end - piece.start
                piece.group.answer(piece.start, outcomes[offset : offset + count])
                offset += count
        finally:
            self._in_flight = None
            if self._queue:
                self._send_next()

    async def drain(self) -> None:
        """Wait until nothing is queued or in flight."""
        while self._in_flight is not None:
            await asyncio.shield(self._in_flight)
