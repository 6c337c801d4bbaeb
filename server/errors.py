"""The server's one error vocabulary and its one mapping to gRPC.

Every error a caller sees is a google.rpc.Status with a canonical code and a
google.rpc.ErrorInfo (domain "loyalty.v1", an UPPER_SNAKE reason from
loyalty.v1.ErrorReason); invalid input also carries a google.rpc.BadRequest naming
each bad field. Ledger outcomes map through ``rpc_status``; the server's own failures
are exceptions of one tree, each class naming the reason it is answered with (the
gRPC code follows from the reason, in ``_CODES``)::

    LoyaltyServerError              base: .status (the reason) .message .metadata
    ├── CallerError                 the call as sent cannot be served; nothing changed
    │   ├── FieldViolation          INVALID_ARGUMENT     INVALID_FIELD (names the field)
    │   │   └── KeyRevoked          INVALID_ARGUMENT     INVALID_FIELD (key_id)
    │   ├── Unauthenticated         UNAUTHENTICATED      UNAUTHENTICATED
    │   ├── PermissionDenied        PERMISSION_DENIED    PERMISSION_DENIED
    │   ├── RequestIdConflict       ALREADY_EXISTS       REQUEST_ID_CONFLICT
    │   ├── KeyNotFound             NOT_FOUND            API_KEY_NOT_FOUND
    │   ├── CursorExpired           FAILED_PRECONDITION  CURSOR_EXPIRED (names the field)
    │   └── RuleChangeRefused       a rule change the live set refuses:
    │       ├── RuleNotFound        NOT_FOUND            RULE_NOT_FOUND
    │       ├── RuleAlreadyExists   ALREADY_EXISTS       RULE_ALREADY_EXISTS
    │       ├── EtagMismatch        ABORTED              ETAG_MISMATCH
    │       └── RuleSetInvalid      INVALID_ARGUMENT     INVALID_FIELD (.violations)
    ├── LimitReached                a limit refused the call; nothing changed; retry later
    │   ├── RateLimited             RESOURCE_EXHAUSTED   RATE_LIMITED (retry_after_ms)
    │   ├── KeyStoreFull            RESOURCE_EXHAUSTED   OVERLOADED
    │   ├── KeyContended            RESOURCE_EXHAUSTED   OVERLOADED
    │   └── RulesContended          RESOURCE_EXHAUSTED   OVERLOADED
    ├── DependencyUnavailable       something the server needs did not answer; retry
    │   ├── ShardUnavailable        UNAVAILABLE          SHARD_UNAVAILABLE
    │   │   └── ShardConnectionLost the data channel stayed broken (gateway/shard_channel.py)
    │   ├── ControlStoreUnavailable UNAVAILABLE          CONTROL_STORE_UNAVAILABLE
    │   │   └── AuditNotWritten     UNAVAILABLE          CONTROL_STORE_UNAVAILABLE (the change stands)
    │   └── RedisStartError         never answered: the embedded Redis did not start (runtime/)
    ├── GatewayError                a shard call that failed, with the reason it carries
    │                               (SHARD_UNAVAILABLE, or OVERLOADED for a full queue)
    ├── ConfigurationError          never answered: the server does not start
    │   └── SecurityConfigError     [[api_keys]] or [limits] malformed (security/config.py)
    └── InternalError               a bug; never mapped to a reason (gRPC INTERNAL/UNKNOWN)
        └── ShardFailed             a shard raised something unexpected (gateway/shard_channel.py)

``status_of`` is the google.rpc.Status an exception is answered with, and ``abort``
ends a call with a google.rpc.Status: every servicer and the guard answer through
these two.
"""

from __future__ import annotations

import math
from typing import ClassVar

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status as grpc_rpc_status

from loyalty.actors.ledger.rules import Violation
from loyalty.actors.ledger.status import Status

ERROR_DOMAIN = "loyalty.v1"

