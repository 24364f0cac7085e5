"""Showing nano-USD amounts. Display only: rounding happens here, never in what is stored or billed."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from django import template

from contracts.money import nanos_to_cents_str, nanos_to_usd

register = template.Library()

MICRO = Decimal("0.000001")


@register.filter
def usd_cents(nanos: int | None) -> str:
    """A balance or a total: `$12.35` (half-up to the cent). An amount that is not zero never shows as
    `$0.00`: below a cent it keeps two significant digits (`$0.0042`)."""
    if nanos is None:
        return "—"
    nanos = int(nanos)
    text = nanos_to_cents_str(nanos)
    if nanos and text == "0.00":
        amount = nanos_to_usd(abs(nanos))
        digits = -amount.adjusted() + 1  # two significant digits
        fine = amount.quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP)
        return f"{'-' if nanos < 0 else ''}${fine.normalize():f}"
    return f"-${text[1:]}" if text.startswith("-") else f"${text}"


@register.filter
def cents_usd(cents: int | None) -> str:
    """Whole cents of a document: `$12.35`, `-$3.00`."""
    if cents is None:
        return "—"
    cents = int(cents)
    whole, part = divmod(abs(cents), 100)
    return f"{'-' if cents < 0 else ''}${whole:,}.{part:02d}"


@register.filter
def usd_fine(nanos: int | None) -> str:
    """One request's cost: `$0.000123` (half-up to the micro-dollar); `unpriced` when unknown."""
    if nanos is None:
        return "unpriced"
    return f"${nanos_to_usd(int(nanos)).quantize(MICRO, rounding=ROUND_HALF_UP)}"
