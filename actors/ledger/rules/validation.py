"""Checking rules before they are compiled: every problem at once, each with its path.

Paths index into the sequence given ("rules[2].effect.multiplier"), the shape
google.rpc.BadRequest field violations use, so an admin API or a file loader can point
at the field (the file loader turns paths into line numbers).
"""

from __future__ import annotations

import datetime
import re
import zoneinfo
from collections.abc import Sequence
from fractions import Fraction

import msgspec

from loyalty.actors.ledger.currency import is_currency_code
from loyalty.actors.ledger.limits import (
    AMOUNT_MINOR_MAX,
    ATTRIBUTE_KEY_LENGTH_MAX,
    ATTRIBUTE_VALUE_LENGTH_MAX,
    LABEL_LENGTH_MAX,
    POINTS_MAX,
    RULE_CONDITION_VALUES_MAX,
    RULE_DECIMAL_LENGTH_MAX,
    RULE_MULTIPLIER_MAX,
    RULE_NAME_LENGTH_MAX,
    RULE_POINTS_PER_UNIT_MAX,
    RULE_TIME_WINDOWS_MAX,
    RULES_MAX,
)
from loyalty.actors.ledger.program import CompiledProgram
from loyalty.actors.ledger.rules.model import Rule

DAYS_OF_WEEK = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
"""Day names as rules write them, Monday first (the index is datetime.weekday())."""

_RULE_ID = re.compile(r"[a-z0-9_-]{1,64}")
_DECIMAL = re.compile(r"[0-9]+(\.[0-9]+)?")
_CLOCK = re.compile(r"([01][0-9]|2[0-3]):[0-5][0-9]|24:00")
_INT32_MAX = 2**31 - 1
_DAYS_MAX = 36_500


class Violation(msgspec.Struct, frozen=True):
    """One problem: the field's path and what is wrong with it."""

    path: str
    description: str


def parse_decimal(text: str) -> Fraction | None:
    """A plain decimal string ("2", "1.5") as an exact fraction; None if malformed
    (no signs, exponents, fractions or floats: marketers write what they mean)."""
    if len(text) > RULE_DECIMAL_LENGTH_MAX or not _DECIMAL.fullmatch(text):
        return None
    return Fraction(text)


def parse_clock(text: str) -> int | None:
    """"HH:MM" as minutes after midnight ("24:00" is 1440); None if malformed."""
    if not _CLOCK.fullmatch(text):
        return None
    return int(text[:2]) * 60 + int(text[3:])


def time_zone(name: str) -> zoneinfo.ZoneInfo | None:
    """The IANA zone ("" is UTC); None when unknown."""
    try:
        return zoneinfo.ZoneInfo(name or "UTC")
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return None


def validate_rules(rules: Sequence[Rule], program: CompiledProgram) -> list[Violation]:
    """Every problem of a whole rule set (empty when it can be compiled)."""
    problems: list[Violation] = []
    if len(rules) > RULES_MAX:
        problems.append(Violation("rules", f"at most {RULES_MAX} rules, got {len(rules)}"))
    seen: dict[str, int] = {}
    for index, rule in enumerate(rules):
        path = f"rules[{index}]"
        report = _Report(problems, path)
        if not _RULE_ID.fullmatch(rule.rule_id):
            report("rule_id", "must be 1-64 characters of a-z, 0-9, '_' and '-'")
        elif rule.rule_id in seen:
            report("rule_id", f"duplicate of rules[{seen[rule.rule_id]}].rule_id {rule.rule_id!r}")
        else:
            seen[rule.rule_id] = index
        if len(rule.name) > RULE_NAME_LENGTH_MAX:
            report("name", f"at most {RULE_NAME_LENGTH_MAX} characters")
        if not -_INT32_MAX <= rule.priority <= _INT32_MAX:
            report("priority", "must fit in 32 bits")
        _check_schedule(rule, report)
        _check_conditions(rule, report, program)
        _check_effect(rule, report)
        _check_limits(rule, report)
    return problems


class _Report:
    """Appends violations under one rule's path."""

    def __init__(self, problems: list[Violation], path: str) -> None:
        self.problems = problems
        self.path = path

    def __call__(self, field: str, description: str) -> None:
        self.problems.append(Violation(f"{self.path}.{field}", description))


def _check_schedule(rule: Rule, report: _Report) -> None:
    schedule = rule.schedule
    zone = time_zone(schedule.time_zone)
    if zone is None:
        report("schedule.time_zone", f"not an IANA time zone: {schedule.time_zone!r}")
    start, end = schedule.start_time, schedule.end_time
    if start is not None and end is not None and zone is not None:
        if _aware(start, zone) >= _aware(end, zone):
            report("schedule.end_time", "must be after start_time")
    for position, day in enumerate(schedule.days_of_week):
        if day not in DAYS_OF_WEEK:
            report(f"schedule.days_of_week[{position}]", f"must be one of {', '.join(DAYS_OF_WEEK)}")
        elif day in schedule.days_of_week[:position]:
            report(f"schedule.days_of_week[{position}]", f"{day!r} is listed twice")
    if len(schedule.time_windows) > RULE_TIME_WINDOWS_MAX:
        report("schedule.time_windows", f"at most {RULE_TIME_WINDOWS_MAX} windows")
    for position, window in enumerate(schedule.time_windows):
        start_min, end_min = parse_clock(window.start), parse_clock(window.end)
        if start_min is None or start_min == 1440:
            report(f"schedule.time_windows[{position}].start", 'must be "HH:MM" from "00:00" to "23:59"')
        if end_min is None:
            report(f"schedule.time_windows[{position}].end", 'must be "HH:MM" from "00:00" to "24:00"')
        if start_min is not None and start_min == (end_min or 0) % 1440 and end_min is not None:
            report(f"schedule.time_windows[{position}].end", "must differ from start (an empty window)")


