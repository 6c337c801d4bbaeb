"""A chaos run: the workload, the faults and the checker put together.

A run starts a gateway with its own shard actors on a Redis the caller owns, lets
several clients run a mixed workload (workload.py) and meanwhile injects faults in
rotation with quiet periods between them (faults.py). After the faults heal, the
checker asks the server about every operation and replays every shard journal in a
fresh process (checker.py), and the ChaosReport says what was lost, applied twice,
or otherwise wrong (report.py). The negative control (the shard's test-only
``unsafe_acknowledge_before_journal`` switch) shows the checker sees loss.

``python -m loyalty.server.chaos.run replay --redis-url URL --key-prefix P --shards N``
prints every member's balance rebuilt from the journals alone, as JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import pathlib
import sys
import tempfile
import time
import uuid
from collections.abc import Callable

import ray

from loyalty.actors.shard.actor import ShardSettings
from loyalty.server.chaos.checker import check, replay_balances
from loyalty.server.chaos.faults import FAULTS, FaultInjector
from loyalty.server.chaos.gateway import ChaosGateway
from loyalty.server.chaos.report import ChaosReport
from loyalty.server.chaos.settings import ChaosSettings
from loyalty.server.chaos.workload import Connection, Workload
from loyalty.server.runtime.app import use_loopback_for_local_ray
from loyalty.server.runtime.embedded_redis import EmbeddedRedis


class ChaosRun:
    """A workload with rotating faults against a gateway on the caller's Redis.

    The caller owns Redis (an EmbeddedRedis, so it can be killed and restarted) and
    Ray (already initialised). Call :meth:`execute` from a thread that outlives the
    run (normally the main thread): Redis restarts are tied to the calling thread.
    """

    def __init__(self, redis_server: EmbeddedRedis, settings: ChaosSettings, *,
                 log: Callable[[str], None] = print) -> None:
        unknown = set(settings.faults) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown faults {sorted(unknown)}; known: {', '.join(FAULTS)}")
        self.redis = redis_server
        self.settings = settings
        self.run_id = settings.key_prefix or f"chaos-{uuid.uuid4().hex[:8]}"
        """Prefix of every member id, Redis key prefix and Ray namespace of the run."""
        self.log = log
        self.template = ShardSettings(
            shard_index=0,
            redis_url=redis_server.url,
            key_prefix=self.run_id,
            # Under the unsafe switch memory runs ahead of the journal, so every
            # snapshot would be refused (and logged): do not attempt any.
            snapshot_every_events=(2**62 if settings.unsafe_acknowledge_before_journal
                                   else settings.snapshot_every_events),
            redis_socket_timeout_s=settings.redis_socket_timeout_s,
            unsafe_acknowledge_before_journal=settings.unsafe_acknowledge_before_journal,
        )

    def execute(self) -> ChaosReport:
        """Run the workload and the faults, heal, check; return the report."""
        settings = self.settings
        started = time.monotonic()
        gateway = ChaosGateway(self.redis.url, self.run_id, self.template, settings.shards).start()
        workload = Workload(run_id=self.run_id, shards=settings.shards, clients=settings.clients,
                            seed=settings.seed, endpoint=gateway.endpoint)
        injector = FaultInjector(self.redis, gateway, workload, template=self.template,
                                 redis_down_s=settings.redis_down_s, redis_pause_s=settings.redis_pause_s)
        runner = Connection(gateway.endpoint)
        try:
            workload.start()
            workload.stopping.wait(settings.warmup_s)
            number = 0
            while not self._faults_done(number, started):
                kind = settings.faults[number % len(settings.faults)]
                record = injector.inject(kind, number, runner)
                self.log(f"chaos: {kind}: {record.detail}; recovered in "
                         + (f"{record.recovery_s:.2f}s" if record.recovery_s is not None else "(never)"))
                number += 1
                workload.stopping.wait(settings.quiet_s)
            workload.stop()
            workload.join()
            workload.probe(runner)
            workload_s = time.monotonic() - started
            self.log(f"chaos: workload stopped after {workload_s:.1f}s; checking")
            history = workload.history
            report = ChaosReport(settings, injector.records, failures=list(history.failures),
                                 unexpected_codes=dict(history.unexpected_codes), workload_s=workload_s)
            check(report, history, runner, redis_url=self.redis.url, key_prefix=self.run_id)
        finally:
            workload.stop()
            runner.close()
            gateway.stop()
        report.duration_s = time.monotonic() - started
        return report

    def _faults_done(self, number: int, started: float) -> bool:
        if self.settings.duration_s > 0:
            return time.monotonic() - started >= self.settings.duration_s
        return number >= self.settings.cycles * len(self.settings.faults)


def run_standalone(settings: ChaosSettings) -> ChaosReport:
    """``loyalty chaos``: an embedded Redis in a temporary directory, a local Ray, the
    run, and everything stopped again."""
    with tempfile.TemporaryDirectory(prefix="loyalty-chaos-") as scratch:
        server = EmbeddedRedis(pathlib.Path(scratch), appendfsync="always", supervised=True)
        server.start()
        try:
            use_loopback_for_local_ray()
            ray.init(include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
            try:
                return ChaosRun(server, settings).execute()
            finally:
                ray.shutdown()
        finally:
            server.stop()


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loyalty.server.chaos.run")
    commands = parser.add_subparsers(dest="command", required=True)
    replay = commands.add_parser("replay", help="print every member's balance rebuilt from the journals")
    replay.add_argument("--redis-url", required=True)
    replay.add_argument("--key-prefix", required=True)
    replay.add_argument("--shards", type=int, required=True)
    options = parser.parse_args(argv)
    balances = replay_balances(options.redis_url, options.key_prefix, options.shards)
    json.dump(balances, sys.stdout, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
