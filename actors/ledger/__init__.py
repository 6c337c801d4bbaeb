"""The pure ledger core: deterministic, given the time, importing no Ray, Redis or gRPC
(tests/test_project.py runs it without them).

``core.ShardCore`` applies batches and journal records to a ``ledger.Ledger``, which
holds the members and dispatches each command to its operation in ``ops/``; commands,
events, state and outcomes are the msgspec types that cross process boundaries, and
``rules/`` compiles and evaluates earning rules.

May import: the standard library, msgspec, zstandard. Never ray, redis, grpc or
google.protobuf, nor ``loyalty.actors.shard`` or ``loyalty.server``.
"""

from loyalty.actors.ledger.core import ShardCore
from loyalty.actors.ledger.ledger import Ledger, balance_of, conservation_holds
from loyalty.actors.ledger.program import DEFAULT_PROGRAM, CompiledProgram, Program, load_program
from loyalty.actors.ledger.status import Status

__all__ = [
    "DEFAULT_PROGRAM",
    "CompiledProgram",
    "Ledger",
    "Program",
    "ShardCore",
    "Status",
    "balance_of",
    "conservation_holds",
    "load_program",
]
