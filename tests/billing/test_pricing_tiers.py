"""Long-context tiers and per-unit fees: the tier is chosen by the whole prompt, prices every token of the
request, and the cost stays exact (one half-up rounding per request), whatever the numbers."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts.pricing import Price, Tier, Usage, cost_breakdown_usd, cost_nanos

GEMINI_25_PRO = Price(
    input=Decimal("1.25"),
    cached_input=Decimal("0.31"),
    output=Decimal("10"),
    tiers=(
        Tier(above_input_tokens=200_000, input=Decimal("2.50"), cached_input=Decimal("0.625"), output=Decimal("15")),
    ),
)
SONNET_45 = Price(
    input=Decimal("3"),
    cached_input=Decimal("0.30"),
    cache_write=Decimal("3.75"),
    output=Decimal("15"),
    tiers=(
        Tier(
            above_input_tokens=200_000,
            input=Decimal("6"),
            cached_input=Decimal("0.60"),
            cache_write=Decimal("7.50"),
            output=Decimal("22.50"),
        ),
    ),
)

# prices as the catalog holds them: up to 9 decimal places, below a billion dollars per 1M tokens
amounts = st.decimals(min_value=0, max_value=Decimal("99999.999999999"), places=9, allow_nan=False)
optional_amounts = st.none() | amounts
counts = st.integers(min_value=0, max_value=5_000_000)
tier_strategy = st.builds(
    Tier,
    above_input_tokens=st.integers(min_value=0, max_value=2_000_000),
    input=amounts,
    output=amounts,
    cached_input=optional_amounts,
    cache_write=optional_amounts,
    reasoning=optional_amounts,
)
fee_names = st.sampled_from(["web_search", "image_output", "code_interpreter_session"])
price_strategy = st.builds(
    Price,
    input=amounts,
    output=amounts,
    cached_input=optional_amounts,
    cache_write=optional_amounts,
    reasoning=optional_amounts,
    request_fee=amounts,
    tiers=st.lists(tier_strategy, max_size=3, unique_by=lambda t: t.above_input_tokens).map(tuple),
    fees=st.dictionaries(fee_names, amounts, max_size=3).map(lambda d: tuple(d.items())),
)
usage_strategy = st.builds(
    Usage,
    input=counts,
    cached_input=counts,
    cache_write=counts,
    output=counts,
    reasoning=counts,
    units=st.dictionaries(fee_names, st.integers(min_value=0, max_value=1000), max_size=3).map(
        lambda d: tuple(d.items())
    ),
)


def reference_cost_nanos(price: Price, usage: Usage) -> int:
    """The rule written out independently, in exact fractions: the highest tier whose threshold the prompt
    (input + cached + cache write) exceeds prices every token; fallbacks as in the base price."""
    prompt = usage.input + usage.cached_input + usage.cache_write
    chosen: Price | Tier = price
    for tier in sorted(price.tiers, key=lambda t: t.above_input_tokens):
        if prompt > tier.above_input_tokens:
            chosen = tier
    rate = {
        "input": chosen.input,
        "cached_input": chosen.cached_input if chosen.cached_input is not None else chosen.input,
        "cache_write": chosen.cache_write if chosen.cache_write is not None else chosen.input,
        "output": chosen.output,
        "reasoning": chosen.reasoning if chosen.reasoning is not None else chosen.output,
    }
    total = Fraction(price.request_fee)
    for kind, per_million in rate.items():
        total += Fraction(getattr(usage, kind)) * Fraction(per_million) / 1_000_000
    fees = dict(price.fees)
    for name, count in usage.units:
        total += Fraction(count) * Fraction(fees.get(name, 0))
    nanos = total * 1_000_000_000
    floor = nanos.numerator // nanos.denominator
    return floor + 1 if nanos - floor >= Fraction(1, 2) else floor  # half-up, once


@given(price_strategy, usage_strategy)
def test_cost_is_the_exact_tiered_rule_rounded_half_up_once(price, usage):
    assert cost_nanos(price, usage) == reference_cost_nanos(price, usage)


@given(price_strategy)
def test_price_with_tiers_and_fees_round_trips_through_its_wire_form(price):
    assert Price.from_dict(price.as_dict()) == price


@given(price_strategy, usage_strategy)
def test_a_price_without_tiers_is_the_base_price_for_every_prompt(price, usage):
    flat = Price(
        input=price.input,
        output=price.output,
        cached_input=price.cached_input,
        cache_write=price.cache_write,
        reasoning=price.reasoning,
        request_fee=price.request_fee,
        fees=price.fees,
    )
    tier_above_everything = Tier(above_input_tokens=10**12, input=Decimal(999), output=Decimal(999))
    unreachable = dataclasses.replace(flat, tiers=(tier_above_everything,))
    assert cost_nanos(unreachable, usage) == cost_nanos(flat, usage)


@pytest.mark.parametrize(
    ("usage", "expected_usd"),
    [
        # exactly 200,000 prompt tokens is not above the threshold: base prices
        (Usage(input=200_000, output=1_000), Decimal("0.25") + Decimal("0.01")),
        # one token more and every token, output included, is priced at the tier
        (Usage(input=200_001, output=1_000), Decimal("200001") * Decimal("2.5") / 10**6 + Decimal("0.015")),
        # cached tokens count towards the prompt, and are priced at the tier's cached rate
        (
            Usage(input=150_000, cached_input=60_000, output=1_000),
            Decimal("0.375") + Decimal("60000") * Decimal("0.625") / 10**6 + Decimal("0.015"),
        ),
    ],
)
def test_gemini_25_pro_long_prompt_tier(usage, expected_usd):
    assert cost_nanos(GEMINI_25_PRO, usage) == int(expected_usd * 10**9)


def test_anthropic_long_context_counts_cache_reads_and_writes_towards_the_threshold():
    usage = Usage(input=1_000, cached_input=150_000, cache_write=50_000, output=2_000, reasoning=500)
    breakdown = cost_breakdown_usd(SONNET_45, usage)
    assert breakdown["input"] == Decimal("0.006")  # 1,000 x $6 / 1M
    assert breakdown["cached_input"] == Decimal("0.09")  # 150,000 x $0.60 / 1M
    assert breakdown["cache_write"] == Decimal("0.375")  # 50,000 x $7.50 / 1M
    assert breakdown["output"] == Decimal("0.045")  # 2,000 x $22.50 / 1M
    assert breakdown["reasoning"] == Decimal("0.01125")  # reasoning falls back to the tier's output
    assert cost_nanos(SONNET_45, usage) == 527_250_000
    short = Usage(input=1_000, cached_input=150_000, cache_write=49_000, output=2_000)
    assert cost_nanos(SONNET_45, short) == 3_000_000 + 45_000_000 + 183_750_000 + 30_000_000


def test_the_highest_exceeded_tier_wins_whatever_order_tiers_are_given_in():
    price = Price(
        input=Decimal(1),
        output=Decimal(1),
        tiers=(
            Tier(above_input_tokens=256_000, input=Decimal(3), output=Decimal(3)),
            Tier(above_input_tokens=32_000, input=Decimal(2), output=Decimal(2)),
        ),
    )
    assert [t.above_input_tokens for t in price.tiers] == [32_000, 256_000]
    assert cost_nanos(price, Usage(input=32_000)) == 32_000_000
    assert cost_nanos(price, Usage(input=32_001)) == 64_002_000
    assert cost_nanos(price, Usage(input=300_000)) == 900_000_000


def test_fees_are_charged_only_for_units_the_usage_carries():
    price = Price(input=Decimal(1), output=Decimal(1), fees=(("web_search", Decimal("0.01")),))
    assert cost_nanos(price, Usage(input=1_000)) == 1_000_000
    assert cost_nanos(price, Usage(input=1_000, units=(("web_search", 3),))) == 31_000_000
    # a unit the model has no fee for costs nothing extra
    assert cost_nanos(price, Usage(input=1_000, units=(("image_output", 3),))) == 1_000_000


def test_huge_counts_are_still_exact():
    price = Price(input=Decimal("0.000000001"), output=Decimal("99999.999999999"))
    usage = Usage(input=10**30 + 1, output=10**30 + 7)
    assert cost_nanos(price, usage) == reference_cost_nanos(price, usage)


@pytest.mark.parametrize(
    "bad",
    [
        {"input": "1", "output": "1", "tiers": [{"above_input_tokens": 10, "input": 2.5, "output": "3"}]},
        {"input": "1", "output": "1", "tiers": [{"above_input_tokens": 10, "input": "NaN", "output": "3"}]},
        {"input": "1", "output": "1", "tiers": [{"above_input_tokens": 10, "input": "-1", "output": "3"}]},
        {"input": "1", "output": "1", "tiers": [{"above_input_tokens": 10.5, "input": "1", "output": "3"}]},
        {"input": "1", "output": "1", "tiers": [{"above_input_tokens": True, "input": "1", "output": "3"}]},
        {"input": "1", "output": "1", "tiers": [{"above_input_tokens": 10, "input": "1"}]},
        {
            "input": "1",
            "output": "1",
            "tiers": [
                {"above_input_tokens": 10, "input": "1", "output": "3"},
                {"above_input_tokens": 10, "input": "2", "output": "3"},
            ],
        },
        {"input": "1", "output": "1", "tiers": {"above_input_tokens": 10}},
        {"input": "1", "output": "1", "fees": {"web_search": 0.01}},
        {"input": "1", "output": "1", "fees": {"web_search": "Infinity"}},
        {"input": "1", "output": "1", "fees": ["web_search"]},
        {"input": 1.5, "output": "1"},
        {"input": "1", "output": True},
    ],
)
def test_wire_form_refuses_floats_nan_negative_and_malformed_tiers(bad):
    with pytest.raises(ValueError):
        Price.from_dict(bad)


def test_usage_refuses_negative_or_non_integer_unit_counts():
    with pytest.raises(ValueError):
        Usage(units=(("web_search", -1),))
    with pytest.raises(ValueError):
        Usage(units=(("web_search", 1.0),))  # type: ignore[arg-type]
