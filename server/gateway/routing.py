"""What the servicer needs from whatever applies its commands: the ``CommandRouter``
protocol. No Ray here: ``router.ShardRouter`` implements it over the shard actors,
and the SDK's in-process fake (loyalty.clients.testing) over one ledger core, so the
fake imports neither Ray nor Redis.
"""

from __future__ import annotations

import asyncio
from typing import NamedTuple, Protocol

from loyalty.actors.ledger.commands import Command
from loyalty.actors.ledger.outcomes import Outcome


class ShardChunk(NamedTuple):
    """The commands of one submission that went to one shard."""

    positions: list[int]
    """Where each of the chunk's commands is in the submitted list, in order."""
    answers: asyncio.Future
    """Resolves to the chunk's answers, in order: each command's Outcome, or the
    failure of the shard call that carried it (see ShardBatcher.submit_group)."""


class CommandRouter(Protocol):
    """Applies commands where their members live."""

    async def execute(self, command: Command) -> Outcome:
        """Apply one command and wait for its outcome (GatewayError when it cannot
        be applied)."""

    def submit_chunks(self, commands: list[Command]) -> list[ShardChunk]:
        """Queue commands, all or none (GatewayError OVERLOADED when there is no
        room): one chunk per shard that got any."""
