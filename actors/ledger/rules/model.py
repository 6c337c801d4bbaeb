"""The rule model: what a marketer writes, as frozen msgspec Structs.

Field names mirror ``loyalty.v1`` admin.proto's rule messages (repeated fields are
tuples, maps are dicts); output-only proto fields (etag, version, update_time,
budget_remaining) are kept by the store, not here. A ``RuleSet`` is one live version
of every rule, encoded with msgpack for storage. Persisted: fields may only be added,
with defaults.

A rule applies to a purchase when it is enabled, its schedule holds at the time the
shard records the earn, and its conditions hold; see ``loyalty.actors.ledger.rules``
for how effects combine.
"""

from __future__ import annotations

import datetime
from typing import Literal

import msgspec


class _Model(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


class TimeWindow(_Model, frozen=True):
    """A local-time window "HH:MM" to "HH:MM": start inclusive, end exclusive. An end
    before the start wraps past midnight ("22:00" to "02:00"); "24:00" ends at midnight."""

    start: str
    end: str


class RuleSchedule(_Model, frozen=True):
    """When a rule is active. Every present constraint must hold."""

    start_time: datetime.datetime | None = None
    """Active from this instant (inclusive); None: always started. A time without an
    offset is read in ``time_zone``."""
    end_time: datetime.datetime | None = None
    """Active until this instant (exclusive); None: never ends."""
    days_of_week: tuple[str, ...] = ()
    """"mon" .. "sun" in time_zone; empty: every day."""
    time_windows: tuple[TimeWindow, ...] = ()
    """Local-time windows in time_zone; empty: all day."""
    time_zone: str = ""
    """IANA name such as "Europe/Paris"; empty: UTC. Days, windows and the
    day/week/month caps are all reckoned in this zone."""


class RuleConditions(_Model, frozen=True):
    """Which purchases and lines a rule applies to. Every present condition must hold;
    a list condition holds when the value is one of the list."""

    channels: tuple[str, ...] = ()
    store_ids: tuple[str, ...] = ()
    currencies: tuple[str, ...] = ()
    """Currencies of the purchase."""
    skus: tuple[str, ...] = ()
    """Line condition: a line matches when its SKU is listed."""
    categories: tuple[str, ...] = ()
    """Line condition: a line matches when its category is listed."""
    line_amount_min_minor: int = 0
    """Line condition: the line's amount in the program's base currency is at least this."""
    basket_amount_min_minor: int = 0
    """The purchase total in the base currency is at least this."""
    member_attributes: dict[str, str] = {}
    """Member attributes that must equal these values."""
    segments: tuple[str, ...] = ()
    """The member's "segments" attribute (comma-separated) contains one of these."""
    tiers: tuple[str, ...] = ()
    """The member's "tier" attribute is one of these."""
    first_purchase: bool = False
    """Only the member's first purchase qualifies."""
    enrolled_days_min: int = 0
    """Whole days since enrolment at least this."""
    enrolled_days_max: int = 0
    """Whole days since enrolment at most this; 0: no upper bound."""


class RuleEffect(_Model, frozen=True):
    """What a rule gives: exactly one of points_per_unit, multiplier, bonus_points."""

    points_per_unit: str = ""
    """Extra points per whole unit of the purchase currency of the target amount
    (a decimal string)."""
    multiplier: str = ""
    """A factor on the base earn of the target (a decimal string, at least 1): "2"
    adds the base earn once more."""
    bonus_points: int = 0
    """Fixed extra points, once per qualifying purchase."""
    target: Literal["lines", "basket"] = "lines"
    """"lines": each matching line on its own (rounded per line); "basket": the
    matching lines together (rounded once)."""
    rounding: Literal["down", "half_up", "up"] = "down"
    """How this rule's fractional points become whole points."""


class RuleStacking(_Model, frozen=True):
    """How a rule combines with others."""

    exclusive_group: str = ""
    """Of the applicable rules sharing a non-empty group, only the first by priority
    (highest), then rule_id, applies. Empty: combinable with every rule."""
    multiplier_ceiling: str = ""
    """When this rule applies, the combined multiplier on every line is at most this
    (a decimal string; empty: no ceiling). The lowest ceiling wins."""


class RuleCaps(_Model, frozen=True):
    """Upper bounds on the points this rule gives; 0: no cap."""

    per_transaction: int = 0
    per_member_day: int = 0
    per_member_week: int = 0
    per_member_month: int = 0
    per_member_lifetime: int = 0


class RuleBudget(_Model, frozen=True):
    """A campaign budget across all members and shards; 0: no budget."""

    total_points: int = 0


class Rule(_Model, frozen=True):
    """One earning rule."""

    rule_id: str
    """1-64 characters of [a-z0-9_-]."""
    name: str = ""
    priority: int = 0
    """Higher first."""
    enabled: bool = True
    schedule: RuleSchedule = RuleSchedule()
    conditions: RuleConditions = RuleConditions()
    effect: RuleEffect = RuleEffect()
    stacking: RuleStacking = RuleStacking()
    caps: RuleCaps = RuleCaps()
    budget: RuleBudget = RuleBudget()


class RuleSet(_Model, frozen=True):
    """One live version of the whole rule set."""

    version: int = 0
    rules: tuple[Rule, ...] = ()
    budget_keys: dict[str, str] = {}
    """rule_id -> the key of that rule's budget at the budget owner (opaque here).
    A budgeted rule without an entry uses its rule_id as the key."""


_encoder = msgspec.msgpack.Encoder()
_rule_set_decoder = msgspec.msgpack.Decoder(RuleSet)


def encode_rule_set(rule_set: RuleSet) -> bytes:
    """A rule set as stored (msgpack)."""
    return _encoder.encode(rule_set)


def decode_rule_set(payload: bytes) -> RuleSet:
    """A stored rule set; raises msgspec.ValidationError / DecodeError when malformed."""
    return _rule_set_decoder.decode(payload)
