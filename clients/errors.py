"""The SDK's one exception tree, built from the server's structured errors.

Every failed call raises a ``LoyaltyError`` subclass chosen by the google.rpc.ErrorInfo
reason (or, for failures that carry none, by the gRPC status code)::

    LoyaltyError                      base: .code .reason .message .details .retryable .request_id
    ├── MemberNotFound                NOT_FOUND            MEMBER_NOT_FOUND             retry: no
    ├── MemberAlreadyExists           ALREADY_EXISTS       MEMBER_ALREADY_EXISTS        retry: no
    ├── InsufficientPoints            FAILED_PRECONDITION  INSUFFICIENT_POINTS          retry: no (same id replays the failure)
    ├── RequestIdConflict             ALREADY_EXISTS       REQUEST_ID_CONFLICT          retry: no
    ├── ReservationNotFound           NOT_FOUND            RESERVATION_NOT_FOUND        retry: no
    ├── ReservationExpired            FAILED_PRECONDITION  RESERVATION_EXPIRED          retry: no
    ├── CaptureExceedsReservation     FAILED_PRECONDITION  CAPTURE_EXCEEDS_RESERVATION  retry: no
    ├── TooManyReservations           FAILED_PRECONDITION  TOO_MANY_RESERVATIONS        retry: no
    ├── OriginalNotFound              NOT_FOUND            ORIGINAL_NOT_FOUND           retry: no
    ├── ReturnExceedsPurchase         FAILED_PRECONDITION  RETURN_EXCEEDS_PURCHASE      retry: no
    ├── OperationNotFound             NOT_FOUND            OPERATION_NOT_FOUND          retry: no
    ├── InvalidArgument               INVALID_ARGUMENT     INVALID_FIELD                retry: no (.field_violations)
    ├── CurrencyNotSupported          FAILED_PRECONDITION  CURRENCY_NOT_SUPPORTED       retry: no
    ├── CursorExpired                 FAILED_PRECONDITION  CURSOR_EXPIRED               retry: no (start from now)
    ├── RuleNotFound                  NOT_FOUND            RULE_NOT_FOUND               retry: no
    ├── RuleAlreadyExists             ALREADY_EXISTS       RULE_ALREADY_EXISTS          retry: no
    ├── EtagMismatch                  ABORTED              ETAG_MISMATCH                retry: no (read again)
    ├── ApiKeyNotFound                NOT_FOUND            API_KEY_NOT_FOUND            retry: no
    ├── Unauthenticated               UNAUTHENTICATED      UNAUTHENTICATED              retry: no
    ├── PermissionDenied              PERMISSION_DENIED    PERMISSION_DENIED            retry: no
    ├── TransientError                                                                  retry: yes, same request_id
    │   ├── Overloaded                RESOURCE_EXHAUSTED   OVERLOADED                   (not applied)
    │   │   └── RateLimited           RESOURCE_EXHAUSTED   RATE_LIMITED                 (not applied; .retry_after_s)
    │   ├── Unavailable               UNAVAILABLE          SHARD_UNAVAILABLE            (outcome unknown)
    │   │   └── ControlStoreUnavailable UNAVAILABLE        CONTROL_STORE_UNAVAILABLE    (outcome unknown; admin calls)
    │   └── DeadlineExceeded          DEADLINE_EXCEEDED                                 (outcome unknown)
    └── UnexpectedError               anything else (INTERNAL, UNKNOWN, ...)            retry: no

The client already retries transient errors under its ``RetryPolicy``; one that is
raised means the retries ran out. When a mutation ends in ``Unavailable`` or
``DeadlineExceeded`` the server may or may not have applied it: ``error.outcome_unknown``
is True and ``client.resolve(member_id, error.request_id)`` tells which.
"""

from __future__ import annotations

from typing import ClassVar

import grpc
from google.rpc import status_pb2

from loyalty.clients.status import ErrorDetails, details_of_status, error_details


