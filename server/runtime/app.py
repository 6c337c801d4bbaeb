"""Assembling and running a loyalty server: Redis, Ray shards, the gRPC gateway.

``LoyaltyServer`` owns what it started (an embedded Redis, a local Ray) and nothing
else: given an external Redis or Ray it uses them and leaves them running.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pathlib
import signal
import subprocess
import sys
import uuid

import msgspec
import ray
import redis

from loyalty.actors.ledger.members import HOT_MEMBERS_DEFAULT
from loyalty.actors.ledger.program import Program
from loyalty.actors.ledger.rules import Rule
from loyalty.actors.routing import SLOT_COUNT
from loyalty.actors.shard.actor import ShardSettings
from loyalty.server.admin.servicer import GatewayRules
from loyalty.server.admin.keys import KeyAdministration
from loyalty.server.events.service import EventStreams
from loyalty.server.security.caller import CONFIG_ACTOR
from loyalty.server.security.guard import GatewaySecurity, check_exposure
from loyalty.server.runtime.embedded_redis import EmbeddedRedis, parent_death_signal_hook
from loyalty.server.runtime.gateway_process import SERVICE_NAME, Gateway, configure_logging, tune_gc
from loyalty.server.stores.keys import records_key
from loyalty.server.limits import SHUTDOWN_GRACE_S
from loyalty.server.security.config import ApiKeySeed, SecuritySettings
from loyalty.server.gateway.router import ShardRouter, router_for, start_shard_actors

log = logging.getLogger(__name__)

# A worker gets this long beyond the drain grace to exit before it is killed.
WORKER_EXIT_EXTRA_S = 5.0


def use_loopback_for_local_ray() -> None:
    """Keep a single-machine Ray on 127.0.0.1. By default Ray registers every process
    under the machine's network address, so even a local cluster would talk over it.
    Ray's own switch for single-machine clusters keeps it on loopback: the environment
    variable reaches the processes Ray starts, and since Ray reads it once, when it
    is imported, this process's copy of the setting is updated too."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False


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
    rules: tuple[Rule, ...] | None = None
    """Earning rules from the config file: made the live set at start when they differ
    from it (one new version). None: keep the rules stored in Redis."""
    key_prefix: str = "loyalty"
    """Prefix of every Redis key, so several deployments can share one Redis."""
    namespace: str = "loyalty"
    """Ray namespace of the shard actors."""
    snapshot_every_events: int = 200_000
    """Each shard snapshots after this many journaled events..."""
    snapshot_every_s: float = 300.0
    """...or this many seconds, whichever comes first."""
    hot_members: int = HOT_MEMBERS_DEFAULT
    """Members each shard keeps decoded between batches; the rest stay encoded and
    compressed (about 200 bytes instead of about 3 KB each) until touched."""
    gateways: int = 1
    """gRPC gateway processes sharing the port (SO_REUSEPORT): the main process and
    gateways - 1 workers. More than one spreads gRPC's per-call cost over cores."""
    security: SecuritySettings = SecuritySettings()
    """Limits and TLS for every gateway process."""
    api_keys: tuple[ApiKeySeed, ...] = ()
    """API keys from the config file, written to Redis (hashes only) at start."""
    insecure: bool = False
    """Allow listening on a non-loopback address without any API key."""


