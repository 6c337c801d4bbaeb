import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from loyalty.v1 import loyalty_pb2 as _loyalty_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EventKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_KIND_UNSPECIFIED: _ClassVar[EventKind]
    EVENT_KIND_ENROLLED: _ClassVar[EventKind]
    EVENT_KIND_EARNED: _ClassVar[EventKind]
    EVENT_KIND_REDEEMED: _ClassVar[EventKind]
    EVENT_KIND_RESERVED: _ClassVar[EventKind]
    EVENT_KIND_CAPTURED: _ClassVar[EventKind]
    EVENT_KIND_RELEASED: _ClassVar[EventKind]
    EVENT_KIND_RESERVATION_EXPIRED: _ClassVar[EventKind]
    EVENT_KIND_POINTS_EXPIRED: _ClassVar[EventKind]
    EVENT_KIND_REVERSED: _ClassVar[EventKind]
    EVENT_KIND_ADJUSTED: _ClassVar[EventKind]
EVENT_KIND_UNSPECIFIED: EventKind
EVENT_KIND_ENROLLED: EventKind
EVENT_KIND_EARNED: EventKind
EVENT_KIND_REDEEMED: EventKind
EVENT_KIND_RESERVED: EventKind
EVENT_KIND_CAPTURED: EventKind
EVENT_KIND_RELEASED: EventKind
EVENT_KIND_RESERVATION_EXPIRED: EventKind
EVENT_KIND_POINTS_EXPIRED: EventKind
EVENT_KIND_REVERSED: EventKind
EVENT_KIND_ADJUSTED: EventKind

class Event(_message.Message):
    __slots__ = ("cursor", "member_id", "time", "request_id", "balance", "enrolled", "earned", "redeemed", "reserved", "captured", "released", "reservation_expired", "points_expired", "reversed", "adjusted")
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    ENROLLED_FIELD_NUMBER: _ClassVar[int]
    EARNED_FIELD_NUMBER: _ClassVar[int]
    REDEEMED_FIELD_NUMBER: _ClassVar[int]
    RESERVED_FIELD_NUMBER: _ClassVar[int]
    CAPTURED_FIELD_NUMBER: _ClassVar[int]
    RELEASED_FIELD_NUMBER: _ClassVar[int]
    RESERVATION_EXPIRED_FIELD_NUMBER: _ClassVar[int]
    POINTS_EXPIRED_FIELD_NUMBER: _ClassVar[int]
    REVERSED_FIELD_NUMBER: _ClassVar[int]
    ADJUSTED_FIELD_NUMBER: _ClassVar[int]
    cursor: str
    member_id: str
    time: _timestamp_pb2.Timestamp
    request_id: str
    balance: _loyalty_pb2.Balance
    enrolled: MemberEnrolled
    earned: PointsEarned
    redeemed: PointsRedeemed
    reserved: PointsReserved
    captured: ReservationCaptured
    released: ReservationReleased
    reservation_expired: ReservationExpired
    points_expired: PointsExpired
    reversed: PointsReversed
    adjusted: PointsAdjusted
    def __init__(self, cursor: _Optional[str] = ..., member_id: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., request_id: _Optional[str] = ..., balance: _Optional[_Union[_loyalty_pb2.Balance, _Mapping]] = ..., enrolled: _Optional[_Union[MemberEnrolled, _Mapping]] = ..., earned: _Optional[_Union[PointsEarned, _Mapping]] = ..., redeemed: _Optional[_Union[PointsRedeemed, _Mapping]] = ..., reserved: _Optional[_Union[PointsReserved, _Mapping]] = ..., captured: _Optional[_Union[ReservationCaptured, _Mapping]] = ..., released: _Optional[_Union[ReservationReleased, _Mapping]] = ..., reservation_expired: _Optional[_Union[ReservationExpired, _Mapping]] = ..., points_expired: _Optional[_Union[PointsExpired, _Mapping]] = ..., reversed: _Optional[_Union[PointsReversed, _Mapping]] = ..., adjusted: _Optional[_Union[PointsAdjusted, _Mapping]] = ...) -> None: ...

class MemberEnrolled(_message.Message):
    __slots__ = ("attributes",)
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    attributes: _containers.ScalarMap[str, str]
    def __init__(self, attributes: _Optional[_Mapping[str, str]] = ...) -> None: ...

class PointsEarned(_message.Message):
    __slots__ = ("points", "debt_repaid", "available_at", "expires_at", "lines", "rules_version", "awards", "limits")
    POINTS_FIELD_NUMBER: _ClassVar[int]
    DEBT_REPAID_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    RULES_VERSION_FIELD_NUMBER: _ClassVar[int]
    AWARDS_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    points: int
    debt_repaid: int
    available_at: _timestamp_pb2.Timestamp
    expires_at: _timestamp_pb2.Timestamp
    lines: _containers.RepeatedCompositeFieldContainer[EarnedLine]
    rules_version: int
    awards: _containers.RepeatedCompositeFieldContainer[_loyalty_pb2.PointsAward]
    limits: _containers.RepeatedCompositeFieldContainer[_loyalty_pb2.PointsLimit]
    def __init__(self, points: _Optional[int] = ..., debt_repaid: _Optional[int] = ..., available_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., lines: _Optional[_Iterable[_Union[EarnedLine, _Mapping]]] = ..., rules_version: _Optional[int] = ..., awards: _Optional[_Iterable[_Union[_loyalty_pb2.PointsAward, _Mapping]]] = ..., limits: _Optional[_Iterable[_Union[_loyalty_pb2.PointsLimit, _Mapping]]] = ...) -> None: ...

