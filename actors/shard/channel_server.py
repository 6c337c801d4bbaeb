"""The shard's data channel: batches from the gateway over one TCP connection.

A Ray actor call costs the caller, the actor and Ray's own threads together about
0.7-1 ms of CPU on a 2-core machine (measured: bench/RESULTS.md, "the gateway ->
shard hop"); a length-prefixed frame over a plain socket costs about 15 us. Under
unary load a shard call carries only a few operations, so that hop was most of the
server's CPU per operation. Ray still creates, places, supervises and restarts every
shard actor, and answers its control calls (describe, snapshot, budgets); only the
hot path, ``apply``, also travels over this channel.

Wire format (all integers little-endian):

* the client opens a connection and sends the channel's token (TOKEN_BYTES random
  bytes the actor hands out through its Ray method ``channel_address``); a wrong
  token closes the connection;
* then, any number of times: a request ``REQUEST_HEADER`` (payload length, rules
  version) followed by the msgspec-encoded commands, answered by ``RESPONSE_HEADER``
  (body length, status) followed by the body: the encoded outcomes (STATUS_OK), or a
  UTF-8 message (STATUS_JOURNAL_UNAVAILABLE: the batch may or may not be durable, as
  for a JournalError raised through Ray; STATUS_FAILED: a bug in the shard).

One request is answered before the next is read, so a connection carries the
batches of one caller in order. Each connection has its own thread; the actor
serializes them (and its Ray methods) with one lock.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import socket
import struct
import threading
from collections.abc import Callable

from loyalty.actors.shard.journal import JournalError

log = logging.getLogger(__name__)

TOKEN_BYTES = 32
REQUEST_HEADER = struct.Struct("<IQ")
"""Payload length, rules version."""
RESPONSE_HEADER = struct.Struct("<IB")
"""Body length, status."""
STATUS_OK = 0
STATUS_JOURNAL_UNAVAILABLE = 1
STATUS_FAILED = 2
SMALL_BODY_BYTES = 65_536
"""Answers up to this size are sent with their header in one write."""

Apply = Callable[[bytes, int], bytes]
"""The shard's apply: encoded commands and a rules version in, encoded outcomes out."""


def _recv_exactly(conn: socket.socket, size: int) -> bytearray | None:
    """Exactly ``size`` bytes, or None if the peer closed the connection first."""
    buffer = bytearray(size)
    view = memoryview(buffer)
    received = 0
    while received < size:
        count = conn.recv_into(view[received:])
        if count == 0:
            return None
        received += count
    return buffer


class ChannelServer:
    """Listens on ``host`` (a free port) and serves ``apply`` to token holders."""

    def __init__(self, host: str, apply: Apply, *, name: str = "shard") -> None:
        self._apply = apply
        self._name = name
        self.token = secrets.token_bytes(TOKEN_BYTES)
        self._listener = socket.create_server((host, 0))
        self.address: tuple[str, int] = (host, self._listener.getsockname()[1])
        threading.Thread(target=self._accept_loop, name=f"{name}-channel", daemon=True).start()

    def _accept_loop(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(
                target=self._serve, args=(conn,), name=f"{self._name}-channel-conn", daemon=True
            ).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                token = _recv_exactly(conn, TOKEN_BYTES)
                if token is None or not hmac.compare_digest(bytes(token), self.token):
                    log.warning("%s channel: connection with a wrong token refused", self._name)
                    return
                while True:
                    header = _recv_exactly(conn, REQUEST_HEADER.size)
                    if header is None:
                        return
                    length, rules_version = REQUEST_HEADER.unpack(header)
                    payload = _recv_exactly(conn, length)
                    if payload is None:
                        return
                    status, body = self._answer(payload, rules_version)
                    header = RESPONSE_HEADER.pack(len(body), status)
                    if len(body) <= SMALL_BODY_BYTES:
                        conn.sendall(header + body)  # one segment for a typical answer
                    else:
                        conn.sendall(header)
                        conn.sendall(body)
            except OSError:
                return  # the gateway went away; it reconnects and resends

    def _answer(self, payload: bytearray, rules_version: int) -> tuple[int, bytes]:
        try:
            return STATUS_OK, self._apply(payload, rules_version)
        except JournalError as error:
            return STATUS_JOURNAL_UNAVAILABLE, f"{type(error).__name__}: {error}".encode()
        except Exception as error:
            log.exception("%s channel: apply failed", self._name)
            return STATUS_FAILED, f"{type(error).__name__}: {error}".encode()
