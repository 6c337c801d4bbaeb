"""AdminService's key and audit RPCs: CreateApiKey, ListApiKeys, RotateApiKey,
RevokeApiKey, ListAuditEvents. The AdminService servicer delegates to ``KeyAdmin``.

A secret appears in exactly one place: the response to the call that made it (and,
for a call sent with a request_id, the record that lets a retry get the same answer,
kept ADMIN_REQUEST_RETENTION_S: see server/stores/admin_requests.py). The audit log records
every change with the key's public fields only.

Retries: CreateApiKey and RotateApiKey with a request_id are recorded with the change
(in the same Lua script) and a retry answers the same key and secret; RevokeApiKey is
recorded too, and is naturally idempotent besides (revoking a revoked key answers the
key as it is and changes nothing).
"""

from __future__ import annotations

import base64
import binascii
import functools
import logging
import re
import time
from collections.abc import Awaitable, Callable

import grpc
import redis.exceptions
from grpc_status import rpc_status as grpc_rpc_status

from loyalty.actors.ledger.limits import PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX
from loyalty.actors.ledger.status import Status
from loyalty.server import errors
from loyalty.server.stores.admin_requests import (
    KEYS_AREA,
    AdminRequestRecord,
    RequestIdConflict,
    check_request_id,
    decode_record,
    encode_record,
    fingerprint,
    replayable,
    request_key,
)
from loyalty.server.stores.audit import AuditLog
from loyalty.server.errors import FieldViolation
from loyalty.server.stores.keys import (
    AlreadyRecorded,
    ApiKeyRecord,
    KeyConflict,
    KeyNotFound,
    KeyRecords,
    KeyRevoked,
    KeyStoreFull,
)
from loyalty.server.limits import PAGE_TOKEN_LENGTH_MAX
from loyalty.server.security.config import check_key_name, check_scope
from loyalty.v1 import admin_pb2 as apb

ROLE_NAMES: dict[int, str] = {
    apb.ROLE_POS: "pos",
    apb.ROLE_ECOMMERCE: "ecommerce",
    apb.ROLE_ANALYTICS: "analytics",
    apb.ROLE_ADMIN: "admin",
}
"""admin.proto Role -> role name."""
ROLE_VALUES: dict[str, int] = {name: value for value, name in ROLE_NAMES.items()}

_KEY_ID = re.compile(r"key_[0-9a-z_-]{1,60}")

log = logging.getLogger(__name__)


def api_key_message(record: ApiKeyRecord) -> apb.ApiKey:
    """The public view of a key as admin.proto's ApiKey (never its secret or hash)."""
    message = apb.ApiKey(
        key_id=record.key_id,
        name=record.name,
        role=ROLE_VALUES.get(record.role, apb.ROLE_UNSPECIFIED),
        channels=record.channels,
        store_ids=record.store_ids,
    )
    message.create_time.FromMilliseconds(record.create_time_ms)
    if record.revoke_time_ms:
        message.revoke_time.FromMilliseconds(record.revoke_time_ms)
    if record.rotate_time_ms:
        message.rotate_time.FromMilliseconds(record.rotate_time_ms)
    return message


def _secret_response(record: ApiKeyRecord, secret: str) -> apb.CreateApiKeyResponse:
    return apb.CreateApiKeyResponse(key=api_key_message(record), secret=secret)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


async def _abort(context: grpc.aio.ServicerContext, status) -> None:
    converted = grpc_rpc_status.to_status(status)
    await context.abort(converted.code, converted.details, converted.trailing_metadata)


def _key_id(value: str) -> str:
    if not value:
        raise FieldViolation("key_id", "is required")
    if not _KEY_ID.fullmatch(value):
        raise FieldViolation("key_id", "is not a key id ('key_' and up to 60 of [0-9a-z_-])")
    return value


def _page_token(value: str) -> str:
    """The last item of the previous page (opaque to clients)."""
    if not value:
        return ""
    if len(value) > PAGE_TOKEN_LENGTH_MAX:
        raise FieldViolation("page_token", "is not a token this server issued")
    try:
        return base64.urlsafe_b64decode(value.encode()).decode()
    except (binascii.Error, UnicodeError, ValueError):
        raise FieldViolation("page_token", "is not a token this server issued") from None


def _store_errors(method):
    """Redis trouble is UNAVAILABLE (retry), not an unknown error."""

    @functools.wraps(method)
    async def answered(self, request, context):
        try:
            return await method(self, request, context)
        except redis.exceptions.RedisError as error:
            message = f"the key store is unavailable ({type(error).__name__}); retry"
            await _abort(context, errors.rpc_status(Status.SHARD_UNAVAILABLE, message))

    return answered


def _check_request_id(value: str) -> None:
    problem = check_request_id(value)
    if problem is not None:
        raise FieldViolation("request_id", problem)


