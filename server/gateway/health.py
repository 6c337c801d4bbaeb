"""Health that tells the truth: SERVING only while every shard can journal.

A gateway whose shards cannot write to Redis (Redis down or restarting, a shard
recovering or being restarted by Ray) answers every mutation UNAVAILABLE, so a load
balancer should send its traffic elsewhere. ``ShardHealth`` keeps the gRPC health
status of the loyalty service (and of "", the whole server) at NOT_SERVING while any
shard cannot journal and at SERVING once every one can again; ``Watch`` subscribers
see each change.

It learns of trouble two ways: a shard call that fails as UNAVAILABLE reports it at
once (``report_unavailable``, from the router), and a probe asks every shard's Ray
method ``health`` every HEALTH_PROBE_INTERVAL_S (more often while one is down), so an
idle server notices an outage and heals without waiting for traffic. Only a probe
marks a shard healthy again. Each shard's outages are logged by an OutageLog: one
line down, bounded summaries, one line back with the outage's length.
"""

from __future__ import annotations

import asyncio
import logging

from grpc_health.v1 import health, health_pb2

from loyalty.actors.outage import OutageLog

log = logging.getLogger(__name__)

HEALTH_PROBE_INTERVAL_S = 1.0
"""Probe period while every shard is healthy: an idle server notices an outage
within about a second, for one cheap Ray call per shard per second."""
HEALTH_PROBE_INTERVAL_DOWN_S = 0.25
"""Probe period while a shard is down, so SERVING returns soon after it heals."""
HEALTH_PROBE_TIMEOUT_S = 1.0
"""A shard that does not answer a probe within this long counts as down (Ray is
restarting it, or it is recovering a large state: it cannot journal meanwhile)."""


class ShardHealth:
    """Probes the shards and sets the health status of ``service_names``."""

    def __init__(self, actors: list, servicer: health.aio.HealthServicer, service_names: tuple[str, ...]) -> None:
        self._actors = actors
        self._servicer = servicer
        self._service_names = service_names
        self._outages = [
            OutageLog(log, f"shard {index} journal",
                      action="health NOT_SERVING until every shard can journal; probing")
            for index in range(len(actors))
        ]
        self._serving: bool | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None

    @property
    def serving(self) -> bool:
        """Whether every shard could journal at the last look."""
        return bool(self._serving)

    async def start(self) -> None:
        """Probe once, publish the status, then keep probing in the background."""
        await self._probe_all()
        self._task = asyncio.create_task(self._run(), name="loyalty-shard-health")

    async def stop(self) -> None:
        """Stop probing (before the gateway's graceful shutdown takes over health)."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    def report_unavailable(self, shard: int, reason: str) -> None:
        """A call to ``shard`` failed as UNAVAILABLE: NOT_SERVING at once; the probe
        decides when it is back."""
        self._outages[shard].failed(reason)
        self._wake.set()

    async def _run(self) -> None:
        while True:
            down = any(outage.down for outage in self._outages)
            interval_s = HEALTH_PROBE_INTERVAL_DOWN_S if down else HEALTH_PROBE_INTERVAL_S
            try:
                await asyncio.wait_for(self._wake.wait(), interval_s)
            except asyncio.TimeoutError:
                pass
            if self._wake.is_set():
                self._wake.clear()
                await self._publish()  # a reported failure: NOT_SERVING before probing
            await self._probe_all()

    async def _probe_all(self) -> None:
        results = await asyncio.gather(*(self._probe(actor) for actor in self._actors))
        for outage, (ok, reason) in zip(self._outages, results):
            if ok:
                outage.recovered()
            else:
                outage.failed(reason)
        await self._publish()

    @staticmethod
    async def _probe(actor) -> tuple[bool, str]:
        try:
            return tuple(await asyncio.wait_for(actor.health.remote(), HEALTH_PROBE_TIMEOUT_S))
        except asyncio.TimeoutError:
            return False, f"no answer to a health probe within {HEALTH_PROBE_TIMEOUT_S:g} s (restarting?)"
        except Exception as error:  # RayActorError and the like: the shard is away
            return False, f"{type(error).__name__}: {error}".splitlines()[0]

    async def _publish(self) -> None:
        serving = not any(outage.down for outage in self._outages)
        if serving == self._serving:
            return
        if self._serving is not None:
            log.warning("health %s", "SERVING: every shard can journal" if serving else "NOT_SERVING")
        self._serving = serving
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in self._service_names:
            await self._servicer.set(name, status)
