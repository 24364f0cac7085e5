"""Each provider's usage report, normalised into Turnpike's disjoint token types and priced, checked to
the nano-dollar against a hand computation (docs/providers.md has the table these follow).

Every case has cached input, and cache writes and reasoning tokens where the provider reports them,
because that is where gateways get the money wrong: counting cached tokens twice (OpenAI and Gemini
include them in the prompt count), or dropping Anthropic's cache writes (reported outside
`input_tokens`), or pricing reasoning tokens twice (OpenAI includes them in completion tokens)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from contracts.pricing import Price, Usage, cost_nanos
from proxy.providers import anthropic, gemini, openai_format

D = Decimal


def test_openai_chat_cached_and_reasoning():
    price = Price(input=D("1.10"), cached_input=D("0.275"), output=D("4.40"))  # reasoning billed as output
    usage = openai_format.usage_from_openai(
        {
            "prompt_tokens": 2000,
            "completion_tokens": 900,
            "prompt_tokens_details": {"cached_tokens": 1024},
            "completion_tokens_details": {"reasoning_tokens": 600},
        }
    )
    assert usage == Usage(input=976, cached_input=1024, output=300, reasoning=600)
    # 976 x 1.10 + 1024 x 0.275 + 300 x 4.40 + 600 x 4.40 = 1073.6 + 281.6 + 1320 + 2640 = 5315.2 USD per 1M
    assert cost_nanos(price, usage) == 5_315_200


def test_openai_responses_cached_and_reasoning():
    price = Price(input=D("1.25"), cached_input=D("0.125"), output=D("10.00"))
    usage = openai_format.usage_from_responses(
        {
            "input_tokens": 3000,
            "input_tokens_details": {"cached_tokens": 2048},
            "output_tokens": 1500,
            "output_tokens_details": {"reasoning_tokens": 1200},
            "total_tokens": 4500,
        }
    )
    assert usage == Usage(input=952, cached_input=2048, output=300, reasoning=1200)
    # 952 x 1.25 + 2048 x 0.125 + 1500 x 10 = 1190 + 256 + 15000 = 16446
    assert cost_nanos(price, usage) == 16_446_000


def test_azure_reports_like_openai():
    price = Price(input=D("0.15"), cached_input=D("0.075"), output=D("0.60"))
    usage = openai_format.usage_from_openai(
        {"prompt_tokens": 7, "completion_tokens": 3, "prompt_tokens_details": {"cached_tokens": 5}}
    )
    # 2 x 0.15 + 5 x 0.075 + 3 x 0.60 = 0.3 + 0.375 + 1.8 = 2.475 USD per 1M = 2475 nano-USD
    assert cost_nanos(price, usage) == 2475


def test_anthropic_cache_reads_and_writes_outside_input():
    price = Price(input=D("3"), cached_input=D("0.30"), cache_write=D("3.75"), output=D("15"))
    usage = anthropic.usage_from_anthropic(
        {
            "input_tokens": 1234,
            "cache_read_input_tokens": 5678,
            "cache_creation_input_tokens": 910,
            "output_tokens": 321,  # includes thinking
        }
    )
    assert usage == Usage(input=1234, cached_input=5678, cache_write=910, output=321)
    # 1234 x 3 + 5678 x 0.30 + 910 x 3.75 + 321 x 15 = 3702 + 1703.4 + 3412.5 + 4815 = 13632.9
    assert cost_nanos(price, usage) == 13_632_900


def test_gemini_cached_inside_prompt_and_thoughts_outside_candidates():
    price = Price(input=D("0.30"), cached_input=D("0.075"), output=D("2.50"))
    usage = gemini.usage_from_gemini(
        {
            "promptTokenCount": 1500,
            "cachedContentTokenCount": 1000,
            "candidatesTokenCount": 200,
            "thoughtsTokenCount": 300,
            "totalTokenCount": 2000,
        }
    )
    assert usage == Usage(input=500, cached_input=1000, output=200, reasoning=300)
    # 500 x 0.30 + 1000 x 0.075 + 200 x 2.50 + 300 x 2.50 = 150 + 75 + 500 + 750 = 1475
    assert cost_nanos(price, usage) == 1_475_000


def test_embeddings_are_input_only():
    price = Price(input=D("0.02"), output=D("0"))
    usage = openai_format.usage_from_embeddings({"prompt_tokens": 123, "total_tokens": 123})
    assert usage == Usage(input=123)
    assert cost_nanos(price, usage) == 2460


@pytest.mark.parametrize(
    ("tokens", "per_million", "nanos"),
    [(1, "0.0375", 38), (3, "0.0375", 113), (1, "0.0005", 1), (1, "0.00049", 0)],
)
def test_sub_nano_remainders_round_half_up_once_per_request(tokens, per_million, nanos):
    """37.5 nano-USD rounds to 38; 112.5 to 113; 0.5 to 1; 0.49 to 0 (exact Decimal, one rounding)."""
    assert cost_nanos(Price(input=D(per_million), output=D("0")), Usage(input=tokens)) == nanos
