"""Rules as marketers write them: the example file, TOML errors that point at the
line, validation paths, and the stored encoding of a rule set."""

from __future__ import annotations

import datetime
import pathlib

import pytest

from loyalty.actors.ledger import CompiledProgram, Program, ShardCore, codec
from loyalty.actors.ledger import commands as c
from loyalty.actors.ledger.rules import (
    Rule,
    RuleEffect,
    RuleSchedule,
    RuleSet,
    RulesError,
    RulesFileError,
    TimeWindow,
    compile_rules,
    decode_rule_set,
    encode_rule_set,
    load_rules_toml,
    validate_rules,
)

EXAMPLE = pathlib.Path(__file__).resolve().parent.parent / "examples" / "rules.toml"
PROGRAM = CompiledProgram(Program())


def at(text: str) -> int:
    return int(datetime.datetime.fromisoformat(text).timestamp() * 1000)


def test_the_example_file_loads_and_validates():
    rules = load_rules_toml(EXAMPLE.read_bytes(), PROGRAM)
    assert [rule.rule_id for rule in rules] == [
        "double-weekend",
        "triple-garden",
        "happy-hour-berlin-1",
        "gold-daily",
        "welcome-bonus",
    ]
    assert rules[2].schedule.time_windows == (TimeWindow(start="17:00", end="19:00"),)
    assert rules[4].budget.total_points == 1_000_000
    assert compile_rules(RuleSet(version=1, rules=rules), PROGRAM).version == 1


def shop_with_example(now_ms: int) -> ShardCore:
    core = ShardCore(PROGRAM)
    rules = load_rules_toml(EXAMPLE.read_bytes(), PROGRAM)
    core.install_rules(compile_rules(RuleSet(version=3, rules=rules), PROGRAM))
    # Enrolled and bought once long ago: no welcome bonus, no gold tier.
    core.apply_batch([c.EnrollMember("m", "enrol", {})], now_ms - 100 * 86_400_000)
    core.apply_batch([c.Earn("m", "first", "EUR", (c.Line("x", "food", 1, 100),))], now_ms - 100 * 86_400_000)
    return core


def earn_points(core: ShardCore, now_ms: int, *lines: c.Line, store: str = "berlin-1") -> tuple[int, dict[str, int]]:
    outcomes, _ = core.apply_batch([c.Earn("m", f"r{now_ms}", "EUR", lines, "pos", store)], now_ms)
    outcome = codec.decode_outcome(outcomes[0])
    by_rule: dict[str, int] = {}
    for rule_id, _, _, points, _ in outcome.awards:
        by_rule[rule_id] = by_rule.get(rule_id, 0) + points
    return outcome.points, by_rule


def test_example_weekend_category_and_happy_hour():
    chair = c.Line("chair", "garden", 1, 10_000)  # 100 EUR: base 100 points
    saturday = at("2026-06-13T10:00:00+00:00")
    core = shop_with_example(saturday)
    # Saturday: x2 weekend, x3 garden: extras 100 + 200; the ceiling (x4) allows 300.
    points, by_rule = earn_points(core, saturday, chair)
    assert points == 400 and by_rule == {"": 100, "double-weekend": 100, "triple-garden": 200}
    # Wednesday 17:30 in Berlin at berlin-1: happy hour (5 per euro, basket), garden x3.
    happy = at("2026-06-17T15:30:00+00:00")
    points, by_rule = earn_points(core, happy, chair)
    assert by_rule == {"": 100, "triple-garden": 200, "happy-hour-berlin-1": 500}
    # Same time in another store: no happy hour.
    points, by_rule = earn_points(core, happy + 1, chair, store="paris-2")
    assert by_rule == {"": 100, "triple-garden": 200}
    # 19:00 in Berlin: the happy hour is over.
    points, by_rule = earn_points(core, at("2026-06-17T17:00:00+00:00"), c.Line("bread", "food", 1, 1000))
    assert points == 10


BAD_FILE = b"""\
[program]
points_per_unit = "1"

[[rules]]
rule_id = "ok"
effect.multiplier = "2"

[[rules]]
rule_id = "Bad Id"
effect.multiplier = "two"
schedule.days_of_week = ["sat", "funday"]

[[rules]]
rule_id = "ok"
effect.bonus_points = 5

[rules.schedule]
time_zone = "Mars/Olympus"

[[rules.schedule.time_windows]]
start = "09:00"
end = "09:00"
"""


