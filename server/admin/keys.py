"""Key and audit administration: create, list, rotate and revoke API keys, and read
the audit log. The use-cases behind AdminService's key RPCs and ``loyalty keys``
(through a server, or straight to Redis with ``--redis-url``): typed values in, the
server's exceptions out, no gRPC.

A secret appears in exactly one place: the answer to the call that made it (and, for
a call sent with a request_id, the record that lets a retry get the same answer, kept
ADMIN_REQUEST_RETENTION_S: see server/stores/admin_requests.py). The audit log records
every change with the key's public fields only, under the change-then-audit policy of
server/admin/changes.py. Revoking a revoked key answers the key as it is and changes
and records nothing.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Sequence

from loyalty.actors.ledger.limits import PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX
from loyalty.server.admin.changes import ChangePolicy, Retry, now_ms, store_calls
from loyalty.server.errors import FieldViolation
from loyalty.server.page_tokens import decode_page_token, encode_page_token
from loyalty.server.security.config import ROLES, check_key_name, check_scope
from loyalty.server.security.guard import GatewaySecurity
from loyalty.server.stores.admin_requests import KEYS_AREA, AdminRequestRecord, encode_record
from loyalty.server.stores.audit import Actor, AuditEvent, AuditLog
from loyalty.server.stores.keys import ApiKeyRecord, KeyChange, KeyRecords, KeySeed

_KEY_ID = re.compile(r"key_[0-9a-z_-]{1,60}")
_AUDIT_EVENT_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")
_STORE = "key store"


def check_key_id(value: str) -> str:
    """A key id as the API takes it (FieldViolation on ``key_id``)."""
    if not value:
        raise FieldViolation("key_id", "is required")
    if not _KEY_ID.fullmatch(value):
        raise FieldViolation("key_id", "is not a key id ('key_' and up to 60 of [0-9a-z_-])")
    return value


def _target(record: ApiKeyRecord) -> str:
    return f"key/{record.key_id}"


class KeyAdministration:
    """The key and audit use-cases over the key records and the audit log."""

    def __init__(
        self,
        records: KeyRecords,
        audit: AuditLog,
        *,
        page_size_max: int = PAGE_SIZE_MAX,
        after_change: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """``after_change`` runs after every change, before the answer: a gateway
        reloads its own copy of the keys there, so a revocation is in force on the
        gateway that made it before the admin hears back (other gateways follow as
        Redis delivers the change notice)."""
        self._records = records
        self._audit = audit
        self._page_size_max = page_size_max
        self._changes = ChangePolicy(audit, area=KEYS_AREA, key_prefix=records.key_prefix, after_change=after_change)

    @classmethod
    def for_gateway(cls, security: GatewaySecurity) -> KeyAdministration:
        """The key use-cases of one gateway process: its records and audit log, its
        page-size limit, and its copy of the keys reloaded after each change."""
        return cls(
            security.records,
            security.audit,
            page_size_max=security.settings.limits.page_size_max,
            after_change=security.mirror.reload,
        )

    # ------------------------------------------------------------------ changes

    async def create(
        self,
        *,
        name: str,
        role: str,
        channels: Sequence[str] = (),
        store_ids: Sequence[str] = (),
        actor: Actor,
        retry: Retry | None = None,
    ) -> KeyChange | AdminRequestRecord:
        """A new key and its secret, or the record of ``retry``'s first attempt."""
        if role not in ROLES:
            raise FieldViolation("role", "must be ROLE_POS, ROLE_ECOMMERCE, ROLE_ANALYTICS or ROLE_ADMIN")
        name = check_key_name("name", name)
        channels = check_scope("channels", list(channels))
        store_ids = check_scope("store_ids", list(store_ids))
        action = "CreateApiKey"
        async with store_calls(_STORE):
            if (replay := await self._stored(action, retry)) is not None:
                return replay
            change = await self._records.create(
                name=name, role=role, channels=channels, store_ids=store_ids, now_ms=now_ms(),
                recorder=self._recorder(action, actor, retry),
            )
            return await self._committed(action, change, actor, retry)

    async def rotate(self, key_id: str, *, actor: Actor, retry: Retry | None = None) -> KeyChange | AdminRequestRecord:
        """A new secret for the key (the old one stops working on every gateway at
        once), or the record of ``retry``'s first attempt. KeyNotFound, KeyRevoked."""
        key_id = check_key_id(key_id)
        action = "RotateApiKey"
        async with store_calls(_STORE):
            if (replay := await self._stored(action, retry)) is not None:
                return replay
            change = await self._records.rotate(key_id, now_ms=now_ms(), recorder=self._recorder(action, actor, retry))
            return await self._committed(action, change, actor, retry)

    async def revoke(self, key_id: str, *, actor: Actor, retry: Retry | None = None) -> KeyChange | AdminRequestRecord:
        """Revoke the key (it stops working on every gateway at once), or the record of
        ``retry``'s first attempt. KeyNotFound."""
        key_id = check_key_id(key_id)
        action = "RevokeApiKey"
        async with store_calls(_STORE):
            if (replay := await self._stored(action, retry)) is not None:
                return replay
            change = await self._records.revoke(key_id, now_ms=now_ms(), recorder=self._recorder(action, actor, retry))
            return await self._committed(action, change, actor, retry)

    async def seed(self, seeds: Iterable[KeySeed], *, actor: Actor) -> None:
        """Write the config file's ``[[api_keys]]`` (see ``KeyRecords.seed``), each
        change audited as ``actor``."""
        async with store_calls(_STORE):
            for action, change in await self._records.seed(seeds, now_ms=now_ms()):
                await self._committed(action, change, actor, None)

    # ------------------------------------------------------------------ reads

    async def keys(
        self, *, page_size: int = 0, page_token: str = "", include_revoked: bool = False
    ) -> tuple[list[ApiKeyRecord], str]:
        """One page of keys by id (revoked ones only when asked) and the token of the
        next page ("" at the end)."""
        page_size = self._page_size(page_size)
        after = decode_page_token(page_token, str) if page_token else ""
        async with store_calls(_STORE):
            records = [
                record
                for record in await self._records.all()
                if record.key_id > after and (include_revoked or not record.revoked)
            ]
        page = records[:page_size]
        return page, encode_page_token(page[-1].key_id) if len(records) > page_size else ""

    async def audit_events(self, *, page_size: int = 0, page_token: str = "") -> tuple[list[AuditEvent], str]:
        """One page of audit events, newest first, and the token of the next page
        ("" at the end)."""
        page_size = self._page_size(page_size)
        before_event_id = decode_page_token(page_token, str) if page_token else ""
        if before_event_id and not _AUDIT_EVENT_ID.fullmatch(before_event_id):
            raise FieldViolation("page_token", "is not a token this server issued")
        async with store_calls(_STORE):
            events, next_id = await self._audit.events(limit=page_size, before_event_id=before_event_id)
        return events, encode_page_token(next_id) if next_id else ""

    # ------------------------------------------------------------------ the policy

    def _page_size(self, requested: int) -> int:
        if requested < 0:
            raise FieldViolation("page_size", "must not be negative")
        return min(requested or PAGE_SIZE_DEFAULT, self._page_size_max)

    async def _stored(self, action: str, retry: Retry | None) -> AdminRequestRecord | None:
        """The record of ``retry``'s first attempt, replayed; None for a new request."""
        if retry is None:
            return None
        stored = await self._records.stored_request(self._changes.request_key(retry))
        return None if stored is None else await self._changes.replayed(stored, action=action, retry=retry)

    def _recorder(self, action: str, actor: Actor, retry: Retry | None):
        """What writes ``retry``'s record with the change (None without a retry)."""
        if retry is None:
            return None

        def record(before: ApiKeyRecord | None, after: ApiKeyRecord, secret: str) -> tuple[str, bytes]:
            stored = AdminRequestRecord(
                method=action,
                fingerprint=retry.fingerprint,
                response=retry.answer(after, secret),
                audit=self._event(action, before, after, actor),
                time_ms=now_ms(),
            )
            return self._changes.request_key(retry), encode_record(stored)

        return record

    def _event(self, action: str, before: ApiKeyRecord | None, after: ApiKeyRecord, actor: Actor) -> dict[str, str]:
        return self._changes.event_fields(
            action=action,
            target=_target(after),
            before=None if before is None else before.public(),
            after=after.public(),
            actor=actor,
        )

    async def _committed(
        self, action: str, change: KeyChange, actor: Actor, retry: Retry | None
    ) -> KeyChange | AdminRequestRecord:
        if change.replay is not None:  # recorded by an attempt that committed meanwhile
            return await self._changes.replayed(change.replay, action=action, retry=retry)
        if change.after == change.before:  # a revoked key revoked again: nothing to record
            return change
        await self._changes.committed(
            action=action,
            target=_target(change.after),
            before=None if change.before is None else change.before.public(),
            after=change.after.public(),
            actor=actor,
            retry=retry,
            stored_fields=None if retry is None else self._event(action, change.before, change.after, actor),
        )
        return change