class _Request:
    """One key change sent with a request_id: how to record it and how to replay it."""

    def __init__(self, admin: KeyAdmin, method: str, request) -> None:
        from loyalty.server.security.guard import current_caller

        self.method = method
        self.request_id = request.request_id
        self.caller = current_caller()
        self.key = request_key(admin._records.key_prefix, KEYS_AREA, request.request_id)
        self.fingerprint = fingerprint(method, self.caller.key_id, request)
        self._audit = admin._audit

    def recorder(self, response_of):
        """A KeyRecords recorder: (before, after, secret) -> (key, record bytes)."""

        def record(before: ApiKeyRecord | None, after: ApiKeyRecord, secret: str) -> tuple[str, bytes]:
            audit = self._audit.event_fields(
                action=self.method,
                target=f"key/{after.key_id}",
                before=None if before is None else before.public(),
                after=after.public(),
                actor=self.caller,
            )
            stored = AdminRequestRecord(
                method=self.method,
                fingerprint=self.fingerprint,
                response=response_of(after, secret).SerializeToString(),
                audit=audit,
                time_ms=_now_ms(),
            )
            self.audit_fields = audit
            return self.key, encode_record(stored)

        return record

    audit_fields: dict[str, str] | None = None
    """The audit event stored with the change (once recorded)."""


def _encode_page_token(last: str) -> str:
    return base64.urlsafe_b64encode(last.encode()).decode() if last else ""


