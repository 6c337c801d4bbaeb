"""API keys in Redis: records with the SHA-256 of each secret, never the secret
(except, for ADMIN_REQUEST_RETENTION_S, in the replay record of a CreateApiKey or
RotateApiKey sent with a request_id: see server/stores/admin_requests.py).

Layout (one hash tag, so it works on Redis Cluster too)::

    {<prefix>:auth}:keys      hash  key_id -> JSON ApiKeyRecord (revoked ones kept)
    {<prefix>:auth}:changed   pub/sub channel: a key_id was created or changed

Every change is one Lua compare-and-set of the record that also publishes on the
channel, so two admins on two gateways never overwrite each other's change. Each
gateway process keeps a ``KeyMirror``: all records in memory, reloaded whenever a
change is published (and every KEY_MIRROR_REFRESH_S in case a notice was lost with a
connection). Checking a key is then a dict lookup, with no Redis round trip, and
unknown keys cost nothing. A revocation reaches every gateway as fast as Redis
delivers a pub/sub message (milliseconds on a LAN).

Why SHA-256 and not a slow password hash: secrets are 256 random bits made by the
server (``new_secret``), so they cannot be guessed from their hash; slow hashes are
for low-entropy passwords and would cost milliseconds on every call.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
from collections.abc import Callable, Iterable
from typing import NamedTuple, Protocol

import msgspec
import redis.asyncio as aioredis

from loyalty.actors.outage import OutageLog
from loyalty.server.errors import KeyContended, KeyNotFound, KeyRevoked, KeyStoreFull
from loyalty.server.limits import API_KEYS_MAX, KEY_MIRROR_REFRESH_S
from loyalty.server.stores.admin_requests import ADMIN_REQUEST_RETENTION_S

log = logging.getLogger(__name__)

SECRET_PREFIX = "lk_"
"""Every secret this server issues starts with this (so leak scanners can find them)."""


class ApiKeyRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One API key as stored in Redis."""

    key_id: str
    """Public identifier, safe to log."""
    name: str
    """Who holds it."""
    role: str
    """pos, ecommerce, analytics or admin."""
    secret_sha256: str
    """Hex SHA-256 of the current secret."""
    channels: tuple[str, ...] = ()
    """Purchases must name one of these channels (empty: any)."""
    store_ids: tuple[str, ...] = ()
    """Purchases must name one of these stores (empty: any)."""
    create_time_ms: int = 0
    revoke_time_ms: int = 0
    """0 while the key is active."""
    rotate_time_ms: int = 0
    """When the secret was last replaced (0: never)."""
    source: str = "api"
    """"api" (made through AdminService or the CLI) or "config" (seeded from the file)."""

    @property
    def revoked(self) -> bool:
        """Whether the key was revoked (it then never works again)."""
        return self.revoke_time_ms != 0

    def public(self) -> dict:
        """Everything but the secret's hash: for listings and audit events."""
        fields = msgspec.to_builtins(self)
        del fields["secret_sha256"]
        return fields


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(ApiKeyRecord)


class KeyChange(NamedTuple):
    """What one change of a key did: the record before (None for a new key) and after,
    the new secret (create and rotate; "" otherwise), or, when the change's admin
    request_id was recorded already by an earlier attempt, nothing written and
    ``replay`` the stored record to answer from."""

    before: ApiKeyRecord | None
    after: ApiKeyRecord | None
    secret: str = ""
    replay: bytes | None = None


class KeySeed(Protocol):
    """A key of the config file's ``[[api_keys]]`` (``security.config.ApiKeySeed``)."""

    name: str
    role: str
    secret_sha256: str
    channels: tuple[str, ...]
    store_ids: tuple[str, ...]

    def resolved_key_id(self) -> str: ...


Recorder = Callable[[ApiKeyRecord | None, ApiKeyRecord, str], tuple[str, bytes]]
"""(before, after, secret) -> (Redis key, bytes) of the request record to write
with the change, atomically (see server/stores/admin_requests.py)."""


def hash_secret(secret: str) -> str:
    """Hex SHA-256 of a secret, as stored."""
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    """A fresh secret: the prefix and 256 random bits, URL-safe base64."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def new_key_id() -> str:
    """A fresh public key id: "key_" and 16 hex digits."""
    return "key_" + secrets.token_hex(8)


def records_key(key_prefix: str) -> str:
    """The Redis hash of key records."""
    return f"{{{key_prefix}:auth}}:keys"


def changes_channel(key_prefix: str) -> str:
    """The pub/sub channel announcing changed keys."""
    return f"{{{key_prefix}:auth}}:changed"


# KEYS[1] records, KEYS[2] (optional) the admin request_id's record; ARGV: key_id,
# expected JSON ('' = must be absent), new JSON, channel, key limit, and with KEYS[2]
# the request record and its lifetime in seconds. Returns 1 (written), 0 (someone
# else changed it), -1 (full), or {2, stored record} when the request_id is recorded
# already (nothing written: the caller replays it).
_COMPARE_AND_SET = """
if KEYS[2] then
  local stored = redis.call('GET', KEYS[2])
  if stored then return {2, stored} end
