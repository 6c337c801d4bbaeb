"""The loyalty program: earn rates, windows and policies, typed and read once.

A program file is TOML with a ``[program]`` table::

    [program]
    points_per_unit = "1"          # default for every currency
    return_window_days = 30        # earned points stay pending this long
    points_expiry_days = 365       # 0: points never expire
    idempotency_retention_days = 7
    reversal_policy = "debt"       # or "cap"

    [program.currency_points_per_unit]
    EUR = "1.5"
    JPY = "0.01"

Rates are decimal strings, never floats: points are computed with exact fractions and
rounded down once per purchase.
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
