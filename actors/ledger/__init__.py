"""The pure ledger core: deterministic, given the time, importing no Ray, Redis or gRPC."""

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
