"""Shared pytest fixtures: one embedded Redis per test session."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis

from loyalty.server.runtime.embedded_redis import EmbeddedRedis


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    """A redis-server shared by the whole session, fsyncing every write."""
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"), appendfsync="always")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_client(redis_server: EmbeddedRedis) -> Iterator[redis.Redis]:
    """A bytes-returning client of the session's Redis."""
    client = redis.Redis.from_url(redis_server.url)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def key_prefix() -> str:
    """A key prefix unique to the test, so tests never see each other's keys."""
    return f"test-{uuid.uuid4().hex}"


# --------------------------------------------------------------------------- Ray + server


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """One local Ray for the whole session (starting Ray costs seconds on 2 cores)."""
    import logging

    import ray

    from loyalty.server.runtime.app import use_loopback_for_local_ray

    use_loopback_for_local_ray()
    ray.init(include_dashboard=False, logging_level=logging.WARNING)
    try:
        yield
    finally:
        ray.shutdown()


class ServerThread:
    """A LoyaltyServer with its backends, its gRPC side on a background loop, so tests
    can call it with ordinary blocking stubs."""

    def __init__(self, config) -> None:
        from loyalty.server.runtime.app import LoyaltyServer

        self.server = LoyaltyServer(config)
        self._gateway = None

    def start(self) -> ServerThread:
        from loyalty.server.runtime.background import BackgroundGateway

        self.server.start_backends()
        self._gateway = BackgroundGateway(self.server)
        self._gateway.start()
        return self

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def stop(self, *, close_backends: bool = True) -> None:
        if self._gateway is not None:
            self._gateway.stop(grace_s=5)
            self._gateway = None
        if close_backends:
            self.server.close_backends()


def server_config(redis_url: str, key_prefix: str, **overrides):
    """A config for an in-process test server on a free port."""
    from loyalty.server.runtime.app import ServerConfig

    return ServerConfig(
        port=0,
        shards=overrides.pop("shards", 2),
        redis_url=redis_url,
        key_prefix=key_prefix,
        namespace=key_prefix,
        **overrides,
    )


@pytest.fixture(scope="module")
def loyalty_server(ray_session, redis_server: EmbeddedRedis) -> Iterator[ServerThread]:
    """A server shared by a test module (tests use their own member ids)."""
    running = ServerThread(server_config(redis_server.url, f"test-{uuid.uuid4().hex}")).start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def stub(loyalty_server: ServerThread):
    """A blocking LoyaltyService stub for the module's server."""
    import grpc

    from loyalty.v1 import loyalty_pb2_grpc

    with grpc.insecure_channel(loyalty_server.target) as channel:
        yield loyalty_pb2_grpc.LoyaltyServiceStub(channel)


@pytest.fixture
def member_id() -> str:
    """A member id no other test uses."""
    return f"m-{uuid.uuid4().hex[:12]}"


# --------------------------------------------------------------------------- API keys


class SecuredServer:
    """A running ServerThread with one API key per role seeded from config; the
    secrets are in ``secrets`` (by role) and ``key_ids`` (by role)."""

    ROLES = ("pos", "ecommerce", "analytics", "admin")

    def __init__(self, redis_url: str, **overrides) -> None:
        from loyalty.server.stores.keys import hash_secret, new_secret
        from loyalty.server.security.config import ApiKeySeed

        self.secrets = {role: new_secret() for role in self.ROLES}
        seeds = tuple(
            ApiKeySeed(name=f"{role}-key", role=role, secret_sha256=hash_secret(secret))
            for role, secret in self.secrets.items()
        ) + tuple(overrides.pop("extra_seeds", ()))
        self.key_ids = {seed.role: seed.resolved_key_id() for seed in seeds[: len(self.ROLES)]}
        prefix = f"test-{uuid.uuid4().hex}"
        self.thread = ServerThread(server_config(redis_url, prefix, api_keys=seeds, **overrides)).start()
        self.key_prefix = prefix
        self.redis_url = redis_url

    @property
    def target(self) -> str:
        return self.thread.target

    @staticmethod
    def metadata(secret: str) -> tuple[tuple[str, str], ...]:
        """Call metadata carrying this secret."""
        return (("authorization", f"Bearer {secret}"),)

    def stop(self) -> None:
        self.thread.stop()


@pytest.fixture(scope="module")
def secured_server(ray_session, redis_server: EmbeddedRedis) -> Iterator[SecuredServer]:
    """A server with authentication on: one key per role (see SecuredServer)."""
    running = SecuredServer(redis_server.url)
    try:
        yield running
    finally:
        running.stop()
