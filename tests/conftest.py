"""Shared pytest fixtures: one embedded Redis per test session."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis

from loyalty.server.embedded_redis import EmbeddedRedis


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
