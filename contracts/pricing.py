"""Pricing a request: pure functions over Decimal prices and integer token counts.

Importable without Django, so the proxy prices requests in-process from its catalog snapshot and the
Celery ingester prices them identically.

Rules (written down once, here and in docs/price-catalog.md):
- Prices are Decimal USD per 1,000,000 tokens, per token type; `request_fee` is USD per request.
- Token types are disjoint: `input` excludes cached and cache-write tokens, `output` excludes
  reasoning tokens. Provider adapters normalise their usage into this shape (see docs/providers.md).
- A type without its own price falls back: cached input and cache write → input price, reasoning →
  output price. (A provider that gives no caching discount bills cached tokens as input.)
- Tiers (long-context prices): a request whose prompt — input + cached input + cache-write tokens —
  is larger than a tier's `above_input_tokens` has *every* token priced at that tier (the highest
  such tier wins), output and reasoning included. This is Google's rule for Gemini ("prompts
  > 200k tokens") and Anthropic's for long-context Sonnet ("requests that exceed 200K input
  tokens", cache reads and writes included). Inside a tier, a type without its own price falls
  back to the tier's input / output price, as in the base price.
- Fees: `fees` maps a billable unit (e.g. `web_search`, `image_output`) to USD per unit. A fee is
  charged only for the units a Usage carries in `units` (`Usage.units`, keyed by the same names). The
  provider adapters report `web_search` (WEB_SEARCH) today: Anthropic's server-side web searches,
  OpenAI's Responses `web_search_call` items, OpenAI's search models in Chat Completions and Gemini's
  Google Search grounding; and `maps_grounding` (Gemini 2.x's Google Maps grounding, per grounded
  prompt: proxy.providers.gemini); the other fees are stored and shown but not charged
  (docs/price-catalog.md). A unit the price has no fee
  for costs nothing.
- The exact cost is computed in Decimal (with enough precision that nothing is rounded on the way)
  and rounded once, half-up, to a whole nano-USD per request.
- A model with no price is "unpriced": cost is None, never a silent 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Context, Decimal, Inexact, InvalidOperation
from typing import Any

NANOS_PER_USD = 1_000_000_000
TOKENS_PER_PRICE_UNIT = 1_000_000
TOKEN_TYPES = ("input", "cached_input", "cache_write", "output", "reasoning")
# Billable units the provider adapters report (the names the catalog's `fees` use): one server-side web search.
WEB_SEARCH = "web_search"
FEE_PREFIX = "fee:"  # cost_breakdown_usd's key for a unit's fee: "fee:web_search"

# Exact arithmetic: products of token counts and prices never lose a digit; if one ever would
# (absurd inputs), Inexact is raised instead of a silently rounded amount.
_EXACT = Context(prec=200, rounding=ROUND_HALF_UP, traps=[Inexact, InvalidOperation])
_ROUND = Context(prec=200, rounding=ROUND_HALF_UP, traps=[InvalidOperation])


def _amount(value: Any, what: str) -> Decimal:
    """A price from its wire form: a decimal string, int or Decimal; never a float, bool, NaN or < 0."""
    if isinstance(value, bool | float):
        raise ValueError(f"{what} must be an exact decimal (a string), not {type(value).__name__}")
    if not isinstance(value, str | int | Decimal):
        raise ValueError(f"{what} must be a decimal string, got {type(value).__name__}")
    try:
        amount = Decimal(value)
    except (InvalidOperation, ValueError):
        raise ValueError(f"{what} = {value!r} is not a decimal") from None
    if not amount.is_finite() or amount < 0:
        raise ValueError(f"{what} must be a finite, non-negative amount, got {value!r}")
    return amount


def _opt(data: Mapping[str, Any], key: str, what: str) -> Decimal | None:
    value = data.get(key)
    return None if value is None or value == "" else _amount(value, f"{what}{key}")


def _text(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


@dataclass(frozen=True, slots=True)
class Tier:
    """USD per 1M tokens for every token of a request whose prompt exceeds `above_input_tokens`."""

    above_input_tokens: int
    input: Decimal
    output: Decimal
    cached_input: Decimal | None = None
    cache_write: Decimal | None = None
    reasoning: Decimal | None = None

    def __post_init__(self) -> None:
        threshold = self.above_input_tokens
        if not isinstance(threshold, int) or isinstance(threshold, bool) or threshold < 0:
            raise ValueError(f"a tier threshold must be a non-negative int, got {threshold!r}")

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"above_input_tokens": self.above_input_tokens}
        for name in TOKEN_TYPES:
            value = getattr(self, name)
            if value is not None:
                data[name] = str(value)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Tier:
        if not isinstance(data, Mapping):
            raise ValueError(f"a tier must be a mapping, got {type(data).__name__}")
        threshold = data.get("above_input_tokens")
        if isinstance(threshold, str) and threshold.isdigit():
            threshold = int(threshold)
        if not isinstance(threshold, int) or isinstance(threshold, bool):
            raise ValueError(f"a tier needs an integer above_input_tokens, got {threshold!r}")
        what = f"tier above {threshold}: "
        input_price, output_price = _opt(data, "input", what), _opt(data, "output", what)
        if input_price is None or output_price is None:
            raise ValueError(f"{what}a tier needs at least input and output")
        return cls(
            above_input_tokens=threshold,
            input=input_price,
            output=output_price,
            cached_input=_opt(data, "cached_input", what),
            cache_write=_opt(data, "cache_write", what),
            reasoning=_opt(data, "reasoning", what),
        )


@dataclass(frozen=True, slots=True)
class Price:
    """USD per 1M tokens for each token type (None = fall back, see module docstring), long-context
    tiers (ascending, distinct thresholds) and per-unit fees (sorted by name)."""

    input: Decimal
    output: Decimal
    cached_input: Decimal | None = None
    cache_write: Decimal | None = None
    reasoning: Decimal | None = None
    request_fee: Decimal = Decimal(0)
    tiers: tuple[Tier, ...] = ()
    fees: tuple[tuple[str, Decimal], ...] = ()

    def __post_init__(self) -> None:
        tiers = tuple(sorted(self.tiers, key=lambda tier: tier.above_input_tokens))
        thresholds = [tier.above_input_tokens for tier in tiers]
        if len(set(thresholds)) != len(thresholds):
            raise ValueError(f"tier thresholds must be distinct, got {thresholds}")
        object.__setattr__(self, "tiers", tiers)
        object.__setattr__(self, "fees", tuple(sorted(self.fees)))

    def tier_for(self, prompt_tokens: int) -> Tier | None:
        """The tier a request with this many prompt tokens is priced at (None = the base price)."""
        chosen = None
        for tier in self.tiers:
            if prompt_tokens > tier.above_input_tokens:
                chosen = tier
        return chosen

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "input": str(self.input),
            "output": str(self.output),
            "cached_input": _text(self.cached_input),
            "cache_write": _text(self.cache_write),
            "reasoning": _text(self.reasoning),
            "request_fee": str(self.request_fee),
        }
        if self.tiers:
            data["tiers"] = [tier.as_dict() for tier in self.tiers]
        if self.fees:
            data["fees"] = {name: str(amount) for name, amount in self.fees}
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Price:
        input_price, output_price = _opt(data, "input", ""), _opt(data, "output", "")
        if input_price is None or output_price is None:
            raise ValueError("a price needs at least input and output")
        tiers = data.get("tiers") or []
        fees = data.get("fees") or {}
        if not isinstance(tiers, list | tuple):
            raise ValueError(f"tiers must be a list, got {type(tiers).__name__}")
        if not isinstance(fees, Mapping):
            raise ValueError(f"fees must be a mapping, got {type(fees).__name__}")
        return cls(
            input=input_price,
            output=output_price,
            cached_input=_opt(data, "cached_input", ""),
            cache_write=_opt(data, "cache_write", ""),
            reasoning=_opt(data, "reasoning", ""),
            request_fee=_opt(data, "request_fee", "") or Decimal(0),
            tiers=tuple(Tier.from_dict(tier) for tier in tiers),
            fees=tuple((str(name), _amount(value, f"fee {name}")) for name, value in fees.items()),
        )


@dataclass(frozen=True, slots=True)
class Usage:
    """Normalised, disjoint token counts of one request, plus counts of billable units (server-side
    tool calls, images) keyed by fee name. `units` is kept canonical: sorted by name, one entry per
    name, no zero counts, so two usages that bill the same compare equal."""

    input: int = 0
    cached_input: int = 0
    cache_write: int = 0
    output: int = 0
    reasoning: int = 0
    units: tuple[tuple[str, int], ...] = ()

    def __post_init__(self) -> None:
        for name in TOKEN_TYPES:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"token count {name} must be a non-negative int, got {value!r}")
        if not self.units:
            return
        merged: dict[str, int] = {}
        for unit, count in self.units:
            if not isinstance(unit, str) or not isinstance(count, int) or isinstance(count, bool) or count < 0:
                raise ValueError(f"unit count {unit!r} must be a non-negative int, got {count!r}")
            if count:
                merged[unit] = merged.get(unit, 0) + count
        canonical = tuple(sorted(merged.items()))
        if canonical != self.units:
            object.__setattr__(self, "units", canonical)

    def unit_count(self, name: str) -> int:
        """How many `name` units (e.g. WEB_SEARCH) the request used."""
        for unit, count in self.units:
            if unit == name:
                return count
        return 0

    @property
    def prompt_tokens(self) -> int:
        """What tier thresholds are compared with: every token of the prompt, cached or not."""
        return self.input + self.cached_input + self.cache_write


def cost_breakdown_usd(price: Price, usage: Usage) -> dict[str, Decimal]:
    """Exact (unrounded) USD cost per token type, the request fee, and `fee:<name>` per charged unit."""
    rates: Price | Tier = price.tier_for(usage.prompt_tokens) or price
    cached = rates.input if rates.cached_input is None else rates.cached_input
    write = rates.input if rates.cache_write is None else rates.cache_write
    reasoning = rates.output if rates.reasoning is None else rates.reasoning
    unit = Decimal(TOKENS_PER_PRICE_UNIT)
    ctx = _EXACT
    breakdown = {
        "input": ctx.divide(ctx.multiply(Decimal(usage.input), rates.input), unit),
        "cached_input": ctx.divide(ctx.multiply(Decimal(usage.cached_input), cached), unit),
        "cache_write": ctx.divide(ctx.multiply(Decimal(usage.cache_write), write), unit),
        "output": ctx.divide(ctx.multiply(Decimal(usage.output), rates.output), unit),
        "reasoning": ctx.divide(ctx.multiply(Decimal(usage.reasoning), reasoning), unit),
        "request_fee": price.request_fee,
    }
    fees = dict(price.fees)
    for name, count in usage.units:
        if count and name in fees:
            key = FEE_PREFIX + name
            breakdown[key] = ctx.add(breakdown.get(key, Decimal(0)), ctx.multiply(Decimal(count), fees[name]))
    return breakdown


def cost_nanos(price: Price | None, usage: Usage) -> int | None:
    """The request's provider cost in whole nano-USD, or None when the model is unpriced."""
    if price is None:
        return None
    total = Decimal(0)
    for amount in cost_breakdown_usd(price, usage).values():
        total = _EXACT.add(total, amount)
    return int(_EXACT.multiply(total, Decimal(NANOS_PER_USD)).quantize(Decimal(1), context=_ROUND))


def charge_nanos(cost: int | None, *, rate: Decimal) -> int | None:
    """What the balance is charged for a provider cost: cost * rate, half-up to a nano-USD.

    BYOK: rate = the plan's BYOK fee rate (default 0). Managed credentials: rate = 1 + markup."""
    if cost is None:
        return None
    return int((Decimal(cost) * rate).quantize(Decimal(1), rounding=ROUND_HALF_UP))