def test_validation_errors_point_at_their_lines():
    with pytest.raises(RulesFileError) as caught:
        load_rules_toml(BAD_FILE, PROGRAM, source="campaigns.toml")
    message = str(caught.value).splitlines()
    assert "campaigns.toml: line 9: rules[1].rule_id: must be 1-64 characters of a-z, 0-9, '_' and '-'" in message
    assert "campaigns.toml: line 10: rules[1].effect.multiplier: not a decimal number: 'two'" in message
    assert any(m.startswith("campaigns.toml: line 11: rules[1].schedule.days_of_week[1]:") for m in message)
    assert any(m.startswith("campaigns.toml: line 14: rules[2].rule_id: duplicate") for m in message)
    assert any(m.startswith("campaigns.toml: line 18: rules[2].schedule.time_zone: not an IANA") for m in message)
    assert any(m.startswith("campaigns.toml: line 22: rules[2].schedule.time_windows[0].end:") for m in message)
    assert [line for line, _ in caught.value.problems] == [9, 10, 11, 14, 18, 22]


def test_type_errors_point_at_their_line():
    data = b'[[rules]]\nrule_id = "a"\neffect.multiplier = "2"\ncaps.per_member_day = "ten"\n'
    with pytest.raises(RulesFileError, match=r"^rules.toml: line 4: rules\[0\].caps.per_member_day: Expected `int`"):
        load_rules_toml(data, PROGRAM)


def test_unknown_fields_are_refused():
    data = b'[[rules]]\nrule_id = "a"\neffect.multiplier = "2"\neffect.multiply = "3"\n'
    with pytest.raises(RulesFileError, match=r"line 4: rules\[0\].effect: Object contains unknown field `multiply`"):
        load_rules_toml(data, PROGRAM)


def test_toml_syntax_errors_point_at_their_line():
    with pytest.raises(RulesFileError, match=r"^rules.toml: line 3: not valid TOML"):
        load_rules_toml(b'[[rules]]\nrule_id = "a"\neffect = {multiplier = \n', PROGRAM)


def test_other_tables_are_ignored_and_no_rules_is_fine():
    assert load_rules_toml(b'[program]\npoints_per_unit = "2"\n[[api_keys]]\nname = "till"\n', PROGRAM) == ()


VALIDATION_CASES = [
    (Rule(rule_id="a", effect=RuleEffect()), "rules[0].effect", "exactly one"),
    (Rule(rule_id="a", effect=RuleEffect(multiplier="2", bonus_points=3)), "rules[0].effect", "exactly one"),
    (Rule(rule_id="a", effect=RuleEffect(multiplier="0.5")), "rules[0].effect.multiplier", "1 to 100"),
    (Rule(rule_id="a", effect=RuleEffect(points_per_unit="1e3")), "rules[0].effect.points_per_unit", "not a decimal"),
    (Rule(rule_id="a", effect=RuleEffect(points_per_unit="-1")), "rules[0].effect.points_per_unit", "not a decimal"),
    (Rule(rule_id="a", effect=RuleEffect(bonus_points=-5)), "rules[0].effect.bonus_points", "0 to"),
    (Rule(rule_id="", effect=RuleEffect(bonus_points=1)), "rules[0].rule_id", "1-64"),
    (Rule(rule_id="a" * 65, effect=RuleEffect(bonus_points=1)), "rules[0].rule_id", "1-64"),
    (
        Rule(rule_id="a", effect=RuleEffect(bonus_points=1), schedule=RuleSchedule(time_windows=(TimeWindow(start="9:00", end="10:00"),))),
        "rules[0].schedule.time_windows[0].start",
        "HH:MM",
    ),
    (
        Rule(
            rule_id="a",
            effect=RuleEffect(bonus_points=1),
            schedule=RuleSchedule(
                start_time=datetime.datetime(2026, 2, 1, tzinfo=datetime.UTC), end_time=datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
            ),
        ),
        "rules[0].schedule.end_time",
        "after start_time",
    ),
]


@pytest.mark.parametrize("rule, path, words", VALIDATION_CASES)
def test_validation_names_the_field(rule, path, words):
    violations = validate_rules([rule], PROGRAM)
    assert [v.path for v in violations] == [path]
    assert words in violations[0].description
    with pytest.raises(RulesError) as caught:
        compile_rules(RuleSet(rules=(rule,)), PROGRAM)
    assert caught.value.violations == violations


def test_threshold_currencies_need_an_exchange_rate():
    program = CompiledProgram(Program(base_currency="EUR", exchange_rates={"USD": "0.9"}))
    from loyalty.actors.ledger.rules import RuleConditions

    rule = Rule(
        rule_id="a",
        effect=RuleEffect(bonus_points=1),
        conditions=RuleConditions(currencies=("USD", "GBP", "eur"), basket_amount_min_minor=100),
    )
    assert [v.path for v in validate_rules([rule], program)] == ["rules[0].conditions.currencies[1]", "rules[0].conditions.currencies[2]"]


def test_rule_sets_survive_their_encoding():
    rules = load_rules_toml(EXAMPLE.read_bytes(), PROGRAM)
    rule_set = RuleSet(version=12, rules=rules, budget_keys={"welcome-bonus": "budget:welcome-bonus:3"})
    decoded = decode_rule_set(encode_rule_set(rule_set))
    assert decoded == rule_set
    assert encode_rule_set(decoded) == encode_rule_set(rule_set)
