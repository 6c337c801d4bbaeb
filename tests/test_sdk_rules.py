"""SimulateEarn, the earn breakdown and QuoteRedemption through the SDK: on the fake
(with rules installed) and on the real server (base program)."""

from __future__ import annotations

import uuid

import pytest

from loyalty.actors.ledger import Program
from loyalty.actors.ledger.rules import Rule, RuleBudget, RuleConditions, RuleEffect, RuleSchedule
from loyalty.clients import (
    CurrencyNotSupported,
    InvalidArgument,
    Line,
    LoyaltyClient,
    MemberNotFound,
    PointsAward,
    PointsLimit,
)
from loyalty.clients.testing import FakeLoyaltyServer

# 2026-01-01 (the fake's start) is a Thursday; 2 days later is Saturday.
WEEKEND_DOUBLE = Rule(
    rule_id="double-weekend",
    schedule=RuleSchedule(days_of_week=("sat", "sun")),
    effect=RuleEffect(multiplier="2"),
)
GARDEN_BONUS = Rule(
    rule_id="garden-bonus",
    priority=-1,
    conditions=RuleConditions(categories=("garden",)),
    effect=RuleEffect(bonus_points=30),
    budget=RuleBudget(total_points=50),
)
BASKET = [Line("rake", 2, 1999, category="garden"), Line("shirt", 1, 2500, category="apparel")]


@pytest.fixture
def fake():
    program = Program(redemption_value={"EUR": "0.015", "JPY": "1"})
    with FakeLoyaltyServer(program=program) as server:
        server.install_rules([WEEKEND_DOUBLE, GARDEN_BONUS])
        yield server


@pytest.fixture
def client(fake):
    with LoyaltyClient(fake.target) as sdk:
        yield sdk


def member(client: LoyaltyClient) -> str:
    member_id = f"m-{uuid.uuid4().hex[:12]}"
    client.enroll_member(member_id)
    return member_id


def test_simulate_earn_gives_what_the_earn_then_gets_and_changes_nothing(fake, client):
    alice = member(client)
    fake.advance(days=2)  # Saturday: double points
    before = client.get_balance(alice)
    simulated = client.simulate_earn(alice, lines=BASKET, currency="EUR")
    assert client.get_balance(alice) == before
    assert client.list_transactions(alice).transactions[0].kind.name == "ENROLL"
    earned = client.earn(alice, lines=BASKET, currency="EUR")
    assert simulated.points == earned.points == 44 + 44 + 30  # base 44, doubled, bonus 30
    assert simulated.awards == earned.awards
    assert simulated.limits == earned.limits == ()
    assert simulated.rules_version == earned.rules_version == 1
    assert PointsAward("garden-bonus", "", -1, 30, "bonus_points") in earned.awards
    assert sum(award.points for award in earned.awards) == earned.points
    assert sum(line.points for line in earned.lines) == earned.points


def test_the_breakdown_names_the_budget_that_cut_an_earn(fake, client):
    first, second = member(client), member(client)
    assert client.earn(first, lines=BASKET, currency="EUR").limits == ()
    cut = client.earn(second, lines=BASKET, currency="EUR")  # 20 of the 50 budget points left
    assert PointsLimit("garden-bonus", "budget", 10) in cut.limits
    assert PointsAward("garden-bonus", "", -1, 20, "bonus_points") in cut.awards
    assert cut.points == 44 + 20


def test_simulate_earn_of_an_unknown_member_or_a_bad_basket_is_refused(client):
    with pytest.raises(MemberNotFound):
        client.simulate_earn("nobody", lines=BASKET, currency="EUR")
    with pytest.raises(InvalidArgument) as error:
        client.simulate_earn(member(client), lines=BASKET, currency="euro")
    assert error.value.field_violations[0][0] == "purchase.currency"


def test_quote_redemption_rounds_against_creating_value(client):
    # One point is worth 1.5 cents: 1000 cents need 666.7 points -> 667 (rounded up);
    # 667 points are worth 1000.5 cents -> 1000 (rounded down).
    for_amount = client.quote_redemption("EUR", amount_minor=1000)
    assert (for_amount.currency, for_amount.amount_minor, for_amount.points) == ("EUR", 1000, 667)
    assert client.quote_redemption("EUR", points=667).amount_minor == 1000
    assert client.quote_redemption("EUR", points=1).amount_minor == 1
    assert client.quote_redemption("JPY", amount_minor=500).points == 500  # yen have no minor unit
    with pytest.raises(CurrencyNotSupported):
        client.quote_redemption("USD", amount_minor=100)
    with pytest.raises(ValueError):
        client.quote_redemption("EUR")


def test_the_real_server_without_rules_simulates_the_base_earn(loyalty_server):
    with LoyaltyClient(loyalty_server.target) as sdk:
        bob = member(sdk)
        simulated = sdk.simulate_earn(bob, lines=BASKET, currency="EUR")
        earned = sdk.earn(bob, lines=BASKET, currency="EUR")
        assert simulated.points == earned.points == 44  # 44.99 EUR, rounded down once
        assert simulated.rules_version == earned.rules_version == 0
        assert earned.awards == () and earned.limits == ()
        with pytest.raises(CurrencyNotSupported):  # the default program redeems nothing
            sdk.quote_redemption("EUR", points=10)
