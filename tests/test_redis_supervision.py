"""The supervised embedded Redis, the outage log, and the chaos report's verdict."""

from __future__ import annotations

import logging
import os
import signal

import psutil
import pytest
import redis

from loyalty.actors.outage import OutageLog
from loyalty.server.chaos import ChaosReport, ChaosSettings, FaultRecord
from loyalty.server.runtime.embedded_redis import EmbeddedRedis

DEADLINE_S = 60.0


def test_a_killed_child_is_reaped_and_restarted_on_its_port_with_its_data(tmp_path):
    server = EmbeddedRedis(tmp_path, supervised=True)
    server.start()
    try:
        port, pid = server.port, server.pid
        client = redis.Redis.from_url(server.url)
        client.set("points", "120")
        os.kill(pid, signal.SIGKILL)

        assert server.wait_until_restarted(0, timeout_s=DEADLINE_S)
        assert server.port == port and server.pid != pid
        assert client.get("points") == b"120"  # replayed from the append-only file
        assert all(child.status() != psutil.STATUS_ZOMBIE for child in psutil.Process().children())
        client.close()
    finally:
        server.stop()
    assert server.pid is None


def test_our_own_kill_is_not_undone_by_the_supervisor(tmp_path):
    server = EmbeddedRedis(tmp_path, supervised=True)
    server.start()
    try:
        server.kill()
        assert not server.wait_until_restarted(0, timeout_s=1.0)
        assert server.pid is None
        server.restart()
        assert server.pid is not None
    finally:
        server.stop()


def test_a_restart_that_fails_is_logged_with_redis_reason_and_retried_until_it_works(tmp_path, caplog):
    server = EmbeddedRedis(tmp_path, supervised=True)
    server.start()
    try:
        client = redis.Redis.from_url(server.url)
        client.set("points", "7")
        aof = tmp_path / "appendonly.aof"
        good = aof.read_bytes()
        caplog.set_level(logging.INFO, logger="loyalty")
        with caplog.at_level(logging.INFO, logger="loyalty"):
            logger = logging.getLogger("loyalty")
            logger.addHandler(caplog.handler)
            try:
                aof.write_bytes(good[: len(good) // 2] + b"garbage\r\n" + good[len(good) // 2 :])
                os.kill(server.pid, signal.SIGKILL)
                assert server.wait_until_start_failed(0, timeout_s=DEADLINE_S)
                aof.write_bytes(good)  # the operator repairs the file
                assert server.wait_until_restarted(0, timeout_s=DEADLINE_S)
            finally:
                logger.removeHandler(caplog.handler)
        assert client.get("points") == b"7"
        messages = [record.getMessage() for record in caplog.records]
        assert any("Bad file format reading the append only file" in m for m in messages), messages
        assert any("is back after" in m for m in messages), messages
        client.close()
    finally:
        server.stop()


@pytest.mark.pure
def test_outage_log_one_line_down_bounded_summaries_one_line_back(caplog):
    now = [0.0]
    logger = logging.getLogger("loyalty.test.outage")
    outage = OutageLog(logger, "thing", summary_interval_s=30, clock=lambda: now[0])
    # Counted on a handler of its own: whether "loyalty" propagates depends on
    # whether configure_logging ran in this process.
    logger.addHandler(caplog.handler)
    logger.propagate = False
    try:
        with caplog.at_level(logging.INFO, logger="loyalty.test.outage"):
            for second in range(100):
                now[0] = float(second)
                outage.failed("refused")
            now[0] = 100.0
            assert outage.recovered() == 100.0
            assert outage.recovered() is None
    finally:
        logger.removeHandler(caplog.handler)
        logger.propagate = True
    messages = [record.getMessage() for record in caplog.records]
    assert messages[0] == "thing is down: refused"
    assert len(messages) == 1 + 3 + 1  # down, a summary each 30 s, back
    assert messages[-1] == "thing is back after 100.00 s (100 failures)"


@pytest.mark.pure
def test_chaos_verdict_fails_on_unexpected_codes_and_unrecovered_faults():
    clean = ChaosReport(ChaosSettings(), [FaultRecord("redis_crash", "", recovery_s=0.5)])
    assert clean.ok
    internal = ChaosReport(ChaosSettings(), [], unexpected_codes={"INTERNAL": 1})
    assert not internal.ok
    never = ChaosReport(ChaosSettings(), [FaultRecord("redis_crash", "", recovery_s=None)])
    assert not never.ok
    unresolved = ChaosReport(ChaosSettings(), [], unknown_unresolved=1)
    assert not unresolved.ok