end
local current = redis.call('HGET', KEYS[1], ARGV[1])
if ARGV[2] == '' then
  if current then return 0 end
  if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[5]) then return -1 end
elseif current ~= ARGV[2] then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
if KEYS[2] then redis.call('SET', KEYS[2], ARGV[6], 'EX', ARGV[7]) end
redis.call('PUBLISH', ARGV[4], ARGV[1])
return 1
"""

# Compare-and-set attempts before giving up: key changes are rare, so losing this
# many races in a row means something is looping.
_CAS_ATTEMPTS_MAX = 16


class KeyRecords:
    """Reads and changes key records (async), for the key use-cases (server/admin/keys.py)."""

    def __init__(self, client: aioredis.Redis, *, key_prefix: str) -> None:
        self._client = client
        self.key_prefix = key_prefix
        """The deployment's key prefix."""
        self._records = records_key(key_prefix)
        self._channel = changes_channel(key_prefix)
        self._script = client.register_script(_COMPARE_AND_SET)

    async def stored_request(self, request_key: str) -> bytes | None:
        """The admin request record under ``request_key``, if any."""
        return await self._client.get(request_key)

    async def get(self, key_id: str) -> ApiKeyRecord | None:
        """The record, or None."""
        raw = await self._client.hget(self._records, key_id)
        return None if raw is None else _decoder.decode(raw)

    async def all(self) -> list[ApiKeyRecord]:
        """Every record (revoked ones too), by key id."""
        raw = await self._client.hgetall(self._records)
        return sorted(_decode_all(raw.values()), key=lambda record: record.key_id)

    async def count(self) -> int:
        """Records stored (revoked ones too)."""
        return await self._client.hlen(self._records)

    async def _compare_and_set(
        self,
        before: ApiKeyRecord | None,
        after: ApiKeyRecord,
        recorded: tuple[str, bytes] | None = None,
    ) -> int | bytes:
        """1 (written), 0 (someone else changed it), -1 (full), or the stored request
        record when ``recorded``'s request_id was recorded already (nothing written)."""
        expected = b"" if before is None else _encoder.encode(before)
        keys = [self._records]
        args = [after.key_id, expected, _encoder.encode(after), self._channel, API_KEYS_MAX]
        if recorded is not None:
            keys.append(recorded[0])
            args += [recorded[1], ADMIN_REQUEST_RETENTION_S]
        written = await self._script(keys=keys, args=args)
        return written[1] if isinstance(written, list) else written

    async def create(
        self,
        *,
        name: str,
        role: str,
        channels: tuple[str, ...] = (),
        store_ids: tuple[str, ...] = (),
        now_ms: int,
        recorder: Recorder | None = None,
    ) -> KeyChange:
        """A new key and its secret (the only time the secret exists anywhere, but
        for the request record ``recorder`` makes, written with the key). Raises
        KeyStoreFull."""
        secret = new_secret()
        record = ApiKeyRecord(
            key_id=new_key_id(),
            name=name,
            role=role,
            secret_sha256=hash_secret(secret),
            channels=channels,
            store_ids=store_ids,
            create_time_ms=now_ms,
        )
        recorded = None if recorder is None else recorder(None, record, secret)
        written = await self._compare_and_set(None, record, recorded)
        if isinstance(written, bytes):
            return KeyChange(None, None, replay=written)
        if written == -1:
            raise KeyStoreFull(f"at most {API_KEYS_MAX} API keys")
        if written != 1:  # 64 random bits collided: astronomically unlikely
            raise KeyContended("key id collision; retry")
        return KeyChange(None, record, secret)

    async def _update(
        self,
        key_id: str,
        change: Callable[[ApiKeyRecord], ApiKeyRecord],
        secret: str,
        recorder: Recorder | None,
    ) -> KeyChange:
        for _ in range(_CAS_ATTEMPTS_MAX):
            before = await self.get(key_id)
            if before is None:
                raise KeyNotFound(key_id)
            after = change(before)
            if after == before:
                return KeyChange(before, after)
            recorded = None if recorder is None else recorder(before, after, secret)
            written = await self._compare_and_set(before, after, recorded)
            if isinstance(written, bytes):
                return KeyChange(None, None, replay=written)
            if written == 1:
                return KeyChange(before, after, secret)
        raise KeyContended(f"{key_id} kept changing; retry")

    async def rotate(self, key_id: str, *, now_ms: int, recorder: Recorder | None = None) -> KeyChange:
        """A new secret for the key; the old one stops working. With ``recorder``, its
        request record is written with the change. Raises KeyNotFound, KeyRevoked."""
        secret = new_secret()

        def change(record: ApiKeyRecord) -> ApiKeyRecord:
            if record.revoked:
                raise KeyRevoked(key_id)
            return msgspec.structs.replace(record, secret_sha256=hash_secret(secret), rotate_time_ms=now_ms)

        return await self._update(key_id, change, secret, recorder)

    async def revoke(self, key_id: str, *, now_ms: int, recorder: Recorder | None = None) -> KeyChange:
        """Revoke the key (again: nothing changes, and nothing is recorded). Raises
        KeyNotFound."""

        def change(record: ApiKeyRecord) -> ApiKeyRecord:
            if record.revoked:
                return record
            return msgspec.structs.replace(record, revoke_time_ms=now_ms)

        return await self._update(key_id, change, "", recorder)

    async def seed(self, seeds: Iterable[KeySeed], *, now_ms: int) -> list[tuple[str, KeyChange]]:
        """Write the config file's keys: new ones are created, changed ones updated
        (a new secret_sha256 is a rotation). A key revoked in Redis stays revoked:
        a revocation must survive the restart that follows it. Returns the changes
        as (action, change)."""
        changes = []
        for seed in seeds:
            key_id = seed.resolved_key_id()
            for _ in range(_CAS_ATTEMPTS_MAX):
                before = await self.get(key_id)
                if before is not None and before.revoked:
                    log.warning("API key %s from the config file was revoked; it stays revoked", key_id)
                    break
                after = ApiKeyRecord(
                    key_id=key_id,
                    name=seed.name,
                    role=seed.role,
                    secret_sha256=seed.secret_sha256,
                    channels=seed.channels,
                    store_ids=seed.store_ids,
                    create_time_ms=before.create_time_ms if before else now_ms,
                    rotate_time_ms=(
                        now_ms
                        if before is not None and before.secret_sha256 != seed.secret_sha256
                        else (before.rotate_time_ms if before else 0)
                    ),
                    source="config",
                )
                if after == before:
                    break
                written = await self._compare_and_set(before, after)
                if written == -1:
                    raise KeyStoreFull(f"at most {API_KEYS_MAX} API keys")
                if written == 1:
                    changes.append(("SeedApiKey", KeyChange(before, after)))
                    break
            else:
                raise KeyContended(f"{key_id} kept changing; retry")
        return changes


