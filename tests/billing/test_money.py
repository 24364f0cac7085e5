"""Money is exact: USD in, integer nano-USD out, never float; cents only on documents, half-up."""

from decimal import Decimal

import pytest

from contracts.money import NANOS_PER_USD, nanos_to_cents_str, nanos_to_usd, usd_to_nanos


@pytest.mark.parametrize(
    "value,nanos",
    [
        (Decimal("1.5"), 1_500_000_000),
        ("1.5", 1_500_000_000),
        (3, 3_000_000_000),
        (0, 0),
        ("0.000000001", 1),
        (Decimal("1E-9"), 1),
        ("-2.25", -2_250_000_000),
        ("12345678.123456789", 12_345_678_123_456_789),
        ("0.10", 100_000_000),
        ("1e3", 1_000_000_000_000),
        (" 7 ", 7_000_000_000),
    ],
)
def test_usd_to_nanos_is_exact(value, nanos):
    result = usd_to_nanos(value)
    assert result == nanos and type(result) is int


def test_a_classic_float_trap_stays_exact():
    # 0.1 + 0.2 != 0.3 in float; in nano-USD the sum is exact.
    assert usd_to_nanos("0.1") + usd_to_nanos("0.2") == usd_to_nanos("0.3")


@pytest.mark.parametrize("value", [0.1, 1.0, float("nan")])
def test_float_is_refused(value):
    with pytest.raises(TypeError, match="float"):
        usd_to_nanos(value)


@pytest.mark.parametrize("value", ["0.0000000001", Decimal("1.0000000005"), "1e-10"])
def test_amounts_finer_than_a_nano_dollar_are_refused(value):
    with pytest.raises(ValueError, match="finer than one nano-dollar"):
        usd_to_nanos(value)


@pytest.mark.parametrize("value", ["abc", "", "1,50", "NaN", "Infinity", "-inf", "$5"])
def test_non_amounts_are_refused(value):
    with pytest.raises(ValueError):
        usd_to_nanos(value)


def test_nanos_to_usd_is_exact():
    assert nanos_to_usd(1) == Decimal("0.000000001")
    assert nanos_to_usd(12_345_678_123_456_789) == Decimal("12345678.123456789")
    assert nanos_to_usd(-NANOS_PER_USD) == Decimal(-1)
    assert usd_to_nanos(nanos_to_usd(987_654_321_012)) == 987_654_321_012


@pytest.mark.parametrize(
    "nanos,text",
    [
        (0, "0.00"),
        (1, "0.00"),
        (4_999_999, "0.00"),  # $0.004999999 rounds down
        (5_000_000, "0.01"),  # exactly half a cent rounds up
        (15_000_000, "0.02"),  # half-up, not banker's rounding (which would give 0.02 here too)...
        (25_000_000, "0.03"),  # ...but would give 0.02 here
        (12_345_000_000, "12.35"),
        (12_344_999_999, "12.34"),
        (1_000_000_000_000, "1000.00"),
        (-5_000_000, "-0.01"),  # half away from zero for refunds
        (-4_999_999, "0.00"),
    ],
)
def test_nanos_to_cents_str_rounds_half_up(nanos, text):
    assert nanos_to_cents_str(nanos) == text