# Status -> gRPC code. Reasons are the Status names, which
# equal the loyalty.v1.ErrorReason names.
_CODES: dict[Status, grpc.StatusCode] = {
    Status.OK: grpc.StatusCode.OK,
    Status.MEMBER_NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    Status.MEMBER_ALREADY_EXISTS: grpc.StatusCode.ALREADY_EXISTS,
    Status.INSUFFICIENT_POINTS: grpc.StatusCode.FAILED_PRECONDITION,
    Status.REQUEST_ID_CONFLICT: grpc.StatusCode.ALREADY_EXISTS,
    Status.RESERVATION_NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    Status.RESERVATION_EXPIRED: grpc.StatusCode.FAILED_PRECONDITION,
    Status.CAPTURE_EXCEEDS_RESERVATION: grpc.StatusCode.FAILED_PRECONDITION,
    Status.ORIGINAL_NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    Status.RETURN_EXCEEDS_PURCHASE: grpc.StatusCode.FAILED_PRECONDITION,
    Status.INVALID_FIELD: grpc.StatusCode.INVALID_ARGUMENT,
    Status.OPERATION_NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    Status.OVERLOADED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Status.SHARD_UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    Status.TOO_MANY_RESERVATIONS: grpc.StatusCode.FAILED_PRECONDITION,
    Status.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    Status.PERMISSION_DENIED: grpc.StatusCode.PERMISSION_DENIED,
    Status.RATE_LIMITED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Status.RULE_NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    Status.RULE_ALREADY_EXISTS: grpc.StatusCode.ALREADY_EXISTS,
    Status.ETAG_MISMATCH: grpc.StatusCode.ABORTED,
    Status.API_KEY_NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    Status.CURRENCY_NOT_SUPPORTED: grpc.StatusCode.FAILED_PRECONDITION,
    Status.CONTROL_STORE_UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    Status.CURSOR_EXPIRED: grpc.StatusCode.FAILED_PRECONDITION,
}


# --------------------------------------------------------------------------- the tree


class LoyaltyServerError(Exception):
    """Base of every exception the server raises on purpose. ``status`` is the reason
    a caller is answered with (None for the branches that never reach a caller)."""

    status: ClassVar[Status | None] = None

    def __init__(self, message: str, *, metadata: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        """Developer-facing text of the answer."""
        self.metadata = dict(metadata or {})
        """google.rpc.ErrorInfo metadata of the answer."""


class CallerError(LoyaltyServerError):
    """The call as sent cannot be served (malformed, not found, not allowed, in
    conflict): nothing changed, and sending it again answers the same."""


class FieldViolation(CallerError):
    """One field of a request is malformed."""

    status = Status.INVALID_FIELD

    def __init__(self, field: str, description: str) -> None:
        super().__init__(f"{field}: {description}")
        self.field = field
        self.description = description


class KeyRevoked(FieldViolation):
    """The key was revoked; it cannot be rotated (answered naming ``key_id``)."""

    def __init__(self, key_id: str) -> None:
        super().__init__("key_id", "is revoked; create a new key instead")
        self.key_id = key_id


class Unauthenticated(CallerError):
    """No API key, or one that is unknown or revoked."""

    status = Status.UNAUTHENTICATED


class PermissionDenied(CallerError):
    """The key's role, channels or stores do not allow this call."""

    status = Status.PERMISSION_DENIED


class RequestIdConflict(CallerError):
    """The admin request_id was used for another request."""

    status = Status.REQUEST_ID_CONFLICT


class KeyNotFound(CallerError):
    """No API key has that id."""

    status = Status.API_KEY_NOT_FOUND

    def __init__(self, key_id: str) -> None:
        super().__init__(f"no API key {key_id}")
        self.key_id = key_id


class CursorExpired(CallerError):
    """An event cursor names events the journal no longer holds (a snapshot trimmed
    them); answered with a BadRequest naming the request field."""

    status = Status.CURSOR_EXPIRED

    def __init__(self, field: str, description: str) -> None:
        super().__init__(f"{field}: {description}", metadata={"field": field})
        self.field = field
        self.description = description


class RuleChangeRefused(CallerError):
    """A rule change the live rule set refuses (one subclass per reason)."""


class RuleNotFound(RuleChangeRefused):
    """No rule has that id."""

    status = Status.RULE_NOT_FOUND


class RuleAlreadyExists(RuleChangeRefused):
    """Creating a rule whose id is taken."""

    status = Status.RULE_ALREADY_EXISTS


class EtagMismatch(RuleChangeRefused):
    """The rule (or the rule set) changed since the caller read it."""

    status = Status.ETAG_MISMATCH


class RuleSetInvalid(RuleChangeRefused):
    """The rule set the change would make is invalid; ``violations`` name each bad
    field ("rule.<field>" or "rules[i].<field>")."""

    status = Status.INVALID_FIELD

    def __init__(self, message: str, violations: list[Violation]) -> None:
        super().__init__(message)
        self.violations = list(violations)


class LimitReached(LoyaltyServerError):
    """A limit refused the call before anything changed; the same call may succeed
    later."""


class RateLimited(LimitReached):
    """A key's token bucket is empty."""

    status = Status.RATE_LIMITED

    def __init__(self, bucket: str, retry_after_s: float, burst: int) -> None:
        if math.isinf(retry_after_s):
            message = f"this call needs more {bucket} tokens than the key's burst of {burst}: split it"
            metadata = {"bucket": bucket, "burst": str(burst)}
            retry_after_ms = None
        else:
            retry_after_ms = max(1, math.ceil(retry_after_s * 1000))
            message = f"API key rate limit ({bucket}) reached; retry after {retry_after_ms} ms"
            metadata = {"bucket": bucket, "retry_after_ms": str(retry_after_ms), "burst": str(burst)}
        super().__init__(message, metadata=metadata)
        self.bucket = bucket
        """"requests" or "redemptions"."""
        self.retry_after_s = retry_after_s
        """Seconds until the call would fit (math.inf: it never fits; split it)."""
        self.retry_after_ms = retry_after_ms
        """What google.rpc.RetryInfo says (None when waiting cannot help)."""
        self.burst = burst
        """The bucket's size."""


class KeyStoreFull(LimitReached):
    """API_KEYS_MAX keys exist already."""

    status = Status.OVERLOADED


class KeyContended(LimitReached):
    """Concurrent changes kept overwriting this key; the caller may retry."""

    status = Status.OVERLOADED


class RulesContended(LimitReached):
    """Other writers kept changing the rules while this change was being made."""

    status = Status.OVERLOADED


class DependencyUnavailable(LoyaltyServerError):
    """Something the server needs (a shard, Redis) did not answer. A change may or may
    not have been made: retry with the same request_id."""


class ShardUnavailable(DependencyUnavailable):
    """A shard or its journal cannot be reached (or is recovering)."""

    status = Status.SHARD_UNAVAILABLE


class ControlStoreUnavailable(DependencyUnavailable):
    """The control plane's Redis (keys, rules, audit log, admin request records) did
    not answer. Never SHARD_UNAVAILABLE: no shard is involved."""

    status = Status.CONTROL_STORE_UNAVAILABLE


class AuditNotWritten(ControlStoreUnavailable):
    """A change made under a request_id stands, but its audit event could not be
    appended: the retry with the same request_id replays the change and appends it."""


class GatewayError(LoyaltyServerError):
    """A shard call that failed, answered with the reason it carries (the router and
    batcher choose it: SHARD_UNAVAILABLE, or OVERLOADED for a full queue)."""

    def __init__(self, status: Status, message: str) -> None:
        super().__init__(message)
        self.status = status


class ConfigurationError(LoyaltyServerError):
    """The configuration is unusable; the server does not start (never answered)."""


class InternalError(LoyaltyServerError):
    """A bug: never mapped to a reason, so gRPC answers it as INTERNAL or UNKNOWN."""


# --------------------------------------------------------------------------- gRPC


def rpc_status(
    status: int,
    message: str,
    *,
    metadata: dict[str, str] | None = None,
    violations: list[FieldViolation] | None = None,
    retry_after_ms: int | None = None,
) -> status_pb2.Status:
    """A google.rpc.Status for a ledger status, with ErrorInfo (and BadRequest, and
    google.rpc.RetryInfo when ``retry_after_ms`` is given)."""
    status = Status(status)
    code = _CODES[status]
    result = status_pb2.Status(code=code.value[0], message=message)
    if status is Status.OK:
        return result
    info = error_details_pb2.ErrorInfo(reason=status.name, domain=ERROR_DOMAIN, metadata=metadata or {})
    detail = any_pb2.Any()
    detail.Pack(info)
    result.details.append(detail)
    if violations:
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                for v in violations
            ]
        )
        detail = any_pb2.Any()
        detail.Pack(bad_request)
        result.details.append(detail)
    if retry_after_ms is not None:
        retry_info = error_details_pb2.RetryInfo()
        retry_info.retry_delay.FromMilliseconds(retry_after_ms)
        detail = any_pb2.Any()
        detail.Pack(retry_info)
        result.details.append(detail)
    return result


