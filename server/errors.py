"""The one mapping from ledger statuses and gateway failures to gRPC errors.

Every error is a google.rpc.Status with a canonical code and a google.rpc.ErrorInfo
(domain "loyalty.v1", an UPPER_SNAKE reason from loyalty.v1.ErrorReason); invalid
input also carries a google.rpc.BadRequest naming each bad field.
"""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

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
}


class FieldViolation(Exception):
    """Raised while reading a request: one field is malformed."""

    def __init__(self, field: str, description: str) -> None:
        super().__init__(f"{field}: {description}")
        self.field = field
        self.description = description


class GatewayError(Exception):
    """A failure of the gateway or a shard, reported with a ledger Status."""

    def __init__(self, status: Status, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


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

