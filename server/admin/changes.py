"""Change, then audit: the one policy every admin mutation follows (rules and keys,
through AdminService, the CLI or the config file at start).

1. The change is made in its store. Sent with a ``request_id`` (a ``Retry``), the
   store writes a record of it in the same atomic step, holding the answer and the
   change's audit event; a retry finds the record and is answered from it instead
   (REQUEST_ID_CONFLICT when the id was another request's). See
   server/stores/admin_requests.py for why this is safe.
2. The gateway that made the change takes it up, on a replay too: it reloads its
   copy of the keys (``after_change``) or adopts the new rules version.
3. The audit event is appended. With a request_id: once (a marker in Redis), and if
   that fails the change stands and the call fails with AuditNotWritten, so the retry
   with the same request_id appends it. Without one there is nothing a retry could
   deduplicate, so a failed append is logged and the change answered.

Redis failing under any of this is ControlStoreUnavailable (CONTROL_STORE_UNAVAILABLE),
never a shard's reason: ``store_calls`` converts it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import redis.exceptions

from loyalty.server.errors import AuditNotWritten, ControlStoreUnavailable
from loyalty.server.stores.admin_requests import AdminRequestRecord, decode_record, replayable, request_key
from loyalty.server.stores.audit import Actor, AuditLog

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class Retry:
    """A change sent with a request_id: what tells its retries from other requests."""

    request_id: str
    fingerprint: str
    """From ``admin_requests.fingerprint``: the RPC, the caller and every other field."""
    answer: Callable[..., bytes] | None = None
    """Key changes: ``(record, secret) -> bytes``, the serialized answer a retry gets
    again (secret included). Rule changes leave it None: the rules store records its
    own outcome."""


def now_ms() -> int:
    """Wall-clock milliseconds, as records and audit events carry them."""
    return time.time_ns() // 1_000_000


@contextlib.asynccontextmanager
async def store_calls(store: str) -> AsyncIterator[None]:
    """Redis errors inside as ControlStoreUnavailable naming ``store`` (a retry may
    work; no shard is involved)."""
    try:
        yield
    except redis.exceptions.RedisError as error:
        raise ControlStoreUnavailable(f"the {store} is unavailable ({type(error).__name__}); retry") from error


class ChangePolicy:
    """The policy above, for the changes of one area (``RULES_AREA`` or ``KEYS_AREA``)."""

    def __init__(
        self,
        audit: AuditLog | None,
        *,
        area: str,
        key_prefix: str,
        after_change: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """``audit`` None: changes are not audited (a server without an audit log)."""
        self._audit = audit
        self._area = area
        self._key_prefix = key_prefix
        self._after_change = after_change

    def request_key(self, retry: Retry) -> str:
        """The Redis key of the record of ``retry``'s change."""
        return request_key(self._key_prefix, self._area, retry.request_id)

    def event_fields(self, *, action: str, target: str, before, after, actor: Actor) -> dict[str, str]:
        """The audit event of a change, as stored with its request record ({} when
        changes are not audited)."""
        if self._audit is None:
            return {}
        return self._audit.event_fields(action=action, target=target, before=before, after=after, actor=actor)

    async def committed(
        self,
        *,
        action: str,
        target: str,
        before,
        after,
        actor: Actor,
        retry: Retry | None,
        stored_fields: dict[str, str] | None = None,
        applied: str = "the change was applied",
    ) -> None:
        """Steps 2 and 3 after a change. ``stored_fields``: the audit event recorded
        with the change under ``retry``'s request_id; ``applied`` starts the message
        of AuditNotWritten."""
        await self._changed()
        if retry is not None:
            await self._append_once(action, retry, stored_fields or {}, applied)
            return
        if self._audit is None:
            return
        try:
            await self._audit.record(action=action, target=target, before=before, after=after, actor=actor)
        except Exception:  # the change is committed and cannot be retried: a lost event must be visible
            log.exception("audit: could not record %s of %s", action, target)

    async def replayed(
        self, stored: bytes, *, action: str, retry: Retry, applied: str = "the change was applied"
    ) -> AdminRequestRecord:
        """The record a retry is answered from, after finishing what the first attempt
        may not have (steps 2 and 3). RequestIdConflict when the request_id was used
        for another request."""
        record = replayable(decode_record(stored), action, retry.fingerprint)
        await self._changed()
        await self._append_once(action, retry, record.audit, applied)
        return record

    async def _changed(self) -> None:
        if self._after_change is not None:
            await self._after_change()

    async def _append_once(self, action: str, retry: Retry, fields: dict[str, str], applied: str) -> None:
        if self._audit is None or not fields:
            return
        try:
            await self._audit.record_once(self._area, retry.request_id, fields)
        except Exception as error:
            log.exception("audit: could not record %s (request_id %s)", action, retry.request_id)
            raise AuditNotWritten(
                f"{applied} but its audit event could not be written ({type(error).__name__}); "
                "retry with the same request_id"
            ) from error