def _decode_all(raw_records: Iterable[bytes]) -> list[ApiKeyRecord]:
    records = []
    for raw in raw_records:
        try:
            records.append(_decoder.decode(raw))
        except msgspec.DecodeError:  # never written by us; ignore rather than lock everyone out
            log.error("ignoring an unreadable API key record")
    return records


class KeyMirror:
    """This gateway's copy of every key, for checking secrets without Redis."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        key_prefix: str,
        refresh_s: float = KEY_MIRROR_REFRESH_S,
        on_reload: Callable[[dict[str, ApiKeyRecord]], None] | None = None,
    ) -> None:
        self._client = client
        self._records_key = records_key(key_prefix)
        self._channel = changes_channel(key_prefix)
        self._refresh_s = refresh_s
        self._on_reload = on_reload
        self._by_hash: dict[str, ApiKeyRecord] = {}
        self._by_id: dict[str, ApiKeyRecord] = {}
        self._task: asyncio.Task | None = None
        self._outage = OutageLog(log, "API key changes feed", action="keeping the last copy of the keys; reconnecting")
        self.reloads = 0
        """Times the copy was reloaded (for tests and metrics)."""
        self.subscribed = False
        """Whether change notices are arriving (False while reconnecting to Redis)."""

    @property
    def keys_exist(self) -> bool:
        """Whether any key was ever made (revoked ones count: revoking every key must
        not turn authentication off)."""
        return bool(self._by_id)

    @property
    def active_count(self) -> int:
        """Keys that work."""
        return len(self._by_hash)

    def authenticate(self, secret: str) -> ApiKeyRecord | None:
        """The active key with this secret, or None."""
        return self._by_hash.get(hash_secret(secret))

    async def reload(self) -> None:
        """Read every record from Redis."""
        raw = await self._client.hgetall(self._records_key)
        records = _decode_all(raw.values())
        self._by_id = {record.key_id: record for record in records}
        self._by_hash = {record.secret_sha256: record for record in records if not record.revoked}
        self.reloads += 1
        if self._on_reload is not None:
            self._on_reload(self._by_id)

    async def start(self) -> None:
        """Load the keys (raising if Redis is unreachable), then follow changes."""
        await self.reload()
        self._task = asyncio.create_task(self._follow(), name="loyalty-key-mirror")

    async def stop(self) -> None:
        """Stop following changes."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _follow(self) -> None:
        backoff_s = 0.05
        while True:
            pubsub = self._client.pubsub()
            try:
                await pubsub.subscribe(self._channel)
                await self.reload()  # after subscribing, so no change falls in between
                self.subscribed = True
                self._outage.recovered()
                backoff_s = 0.05
                while True:
                    message = await pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=self._refresh_s
                    )
                    while message is not None:  # a burst of changes: one reload
                        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0)
                    await self.reload()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # Redis away: keep the last copy, reconnect
                self._outage.failed(f"{type(error).__name__}: {error}")
                self.subscribed = False
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, 1.0)
            finally:
                try:
                    await pubsub.aclose()
                except Exception:  # the connection is already gone
                    pass
