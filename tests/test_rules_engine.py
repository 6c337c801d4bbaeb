"""Scenario tables for the rules engine, on a fake clock: every condition, effect,
stacking mode, cap and rounding rule, through a real ShardCore (no Ray, no Redis).

Each scenario names the rules, the purchase, the member and the moment, and the
points a member would see: the total, and the breakdown (awards and limits).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field

import pytest

from loyalty.actors.ledger import CompiledProgram, Program, ShardCore, codec
from loyalty.actors.ledger import commands as c
from loyalty.actors.ledger.outcomes import Outcome
from loyalty.actors.ledger.rules import (
    Rule,
    RuleCaps,
    RuleConditions,
    RuleEffect,
    RuleSchedule,
    RuleSet,
    RuleStacking,
    TimeWindow,
    compile_rules,
)
from loyalty.actors.ledger.status import Status

UTC = datetime.UTC
DAY_MS = 86_400_000


def at(text: str) -> int:
    """Epoch ms of an ISO time with offset, e.g. "2026-11-21T12:00:00+00:00"."""
    return int(datetime.datetime.fromisoformat(text).timestamp() * 1000)


SATURDAY_NOON = at("2026-11-21T12:00:00+00:00")
FRIDAY_NOON = at("2026-11-20T12:00:00+00:00")

PROGRAM = Program(
    points_expiry_days=0,
    base_currency="EUR",
    exchange_rates={"USD": "0.5", "JPY": "0.01"},
)


def line(sku: str = "sku", amount_minor: int = 1000, category: str = "food", quantity: int = 1) -> c.Line:
    return c.Line(sku, category, quantity, amount_minor)


@dataclass
class Shop:
    """A shard with rules installed and a clock the test moves."""

    rules: tuple[Rule, ...]
    program: Program = PROGRAM
    attributes: dict[str, str] = field(default_factory=dict)
    enrolled_at_ms: int = SATURDAY_NOON - 400 * DAY_MS

    def __post_init__(self) -> None:
        self.compiled_program = CompiledProgram(self.program)
        self.core = ShardCore(self.compiled_program, hot_members=0)  # encoded between batches
        self.core.install_rules(compile_rules(RuleSet(version=7, rules=self.rules), self.compiled_program))
        self.core.apply_batch([c.EnrollMember("m", "enrol", self.attributes)], self.enrolled_at_ms)
        self.count = 0

    def earn(self, *lines: c.Line, now_ms: int = SATURDAY_NOON, currency="EUR", channel="pos", store="berlin-1") -> Outcome:
        self.count += 1
        command = c.Earn("m", f"r{self.count}", currency, tuple(lines), channel, store)
        outcomes, _ = self.core.apply_batch([command], now_ms)
        outcome = codec.decode_outcome(outcomes[0])
        assert outcome.status == Status.OK, outcome
        assert sum(points for _, points in outcome.lines) == outcome.points
        return outcome


def rule(rule_id: str = "r", **fields) -> Rule:
    effect = fields.pop("effect", RuleEffect(multiplier="2"))
    return Rule(rule_id=rule_id, effect=effect, **fields)


def by_rule(outcome: Outcome) -> dict[str, int]:
    """Points per source ("" is the base rate)."""
    totals: dict[str, int] = {}
    for rule_id, _, _, points, _ in outcome.awards:
        totals[rule_id] = totals.get(rule_id, 0) + points
    return totals


# ------------------------------------------------------------------ conditions


CONDITION_CASES = [
    # (name, conditions, earn kwargs, lines, attributes, applies)
    ("channel listed", RuleConditions(channels=("pos",)), {}, [line()], {}, True),
    ("channel not listed", RuleConditions(channels=("web",)), {}, [line()], {}, False),
    ("store listed", RuleConditions(store_ids=("berlin-1", "paris-2")), {}, [line()], {}, True),
    ("store not listed", RuleConditions(store_ids=("paris-2",)), {}, [line()], {}, False),
    ("currency listed", RuleConditions(currencies=("EUR",)), {}, [line()], {}, True),
    ("currency not listed", RuleConditions(currencies=("USD",)), {}, [line()], {}, False),
    ("sku listed", RuleConditions(skus=("sku",)), {}, [line()], {}, True),
    ("sku not listed", RuleConditions(skus=("other",)), {}, [line()], {}, False),
    ("category listed", RuleConditions(categories=("food",)), {}, [line()], {}, True),
    ("category not listed", RuleConditions(categories=("garden",)), {}, [line()], {}, False),
    ("sku and category both must hold", RuleConditions(skus=("sku",), categories=("garden",)), {}, [line()], {}, False),
    ("line amount at threshold", RuleConditions(line_amount_min_minor=1000), {}, [line()], {}, True),
    ("line amount below threshold", RuleConditions(line_amount_min_minor=1001), {}, [line()], {}, False),
    ("basket amount at threshold", RuleConditions(basket_amount_min_minor=2000), {}, [line(), line("b")], {}, True),
    ("basket amount below threshold", RuleConditions(basket_amount_min_minor=2001), {}, [line(), line("b")], {}, False),
    # 3000 US cents at 0.5 EUR per USD is 1500 EUR cents.
    ("basket threshold in base currency (USD)", RuleConditions(basket_amount_min_minor=1500), {"currency": "USD"}, [line(amount_minor=3000)], {}, True),
    ("basket threshold in base currency (USD, short)", RuleConditions(basket_amount_min_minor=1501), {"currency": "USD"}, [line(amount_minor=3000)], {}, False),
    # 150000 yen at 0.01 EUR per yen is 150000 EUR cents... per yen: 1 yen = 1 EUR cent.
    ("line threshold converted from JPY", RuleConditions(line_amount_min_minor=1500), {"currency": "JPY"}, [line(amount_minor=1500)], {}, True),
    ("line threshold converted from JPY (short)", RuleConditions(line_amount_min_minor=1501), {"currency": "JPY"}, [line(amount_minor=1500)], {}, False),
    ("no exchange rate: thresholds never hold", RuleConditions(basket_amount_min_minor=1), {"currency": "GBP"}, [line()], {}, False),
    ("member attribute equal", RuleConditions(member_attributes={"region": "eu"}), {}, [line()], {"region": "eu"}, True),
    ("member attribute different", RuleConditions(member_attributes={"region": "eu"}), {}, [line()], {"region": "us"}, False),
    ("member attribute missing", RuleConditions(member_attributes={"region": "eu"}), {}, [line()], {}, False),
    ("segment contained", RuleConditions(segments=("students",)), {}, [line()], {"segments": "parents, students"}, True),
    ("segment not contained", RuleConditions(segments=("students",)), {}, [line()], {"segments": "parents"}, False),
    ("tier listed", RuleConditions(tiers=("gold", "silver")), {}, [line()], {"tier": "gold"}, True),
    ("tier not listed", RuleConditions(tiers=("gold",)), {}, [line()], {"tier": "bronze"}, False),
]


@pytest.mark.parametrize(
    "conditions, earn_kwargs, lines, attributes, applies",
    [case[1:] for case in CONDITION_CASES],
    ids=[case[0] for case in CONDITION_CASES],
)
def test_each_condition_decides_whether_a_rule_applies(conditions, earn_kwargs, lines, attributes, applies):
    shop = Shop((rule(conditions=conditions),), attributes=attributes)
    outcome = shop.earn(*lines, **earn_kwargs)
    base = sum(points for _, points in outcome.lines) if not applies else outcome.points // 2
    assert outcome.points == (2 * base if applies else base)
    assert ("r" in by_rule(outcome)) == (applies and base > 0)
    assert outcome.rules_version == 7


def test_line_conditions_pick_the_lines_that_earn_extra():
    shop = Shop((rule(conditions=RuleConditions(categories=("garden",)), effect=RuleEffect(multiplier="3")),))
    outcome = shop.earn(line("chair", 2000, "garden"), line("bread", 500, "food"), line("table", 10_000, "garden"))
    assert outcome.lines == (("chair", 60), ("bread", 5), ("table", 300))
    assert [a for a in outcome.awards if a[0] == "r"] == [("r", 0, "chair", 40, "multiplier"), ("r", 2, "table", 200, "multiplier")]
    assert [a for a in outcome.awards if a[0] == ""] == [
        ("", 0, "chair", 20, "base"),
        ("", 1, "bread", 5, "base"),
        ("", 2, "table", 100, "base"),
    ]


def test_first_purchase_only_once():
    shop = Shop((rule(conditions=RuleConditions(first_purchase=True), effect=RuleEffect(bonus_points=100)),))
    assert shop.earn(line()).points == 10 + 100
    assert shop.earn(line()).points == 10


@pytest.mark.parametrize(
    "enrolled_days_ago, low, high, applies",
    [
        (0, 0, 30, True),
        (30, 0, 30, True),  # day 30 is within [0, 30]
        (31, 0, 30, False),
        (6, 7, 0, False),
        (7, 7, 0, True),  # max 0: no upper bound
        (4000, 7, 0, True),
    ],
)
def test_days_since_enrolment(enrolled_days_ago, low, high, applies):
    conditions = RuleConditions(enrolled_days_min=low, enrolled_days_max=high)
    # Enrolled at 23:00 the day before a whole number of days: whole days count.
    shop = Shop((rule(conditions=conditions),), enrolled_at_ms=SATURDAY_NOON - enrolled_days_ago * DAY_MS - 3_600_000)
    assert shop.earn(line()).points == (20 if applies else 10)


# ------------------------------------------------------------------ schedules


SCHEDULE_CASES = [
    # (name, schedule, moment, applies)
    ("weekend rule on Saturday noon UTC", RuleSchedule(days_of_week=("sat", "sun")), SATURDAY_NOON, True),
    ("weekend rule on Friday noon UTC", RuleSchedule(days_of_week=("sat", "sun")), FRIDAY_NOON, False),
    ("weekend starts at local midnight (Berlin)", RuleSchedule(days_of_week=("sat", "sun"), time_zone="Europe/Berlin"), at("2026-11-20T23:00:00+00:00"), True),
    ("one minute before the Berlin weekend", RuleSchedule(days_of_week=("sat", "sun"), time_zone="Europe/Berlin"), at("2026-11-20T22:59:00+00:00"), False),
    ("weekend ends at Sunday local midnight (New York)", RuleSchedule(days_of_week=("sat", "sun"), time_zone="America/New_York"), at("2026-11-23T04:59:00+00:00"), True),
    ("Monday in New York", RuleSchedule(days_of_week=("sat", "sun"), time_zone="America/New_York"), at("2026-11-23T05:00:00+00:00"), False),
    ("happy hour start is inclusive", RuleSchedule(time_windows=(TimeWindow(start="17:00", end="19:00"),), time_zone="Europe/Berlin"), at("2026-11-20T16:00:00+00:00"), True),
    ("happy hour end is exclusive", RuleSchedule(time_windows=(TimeWindow(start="17:00", end="19:00"),), time_zone="Europe/Berlin"), at("2026-11-20T18:00:00+00:00"), False),
    ("happy hour last minute", RuleSchedule(time_windows=(TimeWindow(start="17:00", end="19:00"),), time_zone="Europe/Berlin"), at("2026-11-20T17:59:00+00:00"), True),
    ("window wrapping midnight, after midnight", RuleSchedule(time_windows=(TimeWindow(start="22:00", end="02:00"),)), at("2026-11-20T01:30:00+00:00"), True),
    ("window wrapping midnight, outside", RuleSchedule(time_windows=(TimeWindow(start="22:00", end="02:00"),)), at("2026-11-20T02:00:00+00:00"), False),
    ("window to 24:00", RuleSchedule(time_windows=(TimeWindow(start="23:00", end="24:00"),)), at("2026-11-20T23:59:00+00:00"), True),
    # DST: Berlin switches to summer time on 2026-03-29 at 01:00 UTC (02:00 -> 03:00 local).
    ("happy hour before DST change (UTC+1)", RuleSchedule(time_windows=(TimeWindow(start="17:00", end="19:00"),), time_zone="Europe/Berlin"), at("2026-03-28T16:30:00+00:00"), True),
    ("happy hour after DST change (UTC+2)", RuleSchedule(time_windows=(TimeWindow(start="17:00", end="19:00"),), time_zone="Europe/Berlin"), at("2026-03-29T15:30:00+00:00"), True),
    ("17:30 UTC is 19:30 in Berlin summer time", RuleSchedule(time_windows=(TimeWindow(start="17:00", end="19:00"),), time_zone="Europe/Berlin"), at("2026-03-29T17:30:00+00:00"), False),
    ("start time inclusive", RuleSchedule(start_time=datetime.datetime(2026, 11, 21, 12, 0, tzinfo=UTC)), SATURDAY_NOON, True),
    ("before start time", RuleSchedule(start_time=datetime.datetime(2026, 11, 21, 12, 1, tzinfo=UTC)), SATURDAY_NOON, False),
    ("end time exclusive", RuleSchedule(end_time=datetime.datetime(2026, 11, 21, 12, 0, tzinfo=UTC)), SATURDAY_NOON, False),
    ("naive start time is local to the zone", RuleSchedule(start_time=datetime.datetime(2026, 11, 21, 13, 0), time_zone="Europe/Berlin"), SATURDAY_NOON, True),
    ("naive start time, a minute early", RuleSchedule(start_time=datetime.datetime(2026, 11, 21, 13, 1), time_zone="Europe/Berlin"), SATURDAY_NOON, False),
]


@pytest.mark.parametrize("schedule, moment, applies", [case[1:] for case in SCHEDULE_CASES], ids=[case[0] for case in SCHEDULE_CASES])
def test_schedules_on_a_fake_clock(schedule, moment, applies):
    shop = Shop((rule(schedule=schedule),), enrolled_at_ms=moment - DAY_MS)
    assert shop.earn(line(), now_ms=moment).points == (20 if applies else 10)


def test_disabled_rules_never_apply():
    shop = Shop((rule(enabled=False),))
    outcome = shop.earn(line())
    assert outcome.points == 10 and outcome.awards == ()


# ------------------------------------------------------------------ effects and rounding


EFFECT_CASES = [
    # (name, effect, lines, expected rule points, expected per-line totals)
    ("points per unit on lines, down", RuleEffect(points_per_unit="1.5"), [line("a", 999), line("b", 1050)], 29, (("a", 24), ("b", 25))),
    ("points per unit on lines, half up", RuleEffect(points_per_unit="1.5", rounding="half_up"), [line("a", 999), line("b", 1050)], 31, (("a", 25), ("b", 26))),
    ("points per unit on lines, up", RuleEffect(points_per_unit="1.5", rounding="up"), [line("a", 999), line("b", 1050)], 31, (("a", 25), ("b", 26))),
    ("points per unit, up, on whole units", RuleEffect(points_per_unit="1", rounding="up"), [line("a", 1000), line("b", 1001)], 21, (("a", 20), ("b", 21))),
    ("points per unit on the basket, down", RuleEffect(points_per_unit="1.5", target="basket"), [line("a", 999), line("b", 1050)], 30, (("a", 25), ("b", 25))),
    ("points per unit on the basket, up", RuleEffect(points_per_unit="1.5", target="basket", rounding="up"), [line("a", 999), line("b", 1050)], 31, (("a", 25), ("b", 26))),
    ("multiplier on lines", RuleEffect(multiplier="2"), [line("a", 999), line("b", 1050)], 20, (("a", 20), ("b", 20))),
    ("fractional multiplier, down", RuleEffect(multiplier="1.25"), [line("a", 999), line("b", 1050)], 4, (("a", 12), ("b", 12))),
    ("fractional multiplier, half up", RuleEffect(multiplier="1.25", rounding="half_up"), [line("a", 999), line("b", 1050)], 6, (("a", 13), ("b", 13))),
    ("fractional multiplier on the basket, down", RuleEffect(multiplier="1.25", target="basket"), [line("a", 999), line("b", 1050)], 5, (("a", 13), ("b", 12))),
    ("bonus once per purchase", RuleEffect(bonus_points=100), [line("a", 1000), line("b", 3000)], 100, (("a", 35), ("b", 105))),
]


@pytest.mark.parametrize(
    "effect, lines, rule_points, line_totals", [case[1:] for case in EFFECT_CASES], ids=[case[0] for case in EFFECT_CASES]
)
def test_effects_and_rounding(effect, lines, rule_points, line_totals):
    shop = Shop((rule(effect=effect),))
    outcome = shop.earn(*lines)
    assert by_rule(outcome).get("r", 0) == rule_points
    assert outcome.lines == line_totals
    assert outcome.points == by_rule(outcome)[""] + rule_points


def test_basket_awards_are_one_entry_and_attributed_to_lines():
    shop = Shop((rule(effect=RuleEffect(points_per_unit="1", target="basket")),))
    outcome = shop.earn(line("a", 999), line("b", 1050))
    assert ("r", -1, "", 20, "points_per_unit") in outcome.awards


def test_the_default_program_without_rules_is_unchanged():
    program = CompiledProgram(Program())
    core = ShardCore(program)
    core.apply_batch([c.EnrollMember("m", "e", {})], SATURDAY_NOON)
    outcomes, record = core.apply_batch([c.Earn("m", "r", "EUR", (line("a", 5999),))], SATURDAY_NOON)
    outcome = codec.decode_outcome(outcomes[0])
    assert (outcome.points, outcome.rules_version, outcome.awards, outcome.limits) == (59, 0, (), ())
    earned = record.events[-1]
    assert (earned.rules_version, earned.awards, earned.counters, earned.budgets) == (0, (), (), ())


def test_installed_rules_that_do_not_apply_still_record_the_version():
    shop = Shop((rule(conditions=RuleConditions(channels=("web",))),))
    outcome = shop.earn(line())
    assert (outcome.points, outcome.rules_version, outcome.awards) == (10, 7, ())


# ------------------------------------------------------------------ stacking


def test_multipliers_add_their_extras():
    shop = Shop((rule("a"), rule("b")))
    assert shop.earn(line()).points == 30  # x2 and x2 is x3 (base + 1 + 1), not x4


def test_exclusive_group_keeps_the_highest_priority():
    shop = Shop(
        (
            rule("low", priority=1, effect=RuleEffect(multiplier="5"), stacking=RuleStacking(exclusive_group="g")),
            rule("high", priority=9, effect=RuleEffect(multiplier="2"), stacking=RuleStacking(exclusive_group="g")),
            rule("other", priority=5, effect=RuleEffect(bonus_points=1)),
        )
    )
    outcome = shop.earn(line())
    assert by_rule(outcome) == {"": 10, "high": 10, "other": 1}


def test_exclusive_group_ties_go_to_the_lower_rule_id():
    group = RuleStacking(exclusive_group="g")
    shop = Shop((rule("b", stacking=group, effect=RuleEffect(bonus_points=7)), rule("a", stacking=group, effect=RuleEffect(bonus_points=3))))
    assert by_rule(shop.earn(line())) == {"": 10, "a": 3}


def test_a_rule_that_does_not_apply_does_not_block_its_group():
    group = RuleStacking(exclusive_group="g")
    shop = Shop(
        (
            rule("web", priority=9, stacking=group, conditions=RuleConditions(channels=("web",))),
            rule("pos", priority=1, stacking=group, effect=RuleEffect(bonus_points=5)),
        )
    )
    assert by_rule(shop.earn(line())) == {"": 10, "pos": 5}


def test_multiplier_ceiling_cuts_the_last_applied_multiplier():
    shop = Shop(
        (
            rule("first", priority=3, effect=RuleEffect(multiplier="3")),
            rule("second", priority=2, effect=RuleEffect(multiplier="3")),
            rule("ceiling", priority=1, effect=RuleEffect(bonus_points=1), stacking=RuleStacking(multiplier_ceiling="4")),
        )
    )
    outcome = shop.earn(line())
    # Uncapped: 1 + 2 + 2 = x5; the ceiling allows x4: "second" keeps only one extra.
    assert by_rule(outcome) == {"": 10, "first": 20, "second": 10, "ceiling": 1}
    assert outcome.limits == (("second", "multiplier_ceiling", 10),)


def test_the_lowest_ceiling_wins():
    shop = Shop(
        (
            rule("big", priority=3, effect=RuleEffect(multiplier="10"), stacking=RuleStacking(multiplier_ceiling="5")),
            rule("small", priority=2, effect=RuleEffect(bonus_points=1), stacking=RuleStacking(multiplier_ceiling="2")),
        )
    )
    outcome = shop.earn(line())
    assert by_rule(outcome)["big"] == 10 and outcome.limits == (("big", "multiplier_ceiling", 80),)


# ------------------------------------------------------------------ caps


def test_per_transaction_cap():
    shop = Shop((rule(effect=RuleEffect(points_per_unit="10"), caps=RuleCaps(per_transaction=25)),))
    outcome = shop.earn(line("a", 1000), line("b", 3000))
    assert by_rule(outcome)["r"] == 25
    assert outcome.limits == (("r", "transaction", 375),)
    assert outcome.lines == (("a", 10 + 6), ("b", 30 + 19))  # the cut is spread by what each line earned


def test_daily_cap_across_local_midnight():
    capped = rule(effect=RuleEffect(bonus_points=40), caps=RuleCaps(per_member_day=100), schedule=RuleSchedule(time_zone="Europe/Berlin"))
    shop = Shop((capped,))
    evening = at("2026-11-20T22:30:00+00:00")  # 23:30 in Berlin, Friday
    assert [by_rule(shop.earn(line(), now_ms=evening + i)).get("r", 0) for i in range(3)] == [40, 40, 20]
    cut = shop.earn(line(), now_ms=evening + 3)
    assert "r" not in by_rule(cut) and cut.limits == (("r", "day", 40),)
    after_midnight = at("2026-11-20T23:00:00+00:00")  # Saturday in Berlin, still Friday in UTC
    assert by_rule(shop.earn(line(), now_ms=after_midnight)).get("r") == 40


def test_weekly_cap_resets_on_monday_in_the_rule_zone():
    shop = Shop((rule(effect=RuleEffect(bonus_points=60), caps=RuleCaps(per_member_week=100)),))
    sunday = at("2026-11-22T23:59:00+00:00")
    assert by_rule(shop.earn(line(), now_ms=sunday - DAY_MS))["r"] == 60
    assert by_rule(shop.earn(line(), now_ms=sunday))["r"] == 40
    assert by_rule(shop.earn(line(), now_ms=sunday + 60_000))["r"] == 60  # Monday 00:00


def test_monthly_cap_resets_on_the_first():
    shop = Shop((rule(effect=RuleEffect(bonus_points=60), caps=RuleCaps(per_member_month=100)),))
    assert by_rule(shop.earn(line(), now_ms=at("2026-11-30T10:00:00+00:00")))["r"] == 60
    assert by_rule(shop.earn(line(), now_ms=at("2026-11-30T23:00:00+00:00")))["r"] == 40
    assert by_rule(shop.earn(line(), now_ms=at("2026-12-01T00:00:00+00:00")))["r"] == 60


def test_lifetime_cap_never_resets():
    shop = Shop((rule(effect=RuleEffect(bonus_points=60), caps=RuleCaps(per_member_lifetime=100)),))
    granted = [by_rule(shop.earn(line(), now_ms=SATURDAY_NOON + i * 400 * DAY_MS)).get("r", 0) for i in range(3)]
    assert granted == [60, 40, 0]


def test_several_caps_report_each_cut():
    shop = Shop((rule(effect=RuleEffect(bonus_points=100), caps=RuleCaps(per_transaction=80, per_member_day=50)),))
    outcome = shop.earn(line())
    assert by_rule(outcome)["r"] == 50
    assert outcome.limits == (("r", "transaction", 20), ("r", "day", 30))


def test_members_without_capped_rules_carry_no_counters():
    shop = Shop((rule(),))
    shop.earn(line())
    assert shop.core.ledger.members["m"].counters is None


def test_counters_of_removed_rules_are_dropped():
    shop = Shop((rule("capped", effect=RuleEffect(bonus_points=5), caps=RuleCaps(per_member_day=100)),))
    shop.earn(line())
    assert set(shop.core.ledger.members["m"].counters) == {"capped/d"}
    shop.core.install_rules(compile_rules(RuleSet(version=8, rules=(rule("other"),)), shop.compiled_program))
    shop.earn(line())
    assert shop.core.ledger.members["m"].counters is None


# ------------------------------------------------------------------ returns, debt


def test_a_return_claws_back_exactly_what_the_lines_earned_with_rules():
    shop = Shop(
        (
            rule("basket", effect=RuleEffect(points_per_unit="1.5", target="basket", rounding="up")),
            rule("bonus", effect=RuleEffect(bonus_points=7)),
        )
    )
    outcome = shop.earn(line("a", 999, quantity=3), line("b", 1050, quantity=2))
    outcomes, _ = shop.core.apply_batch([c.Reverse("m", "ret-a", "r1", (c.ReturnLine("a", 3),))], SATURDAY_NOON)
    assert codec.decode_outcome(outcomes[0]).points == dict(outcome.lines)["a"]
    outcomes, _ = shop.core.apply_batch([c.Reverse("m", "ret-rest", "r1", ())], SATURDAY_NOON)
    assert codec.decode_outcome(outcomes[0]).points == dict(outcome.lines)["b"]
    assert codec.decode_outcome(outcomes[0]).balance.available == 0


def test_returns_do_not_give_cap_room_back():
    shop = Shop((rule(effect=RuleEffect(bonus_points=60), caps=RuleCaps(per_member_day=100)),))
    shop.earn(line())
    shop.core.apply_batch([c.Reverse("m", "ret", "r1", ())], SATURDAY_NOON)
    assert by_rule(shop.earn(line()))["r"] == 40


def test_rule_points_repay_debt_first():
    shop = Shop((rule(effect=RuleEffect(bonus_points=50)),))
    shop.earn(line())  # 10 + 50
    shop.core.apply_batch([c.Redeem("m", "spend", 60)], SATURDAY_NOON)
    shop.core.apply_batch([c.Reverse("m", "ret", "r1", ())], SATURDAY_NOON)  # 60 of debt
    outcome = shop.earn(line())
    assert (outcome.points, outcome.debt, outcome.balance.available, outcome.balance.debt) == (60, 60, 0, 0)
