"""Pricing a request: pure functions over Decimal prices and integer token counts.

Importable without Django, so the proxy prices requests in-process from its catalog snapshot and the
Celery ingester prices them identically.

Rules (written down once, here and in docs/price-catalog.md):
- Prices are Decimal USD per 1,000,000 tokens, per token type; `request_fee` is USD per request.
- Token types are disjoint: `input` excludes cached and cache-write tokens, `output` excludes
  reasoning tokens. Provider adapters normalise their usage into this shape (see docs/providers.md).
- A type without its own price falls back: cached input and cache write → input price, reasoning →
  output price. (A provider that gives no caching discount bills cached tokens as input.)
- The exact cost is computed in Decimal and rounded once, half-up, to a whole nano-USD per request.
- A model with no price is "unpriced": cost is None, never a silent 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

NANOS_PER_USD = 1_000_000_000
TOKENS_PER_PRICE_UNIT = 1_000_000


@dataclass(frozen=True, slots=True)
class Price:
    """USD per 1M tokens for each token type (None = fall back, see module docstring)."""

    input: Decimal
    output: Decimal
    cached_input: Decimal | None = None
    cache_write: Decimal | None = None
    reasoning: Decimal | None = None
    request_fee: Decimal = Decimal(0)

    def as_dict(self) -> dict[str, str | None]:
        return {
            "input": str(self.input),
            "output": str(self.output),
            "cached_input": None if self.cached_input is None else str(self.cached_input),
            "cache_write": None if self.cache_write is None else str(self.cache_write),
            "reasoning": None if self.reasoning is None else str(self.reasoning),
            "request_fee": str(self.request_fee),
        }

    @classmethod
    def from_dict(cls, data: dict[str, str | None]) -> Price:
        def dec(key: str) -> Decimal | None:
            value = data.get(key)
            return None if value is None or value == "" else Decimal(str(value))

        input_price, output_price = dec("input"), dec("output")
        if input_price is None or output_price is None:
            raise ValueError("a price needs at least input and output")
        return cls(
            input=input_price,
            output=output_price,
            cached_input=dec("cached_input"),
            cache_write=dec("cache_write"),
            reasoning=dec("reasoning"),
            request_fee=dec("request_fee") or Decimal(0),
        )


@dataclass(frozen=True, slots=True)
class Usage:
    """Normalised, disjoint token counts of one request."""

    input: int = 0
    cached_input: int = 0
    cache_write: int = 0
    output: int = 0
    reasoning: int = 0

    def __post_init__(self) -> None:
        for name in ("input", "cached_input", "cache_write", "output", "reasoning"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"token count {name} must be a non-negative int, got {value!r}")


def cost_breakdown_usd(price: Price, usage: Usage) -> dict[str, Decimal]:
    """Exact (unrounded) USD cost per token type."""
    unit = Decimal(TOKENS_PER_PRICE_UNIT)
    cached = price.input if price.cached_input is None else price.cached_input
    write = price.input if price.cache_write is None else price.cache_write
    reasoning = price.output if price.reasoning is None else price.reasoning
    return {
        "input": usage.input * price.input / unit,
        "cached_input": usage.cached_input * cached / unit,
        "cache_write": usage.cache_write * write / unit,
        "output": usage.output * price.output / unit,
        "reasoning": usage.reasoning * reasoning / unit,
        "request_fee": price.request_fee,
    }


def cost_nanos(price: Price | None, usage: Usage) -> int | None:
    """The request's provider cost in whole nano-USD, or None when the model is unpriced."""
    if price is None:
        return None
    total = sum(cost_breakdown_usd(price, usage).values(), Decimal(0))
    return int((total * NANOS_PER_USD).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def charge_nanos(cost: int | None, *, rate: Decimal) -> int | None:
    """What the balance is charged for a provider cost: cost * rate, half-up to a nano-USD.

    BYOK: rate = the plan's BYOK fee rate (default 0). Managed credentials: rate = 1 + markup."""
    if cost is None:
        return None
    return int((Decimal(cost) * rate).quantize(Decimal(1), rounding=ROUND_HALF_UP))