def invalid_argument(violation: FieldViolation) -> status_pb2.Status:
    """INVALID_ARGUMENT naming the field."""
    return rpc_status(Status.INVALID_FIELD, str(violation), violations=[violation])


def status_of(error: LoyaltyServerError) -> status_pb2.Status:
    """The google.rpc.Status a server exception is answered with. Raises ValueError
    for the branches that never reach a caller (configuration, bugs)."""
    if error.status is None:
        raise ValueError(f"{type(error).__name__} is not answered to callers") from error
    if isinstance(error, FieldViolation):
        return invalid_argument(error)
    violations = retry_after_ms = None
    if isinstance(error, CursorExpired):
        violations = [FieldViolation(error.field, error.description)]
    elif isinstance(error, RuleSetInvalid):
        violations = [FieldViolation(violation.path, violation.description) for violation in error.violations]
    elif isinstance(error, RateLimited):
        retry_after_ms = error.retry_after_ms
    return rpc_status(
        error.status, error.message, metadata=error.metadata, violations=violations, retry_after_ms=retry_after_ms
    )


async def abort(context: grpc.aio.ServicerContext, status: status_pb2.Status) -> None:
    """End the call with a google.rpc.Status (its code, message and details in the
    trailing metadata, where the SDK's ``error_details`` reads them). Never returns."""
    converted = grpc_rpc_status.to_status(status)
    await context.abort(converted.code, converted.details, converted.trailing_metadata)
