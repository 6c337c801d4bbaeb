"""One gateway: the gRPC server (service, health, reflection) in front of the shards.

``loyalty serve --gateways N`` runs N of them: the main process and N-1 worker
processes (``python -m loyalty.server.runtime.gateway_process``), all listening on the same port with
SO_REUSEPORT so the kernel spreads connections over them. Each has its own batchers
in front of the same shard actors: a shard then sees up to N calls in flight, applied
one after the other, which changes nothing for correctness (each batch is applied and
journaled whole, and a member's requests from one connection stay in order).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

import grpc
import msgspec
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from loyalty.actors.gc_tuning import tune_gc
from loyalty.actors.ledger.program import DEFAULT_PROGRAM, CompiledProgram, Program
from loyalty.server.security.guard import GatewaySecurity
from loyalty.server.admin.keys import KeyAdministration
from loyalty.server.admin.servicer import GatewayRules
from loyalty.server.events.service import EventStreams
from loyalty.server.gateway.health import ShardHealth
from loyalty.server.limits import MESSAGE_BYTES_MAX, SHUTDOWN_GRACE_S
from loyalty.server.security.config import SecuritySettings
from loyalty.server.gateway.servicer import LoyaltyService
from loyalty.server.gateway.router import ShardRouter, router_for
from loyalty.v1 import admin_pb2, admin_pb2_grpc, events_pb2, events_pb2_grpc, loyalty_pb2, loyalty_pb2_grpc

SERVICE_NAME = loyalty_pb2.DESCRIPTOR.services_by_name["LoyaltyService"].full_name
ADMIN_SERVICE_NAME = admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name
EVENT_SERVICE_NAME = events_pb2.DESCRIPTOR.services_by_name["EventService"].full_name


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of each line (a test harness
    may swap it), not to the stream it saw when it was made."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def configure_logging(level: int = logging.INFO) -> None:
    """Send the server's own log lines (``loyalty.*``) to stderr with a timestamp.

    Only the ``loyalty`` logger is configured, so libraries keep their own levels
    (Ray configures its loggers itself; the root logger stays at WARNING)."""
    logger = logging.getLogger("loyalty")
    if logger.handlers:
        return
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


class Gateway:
    """A gRPC server with the loyalty service, health checking and reflection."""

    def __init__(
        self,
        router: ShardRouter,
        *,
        host: str,
        port: int,
        program: Program | None = None,
        security: GatewaySecurity | None = None,
        admin=None,
        events: EventStreams | None = None,
    ) -> None:
        self.router = router
        self.admin = admin
        """The AdminService servicer (None: not served)."""
        self.events = events
        """The EventService and its journal tailer (None: not served)."""
        self.security = security
        """Keys, roles, limits and TLS (loyalty.server.security.guard); None: plaintext, no checks
        (only for tools that start a bare gateway)."""
        self.program = CompiledProgram(program or DEFAULT_PROGRAM)
        """The loyalty program, for answers the gateway gives itself (redemption quotes)."""
        self.host = host
        self.port = port
        self._server: grpc.aio.Server | None = None
        self._health: health.aio.HealthServicer | None = None
        self._shard_health: ShardHealth | None = None

    async def start(self) -> int:
        """Listen and serve; return the port (useful when asked for port 0)."""
        if self.security is not None:
            await self.security.start()
            self._server = self.security.make_server()
        else:
            self._server = grpc.aio.server(
                options=[
                    ("grpc.max_receive_message_length", MESSAGE_BYTES_MAX),
                    ("grpc.max_send_message_length", MESSAGE_BYTES_MAX),
                    ("grpc.so_reuseport", 1),
                ]
            )
        if self.events is not None:
            await self.events.start()  # the member-token secret, before any call needs it
            if self.security is not None:
                self.security.guard.accept_member_tokens(self.events.tokens)
        loyalty_pb2_grpc.add_LoyaltyServiceServicer_to_server(LoyaltyService(self.router, self.program), self._server)
        self._health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        services = (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME)
        if self.admin is not None:
            admin_pb2_grpc.add_AdminServiceServicer_to_server(self.admin, self._server)
            services += (ADMIN_SERVICE_NAME,)
        if self.events is not None:
            events_pb2_grpc.add_EventServiceServicer_to_server(self.events.servicer, self._server)
            services += (EVENT_SERVICE_NAME,)
        reflection.enable_server_reflection(services, self._server)
        address = f"{self.host}:{self.port}"
        if self.security is not None:
            bound = self.security.add_port(self._server, address)
        else:
            bound = self._server.add_insecure_port(address)
        if bound == 0:
            raise SystemExit(f"loyalty: cannot listen on {self.host}:{self.port}")
        self.port = bound
        await self._server.start()
        if self.router.actors:
            # "" (the whole server) and the loyalty service: SERVING only while every
            # shard can journal (server/gateway/health.py).
            self._shard_health = ShardHealth(self.router.actors, self._health, ("", SERVICE_NAME))
            self.router.on_unavailable = self._shard_health.report_unavailable
            await self._shard_health.start()
        else:
            for name in ("", SERVICE_NAME):
                await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        return bound

    async def stop(self, grace_s: float = SHUTDOWN_GRACE_S) -> None:
        """Health NOT_SERVING, then stop accepting calls and drain those in flight."""
        if self._server is None:
            return
        if self._shard_health is not None:
            await self._shard_health.stop()
            self._shard_health = None
        await self._health.enter_graceful_shutdown()
        if self.events is not None:
            await self.events.stop()  # ends the event streams, which would never drain
        await self._server.stop(grace_s)
        self._server = None
        self.router.close()  # the shard channels; nothing uses the router after this
        if self.security is not None:
            await self.security.stop()


async def _serve_until_signal(gateway: Gateway, rules: GatewayRules) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await rules.start()
    await gateway.start()
    print(f"loyalty gateway: ready on {gateway.host}:{gateway.port}", flush=True)
    await stop.wait()
    await gateway.stop()
    await rules.stop()


def worker_main(argv: list[str] | None = None) -> int:
    """An extra gateway process: join the server's Ray, find its shards by name, serve."""
    import ray
    import uvloop

    parser = argparse.ArgumentParser(prog="python -m loyalty.server.runtime.gateway_process")
    parser.add_argument("--ray-address", required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--actors", required=True, help="shard actor names, comma-separated, by shard index")
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--program-json", default="{}", help="the server's Program, as JSON")
    parser.add_argument("--redis-url", required=True, help="the server's Redis (API keys, audit log)")
    parser.add_argument("--key-prefix", required=True)
    parser.add_argument("--security-json", required=True, help="the server's SecuritySettings, as JSON")
    options = parser.parse_args(argv)
    program = msgspec.json.decode(options.program_json, type=Program)
    security = GatewaySecurity(
        redis_url=options.redis_url,
        key_prefix=options.key_prefix,
        settings=msgspec.json.decode(options.security_json, type=SecuritySettings),
    )
    ray.init(
        address=options.ray_address,
        namespace=options.namespace,
        include_dashboard=False,
        logging_level=logging.WARNING,
    )
    try:
        actors = [ray.get_actor(name) for name in options.actors.split(",")]
        configure_logging()
        tune_gc()
        rules = GatewayRules(redis_url=options.redis_url, key_prefix=options.key_prefix, program=program)
        gateway = Gateway(
            router_for(actors, rules.live), host=options.host, port=options.port, program=program,
            security=security,
            admin=rules.servicer(keys=KeyAdministration.for_gateway(security), audit=security.audit),
            events=EventStreams(redis_url=options.redis_url, key_prefix=options.key_prefix, shard_count=len(actors)),
        )
        uvloop.run(_serve_until_signal(gateway, rules))
    finally:
        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(worker_main())
