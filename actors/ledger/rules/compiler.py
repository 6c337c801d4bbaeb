"""Rules compiled once per version into plain values: sets, integers and ranges.

Nothing is parsed when an earn is evaluated: decimals become integer numerators over
fixed denominators, time zones are looked up once, schedule times become epoch
milliseconds, list conditions become frozensets, and the rules are put in the order
they are applied (priority, highest first, then rule_id). Per currency, a rule's
points-per-unit rate over the currency's minor unit is computed the first time the
currency is seen and kept.
"""

from __future__ import annotations

import datetime
import math
import zoneinfo
from fractions import Fraction

import msgspec

from loyalty.actors.ledger.limits import NEVER_MS
from loyalty.actors.ledger.program import CompiledProgram
from loyalty.actors.ledger.rules.model import Rule, RuleSet
from loyalty.actors.ledger.rules.validation import (
    DAYS_OF_WEEK,
    Violation,
    parse_clock,
    parse_decimal,
    time_zone,
    validate_rules,
)

# Distinct (channel, store, currency) triples whose candidate rules are kept for the
# current minute: a few thousand stores fit; past it the table starts over.
CANDIDATE_KEYS_MAX = 4_096

KIND_POINTS_PER_UNIT = "points_per_unit"
KIND_MULTIPLIER = "multiplier"
KIND_BONUS = "bonus_points"

ROUND_DOWN, ROUND_HALF_UP, ROUND_UP = 0, 1, 2
_ROUNDING = {"down": ROUND_DOWN, "half_up": ROUND_HALF_UP, "up": ROUND_UP}

# Period caps: (limit name in outcomes, Rule.caps field, counter key suffix).
PERIODS = (
    ("day", "per_member_day", "d"),
    ("week", "per_member_week", "w"),
    ("month", "per_member_month", "m"),
    ("lifetime", "per_member_lifetime", "l"),
)


