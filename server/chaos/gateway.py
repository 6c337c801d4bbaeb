"""The server under test: a LoyaltyServer on the run's Redis and Ray with shard actors
of its own, restartable on another port while the clients follow it."""

from __future__ import annotations

from loyalty.actors.shard.actor import ShardSettings
from loyalty.server.chaos.workload import RECOVERY_DEADLINE_S, Endpoint
from loyalty.server.runtime.app import LoyaltyServer, ServerConfig
from loyalty.server.runtime.background import BackgroundGateway


class ChaosGateway:
    """A LoyaltyServer whose shards are started from the run's shard settings, its
    gRPC side on a background loop so blocking stubs can call it from this process.
    ``endpoint`` says where it listens now, for the clients to follow."""

    def __init__(self, redis_url: str, key_prefix: str, template: ShardSettings, shards: int) -> None:
        self._config = ServerConfig(
            host="127.0.0.1", port=0, shards=shards, redis_url=redis_url,
            key_prefix=key_prefix, namespace=key_prefix,
        )
        self._template = template
        self._server: LoyaltyServer | None = None
        self._background: BackgroundGateway | None = None
        self.endpoint: Endpoint | None = None

    @property
    def actors(self) -> list:
        """The shard actors, by shard index."""
        return self._server.actors

    @property
    def target(self) -> str:
        """host:port of the gRPC server."""
        return f"127.0.0.1:{self._server.port}"

    def start(self) -> ChaosGateway:
        """Start the shards (each recovers from Redis) and then the gRPC server."""
        self._server = LoyaltyServer(self._config)
        self._server.start_shards(self._template)
        self._background = BackgroundGateway(self._server, thread_name="chaos-gateway")
        try:
            self._background.start(timeout_s=RECOVERY_DEADLINE_S)
        except BaseException:
            self._server.close_backends()
            raise
        if self.endpoint is None:
            self.endpoint = Endpoint(self.target)
        else:
            self.endpoint.move_to(self.target)
        return self

    def stop(self) -> None:
        """Drain and stop the gRPC server, then kill its shard actors."""
        if self._background is not None:
            self._background.stop(grace_s=2, timeout_s=RECOVERY_DEADLINE_S)
            self._background = None
        self._server.close_backends()

    def restart(self) -> None:
        """Stop this server and its shards, then start a new one (on another port)."""
        self.stop()
        self.start()