class EarnedLine(_message.Message):
    __slots__ = ("sku", "quantity", "points")
    SKU_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    sku: str
    quantity: int
    points: int
    def __init__(self, sku: _Optional[str] = ..., quantity: _Optional[int] = ..., points: _Optional[int] = ...) -> None: ...

class PointsRedeemed(_message.Message):
    __slots__ = ("points",)
    POINTS_FIELD_NUMBER: _ClassVar[int]
    points: int
    def __init__(self, points: _Optional[int] = ...) -> None: ...

class PointsReserved(_message.Message):
    __slots__ = ("reservation_id", "points", "expires_at")
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    reservation_id: str
    points: int
    expires_at: _timestamp_pb2.Timestamp
    def __init__(self, reservation_id: _Optional[str] = ..., points: _Optional[int] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ReservationCaptured(_message.Message):
    __slots__ = ("reservation_id", "captured", "released")
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    CAPTURED_FIELD_NUMBER: _ClassVar[int]
    RELEASED_FIELD_NUMBER: _ClassVar[int]
    reservation_id: str
    captured: int
    released: int
    def __init__(self, reservation_id: _Optional[str] = ..., captured: _Optional[int] = ..., released: _Optional[int] = ...) -> None: ...

class ReservationReleased(_message.Message):
    __slots__ = ("reservation_id", "released")
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    RELEASED_FIELD_NUMBER: _ClassVar[int]
    reservation_id: str
    released: int
    def __init__(self, reservation_id: _Optional[str] = ..., released: _Optional[int] = ...) -> None: ...

class ReservationExpired(_message.Message):
    __slots__ = ("reservation_id", "released")
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    RELEASED_FIELD_NUMBER: _ClassVar[int]
    reservation_id: str
    released: int
    def __init__(self, reservation_id: _Optional[str] = ..., released: _Optional[int] = ...) -> None: ...

class PointsExpired(_message.Message):
    __slots__ = ("points",)
    POINTS_FIELD_NUMBER: _ClassVar[int]
    points: int
    def __init__(self, points: _Optional[int] = ...) -> None: ...

class PointsReversed(_message.Message):
    __slots__ = ("original_request_id", "points", "debt_added", "lines")
    ORIGINAL_REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    DEBT_ADDED_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    original_request_id: str
    points: int
    debt_added: int
    lines: _containers.RepeatedCompositeFieldContainer[ReturnedLine]
    def __init__(self, original_request_id: _Optional[str] = ..., points: _Optional[int] = ..., debt_added: _Optional[int] = ..., lines: _Optional[_Iterable[_Union[ReturnedLine, _Mapping]]] = ...) -> None: ...

class ReturnedLine(_message.Message):
    __slots__ = ("line_index", "quantity", "points")
    LINE_INDEX_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    line_index: int
    quantity: int
    points: int
    def __init__(self, line_index: _Optional[int] = ..., quantity: _Optional[int] = ..., points: _Optional[int] = ...) -> None: ...

class PointsAdjusted(_message.Message):
    __slots__ = ("points", "reason", "debt_repaid", "expires_at")
    POINTS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DEBT_REPAID_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    points: int
    reason: str
    debt_repaid: int
    expires_at: _timestamp_pb2.Timestamp
    def __init__(self, points: _Optional[int] = ..., reason: _Optional[str] = ..., debt_repaid: _Optional[int] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class StreamEventsRequest(_message.Message):
    __slots__ = ("after_cursors", "kinds")
    AFTER_CURSORS_FIELD_NUMBER: _ClassVar[int]
    KINDS_FIELD_NUMBER: _ClassVar[int]
    after_cursors: _containers.RepeatedScalarFieldContainer[str]
    kinds: _containers.RepeatedScalarFieldContainer[EventKind]
    def __init__(self, after_cursors: _Optional[_Iterable[str]] = ..., kinds: _Optional[_Iterable[_Union[EventKind, str]]] = ...) -> None: ...

class WatchMemberRequest(_message.Message):
    __slots__ = ("member_id", "after_cursor")
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_CURSOR_FIELD_NUMBER: _ClassVar[int]
    member_id: str
    after_cursor: str
    def __init__(self, member_id: _Optional[str] = ..., after_cursor: _Optional[str] = ...) -> None: ...

class CreateMemberTokenRequest(_message.Message):
    __slots__ = ("member_id", "ttl_seconds")
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    member_id: str
    ttl_seconds: int
    def __init__(self, member_id: _Optional[str] = ..., ttl_seconds: _Optional[int] = ...) -> None: ...

class CreateMemberTokenResponse(_message.Message):
    __slots__ = ("token", "expires_at")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    token: str
    expires_at: _timestamp_pb2.Timestamp
    def __init__(self, token: _Optional[str] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