class LoyaltyError(Exception):
    """Base of every error the SDK raises for a failed call.

    Retry: see ``retryable`` on each subclass.
    """

    retryable: ClassVar[bool] = False
    """Whether sending the same call again (with the same request_id) may succeed."""

    def __init__(self, details: ErrorDetails, *, request_id: str | None = None, outcome_unknown: bool = False) -> None:
        super().__init__(details.message or details.reason or details.code.name)
        self.details = details
        """Everything the server said: code, message, ErrorInfo and BadRequest."""
        self.request_id = request_id
        """The request_id the failed mutation was sent with; None for reads."""
        self.outcome_unknown = outcome_unknown
        """True when a mutation may have been applied although the call failed (the
        connection or the deadline gave out): ask ``client.resolve``."""

    @property
    def code(self) -> grpc.StatusCode:
        """The gRPC status code."""
        return self.details.code

    @property
    def reason(self) -> str:
        """The ErrorInfo reason (e.g. "INSUFFICIENT_POINTS"); empty when there was none."""
        return self.details.reason

    @property
    def message(self) -> str:
        """The server's developer-facing message; do not branch on it."""
        return self.details.message

    def with_request_id(self, request_id: str | None) -> LoyaltyError:
        """A copy of this error attributed to another request (one per Batch item)."""
        return type(self)(self.details, request_id=request_id, outcome_unknown=self.outcome_unknown)

    def __reduce__(self):
        # Errors cross process boundaries (multiprocessing, task queues); the default
        # would rebuild them from the message alone.
        return (type(self), (self.details,), {"request_id": self.request_id, "outcome_unknown": self.outcome_unknown})

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code.name}, reason={self.reason!r}, message={self.message!r}, request_id={self.request_id!r})"


class MemberNotFound(LoyaltyError):
    """No member has that id. Retry: not safe to expect a different answer; enroll first."""


class MemberAlreadyExists(LoyaltyError):
    """Enrolling an id that is taken (with a new request_id). Retry: no."""


class InsufficientPoints(LoyaltyError):
    """Not enough available points. Retry: no; a retry with the same request_id replays
    this failure even after more points arrive, so use a new request_id."""


class RequestIdConflict(LoyaltyError):
    """The request_id was used before with another payload; nothing changed. Retry: no."""


class ReservationNotFound(LoyaltyError):
    """No reservation has that id for this member. Retry: no."""


class ReservationExpired(LoyaltyError):
    """The reservation expired, or was already captured or released. Retry: no."""


class CaptureExceedsReservation(LoyaltyError):
    """Capture asked for more points than the reservation holds. Retry: no."""


class TooManyReservations(LoyaltyError):
    """The member already has the maximum number of open reservations. Retry: no
    (release or capture one first, with a new request_id)."""


class OriginalNotFound(LoyaltyError):
    """The purchase to reverse is unknown or no longer kept. Retry: no."""


class ReturnExceedsPurchase(LoyaltyError):
    """The return names a SKU or quantity the purchase did not have (or already
    returned). Retry: no."""


class OperationNotFound(LoyaltyError):
    """GetOperation found no stored outcome for the request_id: it was never applied
    (or is older than the retention window). Retry: no."""


class InvalidArgument(LoyaltyError):
    """A field is malformed. Retry: no; fix the field named in ``field_violations``."""

    @property
    def field_violations(self) -> tuple[tuple[str, str], ...]:
        """(field path, description) pairs, e.g. ("purchase.lines[0].quantity", "...")."""
        return self.details.field_violations


class CurrencyNotSupported(LoyaltyError):
    """The program has no redemption value for the currency asked about. Retry: no."""


class RuleNotFound(LoyaltyError):
    """No earning rule has that id. Retry: no."""


class RuleAlreadyExists(LoyaltyError):
    """Creating a rule whose id is taken. Retry: no; update it instead."""


class EtagMismatch(LoyaltyError):
    """The rule (or rule set) changed since it was read. Retry: no; read it again, then
    apply the change to the fresh copy."""


class ApiKeyNotFound(LoyaltyError):
    """No API key has that id. Retry: no."""


class Unauthenticated(LoyaltyError):
    """The server did not accept the credentials (missing, unknown or revoked API key).
    Retry: no."""


class PermissionDenied(LoyaltyError):
    """The credentials are valid but not allowed to make this call (the key's role, or
    the channels and stores it is limited to). Retry: no."""


class TransientError(LoyaltyError):
    """A failure that may go away: retry: safe, with the same request_id (the server
    applies each request_id at most once)."""

    retryable: ClassVar[bool] = True


class Overloaded(TransientError):
    """RESOURCE_EXHAUSTED: a shard queue is full; the request was refused before it
    reached the member, so it was not applied. Retry: safe, with backoff."""


class RateLimited(Overloaded):
    """RESOURCE_EXHAUSTED: this API key's rate limit; nothing was applied. Retry: safe
    after ``retry_after_s``."""

    @property
    def retry_after_s(self) -> float:
        """Seconds until the server expects a token to be free (0 when it did not say)."""
        try:
            return int(self.details.metadata.get("retry_after_ms", "0")) / 1000
        except ValueError:
            return 0.0


class Unavailable(TransientError):
    """UNAVAILABLE: the server, a shard or its journal is down or recovering. A mutation
    may or may not have been applied. Retry: safe with the same request_id; or ask
    ``client.resolve``."""


