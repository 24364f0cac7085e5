"""Pricing is exact: per token type, Decimal in, whole nano-USD out, unpriced is None not 0."""

from decimal import Decimal

import pytest

from contracts.pricing import Price, Usage, charge_nanos, cost_breakdown_usd, cost_nanos

SONNET = Price(
    input=Decimal("3"),
    output=Decimal("15"),
    cached_input=Decimal("0.30"),
    cache_write=Decimal("3.75"),
)


def test_each_token_type_is_priced_at_its_own_rate():
    usage = Usage(input=1_000, cached_input=20_000, cache_write=4_000, output=500, reasoning=250)
    # 1000*3 + 20000*0.30 + 4000*3.75 + 500*15 + 250*15 (reasoning falls back to output) per 1M tokens
    expected_usd = (
        Decimal(1000 * 3) + Decimal(20000) * Decimal("0.30") + Decimal(4000) * Decimal("3.75") + 750 * 15
    ) / 1_000_000
    assert cost_nanos(SONNET, usage) == int(expected_usd * 1_000_000_000) == 35_250_000


def test_fallbacks_price_cached_and_cache_write_as_input_and_reasoning_as_output():
    plain = Price(input=Decimal("2"), output=Decimal("8"))
    breakdown = cost_breakdown_usd(plain, Usage(cached_input=1_000_000, cache_write=1_000_000, reasoning=1_000_000))
    assert breakdown["cached_input"] == Decimal(2)
    assert breakdown["cache_write"] == Decimal(2)
    assert breakdown["reasoning"] == Decimal(8)


def test_fractional_nano_rounds_half_up_once_per_request():
    tiny = Price(input=Decimal("0.0375"), output=Decimal("0.15"))
    # one input token costs 37.5 nano-USD: rounded half-up to 38, not truncated, not floated
    assert cost_nanos(tiny, Usage(input=1)) == 38
    # two tokens are 75 nano exactly: rounding happens on the total, not per token
    assert cost_nanos(tiny, Usage(input=2)) == 75


def test_request_fee_is_added_once():
    priced = Price(input=Decimal("1"), output=Decimal("1"), request_fee=Decimal("0.005"))
    assert cost_nanos(priced, Usage()) == 5_000_000


def test_unpriced_model_has_no_cost_rather_than_zero():
    assert cost_nanos(None, Usage(input=10, output=10)) is None
    assert charge_nanos(None, rate=Decimal("1.05")) is None


def test_charge_applies_rate_exactly():
    assert charge_nanos(1_000_000, rate=Decimal(0)) == 0  # BYOK default: zero markup
    assert charge_nanos(1_000_001, rate=Decimal("1.055")) == 1_055_001  # 1055001.055 -> half-up


@pytest.mark.parametrize("bad", [-1, 1.5, True, "3"])
def test_usage_refuses_non_integer_or_negative_counts(bad):
    with pytest.raises(ValueError):
        Usage(input=bad)


def test_price_round_trips_through_its_wire_form():
    assert Price.from_dict(SONNET.as_dict()) == SONNET
    with pytest.raises(ValueError):
        Price.from_dict({"input": "1"})
