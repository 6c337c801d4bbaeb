"""ISO-4217 minor units: how many decimal digits an amount_minor carries."""

# Currencies whose minor unit is not 2 digits (ISO-4217, list A). Everything else,
# including codes added after this table was written, is taken as 2 digits; a program
# file can override any currency with ``[program.minor_digits]``.
_MINOR_DIGITS_EXCEPTIONS = {
    **dict.fromkeys(
        "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF".split(), 0
    ),
    **dict.fromkeys("BHD IQD JOD KWD LYD OMR TND".split(), 3),
    **dict.fromkeys("CLF UYW".split(), 4),
}

MINOR_DIGITS_DEFAULT = 2


def minor_digits(currency: str) -> int:
    """Decimal digits of the minor unit of an ISO-4217 currency code."""
    return _MINOR_DIGITS_EXCEPTIONS.get(currency, MINOR_DIGITS_DEFAULT)


def is_currency_code(text: str) -> bool:
    """True for three upper-case ASCII letters, the shape of every ISO-4217 code."""
    return len(text) == 3 and text.isascii() and text.isalpha() and text.isupper()
