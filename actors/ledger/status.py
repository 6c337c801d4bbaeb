"""Business outcomes as values. The numbers are persisted in journals: never renumber."""

import enum


class Status(enum.IntEnum):
    """The outcome of one operation. Exceptions are for bugs and infrastructure only."""

    OK = 0
    MEMBER_NOT_FOUND = 1
    MEMBER_ALREADY_EXISTS = 2
    INSUFFICIENT_POINTS = 3
    REQUEST_ID_CONFLICT = 4
    RESERVATION_NOT_FOUND = 5
    RESERVATION_EXPIRED = 6
    CAPTURE_EXCEEDS_RESERVATION = 7
    ORIGINAL_NOT_FOUND = 8
    RETURN_EXCEEDS_PURCHASE = 9
    INVALID_FIELD = 10
    OPERATION_NOT_FOUND = 11
    OVERLOADED = 12
    SHARD_UNAVAILABLE = 13
    TOO_MANY_RESERVATIONS = 14
    # Gateway and administration outcomes: never produced by the ledger itself, but
    # numbered here so the one gRPC mapping covers every reason in loyalty.v1.ErrorReason.
    UNAUTHENTICATED = 15
    PERMISSION_DENIED = 16
    RATE_LIMITED = 17
    RULE_NOT_FOUND = 18
    RULE_ALREADY_EXISTS = 19
    ETAG_MISMATCH = 20
    API_KEY_NOT_FOUND = 21
    CURRENCY_NOT_SUPPORTED = 22
    CONTROL_STORE_UNAVAILABLE = 23
    CURSOR_EXPIRED = 24
