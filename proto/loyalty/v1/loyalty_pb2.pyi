import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.rpc import status_pb2 as _status_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ErrorReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERROR_REASON_UNSPECIFIED: _ClassVar[ErrorReason]
    MEMBER_NOT_FOUND: _ClassVar[ErrorReason]
    MEMBER_ALREADY_EXISTS: _ClassVar[ErrorReason]
    INSUFFICIENT_POINTS: _ClassVar[ErrorReason]
    REQUEST_ID_CONFLICT: _ClassVar[ErrorReason]
    RESERVATION_NOT_FOUND: _ClassVar[ErrorReason]
    RESERVATION_EXPIRED: _ClassVar[ErrorReason]
    CAPTURE_EXCEEDS_RESERVATION: _ClassVar[ErrorReason]
    ORIGINAL_NOT_FOUND: _ClassVar[ErrorReason]
    RETURN_EXCEEDS_PURCHASE: _ClassVar[ErrorReason]
    INVALID_FIELD: _ClassVar[ErrorReason]
    OPERATION_NOT_FOUND: _ClassVar[ErrorReason]
    OVERLOADED: _ClassVar[ErrorReason]
    SHARD_UNAVAILABLE: _ClassVar[ErrorReason]
    TOO_MANY_RESERVATIONS: _ClassVar[ErrorReason]
    UNAUTHENTICATED: _ClassVar[ErrorReason]
    PERMISSION_DENIED: _ClassVar[ErrorReason]
    RATE_LIMITED: _ClassVar[ErrorReason]
    RULE_NOT_FOUND: _ClassVar[ErrorReason]
    RULE_ALREADY_EXISTS: _ClassVar[ErrorReason]
    ETAG_MISMATCH: _ClassVar[ErrorReason]
    API_KEY_NOT_FOUND: _ClassVar[ErrorReason]
    CURRENCY_NOT_SUPPORTED: _ClassVar[ErrorReason]
    CONTROL_STORE_UNAVAILABLE: _ClassVar[ErrorReason]
    CURSOR_EXPIRED: _ClassVar[ErrorReason]

class MemberStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MEMBER_STATUS_UNSPECIFIED: _ClassVar[MemberStatus]
    MEMBER_STATUS_ACTIVE: _ClassVar[MemberStatus]

class TransactionKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRANSACTION_KIND_UNSPECIFIED: _ClassVar[TransactionKind]
    TRANSACTION_KIND_ENROLL: _ClassVar[TransactionKind]
    TRANSACTION_KIND_EARN: _ClassVar[TransactionKind]
    TRANSACTION_KIND_REDEEM: _ClassVar[TransactionKind]
    TRANSACTION_KIND_RESERVE: _ClassVar[TransactionKind]
    TRANSACTION_KIND_CAPTURE: _ClassVar[TransactionKind]
    TRANSACTION_KIND_RELEASE: _ClassVar[TransactionKind]
    TRANSACTION_KIND_REVERSE: _ClassVar[TransactionKind]
    TRANSACTION_KIND_ADJUST: _ClassVar[TransactionKind]
    TRANSACTION_KIND_EXPIRE: _ClassVar[TransactionKind]
    TRANSACTION_KIND_RESERVATION_EXPIRED: _ClassVar[TransactionKind]
