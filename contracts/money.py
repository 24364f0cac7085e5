"""Money as exact integers of nano-USD (1 USD = 1_000_000_000 nano-USD). Never float.

Prices are Decimal USD per million tokens; costs are integer nano-USD; rounding to cents happens only
when a document is rendered (half-up, per line, and totals are sums of rounded lines)."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

NANOS_PER_USD = 1_000_000_000
CENT = Decimal("0.01")


def usd_to_nanos(value: Decimal | str | int) -> int:
    """Exact conversion; refuses float and anything finer than a nano-dollar."""
    if isinstance(value, float):
        raise TypeError("money must not be a float; pass a Decimal or a string")
    try:
        amount = Decimal(value)
    except InvalidOperation as exc:
        raise ValueError(f"not an amount: {value!r}") from exc
    if not amount.is_finite():
        raise ValueError(f"not an amount: {value!r}")
    nanos = amount * NANOS_PER_USD
    if nanos != nanos.to_integral_value():
        raise ValueError(f"{value} USD is finer than one nano-dollar")
    return int(nanos)


def nanos_to_usd(nanos: int) -> Decimal:
    return Decimal(nanos) / NANOS_PER_USD


def nanos_to_cents_str(nanos: int) -> str:
    """'12.35' for display on documents: rounded half-up to the cent."""
    rounded = nanos_to_usd(nanos).quantize(CENT, rounding=ROUND_HALF_UP)
    return str(rounded.copy_abs() if rounded.is_zero() else rounded)  # never "-0.00"


def usd_text(nanos: int) -> str:
    """'$12.50', '$0.0012', '-$3.00': exact (no rounding), at least two decimals, for messages a person reads."""
    amount = nanos_to_usd(abs(nanos))
    text = format(amount.normalize(), "f")
    whole, _, fraction = text.partition(".")
    sign = "-" if nanos < 0 else ""
    return f"{sign}${whole}.{fraction.ljust(2, '0')}"
