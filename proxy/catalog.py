"""The price catalog as the proxy holds it: all of it, in process memory, refreshed in the background.

It is small (a few thousand rows, a few MB), so every worker keeps the whole table, indexed once when it is
loaded: every per-request lookup (price, max output, which providers serve a bare model name) is a dict
hit, aliases included, never a scan. Prices carry their long-context tiers and fees (contracts.pricing).
Rows of providers Turnpike does not route to (listed for reference, e.g. Bedrock) are priced but never
offered for a bare model name: no credential can serve them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from contracts.pricing import Price
from contracts.providers import PROVIDERS
from proxy.store import CatalogRow

# When a bare model name is offered by several providers, prefer them in this order.
PROVIDER_PREFERENCE = (
    "openai",
    "anthropic",
    "google",
    "xai",
    "mistral",
    "groq",
    "together",
    "fireworks",
    "deepinfra",
    "openrouter",
    "azure_openai",
)


@dataclass(slots=True)
class Catalog:
    prices: dict[tuple[str, str], Price] = field(default_factory=dict)  # (provider, model or alias)
    canonical: dict[tuple[str, str], str] = field(default_factory=dict)  # alias -> model id
    providers_by_model: dict[str, list[str]] = field(default_factory=dict)
    models_by_provider: dict[str, list[str]] = field(default_factory=dict)
    max_output: dict[tuple[str, str], int] = field(default_factory=dict)  # (provider, model or alias) -> tokens

    @classmethod
    def from_rows(cls, rows: list[CatalogRow]) -> Catalog:
        catalog = cls()
        rank = {p: i for i, p in enumerate(PROVIDER_PREFERENCE)}
        for row in rows:
            catalog.models_by_provider.setdefault(row.provider, []).append(row.model)
            for name in (row.model, *row.aliases):
                catalog.prices[(row.provider, name)] = row.price
                catalog.canonical[(row.provider, name)] = row.model
                if row.max_output_tokens:
                    catalog.max_output[(row.provider, name)] = row.max_output_tokens
                if row.provider not in PROVIDERS:
                    continue
                providers = catalog.providers_by_model.setdefault(name, [])
                if row.provider not in providers:
                    providers.append(row.provider)
        for providers in catalog.providers_by_model.values():
            providers.sort(key=lambda p: rank.get(p, len(rank)))
        for models in catalog.models_by_provider.values():
            models.sort()
        return catalog

    def price(self, provider: str, model: str) -> Price | None:
        return self.prices.get((provider, model))

    def max_output_tokens(self, provider: str, model: str) -> int | None:
        """The most output tokens the model can produce in one answer, if the catalog says."""
        return self.max_output.get((provider, model))

    def providers_for(self, model: str) -> list[str]:
        return self.providers_by_model.get(model, [])