def _aware(moment: datetime.datetime, zone: datetime.tzinfo) -> datetime.datetime:
    """A schedule time as an instant: times without an offset are in the rule's zone."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=zone)


def _check_labels(report: _Report, field: str, values: tuple[str, ...], length_max: int = LABEL_LENGTH_MAX) -> None:
    if len(values) > RULE_CONDITION_VALUES_MAX:
        report(field, f"at most {RULE_CONDITION_VALUES_MAX} values")
    for position, value in enumerate(values):
        if not 0 < len(value) <= length_max:
            report(f"{field}[{position}]", f"must be 1-{length_max} characters")


def _check_conditions(rule: Rule, report: _Report, program: CompiledProgram) -> None:
    conditions = rule.conditions
    for field in ("channels", "store_ids", "skus", "categories", "segments", "tiers"):
        _check_labels(report, f"conditions.{field}", getattr(conditions, field))
    _check_labels(report, "conditions.currencies", conditions.currencies)
    for position, code in enumerate(conditions.currencies):
        if not is_currency_code(code):
            report(f"conditions.currencies[{position}]", "not an ISO-4217 code (three upper-case letters)")
        elif program.base_minor_per_minor(code) is None and _has_thresholds(rule):
            report(
                f"conditions.currencies[{position}]",
                f"no exchange rate to the base currency {program.base_currency} for the amount thresholds",
            )
    for field in ("line_amount_min_minor", "basket_amount_min_minor"):
        if not 0 <= getattr(conditions, field) <= AMOUNT_MINOR_MAX:
            report(f"conditions.{field}", f"must be 0 to {AMOUNT_MINOR_MAX}")
    if len(conditions.member_attributes) > RULE_CONDITION_VALUES_MAX:
        report("conditions.member_attributes", f"at most {RULE_CONDITION_VALUES_MAX} attributes")
    for key, value in conditions.member_attributes.items():
        if not 0 < len(key) <= ATTRIBUTE_KEY_LENGTH_MAX:
            report(f"conditions.member_attributes[{key!r}]", f"keys must be 1-{ATTRIBUTE_KEY_LENGTH_MAX} characters")
        if len(value) > ATTRIBUTE_VALUE_LENGTH_MAX:
            report(f"conditions.member_attributes[{key!r}]", f"at most {ATTRIBUTE_VALUE_LENGTH_MAX} characters")
    low, high = conditions.enrolled_days_min, conditions.enrolled_days_max
    if not 0 <= low <= _DAYS_MAX:
        report("conditions.enrolled_days_min", f"must be 0 to {_DAYS_MAX}")
    if not 0 <= high <= _DAYS_MAX:
        report("conditions.enrolled_days_max", f"must be 0 to {_DAYS_MAX} (0: no upper bound)")
    elif high and high < low:
        report("conditions.enrolled_days_max", "must be at least enrolled_days_min (or 0: no upper bound)")


def _has_thresholds(rule: Rule) -> bool:
    return bool(rule.conditions.line_amount_min_minor or rule.conditions.basket_amount_min_minor)


def _check_effect(rule: Rule, report: _Report) -> None:
    effect = rule.effect
    kinds = [kind for kind in ("points_per_unit", "multiplier", "bonus_points") if getattr(effect, kind)]
    if len(kinds) != 1:
        report("effect", "set exactly one of points_per_unit, multiplier, bonus_points")
    if effect.points_per_unit:
        rate = parse_decimal(effect.points_per_unit)
        if rate is None:
            report("effect.points_per_unit", f"not a decimal number: {effect.points_per_unit!r}")
        elif not 0 < rate <= RULE_POINTS_PER_UNIT_MAX:
            report("effect.points_per_unit", f"must be more than 0 and at most {RULE_POINTS_PER_UNIT_MAX}")
    if effect.multiplier:
        factor = parse_decimal(effect.multiplier)
        if factor is None:
            report("effect.multiplier", f"not a decimal number: {effect.multiplier!r}")
        elif not 1 <= factor <= RULE_MULTIPLIER_MAX:
            report("effect.multiplier", f"must be 1 to {RULE_MULTIPLIER_MAX}")
    if not 0 <= effect.bonus_points <= POINTS_MAX:
        report("effect.bonus_points", f"must be 0 to {POINTS_MAX}")


def _check_limits(rule: Rule, report: _Report) -> None:
    group = rule.stacking.exclusive_group
    if len(group) > LABEL_LENGTH_MAX:
        report("stacking.exclusive_group", f"at most {LABEL_LENGTH_MAX} characters")
    ceiling = rule.stacking.multiplier_ceiling
    if ceiling:
        value = parse_decimal(ceiling)
        if value is None:
            report("stacking.multiplier_ceiling", f"not a decimal number: {ceiling!r}")
        elif not 1 <= value <= RULE_MULTIPLIER_MAX:
            report("stacking.multiplier_ceiling", f"must be 1 to {RULE_MULTIPLIER_MAX}")
    for field in msgspec.structs.fields(rule.caps):
        if not 0 <= getattr(rule.caps, field.name) <= POINTS_MAX:
            report(f"caps.{field.name}", f"must be 0 to {POINTS_MAX} (0: no cap)")
    if not 0 <= rule.budget.total_points <= POINTS_MAX:
        report("budget.total_points", f"must be 0 to {POINTS_MAX} (0: no budget)")
