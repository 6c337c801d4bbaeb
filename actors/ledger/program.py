"""The loyalty program: earn rates, windows and policies, typed and read once.

A program file is TOML with a ``[program]`` table::

    [program]
    points_per_unit = "1"          # default for every currency
    return_window_days = 30        # earned points stay pending this long
    points_expiry_days = 365       # 0: points never expire
    idempotency_retention_days = 7
    reversal_policy = "debt"       # or "cap"

    base_currency = "EUR"          # rules' amount thresholds are in EUR minor units

    [program.currency_points_per_unit]
    EUR = "1.5"
    JPY = "0.01"

    [program.exchange_rates]       # EUR per one unit of each currency
    USD = "0.92"
    JPY = "0.0061"

    [program.redemption_value]     # money one point is worth, per currency
    EUR = "0.01"

Rates are decimal strings, never floats: points are computed with exact fractions and
rounded down once per purchase. Conversions never create value: an amount converted to
the base currency is rounded down, the points that buy an amount are rounded up, and
the money some points are worth is rounded down.
"""

from __future__ import annotations

import fractions
from typing import Any, Literal

import msgspec

from loyalty.actors.ledger.currency import is_currency_code, minor_digits

_DAY_MS = 86_400_000


class Program(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The program as written in a file. Every field has the documented default."""

    points_per_unit: str = "1"
    """Points per whole currency unit for currencies without their own rate."""
    currency_points_per_unit: dict[str, str] = {}
    """Per-currency rates, keyed by ISO-4217 code."""
    minor_digits: dict[str, int] = {}
    """Overrides of the ISO-4217 minor-unit digits, keyed by currency code."""
    return_window_days: int = 0
    """Days earned points stay pending (not spendable); 0: available at once."""
    points_expiry_days: int = 365
    """Days from earning until points expire; 0: they never expire."""
    idempotency_retention_days: int = 7
    """Days a request's outcome is kept for replays and GetOperation."""
    reversal_policy: Literal["debt", "cap"] = "debt"
    """On a return after the points were spent: "debt" records the shortfall as debt
    repaid by later earns; "cap" claws back only what the member still holds."""
    base_currency: str = ""
    """The currency rules' amount thresholds are written in; empty: thresholds are
    compared with amounts in the purchase's own currency."""
    exchange_rates: dict[str, str] = {}
    """Base-currency units per one unit of each other currency (decimal strings);
    the base currency itself is 1."""
    redemption_value: dict[str, str] = {}
    """Money units of each currency one point is worth (decimal strings), for
    QuoteRedemption; a currency not listed cannot be quoted."""


class ProgramFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The top level of a configuration file. Only ``[program]`` is read here; the
    other tables belong to the server (rules, API keys, limits) and are read there."""

    program: Program = Program()
    rules: list[dict[str, Any]] = []
    api_keys: list[dict[str, Any]] = []
    limits: dict[str, Any] = {}


class ProgramError(ValueError):
    """A program file or value that cannot be used, with a message naming the field."""


class CompiledProgram:
    """A Program turned into exact fractions and milliseconds, built once."""

    __slots__ = (
        "program",
        "_default_rate",
        "_rates",
        "_minor_digits",
        "return_window_ms",
        "points_expiry_ms",
        "retention_ms",
        "reversal_creates_debt",
        "_per_minor",
        "base_currency",
        "_to_base",
        "_redemption",
    )

    def __init__(self, program: Program) -> None:
        self.program = program
        self._default_rate = _parse_rate("points_per_unit", program.points_per_unit)
        self._rates = {}
        for code, text in program.currency_points_per_unit.items():
            _check_currency(f"currency_points_per_unit.{code}", code)
            self._rates[code] = _parse_rate(f"currency_points_per_unit.{code}", text)
        for code, digits in program.minor_digits.items():
            _check_currency(f"minor_digits.{code}", code)
            if not 0 <= digits <= 6:
                raise ProgramError(f"minor_digits.{code}: must be 0 to 6, got {digits}")
        self._minor_digits = dict(program.minor_digits)
        self._per_minor: dict[str, fractions.Fraction] = {}
        for name in ("return_window_days", "points_expiry_days", "idempotency_retention_days"):
            value = getattr(program, name)
            if not 0 <= value <= 36_500:
                raise ProgramError(f"{name}: must be 0 to 36500, got {value}")
        if program.idempotency_retention_days < 1:
            raise ProgramError("idempotency_retention_days: must be at least 1")
        self.return_window_ms = program.return_window_days * _DAY_MS
        self.points_expiry_ms = program.points_expiry_days * _DAY_MS
        self.retention_ms = program.idempotency_retention_days * _DAY_MS
        self.reversal_creates_debt = program.reversal_policy == "debt"
        self.base_currency = program.base_currency
        if program.base_currency:
            _check_currency("base_currency", program.base_currency)
        if program.exchange_rates and not program.base_currency:
            raise ProgramError("exchange_rates: needs base_currency")
        self._to_base: dict[str, fractions.Fraction] = {}
        base_scale = 10 ** self.minor_unit_digits(program.base_currency) if program.base_currency else 1
        for code, text in program.exchange_rates.items():
            _check_currency(f"exchange_rates.{code}", code)
            rate = _parse_positive(f"exchange_rates.{code}", text)
            # base minor units per minor unit of code
            self._to_base[code] = rate * base_scale / 10 ** self.minor_unit_digits(code)
        if program.base_currency:
            self._to_base[program.base_currency] = fractions.Fraction(1)
        self._redemption: dict[str, fractions.Fraction] = {}
        for code, text in program.redemption_value.items():
            _check_currency(f"redemption_value.{code}", code)
            value = _parse_positive(f"redemption_value.{code}", text)
            self._redemption[code] = value * 10 ** self.minor_unit_digits(code)  # minor units per point

    def points_per_minor(self, currency: str) -> fractions.Fraction:
        """Exact points per one minor unit of ``currency`` (computed once per currency:
        Fraction arithmetic is slow enough to show on the earn path)."""
        cached = self._per_minor.get(currency)
        if cached is None:
            rate = self._rates.get(currency, self._default_rate)
            digits = self._minor_digits.get(currency)
            if digits is None:
                digits = minor_digits(currency)
            cached = self._per_minor[currency] = rate / (10**digits)
        return cached

    def minor_unit_digits(self, currency: str) -> int:
        """Decimal digits of the minor unit of ``currency`` (ISO-4217, or the program's override)."""
        digits = self._minor_digits.get(currency)
        return minor_digits(currency) if digits is None else digits

    def base_minor_per_minor(self, currency: str) -> fractions.Fraction | None:
        """Exact base-currency minor units per minor unit of ``currency``; None when the
        program has a base currency and no exchange rate for this one (without a base
        currency every currency counts as itself: 1)."""
        if not self.base_currency:
            return fractions.Fraction(1)
        return self._to_base.get(currency)

    def to_base_minor(self, currency: str, amount_minor: int) -> int:
        """``amount_minor`` of ``currency`` in minor units of the base currency, exact and
        rounded down; raises ProgramError for a currency without an exchange rate."""
        rate = self.base_minor_per_minor(currency)
        if rate is None:
            raise ProgramError(f"no exchange rate from {currency} to {self.base_currency}")
        return amount_minor * rate.numerator // rate.denominator

    def points_for_amount(self, currency: str, amount_minor: int) -> int | None:
        """Points that buy ``amount_minor`` of ``currency``, rounded up (a point never
        buys more than it is worth); None when the currency has no redemption value."""
        value = self._redemption.get(currency)
        if value is None:
            return None
        return -(-amount_minor * value.denominator // value.numerator)

    def value_of_points(self, currency: str, points: int) -> int | None:
        """What ``points`` are worth in minor units of ``currency``, rounded down; None
        when the currency has no redemption value."""
        value = self._redemption.get(currency)
        if value is None:
            return None
        return points * value.numerator // value.denominator

    def expires_at_ms(self, now_ms: int) -> int:
        """When points earned at now_ms expire; 0 means never."""
        return now_ms + self.points_expiry_ms if self.points_expiry_ms else 0


def _parse_rate(field: str, text: str) -> fractions.Fraction:
    try:
        rate = fractions.Fraction(text)
    except (ValueError, ZeroDivisionError):
        raise ProgramError(f"{field}: not a decimal number: {text!r}") from None
    if rate < 0 or rate > 1_000_000:
        raise ProgramError(f"{field}: must be between 0 and 1000000, got {text}")
    return rate


def _parse_positive(field: str, text: str) -> fractions.Fraction:
    rate = _parse_rate(field, text)
    if rate == 0:
        raise ProgramError(f"{field}: must be more than 0")
    return rate


def _check_currency(field: str, code: str) -> None:
    if not is_currency_code(code):
        raise ProgramError(f"{field}: not an ISO-4217 code (three upper-case letters)")


def load_program(toml_bytes: bytes) -> CompiledProgram:
    """Parse and compile a program file; ProgramError says what is wrong and where."""
    try:
        parsed = msgspec.toml.decode(toml_bytes, type=ProgramFile)
    except msgspec.ValidationError as error:
        raise ProgramError(f"program file: {error}") from None
    except msgspec.DecodeError as error:
        raise ProgramError(f"program file is not valid TOML: {error}") from None
    return CompiledProgram(parsed.program)


DEFAULT_PROGRAM = Program()
