"""Retry-safe AdminService changes: the stored outcome of each admin ``request_id``.

Every mutating AdminService RPC (CreateRule, UpdateRule, DeleteRule, ReplaceRules,
CreateApiKey, RotateApiKey, RevokeApiKey) takes an optional ``request_id``. A change
made under one is written to Redis *in the same atomic step* as a record of it
(``AdminRequestRecord``): the rules change's MULTI/EXEC in the rules hash slot, the
key change's Lua compare-and-set in the auth hash slot. So there is no moment where
the change is visible but its record is not, and a retry that arrives while the first
attempt is committing either sees the record or loses the WATCH/compare-and-set
race and then sees it.

A retry with the same request_id finds the record and answers from it, changing
nothing; the same id with another request (another RPC, other fields, or another
caller) is ALREADY_EXISTS / REQUEST_ID_CONFLICT. Only changes are recorded: a call
that was refused (invalid, not found, stale etag) or that changed nothing changed
nothing, so a retry of it is simply evaluated again.

Records live under ``{<prefix>:rules}:admin-request:<id>`` (rule RPCs) and
``{<prefix>:auth}:admin-request:<id>`` (key RPCs): each must share the hash slot of
what it records, so request_ids are deduplicated within the rule RPCs and within the
key RPCs, not across the two.

Audit, exactly once. The record also holds the change's audit event, fully built
(actor, action, target, before and after JSON). After the change the event is
appended by one Lua script that first checks a marker
``{<prefix>:auth}:audited:<area>:<id>``, then XADDs, then sets the marker (XADD
first: if it fails, the script stops before the marker and nothing is written). If
that fails (Redis trouble, the audit stream unusable), the change stays committed
and the call answers UNAVAILABLE / CONTROL_STORE_UNAVAILABLE; the retry with the same request_id replays the
outcome and appends the event then, and later retries find the marker and append
nothing. A change whose audit failed and that is never retried has no audit event
(the gateway logged the failure with the request_id). The use-cases in
server/admin/changes.py are the one place that follows these rules.

Secrets. CreateApiKey and RotateApiKey answers carry the key's new secret, and a
retry must get the *same* secret (the server only keeps its SHA-256; a second
secret would mean a second rotation). So the record of those two RPCs keeps the
whole answer, secret included, for ADMIN_REQUEST_RETENTION_S and then Redis expires
it. This is a deliberate, bounded exception to "only hashes in Redis": someone who
can read this Redis can read secrets issued in the last 24 hours (someone who can
write it can already make their own admin key). The alternatives were worse: a secret
derived from a server-held master key needs a key-management story this server does
not have, and encrypting the record under the caller's own secret makes a retry
impossible exactly when it matters (after a caller rotated its own key). Without a
request_id nothing is stored, as before.
"""

from __future__ import annotations

import hashlib

import msgspec
import redis.asyncio as aioredis

from loyalty.actors.ledger.limits import ID_LENGTH_MAX
from loyalty.server.errors import RequestIdConflict
from loyalty.server.limits import AUDIT_EVENTS_MAX

ADMIN_REQUEST_RETENTION_S = 24 * 60 * 60
"""How long the outcome of an admin request_id is kept (and replayed). It must
outlast every automatic retry (the SDK gives up after 30 s, the CLIs after a few
seconds) and an operator repeating a failed command by hand with ``--request-id``
the next working day; it is kept short because the records of CreateApiKey and
RotateApiKey hold the issued secret in the clear (see the module docstring)."""

ADMIN_REQUEST_ID_LENGTH_MAX = ID_LENGTH_MAX
"""As the LoyaltyService's request_ids: 1-128 printable characters without spaces."""

RULES_AREA = "rules"
KEYS_AREA = "keys"


class AdminRequestRecord(msgspec.Struct, frozen=True, kw_only=True):
    """The stored outcome of one admin request_id. Persisted: fields may only be
    added, with defaults."""

    method: str
    """The RPC, e.g. "RotateApiKey"."""
    fingerprint: str
    """SHA-256 of the RPC, the caller's key id and the request without its request_id."""
    response: bytes
    """What the retry needs to answer: the serialized response message (key RPCs) or
    the rules store's encoded outcome (rule RPCs)."""
    audit: dict[str, str]
    """The audit event's fields, as AuditLog writes them."""
    time_ms: int = 0


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(AdminRequestRecord)


