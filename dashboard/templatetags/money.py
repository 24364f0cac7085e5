"""Showing nano-USD amounts. Display only: rounding happens here, never in what is stored or billed."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from django import template

from contracts.money import nanos_to_cents_str, nanos_to_usd

register = template.Library()

MICRO = Decimal("0.000001")


@register.filter
def usd_cents(nanos: int | None) -> str:
    """A balance or a total: `$12.35` (half-up to the cent)."""
    if nanos is None:
        return "—"
    text = nanos_to_cents_str(int(nanos))
    return f"-${text[1:]}" if text.startswith("-") else f"${text}"


@register.filter
def usd_fine(nanos: int | None) -> str:
    """One request's cost: `$0.000123` (half-up to the micro-dollar); `unpriced` when unknown."""
    if nanos is None:
        return "unpriced"
    return f"${nanos_to_usd(int(nanos)).quantize(MICRO, rounding=ROUND_HALF_UP)}"