ERROR_REASON_UNSPECIFIED: ErrorReason
MEMBER_NOT_FOUND: ErrorReason
MEMBER_ALREADY_EXISTS: ErrorReason
INSUFFICIENT_POINTS: ErrorReason
REQUEST_ID_CONFLICT: ErrorReason
RESERVATION_NOT_FOUND: ErrorReason
RESERVATION_EXPIRED: ErrorReason
CAPTURE_EXCEEDS_RESERVATION: ErrorReason
ORIGINAL_NOT_FOUND: ErrorReason
RETURN_EXCEEDS_PURCHASE: ErrorReason
INVALID_FIELD: ErrorReason
OPERATION_NOT_FOUND: ErrorReason
OVERLOADED: ErrorReason
SHARD_UNAVAILABLE: ErrorReason
TOO_MANY_RESERVATIONS: ErrorReason
UNAUTHENTICATED: ErrorReason
PERMISSION_DENIED: ErrorReason
RATE_LIMITED: ErrorReason
RULE_NOT_FOUND: ErrorReason
RULE_ALREADY_EXISTS: ErrorReason
ETAG_MISMATCH: ErrorReason
API_KEY_NOT_FOUND: ErrorReason
CURRENCY_NOT_SUPPORTED: ErrorReason
CONTROL_STORE_UNAVAILABLE: ErrorReason
CURSOR_EXPIRED: ErrorReason
MEMBER_STATUS_UNSPECIFIED: MemberStatus
MEMBER_STATUS_ACTIVE: MemberStatus
TRANSACTION_KIND_UNSPECIFIED: TransactionKind
TRANSACTION_KIND_ENROLL: TransactionKind
TRANSACTION_KIND_EARN: TransactionKind
TRANSACTION_KIND_REDEEM: TransactionKind
TRANSACTION_KIND_RESERVE: TransactionKind
TRANSACTION_KIND_CAPTURE: TransactionKind
TRANSACTION_KIND_RELEASE: TransactionKind
TRANSACTION_KIND_REVERSE: TransactionKind
TRANSACTION_KIND_ADJUST: TransactionKind
TRANSACTION_KIND_EXPIRE: TransactionKind
TRANSACTION_KIND_RESERVATION_EXPIRED: TransactionKind

