"""Shared pytest fixtures (one embedded Redis and one Ray per test session) and the
test tiers.

Every test gets one tier marker, so a run can pick a tier with ``-m``:

- ``pure``: no Redis, Ray or server; the whole tier takes well under a minute;
- ``integration``: uses the session's Redis or Ray (directly or through other fixtures);
- ``faults``: the fault runs, which kill or stop Redis, shards and gateways.

A tier marker written on a test (or on its parameter) wins; otherwise the test's
module and fixtures decide (see :func:`tier_of`). A pure test that starts a
redis-server or Ray's processes anyway fails at once, so the pure tier stays pure.
"""

from __future__ import annotations

import logging
import os
import sys
import uuid
from collections.abc import Iterator

import pytest
import redis

from loyalty.server.runtime.embedded_redis import EmbeddedRedis

# --------------------------------------------------------------------------- test tiers

TIERS = ("pure", "integration", "faults")

FAULT_MODULES = frozenset({"test_faults.py", "test_self_healing.py", "test_redis_supervision.py"})
"""Modules of fault runs: every test in them is ``faults`` unless marked otherwise."""

BACKEND_FIXTURES = frozenset({"redis_server", "ray_session"})
"""Fixtures that start the session's Redis or Ray: a test that needs one is ``integration``."""

BACKEND_PROGRAMS = frozenset({"redis-server", "gcs_server", "raylet"})
"""Programs a pure test must not start: Redis, and the first two processes of a Ray."""


def tier_of(item: pytest.Item) -> str:
    """The tier marker written on the test (the closest one), else ``faults`` for a
    test in FAULT_MODULES, ``integration`` for one that needs a BACKEND_FIXTURES
    fixture (``fixturenames`` holds every fixture it needs, through other fixtures
    too), and ``pure`` for the rest."""
    for marker in item.iter_markers():
        if marker.name in TIERS:
            return marker.name
    if item.path.name in FAULT_MODULES:
        return "faults"
    if BACKEND_FIXTURES.intersection(item.fixturenames):
        return "integration"
    return "pure"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Give every test that has no tier marker of its own the one tier_of says."""
    for item in items:
        tier = tier_of(item)
        if item.get_closest_marker(tier) is None:
            item.add_marker(tier)


class _PureTierGuard:
    """An audit hook that, while a pure test (with its fixtures) runs, refuses to
    start any of the BACKEND_PROGRAMS from this process (a program that a child
    process starts is out of its sight)."""

    def __init__(self) -> None:
        self.test: str | None = None
        """The node id of the pure test running now; None outside pure tests."""

    def __call__(self, event: str, arguments: tuple) -> None:
        if event != "subprocess.Popen" or self.test is None:
            return
        executable, argv = arguments[0], arguments[1]
        if executable is None:
            executable = argv.split()[0] if isinstance(argv, str) else argv[0]
        program = os.path.basename(os.fsdecode(executable))
        if program in BACKEND_PROGRAMS:
            raise RuntimeError(
                f"{self.test} is in the pure tier but starts {program}: give it the redis_server "
                "or ray_session fixture, or mark it @pytest.mark.integration"
            )


_pure_tier_guard = _PureTierGuard()
sys.addaudithook(_pure_tier_guard)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    """Arm the pure-tier guard for the setup, call and teardown of a pure test."""
    _pure_tier_guard.test = item.nodeid if item.get_closest_marker("pure") is not None else None
    try:
        yield
    finally:
        _pure_tier_guard.test = None


# --------------------------------------------------------------------------- Redis


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


class LogLines(logging.Handler):
    """The log lines of one logger, whatever else configured logging (a server test
    may have made ``loyalty`` stop propagating to pytest's caplog)."""

    def __init__(self, logger: logging.Logger) -> None:
        super().__init__(logging.DEBUG)
        self.logger = logger
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    def __enter__(self) -> "LogLines":
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc) -> None:
        self.logger.removeHandler(self)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture
def log_lines() -> type[LogLines]:
    """``with log_lines(logger) as lines:`` collects that logger's lines (``lines.text``)."""
    return LogLines
