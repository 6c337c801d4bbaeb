"""The gateway's view of the shards: Ray actors, one batcher each, member routing."""

from __future__ import annotations

import asyncio

import msgspec
import ray
import ray.exceptions

from loyalty.actors.journal import JournalError
from loyalty.actors.ledger.commands import Command
from loyalty.actors.ledger.outcomes import Outcome
from loyalty.actors.ledger.status import Status
from loyalty.actors.routing import shard_of
from loyalty.actors.shard import ShardSettings, make_shard_actor
from loyalty.server.batcher import ShardBatcher
from loyalty.server.errors import GatewayError
from loyalty.server.limits import SHARD_CALL_OPERATIONS_MAX, SHARD_QUEUE_OPERATIONS_MAX
from loyalty.server.rules_store import LiveRulesVersion


def classify_shard_error(error: BaseException) -> GatewayError | None:
    """Which shard failures callers may retry (UNAVAILABLE) and which are bugs.

    A journal that could not be reached, a fenced or dead actor, or one that is
    restarting: the batch's effects may or may not be durable, so callers get
    UNAVAILABLE and retry with the same request_id (or ask GetOperation). Anything
    else raised inside a shard is a bug and surfaces as INTERNAL.
    """
    if isinstance(error, JournalError):
        return GatewayError(Status.SHARD_UNAVAILABLE, f"shard journal unavailable: {type(error).__name__}")
    if isinstance(error, ray.exceptions.RayTaskError):
        return None
    if isinstance(error, ray.exceptions.RayError):
        return GatewayError(Status.SHARD_UNAVAILABLE, f"shard unavailable: {type(error).__name__}")
    return None


class ShardRouter:
    """Routes commands to the batcher of the shard that owns each member."""

    def __init__(self, batchers: list[ShardBatcher]) -> None:
        self._batchers = batchers

    @property
    def batchers(self) -> list[ShardBatcher]:
        """One batcher per shard, by shard index."""
        return self._batchers

    def submit(self, commands: list[Command]) -> list[asyncio.Future]:
        """Queue commands on their shards, all or none (GatewayError OVERLOADED)."""
        count = len(self._batchers)
        by_shard: dict[int, list[int]] = {}
        for position, command in enumerate(commands):
            by_shard.setdefault(shard_of(command.member_id, count), []).append(position)
        for shard, positions in by_shard.items():
            if not self._batchers[shard].has_room(len(positions)):
                raise GatewayError(
                    Status.OVERLOADED, f"shard {shard} is behind; retry with backoff"
                )
        futures: list[asyncio.Future | None] = [None] * len(commands)
        for shard, positions in by_shard.items():
            queued = self._batchers[shard].submit([commands[p] for p in positions])
            for position, future in zip(positions, queued, strict=True):
                futures[position] = future
        return futures

    async def execute(self, command: Command) -> Outcome:
        """Apply one command and wait for its outcome."""
        shard = shard_of(command.member_id, len(self._batchers))
        (future,) = self._batchers[shard].submit([command])
        return await future


def start_shard_actors(template: ShardSettings, names: list[str], *, namespace: str) -> list:
    """Create one named shard actor per name (shard index = position) and wait until
    every one has recovered its state."""
    actors = [
        make_shard_actor(
            msgspec.structs.replace(template, shard_index=index), name=name, namespace=namespace
        )
        for index, name in enumerate(names)
    ]
    ray.get([actor.describe.remote() for actor in actors])
    return actors


def router_for(actors: list, rules: LiveRulesVersion | None = None) -> ShardRouter:
    """A router with one bounded batcher per actor. Each shard call carries the rules
    version ``rules`` holds when the call is sent, so a whole batch is evaluated with
    one version (the shard installs it first if it is newer than its own)."""
    live = rules if rules is not None else LiveRulesVersion()

    def caller(actor):
        async def call(payload: bytes) -> bytes:
            return await actor.apply.remote(payload, live.version)

        return call

    return ShardRouter(
        [
            ShardBatcher(
                caller(actor),
                classify_error=classify_shard_error,
                queue_operations_max=SHARD_QUEUE_OPERATIONS_MAX,
                call_operations_max=SHARD_CALL_OPERATIONS_MAX,
            )
            for actor in actors
        ]
    )