class LocalTime(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One rule time zone's local time, for a whole minute (see CompiledRules.clock)."""

    weekday: int
    """0 (Monday) to 6."""
    minute: int
    """Minute of the day, 0 to 1439."""
    day: int
    """The day's proleptic ordinal: the key of a per-member-day cap's period."""
    week: int
    """The ordinal of the ISO week's Monday: the key of a weekly cap's period."""
    month: int
    """year * 12 + month - 1: the key of a monthly cap's period."""

    def period(self, limit: str) -> int:
        """The key of the current period of a cap named ``limit`` (see PERIODS;
        "lifetime" has one period, 0)."""
        if limit == "day":
            return self.day
        if limit == "week":
            return self.week
        if limit == "month":
            return self.month
        return 0


class RulesError(ValueError):
    """A rule set that cannot be compiled; ``violations`` lists every problem."""

    def __init__(self, violations: list[Violation]) -> None:
        self.violations = violations
        summary = "; ".join(f"{v.path}: {v.description}" for v in violations[:5])
        more = f" (and {len(violations) - 5} more)" if len(violations) > 5 else ""
        super().__init__(f"invalid rules: {summary}{more}")


class CompiledRule:
    """One rule as plain values (see the module docstring)."""

    __slots__ = (
        "rule_id",
        "kind",
        "basket",
        "rounding",
        "rate",
        "rates_per_minor",
        "factor",
        "bonus",
        "start_ms",
        "end_ms",
        "zone",
        "days",
        "windows",
        "needs_clock",
        "channels",
        "stores",
        "currencies",
        "skus",
        "categories",
        "line_amount_min",
        "basket_amount_min",
        "attributes",
        "segments",
        "tiers",
        "first_purchase",
        "enrolled_min_ms",
        "enrolled_max_ms",
        "checks_member",
        "group",
        "ceiling",
        "per_transaction",
        "period_caps",
        "budget_key",
    )

    def __init__(self, rule: Rule, zone_index: int, denominator: int, budget_key: str | None) -> None:
        self.rule_id = rule.rule_id
        effect = rule.effect
        self.basket = effect.target == "basket"
        self.rounding = _ROUNDING[effect.rounding]
        self.rate: Fraction | None = None
        self.rates_per_minor: dict[str, tuple[int, int]] = {}
        self.factor = 0
        self.bonus = 0
        if effect.points_per_unit:
            self.kind = KIND_POINTS_PER_UNIT
            self.rate = parse_decimal(effect.points_per_unit)
        elif effect.multiplier:
            self.kind = KIND_MULTIPLIER
            extra = parse_decimal(effect.multiplier) - 1
            self.factor = int(extra * denominator)  # exact: denominator is a multiple of extra's
        else:
            self.kind = KIND_BONUS
            self.bonus = effect.bonus_points
        schedule = rule.schedule
        zone = time_zone(schedule.time_zone)
        self.zone = zone_index
        self.start_ms = _epoch_ms(schedule.start_time, zone) if schedule.start_time else -NEVER_MS
        self.end_ms = _epoch_ms(schedule.end_time, zone) if schedule.end_time else NEVER_MS
        self.days = frozenset(DAYS_OF_WEEK.index(day) for day in schedule.days_of_week) or None
        self.windows = tuple(
            (parse_clock(window.start), parse_clock(window.end)) for window in schedule.time_windows
        ) or None
        conditions = rule.conditions
        self.channels = frozenset(conditions.channels) or None
        self.stores = frozenset(conditions.store_ids) or None
        self.currencies = frozenset(conditions.currencies) or None
        self.skus = frozenset(conditions.skus) or None
        self.categories = frozenset(conditions.categories) or None
        self.line_amount_min = conditions.line_amount_min_minor
        self.basket_amount_min = conditions.basket_amount_min_minor
        self.attributes = tuple(conditions.member_attributes.items())
        self.segments = frozenset(conditions.segments) or None
        self.tiers = frozenset(conditions.tiers) or None
        self.first_purchase = conditions.first_purchase
        self.enrolled_min_ms = conditions.enrolled_days_min * 86_400_000
        high = conditions.enrolled_days_max
        self.enrolled_max_ms = (high + 1) * 86_400_000 if high else NEVER_MS  # exclusive
        self.checks_member = bool(
            self.attributes
            or self.segments
            or self.tiers
            or self.first_purchase
            or self.enrolled_min_ms
            or conditions.enrolled_days_max
        )
        self.group = rule.stacking.exclusive_group
        ceiling = rule.stacking.multiplier_ceiling
        self.ceiling = int((parse_decimal(ceiling) - 1) * denominator) if ceiling else None
        caps = rule.caps
        self.per_transaction = caps.per_transaction
        self.period_caps = tuple(
            (limit, getattr(caps, field), f"{rule.rule_id}/{suffix}")
            for limit, field, suffix in PERIODS
            if getattr(caps, field)
        )
        self.budget_key = budget_key
        self.needs_clock = bool(self.days or self.windows or self.period_caps)

    def rate_per_minor(self, currency: str, program: CompiledProgram) -> tuple[int, int]:
        """This rule's points per minor unit of ``currency``, as (numerator, denominator)."""
        cached = self.rates_per_minor.get(currency)
        if cached is None:
            exact = self.rate / 10 ** program.minor_unit_digits(currency)
            cached = self.rates_per_minor[currency] = (exact.numerator, exact.denominator)
        return cached


class CompiledRules:
    """A whole rule-set version, ready to evaluate earns (see rules.evaluation)."""

    __slots__ = (
        "version",
        "rules",
        "zones",
        "denominator",
        "counter_keys",
        "program",
        "base_rates",
        "_clock",
        "_candidates",
    )

    def __init__(
        self,
        version: int,
        rules: tuple[CompiledRule, ...],
        zones: tuple[zoneinfo.ZoneInfo, ...],
        denominator: int,
        program: CompiledProgram,
    ) -> None:
        self.version = version
        """The rule-set version every earn evaluated with these rules records."""
        self.rules = rules
        """In the order they apply: priority (highest first), then rule_id."""
        self.zones = zones
        self.denominator = denominator
        """Multiplier factors and ceilings are integers over this."""
        self.counter_keys = frozenset(key for rule in rules for _, _, key in rule.period_caps)
        """Member cap counters that belong to this version (others are dropped)."""
        self.program = program
        self.base_rates: dict[str, tuple[int, int] | None] = {}
        """Per currency: base-currency minor units per minor unit, filled as seen."""
        self._clock: tuple[int, list[LocalTime]] = (-1, [])
        self._candidates: tuple[int, dict[tuple[str, str, str], tuple[CompiledRule, ...]]] = (-1, {})

    def candidates(self, channel: str, store_id: str, currency: str, now_ms: int) -> tuple[CompiledRule, ...]:
        """The rules whose days, time windows, channels, stores and currencies hold for
        a purchase at now_ms (start and end times are checked per earn: they are not
        whole minutes). Kept per (channel, store, currency) for the current minute, so
        the rules aimed at other stores, channels or times cost nothing per earn."""
        minute = now_ms // 60_000
        cached_minute, cache = self._candidates
        if cached_minute != minute:
            cache = {}
            self._candidates = (minute, cache)
        key = (channel, store_id, currency)
        found = cache.get(key)
        if found is None:
            if len(cache) >= CANDIDATE_KEYS_MAX:
                cache.clear()
            clock = self.clock(now_ms)
            found = cache[key] = tuple(
                rule
                for rule in self.rules
                if _holds_now(rule, clock) and _purchase_matches(rule, channel, store_id, currency)
            )
        return found

    def budget_keys(self) -> set[str]:
        """Budget keys of the rules in this version (those a shard should keep)."""
        return {rule.budget_key for rule in self.rules if rule.budget_key is not None}

    def base_rate(self, currency: str) -> tuple[int, int] | None:
        """Base-currency minor units per minor unit of ``currency`` (None: no rate)."""
        if currency in self.base_rates:
            return self.base_rates[currency]
        rate = self.program.base_minor_per_minor(currency)
        value = None if rate is None else (rate.numerator, rate.denominator)
        self.base_rates[currency] = value
        return value

    def clock(self, now_ms: int) -> list[LocalTime]:
        """For each rule zone (by index): the local time at now_ms. Kept for the
        current minute: offsets change on whole minutes only."""
        minute = now_ms // 60_000
        if self._clock[0] != minute:
            self._clock = (minute, [_local_time(zone, minute) for zone in self.zones])
        return self._clock[1]


def _holds_now(rule: CompiledRule, clock: list[LocalTime]) -> bool:
    local = clock[rule.zone]
    if rule.days is not None and local.weekday not in rule.days:
        return False
    if rule.windows is None:
        return True
    minute = local.minute
    for start, end in rule.windows:
        if start < end:
            if start <= minute < end:
                return True
        elif minute >= start or minute < end:  # wraps past midnight
            return True
    return False


def _purchase_matches(rule: CompiledRule, channel: str, store_id: str, currency: str) -> bool:
    return (
        (rule.channels is None or channel in rule.channels)
        and (rule.stores is None or store_id in rule.stores)
        and (rule.currencies is None or currency in rule.currencies)
    )


def _local_time(zone: zoneinfo.ZoneInfo, minute: int) -> LocalTime:
    moment = datetime.datetime.fromtimestamp(minute * 60, zone)
    weekday = moment.weekday()
    day = moment.toordinal()
    return LocalTime(
        weekday=weekday,
        minute=moment.hour * 60 + moment.minute,
        day=day,
        week=day - weekday,  # the Monday of the ISO week
        month=moment.year * 12 + moment.month - 1,
    )


def _epoch_ms(moment: datetime.datetime, zone: datetime.tzinfo) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return int(moment.timestamp() * 1000)


def compile_rules(rule_set: RuleSet, program: CompiledProgram) -> CompiledRules:
    """Validate and compile a rule set for a program; raises RulesError. Disabled rules
    are validated but left out."""
    violations = validate_rules(rule_set.rules, program)
    if violations:
        raise RulesError(violations)
    enabled = sorted((rule for rule in rule_set.rules if rule.enabled), key=lambda r: (-r.priority, r.rule_id))
    denominator = 1
    for rule in enabled:
        for text in (rule.effect.multiplier, rule.stacking.multiplier_ceiling):
            if text:
                denominator = math.lcm(denominator, parse_decimal(text).denominator)
    zone_names: dict[str, int] = {}
    zones: list[zoneinfo.ZoneInfo] = []
    compiled = []
    for rule in enabled:
        name = rule.schedule.time_zone or "UTC"
        if name not in zone_names:
            zone_names[name] = len(zones)
            zones.append(time_zone(name))
        budget_key = None
        if rule.budget.total_points:
            budget_key = rule_set.budget_keys.get(rule.rule_id, rule.rule_id)
        compiled.append(CompiledRule(rule, zone_names[name], denominator, budget_key))
    return CompiledRules(rule_set.version, tuple(compiled), tuple(zones), denominator, program)
