"""Who is calling: the caller of the RPC being served, as the guard established it.

The guard sets it for the duration of each call (``acting_as``); the AdminService
servicer reads it (``current_caller``) and hands it to the admin use-cases as a plain
argument, so nothing below this layer ever reads it implicitly.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from collections.abc import Iterator

from loyalty.server.stores.keys import ApiKeyRecord


@dataclasses.dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: the API key's public fields (never its secret)."""

    key_id: str
    name: str
    role: str
    """pos, ecommerce, analytics or admin; "member" for a member token's holder."""
    channels: tuple[str, ...] = ()
    """Purchases must name one of these channels (empty: any)."""
    store_ids: tuple[str, ...] = ()
    """Purchases must name one of these stores (empty: any)."""

    @classmethod
    def of(cls, record: ApiKeyRecord) -> Caller:
        """The caller holding this key."""
        return cls(record.key_id, record.name, record.role, tuple(record.channels), tuple(record.store_ids))


ANONYMOUS = Caller(key_id="anonymous", name="anonymous", role="admin")
"""Every caller while authentication is off (no keys; loopback only)."""

CONFIG_ACTOR = Caller(key_id="config", name="config", role="admin")
"""The actor of changes made from the config file at start."""

_CALLER: contextvars.ContextVar[Caller] = contextvars.ContextVar("loyalty_caller", default=ANONYMOUS)


def current_caller() -> Caller:
    """The caller of the RPC being served (set by the guard for the call);
    ANONYMOUS when authentication is off or outside any call."""
    return _CALLER.get()


@contextlib.contextmanager
def acting_as(caller: Caller) -> Iterator[None]:
    """Run code as ``caller``: the guard serves each call inside this."""
    token = _CALLER.set(caller)
    try:
        yield
    finally:
        _CALLER.reset(token)
