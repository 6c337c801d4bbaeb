"""The faults a chaos run injects, one at a time, each healed before the next:

* ``shard_kill``: SIGKILL of a shard actor's process (Ray restarts it);
* ``redis_kill``: SIGKILL of Redis, then a restart (by the run) from its append-only file;
* ``redis_crash``: SIGKILL of Redis and nobody but the server's own supervisor restarts
  it (the Redis must be a supervised EmbeddedRedis, as ``loyalty serve`` runs);
* ``redis_pause``: SIGSTOP of Redis, then SIGCONT;
* ``gateway_restart``: the gateway and its shards stopped, a new one started on
  another port (clients reconnect);
* ``stale_incarnation``: a second actor for shard 0 claims a newer epoch; the old
  incarnation's next append must be refused and must not land.

After each one the injector waits until every shard accepts a write again and
records how long that took.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time

import msgspec
import ray
import redis

from loyalty.actors.ledger import codec
from loyalty.actors.ledger import commands as c
from loyalty.actors.ledger.status import Status
from loyalty.actors.shard.actor import ShardSettings, make_shard_actor
from loyalty.actors.shard.journal import FencedError
from loyalty.server.chaos.gateway import ChaosGateway
from loyalty.server.chaos.workload import RECOVERY_DEADLINE_S, Connection, OpRecord, Workload
from loyalty.server.runtime.embedded_redis import EmbeddedRedis

FAULTS = ("shard_kill", "redis_kill", "redis_crash", "redis_pause", "gateway_restart", "stale_incarnation")
"""Every fault type, in the order a run rotates through them."""


@dataclasses.dataclass
class FaultRecord:
    """One injected fault and how long the server took to take writes again."""

    kind: str
    detail: str
    recovery_s: float | None = None
    """From injection to every shard accepting a write again (None: never)."""
    held_s: float = 0.0
    """How long the fault was deliberately kept in place (Redis down or stopped,
    gateway being replaced) before it was healed; part of recovery_s."""


class FaultInjector:
    """Injects faults into the gateway, its shards and the Redis under them, heals
    them, and keeps a :class:`FaultRecord` of each in ``records``.

    A fault that cannot be injected or never heals is one of the run's failures; the
    run goes on with the next one.
    """

    def __init__(self, redis_server: EmbeddedRedis, gateway: ChaosGateway, workload: Workload, *,
                 template: ShardSettings, redis_down_s: float, redis_pause_s: float) -> None:
        self._redis = redis_server
        self._gateway = gateway
        self._workload = workload
        self._history = workload.history
        self._template = template
        self._redis_down_s = redis_down_s
        self._redis_pause_s = redis_pause_s
        self.records: list[FaultRecord] = []
        self._stale_count = 0
        self._healed_at = 0.0

    def inject(self, kind: str, number: int, runner: Connection) -> FaultRecord:
        """Inject fault ``kind`` (the run's ``number``-th), heal it, and wait through
        ``runner`` until every shard takes writes again."""
        injected = time.monotonic()
        self._healed_at = injected
        record = FaultRecord(kind, "")
        self.records.append(record)
        try:
            record.detail = getattr(self, f"_fault_{kind}")(number)
            record.held_s = self._healed_at - injected
            runner.refresh()
            recovered = self._workload.probe(runner)
            record.recovery_s = recovered - injected
        except Exception as error:  # the run continues; the report says what failed
            self._history.failures.append(f"fault {kind}: {error!r}")
            record.detail = record.detail or f"failed: {error!r}"
        return record

    def _fault_shard_kill(self, number: int) -> str:
        shard = number % self._workload.shards
        actor = self._gateway.actors[shard]
        pid = ray.get(actor.pid.remote(), timeout=RECOVERY_DEADLINE_S)
        os.kill(pid, signal.SIGKILL)
        return f"shard {shard} pid {pid} killed with SIGKILL"

    def _fault_redis_kill(self, number: int) -> str:
        pid = self._redis.pid
        self._redis.kill()
        self._workload.stopping.wait(self._redis_down_s)
        self._redis.restart()
        self._healed_at = time.monotonic()
        return f"redis pid {pid} killed with SIGKILL, restarted from its AOF as pid {self._redis.pid}"

    def _fault_redis_crash(self, number: int) -> str:
        if not self._redis.supervised:
            raise RuntimeError("redis_crash needs a supervised Redis (EmbeddedRedis(supervised=True))")
        restarts, pid = self._redis.restarts, self._redis.pid
        os.kill(pid, signal.SIGKILL)
        if not self._redis.wait_until_restarted(restarts, timeout_s=RECOVERY_DEADLINE_S):
            raise RuntimeError(f"the supervisor did not restart Redis within {RECOVERY_DEADLINE_S:g} s")
        self._healed_at = time.monotonic()
        return f"redis pid {pid} killed with SIGKILL; the supervisor restarted it as pid {self._redis.pid}"

    def _fault_redis_pause(self, number: int) -> str:
        pid = self._redis.pid
        os.kill(pid, signal.SIGSTOP)
        try:
            self._workload.stopping.wait(self._redis_pause_s)
        finally:
            os.kill(pid, signal.SIGCONT)
            self._healed_at = time.monotonic()
        return f"redis pid {pid} stopped (SIGSTOP) for {self._redis_pause_s:g}s, then SIGCONT"

    def _fault_gateway_restart(self, number: int) -> str:
        old_target = self._gateway.target
        self._gateway.restart()
        self._healed_at = time.monotonic()
        return f"gateway {old_target} stopped, new gateway on {self._gateway.target}"

    def _fault_stale_incarnation(self, number: int) -> str:
        """A second actor for shard 0 takes a newer epoch; the old incarnation's next
        append must be refused (FencedError) and nothing it wrote may land. Then the
        old one, serving the gateway again, re-recovers and fences the newcomer."""
        self._stale_count += 1
        tag = f"{self._workload.run_id}-stale{self._stale_count}"
        shard = 0
        old_actor = self._gateway.actors[shard]
        connection = Connection(self._gateway.endpoint)
        try:
            member_id = self._workload.member_on_shard(tag, shard)
            self._history.add_member(member_id)
            self._workload.enroll(connection, member_id, client=-2)
            self._workload.pause()
            settings = msgspec.structs.replace(self._template, shard_index=shard)
            newcomer = make_shard_actor(settings, name=f"{tag}-newcomer", namespace=self._template.key_prefix)
            try:
                epoch = ray.get(newcomer.describe.remote(), timeout=RECOVERY_DEADLINE_S)["epoch"]
                # The newcomer writes: acknowledged, so it must survive.
                self._direct(newcomer, member_id, f"{tag}-newcomer-write", 5, expect_fenced=False)
                # The old incarnation tries to append: refused, and must not land.
                self._direct(old_actor, member_id, f"{tag}-old-write", 7, expect_fenced=True)
                if self._journal_mentions(shard, f"{tag}-old-write"):
                    self._history.failures.append(f"{tag}: the fenced append reached the journal")
                self._workload.resume()
                # The gateway's next write to shard 0 makes the old actor recover
                # (new epoch); from then on the newcomer is the stale one.
                self._workload.probe(connection)
                self._direct(newcomer, member_id, f"{tag}-newcomer-late-write", 9, expect_fenced=True)
            finally:
                ray.kill(newcomer, no_restart=True)
        finally:
            self._workload.resume()
            connection.close()
        return (f"shard {shard}: second incarnation took epoch {epoch}; the old one's append was "
                f"fenced, then it re-recovered and fenced the second")

    def _direct(self, actor, member_id: str, request_id: str, points: int, *, expect_fenced: bool) -> None:
        """Send one Adjust straight to a shard actor, bypassing the gateway, and
        record it (acknowledged, or refused when it must be fenced)."""
        payload = codec.encode_commands([c.Adjust(member_id, request_id, points=points, reason="chaos")])
        try:
            (outcome,) = codec.decode_outcomes(ray.get(actor.apply.remote(payload), timeout=RECOVERY_DEADLINE_S))
        except ray.exceptions.RayTaskError as error:
            if not (expect_fenced and isinstance(error, FencedError)):
                raise
            self._history.add_op(OpRecord(-2, member_id, request_id, "adjust", "refused", None, "FENCED"))
            return
        if expect_fenced:
            self._history.failures.append(f"{request_id}: a stale incarnation's append was not fenced")
            self._history.add_op(OpRecord(-2, member_id, request_id, "adjust", "unknown"))
            return
        result = "ok" if outcome.status == Status.OK else "failed"
        self._history.add_op(OpRecord(-2, member_id, request_id, "adjust", result, None, Status(outcome.status).name))

    def _journal_mentions(self, shard: int, text: str) -> bool:
        client = redis.Redis.from_url(self._redis.url)
        try:
            entries = client.xrange(f"{{{self._template.key_prefix}:shard:{shard}}}:journal")
        finally:
            client.close()
        needle = text.encode()
        return any(needle in fields.get(b"d", b"") for _entry_id, fields in entries)
