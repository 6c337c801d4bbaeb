"""admin.proto rules <-> the core's msgspec rules, and update_mask application.

Protobuf stays at the edge (this module and the servicer): requests become ``Rule`` structs here,
with every type problem reported as a FieldViolation naming the field the way the
client wrote it ("rule.effect.multiplier", "rules[2].schedule.start_time"). Whether
the values make sense (decimal strings, time zones, ids, ...) is the core's
validate_rules; this module only checks what the conversion itself needs.
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Iterable
from datetime import UTC, datetime

import msgspec
from google.protobuf import field_mask_pb2, timestamp_pb2

from loyalty.actors.ledger.rules import Rule
from loyalty.server.errors import FieldViolation
from loyalty.server.limits import TIMESTAMP_MS_MAX
from loyalty.server.stores.rules import RuleView
from loyalty.v1 import admin_pb2 as pb

__all__ = [
    "OUTPUT_ONLY_FIELDS",
    "apply_update",
    "rule_from_proto",
    "rule_to_proto",
    "rules_from_proto",
]

# Fields of admin.proto's Rule a client never sets (ignored on input).
OUTPUT_ONLY_FIELDS = frozenset({"etag", "version", "update_time", "budget_remaining"})

# Timestamps a rule schedule may name: the years 1970 to 9999, like every other time
# in the API.
_TIMESTAMP_SECONDS_MAX = TIMESTAMP_MS_MAX // 1000

_TARGETS = {
    pb.EFFECT_TARGET_UNSPECIFIED: "lines",
    pb.EFFECT_TARGET_LINES: "lines",
    pb.EFFECT_TARGET_BASKET: "basket",
}
_TARGET_ENUMS = {"lines": pb.EFFECT_TARGET_LINES, "basket": pb.EFFECT_TARGET_BASKET}
_ROUNDINGS = {
    pb.ROUNDING_UNSPECIFIED: "down",
    pb.ROUNDING_DOWN: "down",
    pb.ROUNDING_HALF_UP: "half_up",
    pb.ROUNDING_UP: "up",
}
_ROUNDING_ENUMS = {"down": pb.ROUNDING_DOWN, "half_up": pb.ROUNDING_HALF_UP, "up": pb.ROUNDING_UP}

# "... - at `$.caps.per_transaction`" in msgspec validation errors.
_ERROR_PATH = re.compile(r"^(?P<message>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)


# --------------------------------------------------------------------------- proto -> Rule


def _datetime(field: str, timestamp: timestamp_pb2.Timestamp) -> datetime:
    if not 0 <= timestamp.seconds <= _TIMESTAMP_SECONDS_MAX:
        raise FieldViolation(field, "must be between 1970-01-01 and 9999-12-31")
    return timestamp.ToDatetime(tzinfo=UTC)


def _plain(message) -> dict:
    """A flat message (conditions, stacking, caps, budget) as builtins: repeated
    fields as lists, maps as dicts, scalars as they are."""
    result = {}
    for field in message.DESCRIPTOR.fields:
        value = getattr(message, field.name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            result[field.name] = dict(value)
        elif field.is_repeated:
            result[field.name] = list(value)
        else:
            result[field.name] = value
    return result


def _schedule(prefix: str, schedule: pb.RuleSchedule) -> dict:
    result: dict = {
        "days_of_week": list(schedule.days_of_week),
        "time_windows": [{"start": window.start, "end": window.end} for window in schedule.time_windows],
        "time_zone": schedule.time_zone,
    }
    for name in ("start_time", "end_time"):
        if schedule.HasField(name):
            result[name] = _datetime(f"{prefix}.schedule.{name}", getattr(schedule, name))
    return result


def _effect(prefix: str, effect: pb.RuleEffect) -> dict:
    result: dict = {}
    kind = effect.WhichOneof("kind")
    if kind is not None:
        result[kind] = getattr(effect, kind)
    target = _TARGETS.get(effect.target)
    if target is None:
        raise FieldViolation(f"{prefix}.effect.target", f"unknown value {effect.target}")
    rounding = _ROUNDINGS.get(effect.rounding)
    if rounding is None:
        raise FieldViolation(f"{prefix}.effect.rounding", f"unknown value {effect.rounding}")
    result["target"], result["rounding"] = target, rounding
    return result


def rule_from_proto(message: pb.Rule, *, prefix: str = "rule") -> Rule:
    """The Rule a request names (output-only fields ignored). Raises FieldViolation
    with paths under ``prefix``."""
    builtins = {
        "rule_id": message.rule_id,
        "name": message.name,
        "priority": message.priority,
        "enabled": message.enabled,
        "schedule": _schedule(prefix, message.schedule),
        "conditions": _plain(message.conditions),
        "effect": _effect(prefix, message.effect),
        "stacking": _plain(message.stacking),
        "caps": _plain(message.caps),
        "budget": _plain(message.budget),
    }
    try:
        return msgspec.convert(builtins, type=Rule)
    except msgspec.ValidationError as error:
        match = _ERROR_PATH.match(str(error))
        raise FieldViolation(prefix + (match["path"] or ""), match["message"]) from None


def rules_from_proto(messages: Iterable[pb.Rule]) -> list[Rule]:
    """A list of rules, as in ReplaceRules and ValidateRules ("rules[i]..." paths)."""
    return [rule_from_proto(message, prefix=f"rules[{index}]") for index, message in enumerate(messages)]


# --------------------------------------------------------------------------- Rule -> proto


def _set_time(target: timestamp_pb2.Timestamp, moment: datetime, time_zone: str) -> None:
    if moment.tzinfo is None:  # a file's local time: read in the rule's zone, as the core does
        try:
            zone = zoneinfo.ZoneInfo(time_zone or "UTC")
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            zone = UTC  # an invalid zone fails validation anyway
        moment = moment.replace(tzinfo=zone)
    target.FromDatetime(moment.astimezone(UTC))


def _fill_plain(target, values: dict) -> None:
    for field in target.DESCRIPTOR.fields:
        value = values.get(field.name)
        if value is None:
            continue
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            getattr(target, field.name).update(value)
        elif field.is_repeated:
            getattr(target, field.name).extend(value)
        else:
            setattr(target, field.name, value)


def rule_to_proto(rule: Rule, view: RuleView | None = None) -> pb.Rule:
    """The proto Rule; with ``view``, the output-only fields too."""
    message = pb.Rule(rule_id=rule.rule_id, name=rule.name, priority=rule.priority, enabled=rule.enabled)
    schedule = rule.schedule
    if schedule.start_time is not None:
        _set_time(message.schedule.start_time, schedule.start_time, schedule.time_zone)
    if schedule.end_time is not None:
        _set_time(message.schedule.end_time, schedule.end_time, schedule.time_zone)
    message.schedule.days_of_week.extend(schedule.days_of_week)
    for window in schedule.time_windows:
        message.schedule.time_windows.add(start=window.start, end=window.end)
    message.schedule.time_zone = schedule.time_zone
    _fill_plain(message.conditions, msgspec.to_builtins(rule.conditions))
    effect = rule.effect
    if effect.points_per_unit:
        message.effect.points_per_unit = effect.points_per_unit
    elif effect.multiplier:
        message.effect.multiplier = effect.multiplier
    elif effect.bonus_points:
        message.effect.bonus_points = effect.bonus_points
    message.effect.target = _TARGET_ENUMS[effect.target]
    message.effect.rounding = _ROUNDING_ENUMS[effect.rounding]
    _fill_plain(message.stacking, msgspec.to_builtins(rule.stacking))
    _fill_plain(message.caps, msgspec.to_builtins(rule.caps))
    _fill_plain(message.budget, msgspec.to_builtins(rule.budget))
    if view is not None:
        message.etag = view.etag
        message.version = view.version
        message.update_time.seconds = view.update_time_ms // 1000
        message.update_time.nanos = (view.update_time_ms % 1000) * 1_000_000
        message.budget_remaining = view.budget_remaining
    return message


# --------------------------------------------------------------------------- update_mask


def _check_path(path: str) -> None:
    head = path.split(".", 1)[0]
    if head == "rule_id":
        raise FieldViolation("update_mask", "rule_id cannot change; delete and create instead")
    if head in OUTPUT_ONLY_FIELDS:
        raise FieldViolation("update_mask", f"{head} is output only")
    mask = field_mask_pb2.FieldMask(paths=[path])
    if not mask.IsValidForDescriptor(pb.Rule.DESCRIPTOR):
        raise FieldViolation("update_mask", f"{path!r} is not a field of Rule")


def _copy_field(source, destination, name: str) -> None:
    """Make ``destination.<name>`` what it is in ``source`` (messages and lists are
    replaced whole; an unset oneof member unsets it in the destination)."""
    field = destination.DESCRIPTOR.fields_by_name[name]
    if field.is_repeated:
        destination.ClearField(name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            getattr(destination, name).update(getattr(source, name))
        else:
            getattr(destination, name).extend(getattr(source, name))
    elif field.message_type is not None:
        destination.ClearField(name)
        if source.HasField(name):
            getattr(destination, name).CopyFrom(getattr(source, name))
    elif field.containing_oneof is not None:
        if source.HasField(name):
            setattr(destination, name, getattr(source, name))
        elif destination.WhichOneof(field.containing_oneof.name) == name:
            destination.ClearField(name)
    else:
        setattr(destination, name, getattr(source, name))


def apply_update(current: Rule, requested: pb.Rule, mask: field_mask_pb2.FieldMask) -> Rule:
    """The rule after an UpdateRule: the fields named in ``mask`` taken from
    ``requested``, the rest kept; an empty mask replaces every field a client sets.
    Raises FieldViolation ("update_mask" or "rule.<field>")."""
    if not mask.paths:
        merged = pb.Rule()
        merged.CopyFrom(requested)
    else:
        merged = rule_to_proto(current)
        for path in mask.paths:
            _check_path(path)
            *parents, leaf = path.split(".")
            source, destination = requested, merged
            for name in parents:
                source, destination = getattr(source, name), getattr(destination, name)
            _copy_field(source, destination, leaf)
    for name in OUTPUT_ONLY_FIELDS:
        merged.ClearField(name)
    merged.rule_id = current.rule_id
    return rule_from_proto(merged)