class ControlStoreUnavailable(Unavailable):
    """UNAVAILABLE: the server's control store (API keys, rules, the audit log in
    Redis) did not answer an admin call; no shard is involved. A change may or may not
    have been made. Retry: safe with the same request_id."""


class DeadlineExceeded(TransientError):
    """DEADLINE_EXCEEDED: no answer in time. A mutation may or may not have been
    applied. Retry: safe with the same request_id; or ask ``client.resolve``."""


class CursorExpired(LoyaltyError):
    """FAILED_PRECONDITION: an event cursor names events the journal no longer holds
    (a snapshot trimmed them). Retry: no; stream again from now."""


class UnexpectedError(LoyaltyError):
    """Any other failure (INTERNAL, UNKNOWN, UNIMPLEMENTED, CANCELLED, ...): most likely
    a bug or a version mismatch. Retry: not by default."""


# ErrorInfo reason -> class. The reasons are loyalty.v1.ErrorReason names.
ERRORS_BY_REASON: dict[str, type[LoyaltyError]] = {
    "MEMBER_NOT_FOUND": MemberNotFound,
    "MEMBER_ALREADY_EXISTS": MemberAlreadyExists,
    "INSUFFICIENT_POINTS": InsufficientPoints,
    "REQUEST_ID_CONFLICT": RequestIdConflict,
    "RESERVATION_NOT_FOUND": ReservationNotFound,
    "RESERVATION_EXPIRED": ReservationExpired,
    "CAPTURE_EXCEEDS_RESERVATION": CaptureExceedsReservation,
    "TOO_MANY_RESERVATIONS": TooManyReservations,
    "ORIGINAL_NOT_FOUND": OriginalNotFound,
    "RETURN_EXCEEDS_PURCHASE": ReturnExceedsPurchase,
    "OPERATION_NOT_FOUND": OperationNotFound,
    "INVALID_FIELD": InvalidArgument,
    "OVERLOADED": Overloaded,
    "SHARD_UNAVAILABLE": Unavailable,
    "CONTROL_STORE_UNAVAILABLE": ControlStoreUnavailable,
    "CURRENCY_NOT_SUPPORTED": CurrencyNotSupported,
    "CURSOR_EXPIRED": CursorExpired,
    "RULE_NOT_FOUND": RuleNotFound,
    "RULE_ALREADY_EXISTS": RuleAlreadyExists,
    "ETAG_MISMATCH": EtagMismatch,
    "API_KEY_NOT_FOUND": ApiKeyNotFound,
    "UNAUTHENTICATED": Unauthenticated,
    "PERMISSION_DENIED": PermissionDenied,
    "RATE_LIMITED": RateLimited,
}

# gRPC code -> class, for failures without a known reason (deadlines, a proxy, auth).
ERRORS_BY_CODE: dict[grpc.StatusCode, type[LoyaltyError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.RESOURCE_EXHAUSTED: Overloaded,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
}

# Codes after which a mutation may have been applied although the call failed.
OUTCOME_UNKNOWN_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})

_CODES_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


def error_from_details(details: ErrorDetails, *, request_id: str | None = None, mutation: bool = False) -> LoyaltyError:
    """The exception for a failure's details. ``mutation`` marks a call that changes
    state, whose outcome is unknown after UNAVAILABLE or DEADLINE_EXCEEDED."""
    error_class = ERRORS_BY_REASON.get(details.reason) or ERRORS_BY_CODE.get(details.code, UnexpectedError)
    unknown = mutation and details.code in OUTCOME_UNKNOWN_CODES
    return error_class(details, request_id=request_id, outcome_unknown=unknown)


def error_from_rpc_error(error: grpc.RpcError, *, request_id: str | None = None, mutation: bool = False) -> LoyaltyError:
    """The exception for a failed gRPC call (blocking or asyncio)."""
    return error_from_details(error_details(error), request_id=request_id, mutation=mutation)


def details_from_status(status: status_pb2.Status) -> ErrorDetails:
    """ErrorDetails of a google.rpc.Status carried inside a response (a Batch item's
    or a stored Operation's), read the same way ``error_details`` reads a call's."""
    code = _CODES_BY_NUMBER.get(status.code, grpc.StatusCode.UNKNOWN)
    return details_of_status(status, code, status.message)


def error_from_status(status: status_pb2.Status, *, request_id: str | None = None) -> LoyaltyError:
    """The exception for a failed google.rpc.Status inside a response. Such a status
    is a decided outcome, never an unknown one."""
    return error_from_details(details_from_status(status), request_id=request_id)
