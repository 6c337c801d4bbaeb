"""Commands a shard applies: what gateways send, a batch at a time, msgspec-encoded
over the shard's data channel (actors/shard/channel_server.py).

Mutations carry a client-chosen request_id; reads do not. The gateway has validated
every field before a command is built (see loyalty.server.gateway.requests), so the
core only asserts (limits.UNVALIDATED).
"""

from __future__ import annotations

import typing

import msgspec


class Line(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One purchase line: amount_minor is the line total, not the unit price."""

    sku: str
    category: str
    quantity: int
    amount_minor: int


class ReturnLine(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """Quantity of a SKU coming back."""

    sku: str
    quantity: int


# gc=False: commands hold strings, ints, tuples and dicts of strings, never cycles;
# a Batch keeps thousands alive, and the cyclic GC need not walk them.
class _Command(msgspec.Struct, frozen=True, array_like=True, gc=False, tag_field="k"):
    member_id: str


class _Mutation(_Command, frozen=True):
    request_id: str


class EnrollMember(_Mutation, frozen=True, tag="enroll"):
    """Create a member."""

    attributes: dict[str, str] = {}


class Earn(_Mutation, frozen=True, tag="earn"):
    """Earn points for a purchase."""

    currency: str = ""
    lines: tuple[Line, ...] = ()
    channel: str = ""
    store_id: str = ""
    occurred_at_ms: int = 0


class Redeem(_Mutation, frozen=True, tag="redeem"):
    """Spend available points."""

    points: int = 0


class Reserve(_Mutation, frozen=True, tag="reserve"):
    """Hold points until captured, released or expired."""

    points: int = 0
    ttl_s: int = 0


class Capture(_Mutation, frozen=True, tag="capture"):
    """Spend a hold (points 0: all of it); the rest goes back."""

    reservation_id: str = ""
    points: int = 0


class Release(_Mutation, frozen=True, tag="release"):
    """Give a hold back."""

    reservation_id: str = ""


class Reverse(_Mutation, frozen=True, tag="reverse"):
    """Claw back what returned lines of an earlier Earn earned (no lines: all of it)."""

    original_request_id: str = ""
    lines: tuple[ReturnLine, ...] = ()


class Adjust(_Mutation, frozen=True, tag="adjust"):
    """Add (positive) or remove (negative) points by hand."""

    points: int = 0
    reason: str = ""


class GetMember(_Command, frozen=True, tag="get_member"):
    """Read a member."""


class GetBalance(_Command, frozen=True, tag="get_balance"):
    """Read a member's balance."""


class ListTransactions(_Command, frozen=True, tag="list_transactions"):
    """Read transactions newest first, starting below transaction sequence before_seq
    (0: from the newest)."""

    page_size: int = 0
    before_seq: int = 0


class GetOperation(_Command, frozen=True, tag="get_operation"):
    """Read the stored outcome of a request."""

    request_id: str = ""


class SimulateEarn(_Command, frozen=True, tag="simulate_earn"):
    """Read: the Outcome an Earn with these fields would get now, changing nothing
    (request_id may be empty; when it names a stored request, that request's outcome
    or a conflict is what an Earn would get, so that is the answer)."""

    request_id: str = ""
    currency: str = ""
    lines: tuple[Line, ...] = ()
    channel: str = ""
    store_id: str = ""
    occurred_at_ms: int = 0


Mutation = EnrollMember | Earn | Redeem | Reserve | Capture | Release | Reverse | Adjust
Command = Mutation | GetMember | GetBalance | ListTransactions | GetOperation | SimulateEarn

MUTATION_TYPES = (EnrollMember, Earn, Redeem, Reserve, Capture, Release, Reverse, Adjust)

KINDS: dict[type, str] = {kind: kind.__struct_config__.tag for kind in typing.get_args(Command)}
"""The short name of each command type ("earn", "redeem", ...), as outcomes carry it."""


def command_kind(command: Command | type) -> str:
    """The short name of a command or command type, as stored in outcomes."""
    return KINDS[command if isinstance(command, type) else type(command)]
