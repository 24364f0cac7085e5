"""Tiers and fees reach the proxy: Postgres row -> Store.catalog() -> in-memory Catalog (dict lookups, aliases
included) -> the request's cost, over real sockets with the openai SDK."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import openai
import pytest

from billing.catalog import price_catalog_load
from billing.models import ModelPrice
from contracts.events import USAGE_STREAM, UsageEvent
from contracts.pricing import Tier
from proxy.catalog import Catalog
from proxy.store import Store
from tests.proxy.conftest import running_database_url

pytestmark = pytest.mark.django_db(transaction=True)

TIERED = """version = "tiers-test"
[[models]]
provider = "openai"
model = "tiered-test-model"
input = "1"
output = "2"
tiers = [{ above_input_tokens = 40, input = "10", output = "20" }]
fees = { web_search = "0.01" }
aliases = ["tiered-test-model-2026"]
"""


def events(r) -> list[UsageEvent]:
    return [UsageEvent.from_fields({k.decode(): v.decode() for k, v in f.items()}) for _, f in r.xrange(USAGE_STREAM)]


def test_the_store_and_catalog_carry_tiers_and_fees_for_every_name(price_catalog):
    store = Store(running_database_url())

    async def load() -> Catalog:
        try:
            return Catalog.from_rows(await store.catalog())
        finally:
            await store.close()

    catalog = asyncio.run(load())
    assert len(catalog.prices) >= ModelPrice.objects.count() >= 600
    gemini = catalog.price("google", "gemini-2.5-pro")
    assert gemini is not None
    assert gemini.tiers == (
        Tier(above_input_tokens=200_000, input=Decimal("2.5"), cached_input=Decimal("0.625"), output=Decimal("15")),
    )
    sonnet_by_alias = catalog.price("anthropic", "claude-sonnet-4-5-20250929")
    assert sonnet_by_alias is catalog.price("anthropic", "claude-sonnet-4-5")
    assert sonnet_by_alias is not None and sonnet_by_alias.tiers[0].cache_write == Decimal("7.5")
    assert dict(sonnet_by_alias.fees)["web_search"] == Decimal("0.01")
    # reference-only providers are priced, but a bare model name is only offered by providers we route to
    assert catalog.price("bedrock", "anthropic.claude-sonnet-4-5-20250929-v1:0") is not None
    assert catalog.providers_for("claude-sonnet-4-5") == ["anthropic"]
    assert catalog.providers_for("gpt-4o") == ["openai", "azure_openai"]


def test_a_long_prompt_is_billed_at_the_tier_for_every_token(make_tenant, start_proxy, r, tmp_path):
    path = tmp_path / "tiered.toml"
    path.write_text(TIERED)
    price_catalog_load(path=path)  # beside the shipped catalog the fixture loaded
    tenant = make_tenant()
    proxy = start_proxy()
    client = openai.OpenAI(base_url=proxy.base_url, api_key=tenant.plaintext, max_retries=0, timeout=20)
    short = client.chat.completions.create(
        model="openai/tiered-test-model", messages=[{"role": "user", "content": "hi"}]
    )
    long = client.chat.completions.create(
        model="openai/tiered-test-model-2026", messages=[{"role": "user", "content": "many words " * 100}]
    )
    client.close()
    proxy.drain()
    first, second = events(r)
    assert short.usage.prompt_tokens <= 40 < long.usage.prompt_tokens
    # $1 / $2 per 1M tokens = 1,000 / 2,000 nano-USD per token; above 40 prompt tokens $10 / $20 for all of them
    assert first.cost_nanos == short.usage.prompt_tokens * 1_000 + short.usage.completion_tokens * 2_000
    assert second.cost_nanos == long.usage.prompt_tokens * 10_000 + long.usage.completion_tokens * 20_000
    assert first.priced and second.priced