class PointsExpiration(_message.Message):
    __slots__ = ("points", "expires_at")
    POINTS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    points: int
    expires_at: _timestamp_pb2.Timestamp
    def __init__(self, points: _Optional[int] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Balance(_message.Message):
    __slots__ = ("available", "pending", "reserved", "debt", "lifetime_earned", "next_expirations", "redeemed", "expired", "reversed", "adjusted_in", "adjusted_out")
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    RESERVED_FIELD_NUMBER: _ClassVar[int]
    DEBT_FIELD_NUMBER: _ClassVar[int]
    LIFETIME_EARNED_FIELD_NUMBER: _ClassVar[int]
    NEXT_EXPIRATIONS_FIELD_NUMBER: _ClassVar[int]
    REDEEMED_FIELD_NUMBER: _ClassVar[int]
    EXPIRED_FIELD_NUMBER: _ClassVar[int]
    REVERSED_FIELD_NUMBER: _ClassVar[int]
    ADJUSTED_IN_FIELD_NUMBER: _ClassVar[int]
    ADJUSTED_OUT_FIELD_NUMBER: _ClassVar[int]
    available: int
    pending: int
    reserved: int
    debt: int
    lifetime_earned: int
    next_expirations: _containers.RepeatedCompositeFieldContainer[PointsExpiration]
    redeemed: int
    expired: int
    reversed: int
    adjusted_in: int
    adjusted_out: int
    def __init__(self, available: _Optional[int] = ..., pending: _Optional[int] = ..., reserved: _Optional[int] = ..., debt: _Optional[int] = ..., lifetime_earned: _Optional[int] = ..., next_expirations: _Optional[_Iterable[_Union[PointsExpiration, _Mapping]]] = ..., redeemed: _Optional[int] = ..., expired: _Optional[int] = ..., reversed: _Optional[int] = ..., adjusted_in: _Optional[int] = ..., adjusted_out: _Optional[int] = ...) -> None: ...

class Member(_message.Message):
    __slots__ = ("member_id", "attributes", "status", "balance", "enrolled_at")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    ENROLLED_AT_FIELD_NUMBER: _ClassVar[int]
    member_id: str
    attributes: _containers.ScalarMap[str, str]
    status: MemberStatus
    balance: Balance
    enrolled_at: _timestamp_pb2.Timestamp
    def __init__(self, member_id: _Optional[str] = ..., attributes: _Optional[_Mapping[str, str]] = ..., status: _Optional[_Union[MemberStatus, str]] = ..., balance: _Optional[_Union[Balance, _Mapping]] = ..., enrolled_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class EnrollMemberRequest(_message.Message):
    __slots__ = ("member_id", "request_id", "attributes")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    member_id: str
    request_id: str
    attributes: _containers.ScalarMap[str, str]
    def __init__(self, member_id: _Optional[str] = ..., request_id: _Optional[str] = ..., attributes: _Optional[_Mapping[str, str]] = ...) -> None: ...

class GetMemberRequest(_message.Message):
    __slots__ = ("member_id",)
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    member_id: str
    def __init__(self, member_id: _Optional[str] = ...) -> None: ...

class GetBalanceRequest(_message.Message):
    __slots__ = ("member_id",)
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    member_id: str
    def __init__(self, member_id: _Optional[str] = ...) -> None: ...

class PurchaseLine(_message.Message):
    __slots__ = ("sku", "category", "quantity", "amount_minor")
    SKU_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    sku: str
    category: str
    quantity: int
    amount_minor: int
    def __init__(self, sku: _Optional[str] = ..., category: _Optional[str] = ..., quantity: _Optional[int] = ..., amount_minor: _Optional[int] = ...) -> None: ...

class Purchase(_message.Message):
    __slots__ = ("channel", "store_id", "currency", "lines", "occurred_at")
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    STORE_ID_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    channel: str
    store_id: str
    currency: str
    lines: _containers.RepeatedCompositeFieldContainer[PurchaseLine]
    occurred_at: _timestamp_pb2.Timestamp
    def __init__(self, channel: _Optional[str] = ..., store_id: _Optional[str] = ..., currency: _Optional[str] = ..., lines: _Optional[_Iterable[_Union[PurchaseLine, _Mapping]]] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class EarnRequest(_message.Message):
    __slots__ = ("member_id", "request_id", "purchase")
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PURCHASE_FIELD_NUMBER: _ClassVar[int]
    member_id: str
    request_id: str
    purchase: Purchase
    def __init__(self, member_id: _Optional[str] = ..., request_id: _Optional[str] = ..., purchase: _Optional[_Union[Purchase, _Mapping]] = ...) -> None: ...

class LinePoints(_message.Message):
    __slots__ = ("sku", "points")
    SKU_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    sku: str
    points: int
    def __init__(self, sku: _Optional[str] = ..., points: _Optional[int] = ...) -> None: ...

class EarnResponse(_message.Message):
    __slots__ = ("points", "balance", "debt_repaid", "pending", "available_at", "expires_at", "lines", "rules_version", "awards", "limits")
    POINTS_FIELD_NUMBER: _ClassVar[int]
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    DEBT_REPAID_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    RULES_VERSION_FIELD_NUMBER: _ClassVar[int]
    AWARDS_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    points: int
    balance: Balance
    debt_repaid: int
    pending: bool
    available_at: _timestamp_pb2.Timestamp
    expires_at: _timestamp_pb2.Timestamp
    lines: _containers.RepeatedCompositeFieldContainer[LinePoints]
    rules_version: int
    awards: _containers.RepeatedCompositeFieldContainer[PointsAward]
    limits: _containers.RepeatedCompositeFieldContainer[PointsLimit]
    def __init__(self, points: _Optional[int] = ..., balance: _Optional[_Union[Balance, _Mapping]] = ..., debt_repaid: _Optional[int] = ..., pending: _Optional[bool] = ..., available_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., lines: _Optional[_Iterable[_Union[LinePoints, _Mapping]]] = ..., rules_version: _Optional[int] = ..., awards: _Optional[_Iterable[_Union[PointsAward, _Mapping]]] = ..., limits: _Optional[_Iterable[_Union[PointsLimit, _Mapping]]] = ...) -> None: ...

class PointsAward(_message.Message):
    __slots__ = ("rule_id", "sku", "line_index", "points", "effect")
    RULE_ID_FIELD_NUMBER: _ClassVar[int]
    SKU_FIELD_NUMBER: _ClassVar[int]
    LINE_INDEX_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    EFFECT_FIELD_NUMBER: _ClassVar[int]
    rule_id: str
    sku: str
    line_index: int
    points: int
    effect: str
    def __init__(self, rule_id: _Optional[str] = ..., sku: _Optional[str] = ..., line_index: _Optional[int] = ..., points: _Optional[int] = ..., effect: _Optional[str] = ...) -> None: ...

class PointsLimit(_message.Message):
    __slots__ = ("rule_id", "limit", "points_cut")
    RULE_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    POINTS_CUT_FIELD_NUMBER: _ClassVar[int]
    rule_id: str
    limit: str
    points_cut: int
    def __init__(self, rule_id: _Optional[str] = ..., limit: _Optional[str] = ..., points_cut: _Optional[int] = ...) -> None: ...

class QuoteRedemptionRequest(_message.Message):
    __slots__ = ("currency", "amount_minor", "points")
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    currency: str
    amount_minor: int
    points: int
    def __init__(self, currency: _Optional[str] = ..., amount_minor: _Optional[int] = ..., points: _Optional[int] = ...) -> None: ...

class QuoteRedemptionResponse(_message.Message):
    __slots__ = ("currency", "amount_minor", "points")
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    currency: str
    amount_minor: int
    points: int
    def __init__(self, currency: _Optional[str] = ..., amount_minor: _Optional[int] = ..., points: _Optional[int] = ...) -> None: ...

class RedeemRequest(_message.Message):
    __slots__ = ("member_id", "request_id", "points")
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    member_id: str
    request_id: str
    points: int
    def __init__(self, member_id: _Optional[str] = ..., request_id: _Optional[str] = ..., points: _Optional[int] = ...) -> None: ...

class RedeemResponse(_message.Message):
    __slots__ = ("balance", "points")
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    balance: Balance
    points: int
    def __init__(self, balance: _Optional[_Union[Balance, _Mapping]] = ..., points: _Optional[int] = ...) -> None: ...

class ReserveRequest(_message.Message):
    __slots__ = ("member_id", "request_id", "points", "ttl_seconds")
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    member_id: str
    request_id: str
    points: int
    ttl_seconds: int
    def __init__(self, member_id: _Optional[str] = ..., request_id: _Optional[str] = ..., points: _Optional[int] = ..., ttl_seconds: _Optional[int] = ...) -> None: ...

class ReserveResponse(_message.Message):
    __slots__ = ("reservation_id", "expires_at", "balance", "points")
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    reservation_id: str
    expires_at: _timestamp_pb2.Timestamp
    balance: Balance
    points: int
    def __init__(self, reservation_id: _Optional[str] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., balance: _Optional[_Union[Balance, _Mapping]] = ..., points: _Optional[int] = ...) -> None: ...

class CaptureRequest(_message.Message):
    __slots__ = ("member_id", "request_id", "reservation_id", "points")
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    member_id: str
    request_id: str
    reservation_id: str
    points: int
    def __init__(self, member_id: _Optional[str] = ..., request_id: _Optional[str] = ..., reservation_id: _Optional[str] = ..., points: _Optional[int] = ...) -> None: ...

class CaptureResponse(_message.Message):
    __slots__ = ("captured", "balance", "released")
    CAPTURED_FIELD_NUMBER: _ClassVar[int]
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    RELEASED_FIELD_NUMBER: _ClassVar[int]
    captured: int
    balance: Balance
    released: int
    def __init__(self, captured: _Optional[int] = ..., balance: _Optional[_Union[Balance, _Mapping]] = ..., released: _Optional[int] = ...) -> None: ...

class ReleaseRequest(_message.Message):
    __slots__ = ("member_id", "request_id", "reservation_id")
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    member_id: str
    request_id: str
    reservation_id: str
    def __init__(self, member_id: _Optional[str] = ..., request_id: _Optional[str] = ..., reservation_id: _Optional[str] = ...) -> None: ...

class ReleaseResponse(_message.Message):
    __slots__ = ("balance", "released")
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    RELEASED_FIELD_NUMBER: _ClassVar[int]
    balance: Balance
    released: int
    def __init__(self, balance: _Optional[_Union[Balance, _Mapping]] = ..., released: _Optional[int] = ...) -> None: ...

class ReturnLine(_message.Message):
    __slots__ = ("sku", "quantity")
    SKU_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    sku: str
    quantity: int
    def __init__(self, sku: _Optional[str] = ..., quantity: _Optional[int] = ...) -> None: ...

class ReverseRequest(_message.Message):
    __slots__ = ("member_id", "request_id", "original_request_id", "lines")
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ORIGINAL_REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    member_id: str
    request_id: str
    original_request_id: str
    lines: _containers.RepeatedCompositeFieldContainer[ReturnLine]
    def __init__(self, member_id: _Optional[str] = ..., request_id: _Optional[str] = ..., original_request_id: _Optional[str] = ..., lines: _Optional[_Iterable[_Union[ReturnLine, _Mapping]]] = ...) -> None: ...

class ReverseResponse(_message.Message):
    __slots__ = ("points_reversed", "balance", "debt_added")
    POINTS_REVERSED_FIELD_NUMBER: _ClassVar[int]
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    DEBT_ADDED_FIELD_NUMBER: _ClassVar[int]
    points_reversed: int
    balance: Balance
    debt_added: int
    def __init__(self, points_reversed: _Optional[int] = ..., balance: _Optional[_Union[Balance, _Mapping]] = ..., debt_added: _Optional[int] = ...) -> None: ...

class AdjustRequest(_message.Message):
    __slots__ = ("member_id", "request_id", "points", "reason")
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    member_id: str
    request_id: str
    points: int
    reason: str
    def __init__(self, member_id: _Optional[str] = ..., request_id: _Optional[str] = ..., points: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class AdjustResponse(_message.Message):
    __slots__ = ("balance",)
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    balance: Balance
    def __init__(self, balance: _Optional[_Union[Balance, _Mapping]] = ...) -> None: ...

class Transaction(_message.Message):
    __slots__ = ("request_id", "kind", "points", "balance_after", "time", "reference")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    BALANCE_AFTER_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    kind: TransactionKind
    points: int
    balance_after: int
    time: _timestamp_pb2.Timestamp
    reference: str
    def __init__(self, request_id: _Optional[str] = ..., kind: _Optional[_Union[TransactionKind, str]] = ..., points: _Optional[int] = ..., balance_after: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reference: _Optional[str] = ...) -> None: ...

class ListTransactionsRequest(_message.Message):
    __slots__ = ("member_id", "page_size", "page_token")
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    member_id: str
    page_size: int
    page_token: str
    def __init__(self, member_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListTransactionsResponse(_message.Message):
    __slots__ = ("transactions", "next_page_token")
    TRANSACTIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    transactions: _containers.RepeatedCompositeFieldContainer[Transaction]
    next_page_token: str
    def __init__(self, transactions: _Optional[_Iterable[_Union[Transaction, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetOperationRequest(_message.Message):
    __slots__ = ("member_id", "request_id")
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    member_id: str
    request_id: str
    def __init__(self, member_id: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class Operation(_message.Message):
    __slots__ = ("member_id", "request_id", "status", "applied_at", "enroll_member", "earn", "redeem", "reserve", "capture", "release", "reverse", "adjust")
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    APPLIED_AT_FIELD_NUMBER: _ClassVar[int]
    ENROLL_MEMBER_FIELD_NUMBER: _ClassVar[int]
    EARN_FIELD_NUMBER: _ClassVar[int]
    REDEEM_FIELD_NUMBER: _ClassVar[int]
    RESERVE_FIELD_NUMBER: _ClassVar[int]
    CAPTURE_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    REVERSE_FIELD_NUMBER: _ClassVar[int]
    ADJUST_FIELD_NUMBER: _ClassVar[int]
    member_id: str
    request_id: str
    status: _status_pb2.Status
    applied_at: _timestamp_pb2.Timestamp
    enroll_member: Member
    earn: EarnResponse
    redeem: RedeemResponse
    reserve: ReserveResponse
    capture: CaptureResponse
    release: ReleaseResponse
    reverse: ReverseResponse
    adjust: AdjustResponse
    def __init__(self, member_id: _Optional[str] = ..., request_id: _Optional[str] = ..., status: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., applied_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., enroll_member: _Optional[_Union[Member, _Mapping]] = ..., earn: _Optional[_Union[EarnResponse, _Mapping]] = ..., redeem: _Optional[_Union[RedeemResponse, _Mapping]] = ..., reserve: _Optional[_Union[ReserveResponse, _Mapping]] = ..., capture: _Optional[_Union[CaptureResponse, _Mapping]] = ..., release: _Optional[_Union[ReleaseResponse, _Mapping]] = ..., reverse: _Optional[_Union[ReverseResponse, _Mapping]] = ..., adjust: _Optional[_Union[AdjustResponse, _Mapping]] = ...) -> None: ...

class BatchItem(_message.Message):
    __slots__ = ("enroll_member", "earn", "redeem", "reserve", "capture", "release", "reverse", "adjust")
    ENROLL_MEMBER_FIELD_NUMBER: _ClassVar[int]
    EARN_FIELD_NUMBER: _ClassVar[int]
    REDEEM_FIELD_NUMBER: _ClassVar[int]
    RESERVE_FIELD_NUMBER: _ClassVar[int]
    CAPTURE_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    REVERSE_FIELD_NUMBER: _ClassVar[int]
    ADJUST_FIELD_NUMBER: _ClassVar[int]
    enroll_member: EnrollMemberRequest
    earn: EarnRequest
    redeem: RedeemRequest
    reserve: ReserveRequest
    capture: CaptureRequest
    release: ReleaseRequest
    reverse: ReverseRequest
    adjust: AdjustRequest
    def __init__(self, enroll_member: _Optional[_Union[EnrollMemberRequest, _Mapping]] = ..., earn: _Optional[_Union[EarnRequest, _Mapping]] = ..., redeem: _Optional[_Union[RedeemRequest, _Mapping]] = ..., reserve: _Optional[_Union[ReserveRequest, _Mapping]] = ..., capture: _Optional[_Union[CaptureRequest, _Mapping]] = ..., release: _Optional[_Union[ReleaseRequest, _Mapping]] = ..., reverse: _Optional[_Union[ReverseRequest, _Mapping]] = ..., adjust: _Optional[_Union[AdjustRequest, _Mapping]] = ...) -> None: ...

class BatchRequest(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[BatchItem]
    def __init__(self, items: _Optional[_Iterable[_Union[BatchItem, _Mapping]]] = ...) -> None: ...

class BatchResult(_message.Message):
    __slots__ = ("status", "enroll_member", "earn", "redeem", "reserve", "capture", "release", "reverse", "adjust")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ENROLL_MEMBER_FIELD_NUMBER: _ClassVar[int]
    EARN_FIELD_NUMBER: _ClassVar[int]
    REDEEM_FIELD_NUMBER: _ClassVar[int]
    RESERVE_FIELD_NUMBER: _ClassVar[int]
    CAPTURE_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    REVERSE_FIELD_NUMBER: _ClassVar[int]
    ADJUST_FIELD_NUMBER: _ClassVar[int]
    status: _status_pb2.Status
    enroll_member: Member
    earn: EarnResponse
    redeem: RedeemResponse
    reserve: ReserveResponse
    capture: CaptureResponse
    release: ReleaseResponse
    reverse: ReverseResponse
    adjust: AdjustResponse
    def __init__(self, status: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., enroll_member: _Optional[_Union[Member, _Mapping]] = ..., earn: _Optional[_Union[EarnResponse, _Mapping]] = ..., redeem: _Optional[_Union[RedeemResponse, _Mapping]] = ..., reserve: _Optional[_Union[ReserveResponse, _Mapping]] = ..., capture: _Optional[_Union[CaptureResponse, _Mapping]] = ..., release: _Optional[_Union[ReleaseResponse, _Mapping]] = ..., reverse: _Optional[_Union[ReverseResponse, _Mapping]] = ..., adjust: _Optional[_Union[AdjustResponse, _Mapping]] = ...) -> None: ...

class BatchResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[BatchResult]
    def __init__(self, results: _Optional[_Iterable[_Union[BatchResult, _Mapping]]] = ...) -> None: ...
