"""Earning rules: data that marketers change weekly, compiled once per version.

How an earn is worked out (details in ``rules.evaluation``):

1. The base earn is the program's rate (1 point per whole currency unit by default),
   rounded down once per purchase and attributed to lines. Rules only add to it.
2. Rules apply in order of priority (highest first), then rule_id. A rule applies
   when it is enabled, its schedule holds at the time the shard records the earn (the
   purchase's occurred_at is not used: it is the client's claim), every condition
   holds, and at least one line matches its line conditions (skus, categories,
   line_amount_min_minor; all that are given must hold; no line condition: every line).
3. Effects: ``points_per_unit`` gives extra points per whole unit of the purchase
   currency; ``multiplier`` "m" adds (m - 1) x the base earn of its lines, so
   multipliers add up (two "2" rules: x3, not x4); ``bonus_points`` is a fixed extra
   once per qualifying purchase. Target "lines" rounds per line, "basket" rounds the
   matching lines' sum once; each rule has its own rounding ("down" by default).
4. Stacking: of the applicable rules sharing an ``exclusive_group`` only the first
   applies; the lowest ``multiplier_ceiling`` of the applicable rules bounds the
   combined multiplier of every line (the last-applied rules are cut first).
5. Caps, per rule and after rounding: per transaction, then per member per day, ISO
   week, month (in the rule's time zone) and lifetime. Then the campaign budget.
   Every cut is reported with its size. Returns claw back exactly what the returned
   lines earned (basket awards are attributed to lines), but give back neither cap
   room nor budget. Points earned repay debt first, as base points always did.
6. Amount thresholds are in minor units of the program's base currency, converted
   exactly from the purchase currency and rounded down; a purchase in a currency
   without an exchange rate meets no threshold.
"""

from loyalty.actors.ledger.rules.budget import BudgetSource
from loyalty.actors.ledger.rules.compiler import CompiledRules, RulesError, compile_rules
from loyalty.actors.ledger.rules.evaluation import EarnDecision, evaluate_earn
from loyalty.actors.ledger.rules.model import (
    Rule,
    RuleBudget,
    RuleCaps,
    RuleConditions,
    RuleEffect,
    RuleSchedule,
    RuleSet,
    RuleStacking,
    TimeWindow,
    decode_rule_set,
    encode_rule_set,
)
from loyalty.actors.ledger.rules.toml_file import RulesFileError, load_rules_toml
from loyalty.actors.ledger.rules.validation import Violation, validate_rules

__all__ = [
    "BudgetSource",
    "CompiledRules",
    "EarnDecision",
    "Rule",
    "RuleBudget",
    "RuleCaps",
    "RuleConditions",
    "RuleEffect",
    "RuleSchedule",
    "RuleSet",
    "RuleStacking",
    "RulesError",
    "RulesFileError",
    "TimeWindow",
    "Violation",
    "compile_rules",
    "decode_rule_set",
    "encode_rule_set",
    "evaluate_earn",
    "load_rules_toml",
    "validate_rules",
]
