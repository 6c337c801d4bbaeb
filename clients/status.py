"""Reading a failed call's structured error, and opening a stub."""

from __future__ import annotations

import dataclasses

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from loyalty.v1 import loyalty_pb2_grpc


@dataclasses.dataclass(frozen=True)
class ErrorDetails:
    """What the server said about a failed call."""

    code: grpc.StatusCode
    """The gRPC status code."""
    message: str
    """Developer-facing text; do not branch on it."""
    reason: str = ""
    """google.rpc.ErrorInfo reason, e.g. "INSUFFICIENT_POINTS" (loyalty.v1.ErrorReason)."""
    domain: str = ""
    """google.rpc.ErrorInfo domain ("loyalty.v1" for this server's errors)."""
    metadata: dict[str, str] = dataclasses.field(default_factory=dict)
    """google.rpc.ErrorInfo metadata."""
    field_violations: tuple[tuple[str, str], ...] = ()
    """(field path, description) pairs from google.rpc.BadRequest."""


def error_details(error: grpc.RpcError) -> ErrorDetails:
    """The structured error of a failed call (blocking or asyncio)."""
    code, message = error.code(), error.details() or ""
    status = rpc_status.from_call(error)
    if status is None:  # not from this server's error mapping (e.g. a deadline)
        return ErrorDetails(code, message)
    return details_of_status(status, code, message)


def details_of_status(status: status_pb2.Status, code: grpc.StatusCode, message: str) -> ErrorDetails:
    """ErrorDetails from a google.rpc.Status: its ErrorInfo and BadRequest details."""
    reason, domain, metadata, violations = "", "", {}, ()
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason, domain, metadata = info.reason, info.domain, dict(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            violations = tuple((v.field, v.description) for v in bad_request.field_violations)
    return ErrorDetails(code, message, reason, domain, metadata, violations)


def connect(target: str = "127.0.0.1:50051") -> tuple[grpc.Channel, loyalty_pb2_grpc.LoyaltyServiceStub]:
    """A plaintext channel to a server and a LoyaltyService stub on it. Close the
    channel when done (or use it as a context manager)."""
    channel = grpc.insecure_channel(target)
    return channel, loyalty_pb2_grpc.LoyaltyServiceStub(channel)
