"""The audit log of admin actions: who, what, when, before and after.

Stored as a Redis stream ``{<prefix>:auth}:audit`` capped at AUDIT_EVENTS_MAX entries
(oldest dropped first): admin actions are rare, so that is years of history, and a
runaway script cannot grow Redis without bound. The stream id is the event id and
carries the time. Secrets never get here: callers pass public views of keys. Which
events are written when is the admin use-cases' policy (server/admin/changes.py).
"""

from __future__ import annotations

import hashlib
import json
from typing import Protocol

import msgspec
import redis.asyncio as aioredis

from loyalty.server.limits import AUDIT_EVENTS_MAX, AUDIT_JSON_BYTES_MAX
from loyalty.server.stores.admin_requests import AuditOnce


class Actor(Protocol):
    """Who made a change, as an event names them: the caller of an RPC
    (``loyalty.server.security.caller.Caller``), the config file, the CLI. Always
    passed in: the store never guesses who is acting."""

    key_id: str
    name: str


def audit_key(key_prefix: str) -> str:
    """The Redis stream of audit events."""
    return f"{{{key_prefix}:auth}}:audit"


class AuditEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One recorded admin action."""

    event_id: str
    """The stream id ("<ms>-<n>"); orders events."""
    time_ms: int
    actor_key_id: str
    actor_name: str
    action: str
    """The RPC, e.g. "RevokeApiKey"."""
    target: str
    """What was acted on, e.g. "key/key_0123456789abcdef"."""
    before_json: str
    """JSON of the object before ("" when it did not exist)."""
    after_json: str
    """JSON of the object after ("" when it no longer exists)."""


def _json(value: dict | None) -> str:
    if value is None:
        return ""
    text = json.dumps(msgspec.to_builtins(value), sort_keys=True, separators=(",", ":"))
    if len(text) > AUDIT_JSON_BYTES_MAX:
        digest = hashlib.sha256(text.encode()).hexdigest()
        return json.dumps({"truncated": True, "bytes": len(text), "sha256": digest})
    return text


def _text(fields: dict[bytes, bytes], name: bytes) -> str:
    return fields.get(name, b"").decode()


class AuditLog:
    """Appends and reads audit events."""

    def __init__(self, client: aioredis.Redis, *, key_prefix: str) -> None:
        self._client = client
        self._key = audit_key(key_prefix)
        self._once = AuditOnce(client, key_prefix=key_prefix, stream_key=self._key)

    @property
    def stream_key(self) -> str:
        """The Redis stream the events are appended to."""
        return self._key

    def event_fields(
        self,
        *,
        action: str,
        target: str,
        before: dict | None,
        after: dict | None,
        actor: Actor,
    ) -> dict[str, str]:
        """The stream fields of one event, as ``record`` appends them."""
        return {
            "actor_key_id": actor.key_id,
            "actor_name": actor.name,
            "action": action,
            "target": target,
            "before_json": _json(before),
            "after_json": _json(after),
        }

    async def record(
        self,
        *,
        action: str,
        target: str,
        before: dict | None,
        after: dict | None,
        actor: Actor,
    ) -> None:
        """Append one event."""
        fields = self.event_fields(action=action, target=target, before=before, after=after, actor=actor)
        await self._client.xadd(self._key, fields, maxlen=AUDIT_EVENTS_MAX, approximate=False)

    async def record_once(self, area: str, request_id: str, fields: dict[str, str]) -> bool:
        """Append the event of an admin request_id (fields from ``event_fields``,
        stored with the request) unless it already was: retries of a request whose
        first audit write failed append it once. True if appended now."""
        return await self._once.append(area, request_id, fields)

    async def events(self, *, limit: int, before_event_id: str = "") -> tuple[list[AuditEvent], str]:
        """Up to ``limit`` events, newest first, older than ``before_event_id`` when
        given; and the id to continue from ("" when there are no more)."""
        upper = f"({before_event_id}" if before_event_id else "+"
        entries = await self._client.xrevrange(self._key, max=upper, min="-", count=limit + 1)
        events = []
        for raw_id, fields in entries[:limit]:
            event_id = raw_id.decode()
            events.append(
                AuditEvent(
                    event_id=event_id,
                    time_ms=int(event_id.partition("-")[0]),
                    actor_key_id=_text(fields, b"actor_key_id"),
                    actor_name=_text(fields, b"actor_name"),
                    action=_text(fields, b"action"),
                    target=_text(fields, b"target"),
                    before_json=_text(fields, b"before_json"),
                    after_json=_text(fields, b"after_json"),
                )
            )
        more = len(entries) > limit
        return events, (events[-1].event_id if more and events else "")