class LoyaltyServer:
    """One gateway process with its shards."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.redis_url = config.redis_url
        self.port = config.port
        self._embedded_redis: EmbeddedRedis | None = None
        self._started_ray = False
        self.actors: list = []
        """The shard actors, by shard index (set by start_shards)."""
        self.actor_names: list[str] = []
        """Their Ray names, which extra gateway processes look them up by."""
        self.router: ShardRouter | None = None
        self._gateway: Gateway | None = None
        self._workers: list[subprocess.Popen] = []
        self.rules: GatewayRules | None = None
        """This gateway's rules store, live version and AdminService (set by start)."""
        self.security: GatewaySecurity | None = None
        """This gateway's keys, audit log, guard and TLS (set by start)."""

    # ----------------------------------------------------------------- backends

    def start_backends(self) -> None:
        """Start (or connect to) Redis and Ray, then the shard actors. Blocking."""
        config = self.config
        if not self.redis_url:
            # Supervised: a child that dies (OOM killer, kill -9) is restarted on
            # its port from its AOF; shards and gateways reconnect by themselves.
            self._embedded_redis = EmbeddedRedis(
                pathlib.Path(config.data_dir), appendfsync=config.appendfsync, supervised=True
            )
            self._embedded_redis.start()
            self.redis_url = self._embedded_redis.url
        shard_count = config.shards or os.cpu_count() or 1
        self._check_exposure()
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
        self.start_shards()

    def start_shards(self, template: ShardSettings | None = None) -> None:
        """Start one shard actor per shard (Redis and Ray must be up) and wait until
        each has recovered its state; ``actors`` and ``actor_names`` then hold them.

        The names are fresh for every start: a restarted server never collides with
        the actors of its predecessor while Ray is still tearing them down (and epoch
        fencing keeps any such straggler from writing). ``template``: the shards'
        settings (any shard_index); by default built from the config. A caller that
        brings its own Redis and Ray and tunes the shards beyond the config (the
        fault-injection harness) calls this instead of :meth:`start_backends`.
        """
        config = self.config
        if template is None:
            template = ShardSettings(
                shard_index=0,
                redis_url=self.redis_url,
                key_prefix=config.key_prefix,
                program=config.program,
                snapshot_every_events=config.snapshot_every_events,
                snapshot_every_s=config.snapshot_every_s,
                hot_members=config.hot_members,
            )
        shard_count = config.shards or os.cpu_count() or 1
        run_id = uuid.uuid4().hex[:8]
        self.actor_names = [f"{config.key_prefix}-{run_id}-shard-{i}" for i in range(shard_count)]
        self.actors = start_shard_actors(template, self.actor_names, namespace=config.namespace)

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

    def _check_exposure(self) -> None:
        """Refuse (exit code 2) to serve a non-loopback address with no API key."""
        keys_exist = bool(self.config.api_keys)
        if not keys_exist:
            client = redis.Redis.from_url(self.redis_url)
            try:
                keys_exist = client.hlen(records_key(self.config.key_prefix)) > 0
            finally:
                client.close()
        reason = check_exposure(host=self.config.host, insecure=self.config.insecure, keys_exist=keys_exist)
        if reason is not None:
            print(f"loyalty: {reason}", file=sys.stderr, flush=True)
            raise SystemExit(2)

    async def _start_security(self) -> tuple[GatewaySecurity, KeyAdministration]:
        """Seed the config file's API keys (audited as "config"), then load the keys."""
        security = GatewaySecurity(
            redis_url=self.redis_url, key_prefix=self.config.key_prefix, settings=self.config.security
        )
        await security.start()
        keys = KeyAdministration.for_gateway(security)
        if self.config.api_keys:
            await keys.seed(self.config.api_keys, actor=CONFIG_ACTOR)
        return security, keys

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
        """Start serving gRPC (backends must be running), then any extra gateways."""
        self.security, keys = await self._start_security()
        self.rules = GatewayRules(
            redis_url=self.redis_url, key_prefix=self.config.key_prefix, program=self.config.program
        )
        await self.rules.start()
        if self.config.rules is not None:
            await self.rules.apply_config(self.config.rules, audit=self.security.audit)
        self.router = router_for(self.actors, self.rules.live)
        self._gateway = Gateway(
            self.router, host=self.config.host, port=self.config.port, program=self.config.program,
            admin=self.rules.servicer(keys=keys, audit=self.security.audit),
            security=self.security,
            events=EventStreams(
                redis_url=self.redis_url, key_prefix=self.config.key_prefix, shard_count=len(self.actors)
            ),
        )
        self.port = await self._gateway.start()
        if self.config.gateways > 1:
            await asyncio.get_running_loop().run_in_executor(None, self._start_workers)

    def worker_command(self, *, port: int, security: SecuritySettings | None = None) -> list[str]:
        """The command line of an extra gateway process serving this server's shards,
        program, keys and TLS (``security`` overrides the configured settings)."""
        return [
            sys.executable, "-m", "loyalty.server.runtime.gateway_process",
            "--ray-address", ray.get_runtime_context().gcs_address,
            "--namespace", self.config.namespace,
            "--actors", ",".join(self.actor_names),
            "--program-json", msgspec.json.encode(self.config.program).decode(),
            "--redis-url", self.redis_url,
            "--key-prefix", self.config.key_prefix,
            "--security-json", msgspec.json.encode(security or self.config.security).decode(),
            "--host", self.config.host,
            "--port", str(port),
        ]  # fmt: skip

    def _start_workers(self) -> None:
        """Extra gateway processes on the same port (SO_REUSEPORT), same shards."""
        command = self.worker_command(port=self.port)
        for _ in range(self.config.gateways - 1):
            worker = subprocess.Popen(
                command,
                stdout=subprocess.PIPE,
                text=True,
                preexec_fn=parent_death_signal_hook(),
            )
            self._workers.append(worker)
            for line in worker.stdout:  # bounded: the worker exits on any start failure
                if "ready" in line:
                    break
            else:
                raise SystemExit(f"loyalty: a gateway worker exited with {worker.wait()}")

    def _stop_workers(self, grace_s: float) -> None:
        for worker in self._workers:
            worker.send_signal(signal.SIGTERM)
        for worker in self._workers:
            try:
                worker.wait(timeout=grace_s + WORKER_EXIT_EXTRA_S)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        self._workers = []

    async def stop(self, grace_s: float = SHUTDOWN_GRACE_S) -> None:
        """Health NOT_SERVING, drain in-flight calls (every gateway), then snapshot
        every shard."""
        if self._gateway is None:
            return
        loop = asyncio.get_running_loop()
        await asyncio.gather(
            self._gateway.stop(grace_s), loop.run_in_executor(None, self._stop_workers, grace_s)
        )
        self._gateway = None
        # Campaign budget chunks go back to their owner before the shards stop, so a
        # graceful restart strands none of them.
        returns = [actor.return_all_budgets.remote() for actor in self.actors]
        if returns:
            await asyncio.gather(*returns, return_exceptions=True)
        snapshots = [actor.snapshot.remote() for actor in self.actors]
        if snapshots:
            await asyncio.gather(*snapshots, return_exceptions=True)
        if self.rules is not None:
            await self.rules.stop()
            self.rules = None

    async def run_until_signal(self) -> None:
        """Serve until SIGTERM or SIGINT, then stop gracefully."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await self.start()
        print(
            f"loyalty: serving {SERVICE_NAME} on {self.config.host}:{self.port} "
            f"with {len(self.actors)} shards and {self.config.gateways} gateway process(es); "
            f"redis {self.redis_url}"
            + (f" (embedded, data in {self.config.data_dir})" if self._embedded_redis else ""),
            flush=True,
        )
        print(f"loyalty: {self.security.describe(self.config.host)}", flush=True)
        print("loyalty: ready", flush=True)
        await stop.wait()
        print("loyalty: shutting down: draining calls, snapshotting shards", flush=True)
        await self.stop()


def serve(config: ServerConfig) -> int:
    """Run a server in this process until SIGTERM/SIGINT; return the exit code."""
    import uvloop

    configure_logging()
    server = LoyaltyServer(config)
    try:
        server.start_backends()
        # Per-call protobuf garbage is acyclic; fewer GC passes, and none over the
        # long-lived objects built at start (the benchmark saw GC at ~20% of a core).
        tune_gc()
        uvloop.run(server.run_until_signal())
    finally:
        server.close_backends()
    print("loyalty: stopped", flush=True)
    return 0
