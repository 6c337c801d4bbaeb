"""Running a LoyaltyServer's gRPC side on an event loop in a background thread.

For programs that drive a server from ordinary blocking code in the same process:
the test fixtures, ``loyalty chaos`` and the benchmarks. ``loyalty serve`` runs the
loop in the main thread instead.
"""

from __future__ import annotations

import asyncio
import threading

import uvloop

from loyalty.server.runtime.app import LoyaltyServer


class BackgroundGateway:
    """Starts ``server.start()`` on a new uvloop loop in a daemon thread; the shard
    actors must already be running (``server.start_backends()`` or
    ``server.start_shards()``)."""

    def __init__(self, server: LoyaltyServer, *, thread_name: str = "loyalty-gateway") -> None:
        self.server = server
        self._thread_name = thread_name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def target(self) -> str:
        """host:port to dial (loopback)."""
        return f"127.0.0.1:{self.server.port}"

    def start(self, *, timeout_s: float | None = None) -> None:
        """Serve in the background; raises whatever the server's start raised."""
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = uvloop.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self.server.start())
            except BaseException as error:  # handed to the starting thread below
                failure.append(error)
                started.set()
                return
            started.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name=self._thread_name, daemon=True)
        self._thread.start()
        if not started.wait(timeout_s):
            raise TimeoutError(f"the gateway did not start within {timeout_s} s")
        if failure:
            raise failure[0]

    def stop(self, *, grace_s: float = 5.0, timeout_s: float | None = None) -> None:
        """Drain and stop the gRPC side (and snapshot the shards); idempotent."""
        if self._loop is None:
            return
        loop, self._loop = self._loop, None
        try:
            asyncio.run_coroutine_threadsafe(self.server.stop(grace_s=grace_s), loop).result(timeout_s)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            self._thread.join(timeout_s)
