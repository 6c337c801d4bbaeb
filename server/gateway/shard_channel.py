"""The gateway's end of a shard's data channel (see actors/shard/channel_server.py).

One connection per shard actor, opened on the first call: the address and token
come from the actor's Ray method ``channel_address``, so Ray still says where a
shard lives. The batcher keeps at most one call in flight per shard, so calls on a
connection never overlap.

A lost connection (the shard process died, or was restarted by Ray) is re-resolved
through Ray, which waits for the new incarnation to recover, and the call is sent
again, up to CHANNEL_ATTEMPTS times in all, as Ray itself retries a call that was
in flight when an actor died. That is safe for the same reason: every mutation in a
batch carries a request_id, so a batch applied twice has its effects once.
"""

from __future__ import annotations

import asyncio
import socket

from loyalty.actors.shard.channel_server import (
    REQUEST_HEADER,
    RESPONSE_HEADER,
    STATUS_JOURNAL_UNAVAILABLE,
    STATUS_OK,
)
from loyalty.actors.shard.journal import JournalUnavailable
from loyalty.server.errors import InternalError, ShardUnavailable

CHANNEL_ATTEMPTS = 4
"""Sends of one batch before a lost connection is reported (1 + Ray's 3 retries)."""


class ShardConnectionLost(ShardUnavailable, ConnectionError):
    """The channel to a shard broke on every attempt: the batch's effects may or may
    not be durable (callers get UNAVAILABLE and retry with the same request_id)."""


class ShardFailed(InternalError, RuntimeError):
    """A shard raised something other than a journal error: a bug (INTERNAL)."""


class ShardChannel:
    """Sends encoded batches to one shard actor and returns its encoded outcomes."""

    def __init__(self, actor, *, attempts: int = CHANNEL_ATTEMPTS) -> None:
        self._actor = actor
        self._attempts = attempts
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self.connects = 0
        """Connections opened so far (for tests and diagnostics)."""

    async def call(self, payload: bytes, rules_version: int) -> bytes:
        """Apply one batch (JournalUnavailable, ShardFailed, ShardConnectionLost, or
        the Ray error of a shard that cannot be reached at all)."""
        attempt = 1
        while True:
            try:
                return await self._call_once(payload, rules_version)
            except ShardConnectionLost:
                if attempt >= self._attempts:
                    raise
                attempt += 1

    async def _call_once(self, payload: bytes, rules_version: int) -> bytes:
        if self._writer is None:
            await self._connect()
        reader, writer = self._reader, self._writer
        try:
            writer.writelines((REQUEST_HEADER.pack(len(payload), rules_version), payload))
            length, status = RESPONSE_HEADER.unpack(await reader.readexactly(RESPONSE_HEADER.size))
            body = await reader.readexactly(length)
        except (OSError, asyncio.IncompleteReadError) as error:
            self.close()
            raise ShardConnectionLost(f"connection to the shard lost: {error!r}") from error
        except BaseException:
            self.close()  # cancelled mid-call: the connection is out of step
            raise
        if status == STATUS_OK:
            return body
        if status == STATUS_JOURNAL_UNAVAILABLE:
            raise JournalUnavailable(body.decode(errors="replace"))
        raise ShardFailed(body.decode(errors="replace"))

    async def _connect(self) -> None:
        host, port, token = await self._actor.channel_address.remote()
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError as error:
            raise ShardConnectionLost(f"cannot connect to the shard at {host}:{port}: {error!r}") from error
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        writer.write(token)
        self._reader, self._writer = reader, writer
        self.connects += 1

    def close(self) -> None:
        """Drop the connection (the next call opens a new one)."""
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None
