"""Several currencies: exact conversion to the base currency for rule thresholds, and
redemption quotes whose rounding never creates value."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loyalty.actors.ledger import CompiledProgram, Program
from loyalty.actors.ledger.program import ProgramError

PROGRAM = CompiledProgram(
    Program(
        base_currency="EUR",
        exchange_rates={"USD": "0.92", "JPY": "0.0061", "KWD": "2.98"},
        redemption_value={"EUR": "0.01", "USD": "0.011", "JPY": "1.7", "KWD": "0.003"},
    )
)


@pytest.mark.parametrize(
    "currency, amount_minor, base_minor",
    [
        ("EUR", 12_345, 12_345),
        ("USD", 10_000, 9_200),  # 100 USD = 92 EUR
        ("USD", 1, 0),  # 0.92 cent: rounded down
        ("JPY", 10_000, 6_100),  # 10,000 yen (no minor digits) = 61 EUR
        ("KWD", 1_000, 298),  # 1 KWD (3 minor digits) = 2.98 EUR
    ],
)
def test_amounts_convert_exactly_to_the_base_currency(currency, amount_minor, base_minor):
    assert PROGRAM.to_base_minor(currency, amount_minor) == base_minor


def test_currencies_without_a_rate_cannot_be_converted():
    with pytest.raises(ProgramError, match="no exchange rate from GBP"):
        PROGRAM.to_base_minor("GBP", 100)


def test_without_a_base_currency_amounts_are_their_own():
    assert CompiledProgram(Program()).to_base_minor("GBP", 123) == 123


@pytest.mark.parametrize(
    "currency, points, amount_minor",
    [("EUR", 500, 500), ("USD", 100, 110), ("USD", 1, 1), ("JPY", 10, 17), ("JPY", 1, 1), ("KWD", 1, 3)],
)
def test_what_points_are_worth(currency, points, amount_minor):
    assert PROGRAM.value_of_points(currency, points) == amount_minor


@pytest.mark.parametrize(
    "currency, amount_minor, points",
    [("EUR", 500, 500), ("USD", 110, 100), ("USD", 111, 101), ("JPY", 17, 10), ("JPY", 18, 11), ("KWD", 4, 2)],
)
def test_points_that_buy_an_amount_are_rounded_up(currency, amount_minor, points):
    assert PROGRAM.points_for_amount(currency, amount_minor) == points


def test_currencies_without_a_redemption_value_are_not_quoted():
    assert PROGRAM.points_for_amount("GBP", 100) is None
    assert PROGRAM.value_of_points("GBP", 100) is None


@pytest.mark.parametrize(
    "fields, words",
    [
        ({"base_currency": "eur"}, "base_currency"),
        ({"exchange_rates": {"USD": "1"}}, "needs base_currency"),
        ({"base_currency": "EUR", "exchange_rates": {"USD": "0"}}, "more than 0"),
        ({"redemption_value": {"EUR": "abc"}}, "not a decimal"),
        ({"redemption_value": {"EUR": "0"}}, "more than 0"),
    ],
)
def test_bad_currency_settings_are_refused(fields, words):
    with pytest.raises(ProgramError, match=words):
        CompiledProgram(Program(**fields))


CURRENCIES = st.sampled_from(["EUR", "USD", "JPY", "KWD"])


@settings(max_examples=500, deadline=None)
@given(currency=CURRENCIES, points=st.integers(0, 10**12), amount=st.integers(0, 10**15))
def test_quotes_never_create_value(currency, points, amount):
    worth = PROGRAM.value_of_points(currency, points)
    assert PROGRAM.points_for_amount(currency, worth) <= points  # spending what points are worth costs no more
    needed = PROGRAM.points_for_amount(currency, amount)
    assert PROGRAM.value_of_points(currency, needed) >= amount  # the points quoted do buy the amount
    if needed:
        assert PROGRAM.value_of_points(currency, needed - 1) < amount  # and one fewer would not
