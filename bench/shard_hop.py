"""What one gateway -> shard hop costs: a Ray actor call vs the shard's data channel.

Both sides do no work (the actor echoes the payload), so what is measured is the hop
itself: wall time per call and CPU per call summed over this process, the actor's
process and Ray's own processes (GCS, raylet, agents), from /proc.

The channel side uses the real classes, actors.channel.ChannelServer inside the Ray
actor and server.channel.ShardChannel in this process, so this is the path the
gateway takes.

Usage: python bench/shard_hop.py [--calls 3000] [--payload-bytes 300] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time

import psutil
import ray
import uvloop

from loyalty.actors.shard.channel_server import ChannelServer
from loyalty.server.runtime.app import use_loopback_for_local_ray
from loyalty.server.gateway.shard_channel import ShardChannel


class EchoShard:
    """A Ray actor with the shard's two entry points, doing no work."""

    def __init__(self) -> None:
        self._channel: ChannelServer | None = None

    def apply(self, payload: bytes, rules_version: int = 0) -> bytes:
        return bytes(payload)

    def channel_address(self) -> tuple[str, int, bytes]:
        if self._channel is None:
            self._channel = ChannelServer("127.0.0.1", self.apply, name="echo")
        return (*self._channel.address, self._channel.token)

    def pid(self) -> int:
        return os.getpid()


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def ray_pids(actor_pid: int) -> list[int]:
    """This process, the actor, and every process Ray started."""
    pids = {os.getpid(), actor_pid}
    for process in psutil.process_iter(["cmdline"]):
        if "ray" in " ".join(process.info["cmdline"] or []):
            pids.add(process.pid)
    return sorted(pids)


async def measure(label: str, call, calls: int, concurrency: int, pids: list[int]) -> dict:
    for _ in range(min(200, calls)):  # warm up connections and caches
        await call()
    cpu_before, started = cpu_seconds(pids), time.perf_counter()

    async def worker(count: int) -> None:
        for _ in range(count):
            await call()

    await asyncio.gather(*[worker(calls // concurrency) for _ in range(concurrency)])
    elapsed, cpu = time.perf_counter() - started, cpu_seconds(pids) - cpu_before
    done = calls // concurrency * concurrency
    result = {
        "hop": label,
        "concurrency": concurrency,
        "calls": done,
        "wall_us_per_call": elapsed / done * 1e6,
        "cpu_us_per_call": cpu / done * 1e6,
    }
    print(f"{label:>8} x{concurrency}: {result['wall_us_per_call']:8.0f} us wall/call, "
          f"{result['cpu_us_per_call']:8.0f} us CPU/call", file=sys.stderr)
    return result


async def run(options: argparse.Namespace) -> list[dict]:
    actor = ray.remote(EchoShard).options(num_cpus=0).remote()
    pids = ray_pids(await actor.pid.remote())
    payload = b"x" * options.payload_bytes
    channel = ShardChannel(actor)
    results = []
    for concurrency in (1, 4):
        results.append(await measure("ray", lambda: actor.apply.remote(payload, 0), options.calls, concurrency, pids))
    # The batcher keeps one call in flight per shard, so the channel is measured at 1.
    results.append(await measure("channel", lambda: channel.call(payload, 0), options.calls, 1, pids))
    channel.close()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--payload-bytes", type=int, default=300)
    parser.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    options = parser.parse_args(argv)
    use_loopback_for_local_ray()
    ray.init(include_dashboard=False, logging_level=logging.WARNING)
    try:
        results = uvloop.run(run(options))
    finally:
        ray.shutdown()
    if options.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
