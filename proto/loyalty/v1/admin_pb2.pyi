import datetime

from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.rpc import error_details_pb2 as _error_details_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EffectTarget(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EFFECT_TARGET_UNSPECIFIED: _ClassVar[EffectTarget]
    EFFECT_TARGET_LINES: _ClassVar[EffectTarget]
    EFFECT_TARGET_BASKET: _ClassVar[EffectTarget]

class Rounding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROUNDING_UNSPECIFIED: _ClassVar[Rounding]
    ROUNDING_DOWN: _ClassVar[Rounding]
    ROUNDING_HALF_UP: _ClassVar[Rounding]
    ROUNDING_UP: _ClassVar[Rounding]

class Role(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROLE_UNSPECIFIED: _ClassVar[Role]
    ROLE_POS: _ClassVar[Role]
    ROLE_ECOMMERCE: _ClassVar[Role]
    ROLE_ANALYTICS: _ClassVar[Role]
    ROLE_ADMIN: _ClassVar[Role]
EFFECT_TARGET_UNSPECIFIED: EffectTarget
EFFECT_TARGET_LINES: EffectTarget
EFFECT_TARGET_BASKET: EffectTarget
ROUNDING_UNSPECIFIED: Rounding
ROUNDING_DOWN: Rounding
ROUNDING_HALF_UP: Rounding
ROUNDING_UP: Rounding
ROLE_UNSPECIFIED: Role
ROLE_POS: Role
ROLE_ECOMMERCE: Role
ROLE_ANALYTICS: Role
ROLE_ADMIN: Role

class RuleSchedule(_message.Message):
    __slots__ = ("start_time", "end_time", "days_of_week", "time_windows", "time_zone")
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    DAYS_OF_WEEK_FIELD_NUMBER: _ClassVar[int]
    TIME_WINDOWS_FIELD_NUMBER: _ClassVar[int]
    TIME_ZONE_FIELD_NUMBER: _ClassVar[int]
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    days_of_week: _containers.RepeatedScalarFieldContainer[str]
    time_windows: _containers.RepeatedCompositeFieldContainer[TimeWindow]
    time_zone: str
    def __init__(self, start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., days_of_week: _Optional[_Iterable[str]] = ..., time_windows: _Optional[_Iterable[_Union[TimeWindow, _Mapping]]] = ..., time_zone: _Optional[str] = ...) -> None: ...

class TimeWindow(_message.Message):
    __slots__ = ("start", "end")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    start: str
    end: str
    def __init__(self, start: _Optional[str] = ..., end: _Optional[str] = ...) -> None: ...

class RuleConditions(_message.Message):
    __slots__ = ("channels", "store_ids", "currencies", "skus", "categories", "line_amount_min_minor", "basket_amount_min_minor", "member_attributes", "segments", "tiers", "first_purchase", "enrolled_days_min", "enrolled_days_max")
    class MemberAttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    STORE_IDS_FIELD_NUMBER: _ClassVar[int]
    CURRENCIES_FIELD_NUMBER: _ClassVar[int]
    SKUS_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    LINE_AMOUNT_MIN_MINOR_FIELD_NUMBER: _ClassVar[int]
    BASKET_AMOUNT_MIN_MINOR_FIELD_NUMBER: _ClassVar[int]
    MEMBER_ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    TIERS_FIELD_NUMBER: _ClassVar[int]
    FIRST_PURCHASE_FIELD_NUMBER: _ClassVar[int]
    ENROLLED_DAYS_MIN_FIELD_NUMBER: _ClassVar[int]
    ENROLLED_DAYS_MAX_FIELD_NUMBER: _ClassVar[int]
    channels: _containers.RepeatedScalarFieldContainer[str]
    store_ids: _containers.RepeatedScalarFieldContainer[str]
    currencies: _containers.RepeatedScalarFieldContainer[str]
    skus: _containers.RepeatedScalarFieldContainer[str]
    categories: _containers.RepeatedScalarFieldContainer[str]
    line_amount_min_minor: int
    basket_amount_min_minor: int
    member_attributes: _containers.ScalarMap[str, str]
    segments: _containers.RepeatedScalarFieldContainer[str]
    tiers: _containers.RepeatedScalarFieldContainer[str]
    first_purchase: bool
    enrolled_days_min: int
    enrolled_days_max: int
    def __init__(self, channels: _Optional[_Iterable[str]] = ..., store_ids: _Optional[_Iterable[str]] = ..., currencies: _Optional[_Iterable[str]] = ..., skus: _Optional[_Iterable[str]] = ..., categories: _Optional[_Iterable[str]] = ..., line_amount_min_minor: _Optional[int] = ..., basket_amount_min_minor: _Optional[int] = ..., member_attributes: _Optional[_Mapping[str, str]] = ..., segments: _Optional[_Iterable[str]] = ..., tiers: _Optional[_Iterable[str]] = ..., first_purchase: _Optional[bool] = ..., enrolled_days_min: _Optional[int] = ..., enrolled_days_max: _Optional[int] = ...) -> None: ...

class RuleEffect(_message.Message):
    __slots__ = ("points_per_unit", "multiplier", "bonus_points", "target", "rounding")
    POINTS_PER_UNIT_FIELD_NUMBER: _ClassVar[int]
    MULTIPLIER_FIELD_NUMBER: _ClassVar[int]
    BONUS_POINTS_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    ROUNDING_FIELD_NUMBER: _ClassVar[int]
    points_per_unit: str
    multiplier: str
    bonus_points: int
    target: EffectTarget
    rounding: Rounding
    def __init__(self, points_per_unit: _Optional[str] = ..., multiplier: _Optional[str] = ..., bonus_points: _Optional[int] = ..., target: _Optional[_Union[EffectTarget, str]] = ..., rounding: _Optional[_Union[Rounding, str]] = ...) -> None: ...

class RuleStacking(_message.Message):
    __slots__ = ("exclusive_group", "multiplier_ceiling")
    EXCLUSIVE_GROUP_FIELD_NUMBER: _ClassVar[int]
    MULTIPLIER_CEILING_FIELD_NUMBER: _ClassVar[int]
    exclusive_group: str
    multiplier_ceiling: str
    def __init__(self, exclusive_group: _Optional[str] = ..., multiplier_ceiling: _Optional[str] = ...) -> None: ...

class RuleCaps(_message.Message):
    __slots__ = ("per_transaction", "per_member_day", "per_member_week", "per_member_month", "per_member_lifetime")
    PER_TRANSACTION_FIELD_NUMBER: _ClassVar[int]
    PER_MEMBER_DAY_FIELD_NUMBER: _ClassVar[int]
    PER_MEMBER_WEEK_FIELD_NUMBER: _ClassVar[int]
    PER_MEMBER_MONTH_FIELD_NUMBER: _ClassVar[int]
    PER_MEMBER_LIFETIME_FIELD_NUMBER: _ClassVar[int]
    per_transaction: int
    per_member_day: int
    per_member_week: int
    per_member_month: int
    per_member_lifetime: int
    def __init__(self, per_transaction: _Optional[int] = ..., per_member_day: _Optional[int] = ..., per_member_week: _Optional[int] = ..., per_member_month: _Optional[int] = ..., per_member_lifetime: _Optional[int] = ...) -> None: ...

class RuleBudget(_message.Message):
    __slots__ = ("total_points",)
    TOTAL_POINTS_FIELD_NUMBER: _ClassVar[int]
    total_points: int
    def __init__(self, total_points: _Optional[int] = ...) -> None: ...

class Rule(_message.Message):
    __slots__ = ("rule_id", "name", "priority", "enabled", "schedule", "conditions", "effect", "stacking", "caps", "budget", "etag", "version", "update_time", "budget_remaining")
    RULE_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    CONDITIONS_FIELD_NUMBER: _ClassVar[int]
    EFFECT_FIELD_NUMBER: _ClassVar[int]
    STACKING_FIELD_NUMBER: _ClassVar[int]
    CAPS_FIELD_NUMBER: _ClassVar[int]
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    BUDGET_REMAINING_FIELD_NUMBER: _ClassVar[int]
    rule_id: str
    name: str
    priority: int
    enabled: bool
    schedule: RuleSchedule
    conditions: RuleConditions
    effect: RuleEffect
    stacking: RuleStacking
    caps: RuleCaps
    budget: RuleBudget
    etag: str
    version: int
    update_time: _timestamp_pb2.Timestamp
    budget_remaining: int
    def __init__(self, rule_id: _Optional[str] = ..., name: _Optional[str] = ..., priority: _Optional[int] = ..., enabled: _Optional[bool] = ..., schedule: _Optional[_Union[RuleSchedule, _Mapping]] = ..., conditions: _Optional[_Union[RuleConditions, _Mapping]] = ..., effect: _Optional[_Union[RuleEffect, _Mapping]] = ..., stacking: _Optional[_Union[RuleStacking, _Mapping]] = ..., caps: _Optional[_Union[RuleCaps, _Mapping]] = ..., budget: _Optional[_Union[RuleBudget, _Mapping]] = ..., etag: _Optional[str] = ..., version: _Optional[int] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., budget_remaining: _Optional[int] = ...) -> None: ...

class CreateRuleRequest(_message.Message):
    __slots__ = ("rule", "validate_only", "request_id")
    RULE_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    rule: Rule
    validate_only: bool
    request_id: str
    def __init__(self, rule: _Optional[_Union[Rule, _Mapping]] = ..., validate_only: _Optional[bool] = ..., request_id: _Optional[str] = ...) -> None: ...

class UpdateRuleRequest(_message.Message):
    __slots__ = ("rule", "update_mask", "validate_only", "request_id")
    RULE_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    rule: Rule
    update_mask: _field_mask_pb2.FieldMask
    validate_only: bool
    request_id: str
    def __init__(self, rule: _Optional[_Union[Rule, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ..., validate_only: _Optional[bool] = ..., request_id: _Optional[str] = ...) -> None: ...

class DeleteRuleRequest(_message.Message):
    __slots__ = ("rule_id", "etag", "validate_only", "request_id")
    RULE_ID_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    rule_id: str
    etag: str
    validate_only: bool
    request_id: str
    def __init__(self, rule_id: _Optional[str] = ..., etag: _Optional[str] = ..., validate_only: _Optional[bool] = ..., request_id: _Optional[str] = ...) -> None: ...

class DeleteRuleResponse(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: int
    def __init__(self, version: _Optional[int] = ...) -> None: ...

class GetRuleRequest(_message.Message):
    __slots__ = ("rule_id",)
    RULE_ID_FIELD_NUMBER: _ClassVar[int]
    rule_id: str
    def __init__(self, rule_id: _Optional[str] = ...) -> None: ...

class ListRulesRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListRulesResponse(_message.Message):
    __slots__ = ("rules", "version", "next_page_token")
    RULES_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    rules: _containers.RepeatedCompositeFieldContainer[Rule]
    version: int
    next_page_token: str
    def __init__(self, rules: _Optional[_Iterable[_Union[Rule, _Mapping]]] = ..., version: _Optional[int] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ValidateRulesRequest(_message.Message):
    __slots__ = ("rules",)
    RULES_FIELD_NUMBER: _ClassVar[int]
    rules: _containers.RepeatedCompositeFieldContainer[Rule]
    def __init__(self, rules: _Optional[_Iterable[_Union[Rule, _Mapping]]] = ...) -> None: ...

class ValidateRulesResponse(_message.Message):
    __slots__ = ("valid", "violations")
    VALID_FIELD_NUMBER: _ClassVar[int]
    VIOLATIONS_FIELD_NUMBER: _ClassVar[int]
    valid: bool
    violations: _containers.RepeatedCompositeFieldContainer[_error_details_pb2.BadRequest.FieldViolation]
    def __init__(self, valid: _Optional[bool] = ..., violations: _Optional[_Iterable[_Union[_error_details_pb2.BadRequest.FieldViolation, _Mapping]]] = ...) -> None: ...

class ReplaceRulesRequest(_message.Message):
    __slots__ = ("rules", "expected_version", "validate_only", "request_id")
    RULES_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    rules: _containers.RepeatedCompositeFieldContainer[Rule]
    expected_version: int
    validate_only: bool
    request_id: str
    def __init__(self, rules: _Optional[_Iterable[_Union[Rule, _Mapping]]] = ..., expected_version: _Optional[int] = ..., validate_only: _Optional[bool] = ..., request_id: _Optional[str] = ...) -> None: ...

class ApiKey(_message.Message):
    __slots__ = ("key_id", "name", "role", "channels", "store_ids", "create_time", "revoke_time", "rotate_time")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    STORE_IDS_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    REVOKE_TIME_FIELD_NUMBER: _ClassVar[int]
    ROTATE_TIME_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    name: str
    role: Role
    channels: _containers.RepeatedScalarFieldContainer[str]
    store_ids: _containers.RepeatedScalarFieldContainer[str]
    create_time: _timestamp_pb2.Timestamp
    revoke_time: _timestamp_pb2.Timestamp
    rotate_time: _timestamp_pb2.Timestamp
    def __init__(self, key_id: _Optional[str] = ..., name: _Optional[str] = ..., role: _Optional[_Union[Role, str]] = ..., channels: _Optional[_Iterable[str]] = ..., store_ids: _Optional[_Iterable[str]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., revoke_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., rotate_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateApiKeyRequest(_message.Message):
    __slots__ = ("name", "role", "channels", "store_ids", "request_id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    STORE_IDS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    role: Role
    channels: _containers.RepeatedScalarFieldContainer[str]
    store_ids: _containers.RepeatedScalarFieldContainer[str]
    request_id: str
    def __init__(self, name: _Optional[str] = ..., role: _Optional[_Union[Role, str]] = ..., channels: _Optional[_Iterable[str]] = ..., store_ids: _Optional[_Iterable[str]] = ..., request_id: _Optional[str] = ...) -> None: ...

class CreateApiKeyResponse(_message.Message):
    __slots__ = ("key", "secret")
    KEY_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    key: ApiKey
    secret: str
    def __init__(self, key: _Optional[_Union[ApiKey, _Mapping]] = ..., secret: _Optional[str] = ...) -> None: ...

class ListApiKeysRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "include_revoked")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_REVOKED_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    include_revoked: bool
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., include_revoked: _Optional[bool] = ...) -> None: ...

class ListApiKeysResponse(_message.Message):
    __slots__ = ("keys", "next_page_token")
    KEYS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedCompositeFieldContainer[ApiKey]
    next_page_token: str
    def __init__(self, keys: _Optional[_Iterable[_Union[ApiKey, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class RotateApiKeyRequest(_message.Message):
    __slots__ = ("key_id", "request_id")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    request_id: str
    def __init__(self, key_id: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class RevokeApiKeyRequest(_message.Message):
    __slots__ = ("key_id", "request_id")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    request_id: str
    def __init__(self, key_id: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class AuditEvent(_message.Message):
    __slots__ = ("event_id", "time", "actor_key_id", "actor_name", "action", "target", "before_json", "after_json")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    ACTOR_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    ACTOR_NAME_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    BEFORE_JSON_FIELD_NUMBER: _ClassVar[int]
    AFTER_JSON_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    time: _timestamp_pb2.Timestamp
    actor_key_id: str
    actor_name: str
    action: str
    target: str
    before_json: str
    after_json: str
    def __init__(self, event_id: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., actor_key_id: _Optional[str] = ..., actor_name: _Optional[str] = ..., action: _Optional[str] = ..., target: _Optional[str] = ..., before_json: _Optional[str] = ..., after_json: _Optional[str] = ...) -> None: ...

class ListAuditEventsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListAuditEventsResponse(_message.Message):
    __slots__ = ("events", "next_page_token")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[AuditEvent]
    next_page_token: str
    def __init__(self, events: _Optional[_Iterable[_Union[AuditEvent, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