def encode_record(record: AdminRequestRecord) -> bytes:
    """Bytes to store."""
    return _encoder.encode(record)


def decode_record(raw: bytes) -> AdminRequestRecord:
    """A stored record."""
    return _decoder.decode(raw)


def request_key(key_prefix: str, area: str, request_id: str) -> str:
    """The Redis key of a request_id's record, in the hash slot of what it changes."""
    tag = "rules" if area == RULES_AREA else "auth"
    return f"{{{key_prefix}:{tag}}}:admin-request:{request_id}"


def audited_key(key_prefix: str, area: str, request_id: str) -> str:
    """The marker saying a request_id's audit event was appended (auth hash slot,
    beside the audit stream)."""
    return f"{{{key_prefix}:auth}}:audited:{area}:{request_id}"


def check_request_id(value: str) -> str | None:
    """The problem with a request_id, or None (empty is allowed: not deduplicated)."""
    if not value:
        return None
    if len(value) > ADMIN_REQUEST_ID_LENGTH_MAX:
        return f"must be at most {ADMIN_REQUEST_ID_LENGTH_MAX} characters"
    if not value.isprintable() or " " in value:
        return "must be printable characters without spaces"
    return None


def fingerprint(method: str, caller_key_id: str, request) -> str:
    """What makes two requests "the same": the RPC, who sent it and every field but
    request_id (deterministic protobuf serialization)."""
    copy = type(request)()
    copy.CopyFrom(request)
    copy.request_id = ""
    digest = hashlib.sha256()
    for part in (method.encode(), caller_key_id.encode(), copy.SerializeToString(deterministic=True)):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def replayable(record: AdminRequestRecord, method: str, fingerprint_: str) -> AdminRequestRecord:
    """The record if it is this request's; RequestIdConflict if the id was used for
    another one."""
    if record.method != method or record.fingerprint != fingerprint_:
        raise RequestIdConflict(
            f"request_id was used for another request ({record.method}); use a new request_id for a new change"
        )
    return record


# KEYS[1] the marker, KEYS[2] the audit stream; ARGV[1] marker lifetime (ms), ARGV[2]
# stream cap, ARGV[3..] field, value, ... Returns 1 (appended) or 0 (already was).
# XADD before SET: a failing XADD stops the script before the marker is set.
_AUDIT_ONCE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[2], '*', unpack(ARGV, 3))
redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
return 1
"""


class AuditOnce:
    """Appends the audit event of a recorded admin request at most once."""

    def __init__(self, client: aioredis.Redis, *, key_prefix: str, stream_key: str) -> None:
        self._client = client
        self._key_prefix = key_prefix
        self._stream = stream_key
        self._script = client.register_script(_AUDIT_ONCE)

    async def append(self, area: str, request_id: str, fields: dict[str, str]) -> bool:
        """Append ``fields`` unless this request_id's event already was; True if
        appended now."""
        args: list = [ADMIN_REQUEST_RETENTION_S * 1000, AUDIT_EVENTS_MAX]
        for name, value in fields.items():
            args += [name, value]
        appended = await self._script(keys=[audited_key(self._key_prefix, area, request_id), self._stream], args=args)
        return appended == 1


class RequestToRecord(msgspec.Struct, frozen=True, kw_only=True):
    """What a store needs to record a change under a request_id, atomically with it."""

    key: str
    """From ``request_key``."""
    method: str
    fingerprint: str
    audit_fields: object
    """``(before, after) -> dict[str, str]``: the audit event of the change."""
    time_ms: int = 0

    def record(self, response: bytes, before, after) -> AdminRequestRecord:
        """The record of a change with this answer."""
        return AdminRequestRecord(
            method=self.method,
            fingerprint=self.fingerprint,
            response=response,
            audit=self.audit_fields(before, after),
            time_ms=self.time_ms,
        )
