"""Assembling and running a loyalty server: Redis, Ray shards, the gRPC gateway.

``LoyaltyServer`` owns what it started (an embedded Redis, a local Ray) and nothing
else: given an external Redis or Ray it uses them and leaves them running.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import pathlib
import signal
import uuid

import grpc
import msgspec
import ray
import redis
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from loyalty.actors.ledger.program import Program
from loyalty.actors.routing import SLOT_COUNT
from loyalty.actors.shard import GC_YOUNG_THRESHOLD, ShardSettings
from loyalty.server.embedded_redis import EmbeddedRedis
from loyalty.server.limits import MESSAGE_BYTES_MAX, SHUTDOWN_GRACE_S
from loyalty.server.service import LoyaltyService
from loyalty.server.shards import ShardRouter, router_for, start_shard_actors
from loyalty.v1 import loyalty_pb2, loyalty_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = loyalty_pb2.DESCRIPTOR.services_by_name["LoyaltyService"].full_name


def use_loopback_for_local_ray() -> None:
    """Keep a single-machine Ray on 127.0.0.1. By default Ray registers every process
    under the machine's network address, so even a local cluster would talk over it;
    this documented Ray switch (inherited by its workers) keeps it on loopback."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


class ServerConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Everything ``loyalty serve`` is told. Read once, at the entry point."""

    host: str = "127.0.0.1"
    """Address the gRPC server listens on."""
    port: int = 50051
    """gRPC port; 0 picks a free one (see LoyaltyServer.port)."""
    shards: int = 0
    """Shard actors; 0: one per CPU. Fixed for a data set once written."""
    redis_url: str = ""
    """External Redis; empty: start an embedded redis-server in data_dir."""
    data_dir: str = "./data"
    """Where the embedded Redis keeps its append-only file."""
    appendfsync: str = "always"
    """Embedded Redis fsync policy: "always" (no acknowledged loss) or "everysec"."""
    ray_address: str = ""
    """Ray cluster to join; empty: start a local Ray (or use the one already running
    in this process)."""
    program: Program = Program()
    """The loyalty program (earn rates, windows, policies)."""
    key_prefix: str = "loyalty"
    """Prefix of every Redis key, so several deployments can share one Redis."""
    namespace: str = "loyalty"
    """Ray namespace of the shard actors."""
    snapshot_every_events: int = 200_000
    """Each shard snapshots after this many journaled events..."""
    snapshot_every_s: float = 300.0
    """...or this many seconds, whichever comes first."""


class LoyaltyServer:
    """One gateway process with its shards."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.redis_url = config.redis_url
        self.port = config.port
        self._embedded_redis: EmbeddedRedis | None = None
        self._started_ray = False
        self.actors: list = []
        self.router: ShardRouter | None = None
        self._server: grpc.aio.Server | None = None
        self._health: health.aio.HealthServicer | None = None

    # ----------------------------------------------------------------- backends

    def start_backends(self) -> None:
        """Start (or connect to) Redis and Ray, then the shard actors. Blocking."""
        config = self.config
        if not self.redis_url:
            self._embedded_redis = EmbeddedRedis(
                pathlib.Path(config.data_dir), appendfsync=config.appendfsync
            )
            self._embedded_redis.start()
            self.redis_url = self._embedded_redis.url
        shard_count = config.shards or os.cpu_count() or 1
        self._check_layout(shard_count)
        if not ray.is_initialized():
            if not config.ray_address:
                use_loopback_for_local_ray()
            ray.init(
                address=config.ray_address or None,
                include_dashboard=False,
                logging_level=logging.WARNING,
            )
            self._started_ray = True
        template = ShardSettings(
            shard_index=0,
            redis_url=self.redis_url,
            key_prefix=config.key_prefix,
            program=config.program,
            snapshot_every_events=config.snapshot_every_events,
            snapshot_every_s=config.snapshot_every_s,
        )
        # Names are unique per run: a restarted gateway never collides with the
        # actors of its predecessor while Ray is still tearing them down (and epoch
        # fencing keeps any such straggler from writing).
        run_id = uuid.uuid4().hex[:8]
        self.actors = start_shard_actors(
            template,
            shard_count,
            namespace=config.namespace,
            name_prefix=f"{config.key_prefix}-{run_id}-",
        )

    def _check_layout(self, shard_count: int) -> None:
        """Refuse to start with a shard count other than the one the data was written
        with: members would be looked for in the wrong journals."""
        client = redis.Redis.from_url(self.redis_url)
        try:
            key = f"{self.config.key_prefix}:layout"
            client.hsetnx(key, "shard_count", shard_count)
            client.hsetnx(key, "slot_count", SLOT_COUNT)
            stored = client.hgetall(key)
        finally:
            client.close()
        stored_shards = int(stored[b"shard_count"])
        if stored_shards != shard_count or int(stored[b"slot_count"]) != SLOT_COUNT:
            raise SystemExit(
                f"loyalty: the data in {self.redis_url} was written with {stored_shards} shards; "
                f"start with --shards {stored_shards} (changing the shard count is not supported yet)"
            )

    def close_backends(self) -> None:
        """Stop the shard actors, and Ray and Redis if this server started them."""
        for actor in self.actors:
            try:
                ray.kill(actor, no_restart=True)
            except Exception:  # already gone
                log.debug("shard actor already stopped", exc_info=True)
        self.actors = []
        if self._started_ray:
            ray.shutdown()
            self._started_ray = False
        if self._embedded_redis is not None:
            self._embedded_redis.stop()
            self._embedded_redis = None

    # ----------------------------------------------------------------- gRPC

    async def start(self) -> None:
        """Start serving gRPC (backends must be running)."""
        self.router = router_for(self.actors)
        self._server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", MESSAGE_BYTES_MAX),
                ("grpc.max_send_message_length", MESSAGE_BYTES_MAX),
                ("grpc.so_reuseport", 1),
            ]
        )
        loyalty_pb2_grpc.add_LoyaltyServiceServicer_to_server(LoyaltyService(self.router), self._server)
        self._health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self._server
        )
        self.port = self._server.add_insecure_port(f"{self.config.host}:{self.config.port}")
        if self.port == 0:
            raise SystemExit(f"loyalty: cannot listen on {self.config.host}:{self.config.port}")
        await self._server.start()
        for name in ("", SERVICE_NAME):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace_s: float = SHUTDOWN_GRACE_S) -> None:
        """Health NOT_SERVING, drain in-flight calls, then snapshot every shard."""
        if self._server is None:
            return
        await self._health.enter_graceful_shutdown()
        await self._server.stop(grace_s)
        self._server = None
        snapshots = [actor.snapshot.remote() for actor in self.actors]
        if snapshots:
            await asyncio.gather(*snapshots, return_exceptions=True)

    async def run_until_signal(self) -> None:
        """Serve until SIGTERM or SIGINT, then stop gracefully."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await self.start()
        print(
            f"loyalty: serving {SERVICE_NAME} on {self.config.host}:{self.port} "
            f"with {len(self.actors)} shards; redis {self.redis_url}"
            + (f" (embedded, data in {self.config.data_dir})" if self._embedded_redis else ""),
            flush=True,
        )
        print("loyalty: ready", flush=True)
        await stop.wait()
        print("loyalty: shutting down: draining calls, snapshotting shards", flush=True)
        await self.stop()


def serve(config: ServerConfig) -> int:
    """Run a server in this process until SIGTERM/SIGINT; return the exit code."""
    import uvloop

    server = LoyaltyServer(config)
    try:
        server.start_backends()
        # Per-call protobuf garbage is acyclic; fewer GC passes, and none over the
        # long-lived objects built at start (the benchmark saw GC at ~20% of a core).
        gc.collect()
        gc.freeze()
        gc.set_threshold(GC_YOUNG_THRESHOLD, 50, 100)
        uvloop.run(server.run_until_signal())
    finally:
        server.close_backends()
    print("loyalty: stopped", flush=True)
    return 0