class KeyAdmin:
    """The five key and audit RPCs, as async methods with servicer signatures."""

    def __init__(
        self,
        records: KeyRecords,
        audit: AuditLog,
        *,
        page_size_max: int = PAGE_SIZE_MAX,
        after_change: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """``after_change`` runs after every change, before the answer: the gateway
        reloads its own copy of the keys there, so a revocation is in force on the
        gateway that made it before the admin hears back (other gateways follow as
        Redis delivers the change notice)."""
        self._records = records
        self._audit = audit
        self._page_size_max = page_size_max
        self._after_change = after_change

    async def _changed(self) -> None:
        if self._after_change is not None:
            await self._after_change()

    async def _audited(self, context, request: _Request, fields: dict[str, str]) -> None:
        """Append a recorded change's audit event once. If that fails the change
        stands and the call answers UNAVAILABLE: the retry with the same request_id
        replays the change and appends the event then."""
        try:
            await self._audit.record_once(KEYS_AREA, request.request_id, fields)
        except Exception as error:
            log.exception("audit: could not record %s (request_id %s)", request.method, request.request_id)
            message = (
                f"the change was applied but its audit event could not be written ({type(error).__name__}); "
                "retry with the same request_id"
            )
            await _abort(context, errors.rpc_status(Status.SHARD_UNAVAILABLE, message))

    async def _replay(self, context, request: _Request, stored: bytes, response_type):
        """The answer recorded for this request_id (REQUEST_ID_CONFLICT when it was
        another request's), after finishing what the first attempt may not have."""
        try:
            record = replayable(decode_record(stored), request.method, request.fingerprint)
        except RequestIdConflict as conflict:
            await _abort(context, errors.rpc_status(Status.REQUEST_ID_CONFLICT, str(conflict)))
        await self._changed()
        await self._audited(context, request, record.audit)
        return response_type.FromString(record.response)

    async def _request(self, context, method: str, request) -> _Request | None:
        if not request.request_id:
            return None
        return _Request(self, method, request)

    def _page_size(self, requested: int) -> int:
        if requested < 0:
            raise FieldViolation("page_size", "must not be negative")
        return min(requested or PAGE_SIZE_DEFAULT, self._page_size_max)

    @_store_errors
    async def CreateApiKey(self, request: apb.CreateApiKeyRequest, context) -> apb.CreateApiKeyResponse:
        """A new key; its secret is in this response and nowhere else."""
        try:
            role = ROLE_NAMES.get(request.role)
            if role is None:
                raise FieldViolation("role", "must be ROLE_POS, ROLE_ECOMMERCE, ROLE_ANALYTICS or ROLE_ADMIN")
            try:
                name = check_key_name("name", request.name)
                channels = check_scope("channels", list(request.channels))
                store_ids = check_scope("store_ids", list(request.store_ids))
            except ValueError as error:
                field, _, description = str(error).partition(": ")
                raise FieldViolation(field, description) from None
            _check_request_id(request.request_id)
        except FieldViolation as violation:
            await _abort(context, errors.invalid_argument(violation))
        recorded = await self._request(context, "CreateApiKey", request)
        if recorded is not None and (stored := await self._records.stored_request(recorded.key)) is not None:
            return await self._replay(context, recorded, stored, apb.CreateApiKeyResponse)
        try:
            record, secret = await self._records.create(
                name=name, role=role, channels=channels, store_ids=store_ids, now_ms=_now_ms(),
                recorder=None if recorded is None else recorded.recorder(_secret_response),
            )
        except AlreadyRecorded as already:
            return await self._replay(context, recorded, already.stored, apb.CreateApiKeyResponse)
        except KeyStoreFull as error:
            await _abort(context, errors.rpc_status(Status.OVERLOADED, str(error)))
        except KeyConflict as error:
            await _abort(context, errors.rpc_status(Status.SHARD_UNAVAILABLE, str(error)))
        await self._changed()
        if recorded is not None:
            await self._audited(context, recorded, recorded.audit_fields)
        else:
            await self._audit.record(
                action="CreateApiKey", target=f"key/{record.key_id}", before=None, after=record.public()
            )
        return _secret_response(record, secret)

    @_store_errors
    async def ListApiKeys(self, request: apb.ListApiKeysRequest, context) -> apb.ListApiKeysResponse:
        """Keys by id (revoked ones only when asked), never their secrets."""
        try:
            page_size = self._page_size(request.page_size)
            after = _page_token(request.page_token)
        except FieldViolation as violation:
            await _abort(context, errors.invalid_argument(violation))
        records = [
            record
            for record in await self._records.all()
            if record.key_id > after and (request.include_revoked or not record.revoked)
        ]
        page = records[:page_size]
        response = apb.ListApiKeysResponse(keys=[api_key_message(record) for record in page])
        if len(records) > page_size:
            response.next_page_token = _encode_page_token(page[-1].key_id)
        return response

    @_store_errors
    async def RotateApiKey(self, request: apb.RotateApiKeyRequest, context) -> apb.CreateApiKeyResponse:
        """A new secret; the old one stops working on every gateway at once."""
        try:
            key_id = _key_id(request.key_id)
            _check_request_id(request.request_id)
        except FieldViolation as violation:
            await _abort(context, errors.invalid_argument(violation))
        recorded = await self._request(context, "RotateApiKey", request)
        if recorded is not None and (stored := await self._records.stored_request(recorded.key)) is not None:
            return await self._replay(context, recorded, stored, apb.CreateApiKeyResponse)
        try:
            before, after, secret = await self._records.rotate(
                key_id, now_ms=_now_ms(), recorder=None if recorded is None else recorded.recorder(_secret_response)
            )
        except AlreadyRecorded as already:
            return await self._replay(context, recorded, already.stored, apb.CreateApiKeyResponse)
        except KeyNotFound:
            await _abort(context, errors.rpc_status(Status.API_KEY_NOT_FOUND, f"no API key {key_id}"))
        except KeyRevoked:
            violation = FieldViolation("key_id", "is revoked; create a new key instead")
            await _abort(context, errors.invalid_argument(violation))
        except KeyConflict as error:
            await _abort(context, errors.rpc_status(Status.SHARD_UNAVAILABLE, str(error)))
        await self._changed()
        if recorded is not None:
            await self._audited(context, recorded, recorded.audit_fields)
        else:
            await self._audit.record(
                action="RotateApiKey", target=f"key/{key_id}", before=before.public(), after=after.public()
            )
        return _secret_response(after, secret)

    @_store_errors
    async def RevokeApiKey(self, request: apb.RevokeApiKeyRequest, context) -> apb.ApiKey:
        """Revoke; the key stops working on every gateway at once. Revoking again
        changes nothing and records nothing."""
        try:
            key_id = _key_id(request.key_id)
            _check_request_id(request.request_id)
        except FieldViolation as violation:
            await _abort(context, errors.invalid_argument(violation))
        recorded = await self._request(context, "RevokeApiKey", request)
        if recorded is not None and (stored := await self._records.stored_request(recorded.key)) is not None:
            return await self._replay(context, recorded, stored, apb.ApiKey)
        try:
            before, after = await self._records.revoke(
                key_id,
                now_ms=_now_ms(),
                recorder=None if recorded is None else recorded.recorder(lambda key, _secret: api_key_message(key)),
            )
        except AlreadyRecorded as already:
            return await self._replay(context, recorded, already.stored, apb.ApiKey)
        except KeyNotFound:
            await _abort(context, errors.rpc_status(Status.API_KEY_NOT_FOUND, f"no API key {key_id}"))
        except KeyConflict as error:
            await _abort(context, errors.rpc_status(Status.SHARD_UNAVAILABLE, str(error)))
        if after != before:
            await self._changed()
            if recorded is not None:
                await self._audited(context, recorded, recorded.audit_fields)
            else:
                await self._audit.record(
                    action="RevokeApiKey", target=f"key/{key_id}", before=before.public(), after=after.public()
                )
        return api_key_message(after)

    @_store_errors
    async def ListAuditEvents(
        self, request: apb.ListAuditEventsRequest, context
    ) -> apb.ListAuditEventsResponse:
        """Admin actions, newest first."""
        try:
            page_size = self._page_size(request.page_size)
            before_event_id = _page_token(request.page_token)
            if before_event_id and not re.fullmatch(r"[0-9]{1,20}-[0-9]{1,20}", before_event_id):
                raise FieldViolation("page_token", "is not a token this server issued")
        except FieldViolation as violation:
            await _abort(context, errors.invalid_argument(violation))
        events, next_id = await self._audit.events(limit=page_size, before_event_id=before_event_id)
        response = apb.ListAuditEventsResponse(next_page_token=_encode_page_token(next_id))
        for event in events:
            message = response.events.add(
                event_id=event.event_id,
                actor_key_id=event.actor_key_id,
                actor_name=event.actor_name,
                action=event.action,
                target=event.target,
                before_json=event.before_json,
                after_json=event.after_json,
            )
            message.time.FromMilliseconds(event.time_ms)
        return response
