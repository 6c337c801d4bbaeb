"""The gateway's view of the shards: Ray actors, one batcher each, member routing.

``ShardRouter`` is the servicer's CommandRouter (server/gateway/routing.py) over them."""

from __future__ import annotations

from collections.abc import Callable

import msgspec
import ray
import ray.exceptions
from loyalty.actors.shard.journal import JournalError
from loyalty.actors.ledger.commands import Command
from loyalty.actors.ledger.outcomes import Outcome
from loyalty.actors.ledger.status import Status
from loyalty.actors.routing import shard_of
from loyalty.actors.shard.actor import ShardSettings, make_shard_actor
from loyalty.server.gateway.batcher import ShardBatcher
from loyalty.server.gateway.shard_channel import ShardChannel, ShardConnectionLost
from loyalty.server.gateway.routing import ShardChunk
from loyalty.server.errors import GatewayError
from loyalty.server.limits import SHARD_CALL_OPERATIONS_MAX, SHARD_QUEUE_OPERATIONS_MAX
from loyalty.server.stores.rules import LiveRulesVersion


def classify_shard_error(error: BaseException) -> GatewayError | None:
    """Which shard failures callers may retry (UNAVAILABLE) and which are bugs.

    A journal that could not be reached, a fenced or dead actor, one that is
    restarting, or a data channel that stayed broken: the batch's effects may or may
    not be durable, so callers get UNAVAILABLE and retry with the same request_id (or
    ask GetOperation). Anything else raised inside a shard (ShardFailed over the
    channel, RayTaskError through Ray) is a bug and surfaces as INTERNAL.
    """
    if isinstance(error, JournalError):
        return GatewayError(Status.SHARD_UNAVAILABLE, f"shard journal unavailable: {type(error).__name__}")
    if isinstance(error, ShardConnectionLost):
        return GatewayError(Status.SHARD_UNAVAILABLE, "shard unavailable: connection lost")
    if isinstance(error, ray.exceptions.RayTaskError):
        return None
    if isinstance(error, ray.exceptions.RayError):
        return GatewayError(Status.SHARD_UNAVAILABLE, f"shard unavailable: {type(error).__name__}")
    return None


class ShardShare(msgspec.Struct, array_like=True, gc=False):
    """The part of a submission that goes to one shard."""

    shard: int
    positions: list[int]
    """Where each of its commands is in the submitted list, in order."""


class ShardRouter:
    """Routes commands to the batcher of the shard that owns each member."""

    def __init__(self, batchers: list[ShardBatcher], channels: list[ShardChannel] = (), actors: list = ()) -> None:
        self._batchers = batchers
        self._channels = list(channels)
        self.actors = list(actors)
        """The shard actors, by shard index (empty for routers without Ray actors)."""
        self.on_unavailable: Callable[[int, str], None] | None = None
        """Told (shard index, reason) when a shard call fails as UNAVAILABLE (the
        gateway's ShardHealth listens)."""

    def report_unavailable(self, shard: int, reason: str) -> None:
        """Pass a failed shard call on to ``on_unavailable``."""
        if self.on_unavailable is not None:
            self.on_unavailable(shard, reason)

    def close(self) -> None:
        """Close the shard channels (after the gateway stopped taking calls)."""
        for channel in self._channels:
            channel.close()

    @property
    def batchers(self) -> list[ShardBatcher]:
        """One batcher per shard, by shard index."""
        return self._batchers

    def _split(self, commands: list[Command]) -> list[ShardShare]:
        """The share of each shard that got any commands, in the order of each
        shard's first command."""
        count = len(self._batchers)
        if count == 1:
            return [ShardShare(0, list(range(len(commands))))] if commands else []
        by_shard: list[list[int]] = [[] for _ in range(count)]
        appenders = [positions.append for positions in by_shard]
        for position, command in enumerate(commands):
            appenders[shard_of(command.member_id, count)](position)
        shares = [ShardShare(shard, positions) for shard, positions in enumerate(by_shard) if positions]
        shares.sort(key=lambda share: share.positions[0])
        return shares

    def _check_room(self, shares: list[ShardShare]) -> None:
        for share in shares:
            if not self._batchers[share.shard].has_room(len(share.positions)):
                raise GatewayError(
                    Status.OVERLOADED, f"shard {share.shard} is behind; retry with backoff"
                )

    def submit_chunks(self, commands: list[Command]) -> list[ShardChunk]:
        """Queue commands on their shards, all or none (GatewayError OVERLOADED):
        one chunk (one future) per shard that got any."""
        shares = self._split(commands)
        self._check_room(shares)
        if len(shares) == 1:
            (share,) = shares
            return [ShardChunk(share.positions, self._batchers[share.shard].submit_group(commands))]
        return [
            ShardChunk(
                share.positions,
                self._batchers[share.shard].submit_group([commands[position] for position in share.positions]),
            )
            for share in shares
        ]

    async def execute(self, command: Command) -> Outcome:
        """Apply one command and wait for its outcome."""
        shard = shard_of(command.member_id, len(self._batchers))
        (answer,) = await self._batchers[shard].submit_group([command])
        if isinstance(answer, BaseException):
            raise answer
        return answer


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
    """A router with one bounded batcher per actor, sending over each actor's data
    channel (server/gateway/shard_channel.py). Each shard call carries the rules version ``rules``
    holds when the call is sent, so a whole batch is evaluated with one version (the
    shard installs it first if it is newer than its own)."""
    live = rules if rules is not None else LiveRulesVersion()
    channels = [ShardChannel(actor) for actor in actors]

    def caller(channel: ShardChannel):
        async def call(payload: bytes) -> bytes:
            return await channel.call(payload, live.version)

        return call

    router = ShardRouter([], channels, actors)

    def classifier(shard: int):
        def classify(error: BaseException) -> GatewayError | None:
            failure = classify_shard_error(error)
            if failure is not None and failure.status == Status.SHARD_UNAVAILABLE:
                router.report_unavailable(shard, failure.message)
            return failure

        return classify

    router.batchers.extend(
        ShardBatcher(
            caller(channel),
            classify_error=classifier(shard),
            queue_operations_max=SHARD_QUEUE_OPERATIONS_MAX,
            call_operations_max=SHARD_CALL_OPERATIONS_MAX,
        )
        for shard, channel in enumerate(channels)
    )
    return router
